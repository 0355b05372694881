//! Fault injection: the real daemon under kill -9, a failing and malformed Clairo API, a
//! receiver that goes away, and a state disk that fills up. Whatever happens, no event is
//! lost, and a repeated delivery carries the same event id and the same data.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clairo_connectors::{EventType, event_id};
use clairo_sandbox::Faults;
use rand::Rng as _;

use crate::support::{
    ClosableReceiver, Daemon, LoggedDaemon, Received, Receiver, daemon_config, enable_http, metric,
    run_cli, sandbox,
};

/// The event ids the daemon must deliver for these briefs (ids are derived, so a test can
/// know them in advance).
fn expected_ids(brief_ids: &[String]) -> BTreeSet<String> {
    brief_ids
        .iter()
        .map(|id| event_id(EventType::BriefCreated, id))
        .collect()
}

fn distinct_ids(received: &[Received]) -> BTreeSet<String> {
    received.iter().map(|request| request.id.clone()).collect()
}

/// Every copy of an event has the envelope id of its `webhook-id` and the same data, and
/// one brief never shows up under two event ids.
fn assert_duplicates_are_true_repeats(delivered: &[Received]) {
    let mut by_id: HashMap<&str, Vec<serde_json::Value>> = HashMap::new();
    for request in delivered {
        by_id.entry(&request.id).or_default().push(request.json());
    }
    let mut event_of_brief: HashMap<String, String> = HashMap::new();
    for (id, copies) in &by_id {
        for copy in copies {
            assert_eq!(
                copy["id"], *id,
                "a copy carries its webhook-id as the event id"
            );
            assert_eq!(
                copy["data"], copies[0]["data"],
                "every copy of {id} carries the same data"
            );
        }
        let brief = copies[0]["data"]["id"]
            .as_str()
            .expect("a brief id")
            .to_owned();
        if let Some(other) = event_of_brief.insert(brief.clone(), (*id).to_owned()) {
            panic!("brief {brief} was delivered under two event ids: {other} and {id}");
        }
    }
}

/// The dead deliveries `deliveries list --dead --json` shows.
fn dead_deliveries(config: &Path) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = run_cli(&[
        "deliveries",
        "list",
        "--dead",
        "--json",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str::<serde_json::Value>(&stdout)
        .unwrap_or_else(|error| panic!("{error}: {stdout}"))
        .as_array()
        .expect("a list")
        .clone()
}

/// Polls `url` until it answers `want` (or `within` passes); returns the last answer.
async fn wait_for_status(url: &str, want: u16, within: Duration) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let response = crate::support::get(url)
            .await
            .expect("the endpoint answers");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status == want || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The JSONL archive's event ids; every line must be a whole JSON envelope.
fn archive_ids(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("a torn archive line ({error}): {line:?}"));
            event["id"].as_str().expect("an event id").to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_nothing_and_repeats_only_under_the_same_id() {
    const BRIEFS: usize = 200;
    const KILLS: usize = 6;
    let sandbox = sandbox(0, 0).await;
    let expected = expected_ids(&sandbox.add_briefs(BRIEFS));
    let receiver = Receiver::start().await;
    // Slow enough that 200 deliveries take several seconds, so the kills land mid-stream.
    receiver.delay(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[delivery]\nlease = \"5s\"\nconcurrency = 2\n",
    );
    let pauses: Vec<u64> = {
        let mut rng = rand::rng();
        (0..KILLS).map(|_| rng.random_range(0..=1500)).collect()
    };
    eprintln!("kill -9 this long after each run's first new delivery (ms): {pauses:?}");
    let mut at_kill = Vec::new();
    for pause in pauses {
        let before = distinct_ids(&receiver.delivered()).len();
        let mut daemon = Daemon::start(&config);
        // Each run first delivers something new, so every kill interrupts real work.
        receiver
            .wait_for_delivered(before + 1, Duration::from_secs(30))
            .await;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        daemon.kill9();
        at_kill.push(distinct_ids(&receiver.delivered()).len());
    }
    eprintln!("distinct events delivered at each kill: {at_kill:?}");
    assert!(
        at_kill.windows(2).all(|pair| pair[0] < pair[1]),
        "every run made progress before its kill: {at_kill:?}"
    );
    assert!(
        at_kill[KILLS - 1] < BRIEFS,
        "the last kill landed mid-delivery: {at_kill:?}"
    );

    let _daemon = Daemon::start(&config);
    let delivered = receiver
        .wait_for_delivered(BRIEFS, Duration::from_secs(90))
        .await;
    assert_eq!(
        distinct_ids(&delivered),
        expected,
        "every brief delivered, none invented"
    );
    assert_duplicates_are_true_repeats(&delivered);
    let duplicates = delivered.len() - BRIEFS;
    eprintln!("{duplicates} repeated deliveries, all under their first event id");

    // The file connector went through the same kills: whole lines, every event.
    let archive = dir.path().join("events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while archive_ids(&archive).len() < BRIEFS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(archive_ids(&archive), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_latency_and_malformed_items_still_deliver_each_valid_brief_exactly_once() {
    const BRIEFS: usize = 20;
    const MALFORMED: usize = 3;
    let sandbox = sandbox(0, 0).await;
    let expected = expected_ids(&sandbox.add_briefs(BRIEFS));
    sandbox.set_faults(Faults {
        error_rate: 0.2,
        latency_ms: 300,
        malformed_items: MALFORMED,
        ..Faults::default()
    });
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    enable_http(&config);
    let mut daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    receiver
        .wait_for_delivered(BRIEFS, Duration::from_secs(90))
        .await;
    // More poll runs under the same faults: nothing else may arrive.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let received = receiver.received();
    assert_eq!(
        distinct_ids(&received),
        expected,
        "every valid brief, and no malformed one"
    );
    assert_eq!(received.len(), BRIEFS, "each exactly once");
    let stats = sandbox.stats();
    let errors = stats.by_status.get(&500).copied().unwrap_or(0);
    assert!(
        errors > 0,
        "the sandbox injected 500s: {:?}",
        stats.by_status
    );
    let skipped = metric(
        &address,
        "clairo_sync_items_skipped_total{source=\"briefs\"}",
    )
    .await
    .expect("the skipped-items metric");
    assert!(
        skipped >= MALFORMED as f64,
        "malformed items counted: {skipped}"
    );
    assert!(
        daemon
            .log()
            .iter()
            .any(|line| line.contains("Skipped an item")),
        "and logged"
    );
    assert!(
        daemon.daemon.child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    let health = crate::support::get(format!("http://{address}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    eprintln!(
        "{} API requests, {errors} answered 500, {skipped} items skipped",
        stats.requests
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_refuses_connections_for_a_while_gets_everything_and_nothing_dies() {
    const BRIEFS: usize = 20;
    let sandbox = sandbox(0, 0).await;
    let expected = expected_ids(&sandbox.add_briefs(BRIEFS));
    let mut hook = ClosableReceiver::start().await;
    hook.receiver.delay(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    // About 12 s of retries in all: a 4-second outage is well inside it.
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &hook.receiver,
        "[delivery]\nconcurrency = 2\nretry_schedule = [\"300ms\", \"500ms\", \"1s\", \"1s\", \"2s\", \"2s\", \"2s\", \"3s\"]\n",
    );
    let daemon = LoggedDaemon::start(&config, &[]);
    hook.receiver
        .wait_for_delivered(3, Duration::from_secs(30))
        .await;
    hook.close().await;
    let during = hook.receiver.received().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        hook.receiver.received().len(),
        during,
        "nothing gets through a closed port"
    );
    assert!(
        daemon
            .log()
            .iter()
            .any(|line| line.contains("will retry") && line.contains("could not connect")),
        "refused connections are retried"
    );
    assert!(
        distinct_ids(&hook.receiver.delivered()).len() < BRIEFS,
        "the outage came mid-stream"
    );
    hook.open();
    let delivered = hook
        .receiver
        .wait_for_delivered(BRIEFS, Duration::from_secs(60))
        .await;
    assert_eq!(distinct_ids(&delivered), expected);
    assert_duplicates_are_true_repeats(&delivered);
    assert_eq!(
        dead_deliveries(&config),
        Vec::<serde_json::Value>::new(),
        "none dead"
    );
}

/// A tmpfs mounted for one test, unmounted (lazily, so a straggler cannot block it) when
/// dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Needs root (CAP_SYS_ADMIN), as the project's machines and CI have.
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "clairo-sync-test",
            ])
            .arg(path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if output.status.success() {
            Ok(Self {
                path: path.to_owned(),
            })
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Writes a file until the file system says it is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0xA5u8; 64 * 1024];
        // Bounded: the mount is a few MiB, so this ends long before the count does.
        for _ in 0..100_000 {
            if let Err(error) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
                assert_eq!(error.raw_os_error(), Some(28), "ENOSPC, not {error}");
                // Whatever is left is less than a chunk: take it byte-sized too.
                for _ in 0..64 * 1024 {
                    if file.write_all(&[0xA5]).is_err() {
                        break;
                    }
                }
                return path;
            }
        }
        panic!("{} never filled up", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_disk_stops_new_work_with_a_clear_error_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let disk = match Tmpfs::mount(&state_dir, "8m") {
        Ok(disk) => disk,
        // Making a full disk needs a tmpfs mount, so root (the project's machines, CI).
        // A test that cannot run says so by failing, never by passing unseen.
        Err(error) if !is_root() => {
            panic!("this test mounts a tmpfs and must run as root ({error})")
        }
        Err(error) => panic!("cannot mount a tmpfs as root: {error}"),
    };
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[delivery]\nlease = \"5s\"\nretry_schedule = [\"300ms\", \"1s\", \"2s\", \"2s\", \"2s\"]\n",
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("path = \"{}\"", dir.path().join("state.db").display()),
        &format!("path = \"{}\"", state_dir.join("state.db").display()),
    );
    std::fs::write(&config, text).unwrap();
    enable_http(&config);
    let mut daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    let readyz = format!("http://{address}/readyz");
    let mut brief_ids = sandbox.add_briefs(2);
    receiver
        .wait_for_delivered(2, Duration::from_secs(30))
        .await;
    assert_eq!(
        distinct_ids(&receiver.delivered()).len(),
        2,
        "works on the small disk"
    );

    let filler = disk.fill();
    sandbox.reset_stats();
    brief_ids.extend(sandbox.add_briefs(20));
    let expected = expected_ids(&brief_ids);
    let full = daemon
        .wait_for_line("disk is full", Duration::from_secs(30))
        .await
        .expect("the log says the disk is full");
    eprintln!("while full: {full}");
    let while_full = distinct_ids(&receiver.delivered()).len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        daemon.daemon.child.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    let still_full = distinct_ids(&receiver.delivered()).len();
    let requests_while_full = sandbox.stats().by_endpoint;
    eprintln!(
        "events delivered when the disk filled: {while_full}; 4 s later: {still_full} of {}; API requests meanwhile: {requests_while_full:?}",
        expected.len()
    );
    assert!(
        still_full < expected.len(),
        "new work waits while the disk is full"
    );
    let (status, body) = wait_for_status(&readyz, 503, Duration::from_secs(10)).await;
    assert_eq!(status, 503, "not ready while the disk is full: {body}");
    assert!(
        body.contains("state_db") && body.contains("full"),
        "readiness names the full disk: {body}"
    );

    std::fs::remove_file(&filler).unwrap();
    let delivered = receiver
        .wait_for_delivered(expected.len(), Duration::from_secs(60))
        .await;
    assert_eq!(
        distinct_ids(&delivered),
        expected,
        "everything delivered once space returned"
    );
    assert_duplicates_are_true_repeats(&delivered);
    let (status, body) = wait_for_status(&readyz, 200, Duration::from_secs(20)).await;
    assert_eq!(status, 200, "ready again once space returned: {body}");
    let _ = daemon.daemon.terminate(Duration::from_secs(15));
    assert_eq!(
        dead_deliveries(&config),
        Vec::<serde_json::Value>::new(),
        "none dead"
    );
}
