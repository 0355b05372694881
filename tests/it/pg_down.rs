//! When the state database is not there (docs/operations.md, "When the database is not
//! there"): the daemon on a real PostgreSQL (tests/it/pg.rs) that is stopped, restarted,
//! made read-only, refuses the password or holds a schema newer than the binary. The
//! daemon stays up, says why on /readyz and in one log line per change, polls nothing it
//! could not record, loses nothing, and resumes by itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clairo_sandbox::Sandbox;

use crate::pg::{PASSWORD, PgCluster};
use crate::state::{brief_polls, use_postgres};
use crate::support::{
    LoggedDaemon, Receiver, daemon_config, enable_http, metric, readyz, run_cli, sandbox,
};

/// A bound on what the daemon does within seconds (its retries wait at most 30 s), on a
/// loaded machine: a deadline, not a speed claim.
const WITHIN: Duration = Duration::from_secs(90);

/// The briefs are polled every 2 s (`daemon_config`): three periods without a poll is
/// "polls nothing".
const QUIET: Duration = Duration::from_secs(6);

/// A daemon config on `cluster` with `password`, /readyz served on a free port.
fn pg_config(
    dir: &Path,
    cluster: &PgCluster,
    sandbox: &Sandbox,
    receiver: &Receiver,
    password: &str,
    extra: &str,
) -> PathBuf {
    let config = daemon_config(dir, sandbox, receiver, extra);
    use_postgres(&config, &cluster.url(), password);
    enable_http(&config);
    config
}

/// Waits until /readyz answers 200.
/// A daemon on a fresh cluster with `briefs` briefs waiting, ready: what most cases start
/// from before they take the database away.
struct Running {
    cluster: PgCluster,
    sandbox: Sandbox,
    briefs: Vec<String>,
    receiver: Receiver,
    /// Holds the config and the archive; removed with the case.
    dir: tempfile::TempDir,
    config: PathBuf,
    daemon: LoggedDaemon,
    address: String,
}

async fn running(briefs: usize) -> Running {
    let cluster = PgCluster::start();
    let sandbox = sandbox(0, 0).await;
    let briefs = sandbox.add_briefs(briefs);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = pg_config(dir.path(), &cluster, &sandbox, &receiver, PASSWORD, "");
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    wait_ready(&address).await;
    Running {
        cluster,
        sandbox,
        briefs,
        receiver,
        dir,
        config,
        daemon,
        address,
    }
}

async fn wait_ready(address: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let (status, body) = readyz(address).await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the daemon's own watch of the database adds to each problem it finds (a failed
/// check by /readyz itself does not say it).
const WAITING: &str = "tries again by itself";

/// Waits until /readyz is 503 with the daemon's `state_db` problem, its reason containing
/// `needle`; returns the reason.
async fn wait_state_problem(address: &str, needle: &str) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let (status, body) = readyz(address).await;
        if status == 503
            && let Some(reason) = body["failing"]["state_db"].as_str()
            && reason.contains(needle)
            && reason.contains(WAITING)
        {
            return reason.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said {needle:?} about the state database: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the daemon has recorded `count` deliveries to the webhook as delivered
/// (the counter moves only once the outcome is in the database).
async fn wait_recorded_delivered(address: &str, count: usize) {
    let series = "clairo_sync_deliveries_total{connector=\"hook\",outcome=\"delivered\"}";
    let deadline = Instant::now() + WITHIN;
    while metric(address, series).await.unwrap_or(0.0) < count as f64 {
        assert!(
            Instant::now() < deadline,
            "{count} deliveries were never recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The daemon's log lines that contain `needle`.
fn lines_with(daemon: &LoggedDaemon, needle: &str) -> Vec<String> {
    daemon
        .log()
        .into_iter()
        .filter(|line| line.contains(needle))
        .collect()
}

/// Asserts that each of `briefs` reached the webhook (at least once) and returns how many
/// requests carried each.
fn deliveries_per_brief(receiver: &Receiver, briefs: &[String]) -> Vec<usize> {
    let delivered = receiver.delivered();
    briefs
        .iter()
        .map(|brief| {
            let count = delivered
                .iter()
                .filter(|request| String::from_utf8_lossy(&request.body).contains(brief.as_str()))
                .count();
            assert!(count >= 1, "brief {brief} was never delivered");
            count
        })
        .collect()
}

/// The reasons the daemon logged about the state database, in order: each a change (a
/// retry that meets the same problem logs nothing).
fn assert_one_line_per_change(daemon: &LoggedDaemon) {
    let reasons: Vec<String> = lines_with(daemon, "The state database")
        .iter()
        .filter_map(|line| Some(line.split_once("error=")?.1.to_owned()))
        .collect();
    assert!(!reasons.is_empty(), "the problem was logged");
    for pair in reasons.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "the same problem logged twice: {reasons:#?}"
        );
    }
}

fn still_running(daemon: &mut LoggedDaemon) {
    assert!(
        matches!(daemon.daemon.child.try_wait(), Ok(None)),
        "the daemon is still running"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_started_while_postgresql_is_down_stays_up_unready_and_delivers_once_it_is_back() {
    let cluster = PgCluster::start();
    cluster.stop();
    let sandbox = sandbox(0, 0).await;
    let briefs = sandbox.add_briefs(3);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = pg_config(dir.path(), &cluster, &sandbox, &receiver, PASSWORD, "");

    let mut daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    let reason = wait_state_problem(&address, "cannot be reached").await;
    assert!(reason.contains("127.0.0.1"), "{reason}");
    let status = crate::support::get(format!("http://{address}/healthz"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "alive while the database is away");
    assert_eq!(
        metric(&address, "clairo_sync_state_up").await,
        Some(0.0),
        "the gauge says the state is down"
    );
    tokio::time::sleep(QUIET).await;
    still_running(&mut daemon);
    assert_eq!(
        brief_polls(&sandbox),
        0,
        "nothing polled that could not be recorded"
    );
    let said = lines_with(&daemon, "The state database cannot be used");
    assert_eq!(
        said.len(),
        1,
        "one line for the problem, not one per retry: {said:?}"
    );
    assert!(said[0].contains("cannot be reached"), "{}", said[0]);
    assert_one_line_per_change(&daemon);

    cluster.restart();
    wait_ready(&address).await;
    receiver.wait_for_delivered(3, WITHIN).await;
    assert_eq!(deliveries_per_brief(&receiver, &briefs), [1, 1, 1]);
    assert!(
        !lines_with(&daemon, "Reached the state database").is_empty(),
        "the log says it got through"
    );
    assert_eq!(metric(&address, "clairo_sync_state_up").await, Some(1.0));
    assert_eq!(daemon.daemon.terminate(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_whose_postgresql_stops_mid_run_polls_nothing_meanwhile_and_loses_nothing() {
    let Running {
        cluster,
        sandbox,
        mut briefs,
        receiver,
        dir: _dir,
        config: _,
        mut daemon,
        address,
    } = running(3).await;
    wait_recorded_delivered(&address, 3).await;

    cluster.stop();
    // New briefs while the database is away: seen only once it is back.
    briefs.extend(sandbox.add_briefs(3));
    wait_state_problem(&address, "").await;
    let polls = brief_polls(&sandbox);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        brief_polls(&sandbox),
        polls,
        "no poll while the database cannot record it"
    );
    still_running(&mut daemon);
    let stopped = lines_with(&daemon, "The state database stopped recording");
    assert_eq!(stopped.len(), 1, "{stopped:?}");

    cluster.restart();
    wait_ready(&address).await;
    receiver.wait_for_delivered(6, WITHIN).await;
    assert_eq!(
        deliveries_per_brief(&receiver, &briefs),
        [1, 1, 1, 1, 1, 1],
        "every brief, old and new, exactly once"
    );
    assert!(
        !lines_with(&daemon, "The state database records again").is_empty(),
        "the log says it resumed"
    );
    assert_one_line_per_change(&daemon);
    assert_eq!(daemon.daemon.terminate(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_whose_outcome_could_not_be_recorded_is_sent_again_not_lost() {
    let cluster = PgCluster::start();
    let sandbox = sandbox(0, 0).await;
    let briefs = sandbox.add_briefs(1);
    let receiver = Receiver::start().await;
    // The webhook holds each request a while: the database goes away meanwhile.
    receiver.delay(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let config = pg_config(
        dir.path(),
        &cluster,
        &sandbox,
        &receiver,
        PASSWORD,
        "[delivery]\nlease = \"10s\"\nshutdown_timeout = \"30s\"\n",
    );
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    // The file connector has written the event: the webhook's attempt is in flight.
    let archive = dir.path().join("events.jsonl");
    crate::support::eventually("the event is recorded and in flight", || {
        std::fs::read_to_string(&archive).is_ok_and(|text| !text.is_empty())
    })
    .await;
    cluster.stop();
    daemon
        .wait_for_line("Cannot record a delivery attempt", WITHIN)
        .await
        .expect("the attempt's outcome could not be recorded");
    assert_eq!(
        receiver.delivered().len(),
        1,
        "the receiver got it once so far"
    );

    cluster.restart();
    wait_ready(&address).await;
    let deadline = Instant::now() + WITHIN;
    while receiver.delivered().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the unrecorded delivery was not sent again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = receiver.delivered();
    assert_eq!(
        delivered[0].id, delivered[1].id,
        "the same event again, so the receiver can drop the repeat"
    );
    assert_eq!(deliveries_per_brief(&receiver, &briefs), [2]);
    wait_recorded_delivered(&address, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_password_keeps_the_daemon_unready_without_showing_it_until_the_server_accepts_it()
 {
    let cluster = PgCluster::start();
    let sandbox = sandbox(0, 0).await;
    let briefs = sandbox.add_briefs(2);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let other = "other-password-Kq27";
    let config = pg_config(dir.path(), &cluster, &sandbox, &receiver, other, "");
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    let reason = wait_state_problem(&address, "refused the password").await;
    assert!(reason.contains("state.password_file"), "{reason}");
    let said = daemon
        .wait_for_line("refused the password", WITHIN)
        .await
        .expect("the log says the password was refused");
    assert!(said.contains("The state database cannot be used"), "{said}");
    tokio::time::sleep(QUIET).await;
    assert_eq!(brief_polls(&sandbox), 0);
    assert!(
        daemon.log().iter().all(|line| !line.contains(other)) && !reason.contains(other),
        "the password is never shown"
    );

    // The server's side is fixed: the daemon gets in by itself.
    cluster.sql(&[&format!(
        "ALTER ROLE {} PASSWORD '{other}'",
        crate::pg::USER
    )]);
    wait_ready(&address).await;
    receiver.wait_for_delivered(2, WITHIN).await;
    assert_eq!(deliveries_per_brief(&receiver, &briefs), [1, 1]);
    assert!(daemon.log().iter().all(|line| !line.contains(other)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_database_stops_polling_is_named_by_check_and_resumes_when_writable_again() {
    let Running {
        cluster,
        sandbox,
        mut briefs,
        receiver,
        dir: _dir,
        config,
        mut daemon,
        address,
    } = running(2).await;
    wait_recorded_delivered(&address, 2).await;

    // As a primary turned standby, or an operator's switch: every session, the daemon's
    // open ones too, is read-only from the reload on.
    cluster.sql(&[
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    ]);
    briefs.extend(sandbox.add_briefs(2));
    let reason = wait_state_problem(&address, "takes no writes").await;
    assert!(
        reason.contains("point state.url at the primary"),
        "{reason}"
    );
    let polls = brief_polls(&sandbox);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        brief_polls(&sandbox),
        polls,
        "no poll into a read-only database"
    );
    still_running(&mut daemon);
    let (code, stdout, stderr) = run_cli(&["check", "--online", "-c", config.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    assert!(stderr.contains("takes no writes"), "{stderr}");

    cluster.sql(&[
        "SET default_transaction_read_only = off",
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
    ]);
    wait_ready(&address).await;
    receiver.wait_for_delivered(4, WITHIN).await;
    assert_eq!(deliveries_per_brief(&receiver, &briefs), [1, 1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_newer_than_the_binary_keeps_the_daemon_unready_asking_for_an_upgrade() {
    let cluster = PgCluster::start();
    // Migrated by this binary, then by a "newer" one.
    clairo_sync::store::Store::connect(&cluster.url(), Some(PASSWORD))
        .await
        .unwrap()
        .close()
        .await;
    cluster.sql(&["INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (29991231000000, 'from a newer clairo-sync', true, '\\x00', 0)"]);
    let sandbox = sandbox(1, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = pg_config(dir.path(), &cluster, &sandbox, &receiver, PASSWORD, "");

    let (code, _, stderr) = run_cli(&["check", "--online", "-c", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("newer than this clairo-sync") && stderr.contains("upgrade clairo-sync"),
        "{stderr}"
    );

    let mut daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    let reason = wait_state_problem(&address, "upgrade clairo-sync").await;
    assert!(reason.contains("newer than this clairo-sync"), "{reason}");
    daemon
        .wait_for_line("upgrade clairo-sync", WITHIN)
        .await
        .expect("the log asks for an upgrade");
    tokio::time::sleep(QUIET).await;
    still_running(&mut daemon);
    assert_eq!(brief_polls(&sandbox), 0);
    assert!(receiver.received().is_empty());
    let applied =
        cluster.sql(&["SELECT count(*) FROM _sqlx_migrations WHERE version = 29991231000000"]);
    assert_eq!(applied, "1", "the newer schema is left as it is");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_is_named_by_check_and_the_daemon_waits_until_it_is_created() {
    let cluster = PgCluster::start();
    let sandbox = sandbox(0, 0).await;
    let briefs = sandbox.add_briefs(1);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let url = format!(
        "{}/clairo_sync_state",
        cluster.url().rsplit_once('/').unwrap().0
    );
    use_postgres(&config, &url, PASSWORD);
    enable_http(&config);

    let (code, _, stderr) = run_cli(&["check", "--online", "-c", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("the database does not exist") && stderr.contains("createdb"),
        "{stderr}"
    );

    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    wait_state_problem(&address, "the database does not exist").await;
    cluster.sql(&["CREATE DATABASE clairo_sync_state"]);
    wait_ready(&address).await;
    receiver.wait_for_delivered(1, WITHIN).await;
    assert_eq!(deliveries_per_brief(&receiver, &briefs), [1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_fixed_in_its_file_is_used_after_a_reload() {
    let cluster = PgCluster::start();
    let sandbox = sandbox(0, 0).await;
    let briefs = sandbox.add_briefs(1);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "stale-password-Vb40";
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let password_file = use_postgres(&config, &cluster.url(), wrong);
    enable_http(&config);
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    wait_state_problem(&address, "refused the password").await;

    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    daemon.signal("HUP");
    wait_ready(&address).await;
    receiver.wait_for_delivered(1, WITHIN).await;
    assert_eq!(deliveries_per_brief(&receiver, &briefs), [1]);
    assert!(
        daemon
            .log()
            .iter()
            .all(|line| !line.contains(wrong) && !line.contains(PASSWORD)),
        "no password in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_state_that_cannot_be_opened_still_fails_the_start() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    // The state's directory is a regular file: nothing can be opened in it, root or not.
    let blocker = crate::support::write(dir.path(), "not-a-directory", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("path = \"{}\"", dir.path().join("state.db").display()),
        &format!("path = \"{}\"", blocker.join("state.db").display()),
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = LoggedDaemon::start(&config, &[]);
    let deadline = Instant::now() + WITHIN;
    let status = loop {
        if let Some(status) = daemon.daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a SQLite state that cannot be opened does not keep the daemon waiting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1));
    let said = daemon
        .wait_for_line("cannot open the state database", Duration::from_secs(5))
        .await;
    assert!(said.is_some(), "{:#?}", daemon.log());
    assert!(
        lines_with(&daemon, "The state database").is_empty(),
        "nothing of the PostgreSQL watch on SQLite"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quick_restart_of_postgresql_under_load_loses_nothing() {
    // What a failover looks like from here: every open connection is cut, and the server
    // at the same address answers again a moment later.
    let Running {
        cluster,
        sandbox,
        mut briefs,
        receiver,
        dir: _dir,
        config: _,
        daemon: _daemon,
        address,
    } = running(3).await;
    receiver.wait_for_delivered(3, WITHIN).await;
    for _ in 0..3 {
        briefs.extend(sandbox.add_briefs(2));
        cluster.stop();
        cluster.restart();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    receiver.wait_for_delivered(briefs.len(), WITHIN).await;
    let per_brief = deliveries_per_brief(&receiver, &briefs);
    eprintln!("deliveries per brief across three restarts: {per_brief:?}");
    wait_ready(&address).await;
    wait_recorded_delivered(&address, briefs.len()).await;
}
