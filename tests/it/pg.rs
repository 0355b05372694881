//! A real PostgreSQL for the tests (Debian's `postgresql` package, which
//! scripts/test-prereqs.sh installs): each test that needs one starts its own cluster in a
//! temporary directory, on a free loopback port, and it is stopped and removed when the
//! test ends. No mock of the database anywhere.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster is made and
//! run as `nobody`, in a directory handed to it (nobody's home is not writable).

use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The superuser the tests connect as, and its password (password authentication over
/// TCP, as a real server would ask for).
pub const USER: &str = "clairo_sync";
pub const PASSWORD: &str = "test-password-1f3a";

/// The user the cluster runs as when the tests run as root.
const UNPRIVILEGED: &str = "nobody";

/// How many free ports to try: another process may take the one picked before the server
/// binds it.
const START_ATTEMPTS: usize = 3;

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PgCluster {
    /// Initialises and starts a cluster; panics naming the package to install when
    /// PostgreSQL is missing.
    pub fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        if running_as_root() {
            let (uid, gid) = unprivileged_ids();
            chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster's directory");
        }
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, PASSWORD).expect("write the password file");
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644))
            .expect("chmod the password file");
        let mut cluster = Self { dir, bin, port: 0 };
        // Start-up is what each test waits for: no fsync at initdb or at run time (a
        // test's cluster is thrown away), trust on the Unix socket (for pg_ctl's own
        // readiness check), a password over TCP.
        cluster.run(
            "initdb",
            &[
                "--no-sync",
                "--no-instructions",
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                path_str(&password_file),
                "-D",
                path_str(&cluster.data()),
            ],
        );
        for attempt in 1..=START_ATTEMPTS {
            cluster.port = free_port();
            let output = cluster.launch();
            if output.status.success() {
                return cluster;
            }
            if attempt == START_ATTEMPTS {
                panic!(
                    "pg_ctl start failed: {}\n{}",
                    describe(&output),
                    cluster.log()
                );
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `pg_ctl start` on the cluster's data and port, waiting until it takes connections.
    fn launch(&self) -> Output {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            path_str(self.dir.path())
        );
        let log = self.dir.path().join("server.log");
        self.try_run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                path_str(&self.data()),
                "-l",
                path_str(&log),
                "-o",
                &options,
            ],
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server (fast: open connections are cut, as at a real restart or
    /// failover); its data stays for [`PgCluster::restart`].
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["stop", "-w", "-m", "fast", "-D", path_str(&self.data())],
        );
    }

    /// Starts the stopped server again, on the same data and the same port.
    pub fn restart(&self) {
        let output = self.launch();
        assert!(
            output.status.success(),
            "pg_ctl start (again) failed: {}\n{}",
            describe(&output),
            self.log()
        );
    }

    /// Runs SQL statements as the superuser, one after another in one session, over the
    /// Unix socket (trusted, so it works whatever the password is now); each is its own
    /// transaction (`ALTER SYSTEM` may not run in one). Returns the rows as psql prints
    /// them unaligned.
    pub fn sql(&self, statements: &[&str]) -> String {
        let port = self.port.to_string();
        let mut args = vec![
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            path_str(self.dir.path()),
            "-p",
            &port,
            "-U",
            USER,
            "-d",
            "postgres",
        ];
        for statement in statements {
            args.extend(["-c", statement]);
        }
        let output = self.try_run("psql", &args);
        assert!(
            output.status.success(),
            "psql {statements:?} failed: {}",
            describe(&output)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A URL with no password in it, as the config wants (the password goes apart).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.try_run(program, args);
        assert!(
            output.status.success(),
            "{program} failed: {}",
            describe(&output)
        );
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", UNPRIVILEGED, "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            // Not the test's own directory, which nobody may not enter.
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|error| panic!("running {}: {error}", program.display()))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: the data is thrown away with the directory.
        let _ = self.try_run(
            "pg_ctl",
            &["stop", "-m", "immediate", "-D", path_str(&self.data())],
        );
    }
}

/// `/usr/lib/postgresql/<newest version>/bin`.
fn pg_bin() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); install the \
             Debian package `postgresql` (scripts/test-prereqs.sh installs it as root, as \
             the test command's setup does)"
        ),
    }
}

fn running_as_root() -> bool {
    effective_uid() == 0
}

/// The effective user id, from /proc (the tests use no libc bindings of their own).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|euid| euid.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

fn unprivileged_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, UNPRIVILEGED])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no user {UNPRIVILEGED} to run PostgreSQL as"))
    };
    (id("-u"), id("-g"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn a_test_cluster_starts_as_an_unprivileged_user_and_asks_for_the_password() {
    use sqlx::Connection;
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use std::str::FromStr;

    let cluster = PgCluster::start();
    let options = PgConnectOptions::from_str(&cluster.url()).unwrap();
    let refused = PgConnection::connect_with(&options.clone().password("wrong")).await;
    assert!(refused.is_err(), "a wrong password is refused");
    let mut connection = PgConnection::connect_with(&options.password(PASSWORD))
        .await
        .expect("connects with the password");
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(user, USER);
    connection.close().await.unwrap();
    let data = cluster.data();
    drop(cluster);
    assert!(!data.exists(), "the cluster's directory is removed");
}
