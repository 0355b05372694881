//! `[state] url`: the daemon and the operator's commands on a real PostgreSQL (a
//! throwaway cluster, clairo-pgtest), and the config errors that keep its password out
//! of the config, the logs and the output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pg::{PASSWORD, PgCluster};
use crate::support::{Daemon, Receiver, daemon_config, run_cli, sandbox, write};

/// Points a `daemon_config` at PostgreSQL: `url` and a password file holding `password`.
pub(crate) fn use_postgres(config: &Path, url: &str, password: &str) -> PathBuf {
    let dir = config.parent().unwrap();
    let password_file = write(dir, "state-password", &format!("{password}\n"));
    let text = std::fs::read_to_string(config).unwrap().replacen(
        "[state]\n",
        &format!(
            "[state]\nurl = \"{url}\"\npassword_file = \"{}\"\n",
            password_file.display()
        ),
        1,
    );
    std::fs::write(config, text).unwrap();
    password_file
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_keeps_its_state_in_postgresql_and_delivers_briefs_to_a_webhook() {
    let cluster = PgCluster::start();
    let sandbox = sandbox(0, 0).await;
    sandbox.add_briefs(5);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    use_postgres(&config, &cluster.url(), PASSWORD);
    let config_arg = config.to_str().unwrap();

    let (code, stdout, stderr) = run_cli(&["check", "--online", "-c", config_arg]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("state: PostgreSQL at") && stdout.contains("migration(s) at its start"),
        "a new database is reached and awaits the daemon's migrations: {stdout}"
    );

    let mut daemon = Daemon::start(&config);
    let delivered = receiver
        .wait_for_delivered(5, Duration::from_secs(60))
        .await;
    assert_eq!(delivered.len(), 5);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.received().len(),
        5,
        "no duplicate and no extra request"
    );
    assert!(
        !dir.path().join("state.db").exists(),
        "no SQLite file is made when the state is in PostgreSQL"
    );

    let (code, stdout, stderr) = run_cli(&["status", "-c", config_arg]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&cluster.url()),
        "status says where the state is: {stdout}"
    );
    assert!(stdout.contains("briefs"), "{stdout}");
    let (code, stdout, _) = run_cli(&["status", "--json", "-c", config_arg]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["state"], cluster.url().as_str());
    let hook = status["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["connector"] == "hook")
        .expect("the webhook's queue");
    assert_eq!(hook["delivered"], 5, "{status}");

    let (code, stdout, stderr) = run_cli(&["check", "--online", "-c", config_arg]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("schema current"), "{stdout}");
    for output in [&stdout, &stderr] {
        assert!(!output.contains(PASSWORD), "the password is never shown");
    }
    assert_eq!(daemon.terminate(Duration::from_secs(15)), Some(0));
}

#[test]
fn a_state_url_with_a_password_is_refused_naming_password_file_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-Zq81";
    for url in [
        format!("postgres://clairo_sync:{secret}@db.example.com/clairo_sync"),
        format!(
            "postgresql://clairo_sync@db.example.com/clairo_sync?sslmode=require&password={secret}"
        ),
    ] {
        let config = write(
            dir.path(),
            "clairo-sync.toml",
            &format!("[clairo]\napi_key = \"clr_test_key_123\"\n\n[state]\nurl = \"{url}\"\n"),
        );
        let config_arg = config.to_str().unwrap();
        for command in [
            &["check", "-c", config_arg][..],
            &["run", "-c", config_arg],
            &["status", "-c", config_arg],
        ] {
            let (code, stdout, stderr) = run_cli(command);
            assert_eq!(code, 78, "{command:?}: {stdout}\n{stderr}");
            assert!(stderr.contains("state.url"), "{command:?}: {stderr}");
            assert!(
                stderr.contains("state.password_file"),
                "{command:?}: {stderr}"
            );
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{command:?} echoed the password: {stdout}\n{stderr}"
            );
        }
    }
}

#[test]
fn a_state_url_that_is_not_postgresql_names_the_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "clairo-sync.toml",
        "[clairo]\napi_key = \"clr_test_key_123\"\n\n[state]\nurl = \"mysql://clairo@db.example.com/clairo\"\n",
    );
    let (code, _, stderr) = run_cli(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("state.url") && stderr.contains("postgres://"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_online_says_plainly_when_the_password_is_wrong_or_the_server_is_down() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-password-7Yw";
    let config = write(
        dir.path(),
        "clairo-sync.toml",
        "[clairo]\napi_key = \"clr_test_key_123\"\nbase_url = \"http://127.0.0.1:9/api/v1\"\n\n[state]\n",
    );
    use_postgres(&config, &cluster.url(), wrong);
    let (code, stdout, stderr) = run_cli(&["check", "--online", "-c", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("refused the password") && stderr.contains("state.password_file"),
        "{stderr}"
    );
    assert!(
        !stdout.contains(wrong) && !stderr.contains(wrong),
        "{stderr}"
    );

    let url = cluster.url();
    drop(cluster);
    let config = write(
        dir.path(),
        "clairo-sync.toml",
        "[clairo]\napi_key = \"clr_test_key_123\"\nbase_url = \"http://127.0.0.1:9/api/v1\"\n\n[state]\n",
    );
    use_postgres(&config, &url, PASSWORD);
    let (code, _, stderr) = run_cli(&["check", "--online", "-c", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot be reached"), "{stderr}");
}

#[tokio::test]
async fn a_running_store_whose_server_stops_says_it_cannot_be_reached() {
    let cluster = PgCluster::start();
    let store = clairo_sync::store::Store::connect(&cluster.url(), Some(PASSWORD))
        .await
        .unwrap();
    store
        .check_writable()
        .await
        .expect("writable while the server runs");
    drop(cluster);
    let error = store
        .check_writable()
        .await
        .expect_err("the server is gone")
        .to_string();
    assert!(
        error.contains("state.url") && error.contains("PostgreSQL"),
        "{error}"
    );
}

/// `GET /briefs` requests `sandbox` has seen: each one a poll of the briefs source.
pub(crate) fn brief_polls(sandbox: &clairo_sandbox::Sandbox) -> usize {
    sandbox
        .stats()
        .log
        .iter()
        .filter(|request| request.endpoint == "GET /briefs")
        .count()
}

/// A daemon config on `cluster` as instance `name`, polling its own `sandbox` (so each
/// sandbox's request log tells which instance polled), with a 3 s source lease.
fn instance_config(
    dir: &Path,
    cluster: &PgCluster,
    sandbox: &clairo_sandbox::Sandbox,
    receiver: &Receiver,
    name: &str,
) -> PathBuf {
    let config = daemon_config(dir, sandbox, receiver, "");
    use_postgres(&config, &cluster.url(), PASSWORD);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[state]\n",
        &format!("[state]\ninstance = \"{name}\"\nlease = \"3s\"\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    config
}

pub(crate) async fn wait_until(
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_database_poll_each_source_once_and_the_survivor_takes_over_after_a_kill()
 {
    const LEASE: Duration = Duration::from_secs(3);
    const PERIOD: Duration = Duration::from_secs(2);
    let cluster = PgCluster::start();
    let receiver = Receiver::start().await;
    let (sandbox_a, sandbox_b) = (sandbox(0, 0).await, sandbox(0, 0).await);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config_a = instance_config(dir_a.path(), &cluster, &sandbox_a, &receiver, "a");
    let config_b = instance_config(dir_b.path(), &cluster, &sandbox_b, &receiver, "b");

    let mut a = Daemon::start(&config_a);
    wait_until(Duration::from_secs(30), || brief_polls(&sandbox_a) > 0)
        .await
        .expect("instance a polls");
    let _b = Daemon::start(&config_b);
    // b is up, and a renews its lease many times over meanwhile.
    let (code, stdout, stderr) = run_cli(&["status", "--json", "-c", config_b.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    tokio::time::sleep(LEASE * 3).await;
    let polls_a = brief_polls(&sandbox_a);
    assert!(polls_a >= 4, "a keeps polling on its schedule: {polls_a}");
    assert_eq!(
        brief_polls(&sandbox_b),
        0,
        "b never polls while a holds the lease"
    );
    let (code, stdout2, _) = run_cli(&["status", "--json", "-c", config_b.to_str().unwrap()]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout2).unwrap();
    let instances = status["instances"].as_array().expect("instances listed");
    let names: Vec<&str> = instances
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "{stdout}\n{stdout2}");
    assert_eq!(instances[0]["sources"], serde_json::json!(["briefs"]));
    assert_eq!(instances[1]["sources"], serde_json::json!([]));

    a.kill9();
    let taken_over = wait_until(Duration::from_secs(30), || brief_polls(&sandbox_b) > 0)
        .await
        .expect("b takes the source over");
    // Lease + one schedule period, with a second for two processes on a busy machine.
    assert!(
        taken_over <= LEASE + PERIOD + Duration::from_secs(1),
        "b's first poll came {taken_over:?} after a was killed"
    );
    eprintln!("failover: b's first poll {taken_over:?} after SIGKILL of a");
    let settled = brief_polls(&sandbox_a);
    tokio::time::sleep(PERIOD * 2).await;
    assert_eq!(brief_polls(&sandbox_a), settled, "a is dead");
    assert!(brief_polls(&sandbox_b) >= 2, "b polls on its schedule now");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_password_comes_from_the_credential_and_status_before_the_first_start_says_no_state_yet()
 {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    write(&credentials, "state-password", PASSWORD);
    let config = write(
        dir.path(),
        "clairo-sync.toml",
        &format!(
            "[clairo]\napi_key = \"clr_test_key_123\"\n\n[state]\nurl = \"{}\"\n",
            cluster.url()
        ),
    );
    let output = std::process::Command::new(crate::support::bin())
        .args(["status", "-c", config.to_str().unwrap()])
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no state yet") && stderr.contains("first start"),
        "the credential's password is accepted and the empty database told: {stderr}"
    );
}

#[test]
fn state_keys_that_cannot_work_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (state, key) in [
        (
            "password_file = \"/etc/clairo-sync/pw\"\n",
            "state.password_file",
        ),
        (
            "url = \"postgres://u@db/x\"\nlease = \"1s\"\n",
            "state.lease",
        ),
        (
            "url = \"postgres://u@db/x\"\ninstance = \"\"\n",
            "state.instance",
        ),
    ] {
        let config = write(
            dir.path(),
            "clairo-sync.toml",
            &format!("[clairo]\napi_key = \"clr_test_key_123\"\n\n[state]\n{state}"),
        );
        let (code, _, stderr) = run_cli(&["check", "-c", config.to_str().unwrap()]);
        assert_eq!(code, 78, "{state}: {stderr}");
        assert!(stderr.contains(key), "{state}: {stderr}");
    }
}
