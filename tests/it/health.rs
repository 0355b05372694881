//! What operators watch: /metrics, /healthz, /readyz, systemd notifications, SIGHUP.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{LoggedDaemon, Receiver, daemon_config, enable_http, metric, sandbox, write};

const CONTRACT_METRICS: [&str; 14] = [
    "clairo_sync_api_requests_total",
    "clairo_sync_api_rate_limit_remaining",
    "clairo_sync_api_throttled_total",
    "clairo_sync_poll_runs_total",
    "clairo_sync_last_success_timestamp_seconds",
    "clairo_sync_events_total",
    "clairo_sync_deliveries_total",
    "clairo_sync_delivery_queue_depth",
    "clairo_sync_delivery_oldest_pending_seconds",
    "clairo_sync_delivery_latency_seconds",
    "clairo_sync_meeting_uploads_total",
    "clairo_sync_items_skipped_total",
    "clairo_sync_build_info",
    "clairo_sync_state_up",
];

fn with_http(extra: &str) -> String {
    format!("{extra}\n")
}

async fn get(url: &str, accept: Option<&str>) -> (u16, String) {
    let client = crate::support::http();
    let mut request = client.get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("the endpoint answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn wait_for_status(url: &str, want: u16, within: Duration) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(url, None).await;
        if status == want || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_sync_metrics_hold_every_contract_name_and_pass_promtool() {
    let sandbox = sandbox(3, 2).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        &with_http("[sync.conversations]\nschedule = \"*/2 * * * * *\""),
    );
    enable_http(&config);
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    receiver
        .wait_for_delivered(5, Duration::from_secs(30))
        .await;
    for source in ["source=\"briefs\"", "source=\"conversations\""] {
        let needle = format!("Poll run finished. {source}");
        daemon
            .wait_for_line(&needle, Duration::from_secs(20))
            .await
            .expect("both sources ran");
    }
    let (status, classic) = get(&format!("http://{address}/metrics"), None).await;
    assert_eq!(status, 200);
    for name in CONTRACT_METRICS {
        assert!(
            classic.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{classic}"
        );
    }
    assert!(
        classic.contains("clairo_sync_delivery_latency_seconds_bucket{"),
        "a real histogram:\n{classic}"
    );
    assert!(
        classic.contains("clairo_sync_events_total{type=\"brief.created\"} 3"),
        "{classic}"
    );
    assert!(
        !classic.contains("# EOF"),
        "the classic format has no EOF trailer"
    );
    assert!(!classic.contains("clr_sandbox_key"));
    let (_, openmetrics) = get(
        &format!("http://{address}/metrics"),
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert!(
        openmetrics.trim_end().ends_with("# EOF"),
        "OpenMetrics when asked for it"
    );

    let file = write(dir.path(), "metrics.txt", &classic);
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is installed (Debian package `prometheus`; .ci/run installs it)");
    let complaints = String::from_utf8_lossy(&promtool.stdout).to_string()
        + &String::from_utf8_lossy(&promtool.stderr);
    assert!(
        promtool.status.success(),
        "promtool check metrics failed:\n{complaints}"
    );
    let (status, _) = get(&format!("http://{address}/healthz"), None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_a_rejected_key_and_recovers_after_sighup_with_a_fixed_key_file() {
    let sandbox = sandbox(1, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = write(dir.path(), "api-key", "clr_wrong_key\n");
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "api_key = \"clr_sandbox_key\"",
        &format!("api_key_file = {key_file:?}"),
    );
    std::fs::write(&config, text).unwrap();
    enable_http(&config);
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    let (status, body) = wait_for_status(
        &format!("http://{address}/readyz"),
        503,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["failing"]["api_key"]
            .as_str()
            .unwrap()
            .contains("rejected the API key"),
        "{body}"
    );
    assert!(!body.to_string().contains("clr_wrong_key"));
    let requests_before = sandbox.stats().requests;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sandbox.stats().requests,
        requests_before,
        "polling pauses after a 401 instead of hammering the API"
    );

    write(dir.path(), "api-key", "clr_sandbox_key\n");
    daemon.signal("HUP");
    let (status, body) = wait_for_status(
        &format!("http://{address}/readyz"),
        200,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        receiver
            .wait_for_delivered(1, Duration::from_secs(20))
            .await
            .len(),
        1,
        "the brief flows after the fix"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_config_keeps_the_old_one_running() {
    let sandbox = sandbox(1, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let daemon = LoggedDaemon::start(&config, &[]);
    receiver
        .wait_for_delivered(1, Duration::from_secs(20))
        .await;
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace("[[routes]]", "[[routes]]\nevnts = [\"x\"]"),
    )
    .unwrap();
    daemon.signal("HUP");
    let line = daemon
        .wait_for_line("the new config is invalid", Duration::from_secs(10))
        .await
        .expect("the reload failure is logged");
    assert!(line.contains("routes[0].evnts"), "{line}");
    sandbox.add_briefs(1);
    let delivered = receiver
        .wait_for_delivered(2, Duration::from_secs(20))
        .await;
    assert_eq!(
        delivered.len(),
        2,
        "still polling and delivering on the old config"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_switches_routes_without_a_restart() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let second = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let daemon = LoggedDaemon::start(&config, &[]);
    daemon
        .wait_for_line("clairo-sync is running", Duration::from_secs(20))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&receiver.url, &second.url);
    std::fs::write(&config, text).unwrap();
    daemon.signal("HUP");
    daemon
        .wait_for_line("Reloaded", Duration::from_secs(10))
        .await
        .expect("reloaded");
    sandbox.add_briefs(1);
    assert_eq!(
        second
            .wait_for_delivered(1, Duration::from_secs(20))
            .await
            .len(),
        1
    );
    assert!(
        receiver.received().is_empty(),
        "the old webhook URL is no longer used"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_gets_ready_and_watchdog_pings() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let _daemon = LoggedDaemon::start(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !(seen.contains("READY=1") && seen.contains("WATCHDOG=1")) {
        let Ok(size) = socket.recv(&mut buffer) else {
            break;
        };
        seen.push_str(&String::from_utf8_lossy(&buffer[..size]));
        seen.push('\n');
    }
    assert!(seen.contains("READY=1"), "{seen}");
    assert!(seen.contains("WATCHDOG=1"), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_online_reports_wrong_agents_and_sends_a_signed_test_event() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let support = sandbox.agent_id("SUPPORT");
    let extra = format!(
        "[sync.conversations]\nagents = [\"cm_no_such_agent\"]\n\n[[meetings.folders]]\npath = {inbox:?}\nagent = \"{support}\"\n"
    );
    let config = daemon_config(dir.path(), &sandbox, &receiver, &extra);
    let config_arg = config.to_str().unwrap();
    let (code, _, stderr) = crate::support::run_cli(&["check", "--online", "-c", config_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("sync.conversations.agents[0]: agent cm_no_such_agent does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("meetings.folders[0].agent: agent")
            && stderr.contains("not a MEETING agent"),
        "{stderr}"
    );
    assert!(
        receiver.received().is_empty(),
        "--online alone sends no event"
    );

    let meeting = sandbox.agent_id("MEETING");
    let fixed = std::fs::read_to_string(&config)
        .unwrap()
        .replace("agents = [\"cm_no_such_agent\"]", "agents = []")
        .replace(
            &format!("agent = \"{support}\""),
            &format!("agent = \"{meeting}\""),
        );
    std::fs::write(&config, fixed).unwrap();
    let (code, stdout, stderr) =
        crate::support::run_cli(&["check", "--online", "--send-test", "-c", config_arg]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("connectors.hook: ok"), "{stdout}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "one test event to the webhook");
    assert!(crate::support::signature_is_valid(
        &received[0],
        crate::support::SECRET
    ));
    assert_eq!(received[0].json()["data"]["test"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_log_that_does_not_parse_is_reported_and_the_configs_level_is_used() {
    let sandbox = sandbox(1, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let daemon = LoggedDaemon::start(&config, &[("RUST_LOG", "clairo_sync=loud")]);
    let warning = daemon
        .wait_for_line("RUST_LOG is not a log filter", Duration::from_secs(20))
        .await
        .expect("the bad RUST_LOG is reported");
    assert!(warning.contains("WARN"), "{warning}");
    // The config's level (info, the default) is in force: info lines are logged.
    daemon
        .wait_for_line("Poll run finished.", Duration::from_secs(20))
        .await
        .expect("info lines are logged under the config's level");
}

// The dashboard's "oldest pending" panel: while a receiver refuses deliveries, the age of
// the oldest one waiting climbs; once it takes them, it is back to 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_pending_delivery_ages_while_the_receiver_refuses_and_is_zero_once_it_takes_them()
 {
    let sandbox = sandbox(2, 0).await;
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    enable_http(&config);
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    let series = "clairo_sync_delivery_oldest_pending_seconds{connector=\"hook\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut waited = 0.0;
    while Instant::now() < deadline && waited < 2.0 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        waited = metric(&address, series)
            .await
            .unwrap_or_else(|| panic!("{series} missing from /metrics"));
    }
    assert!(
        waited >= 2.0,
        "the oldest pending delivery has waited {waited} s"
    );
    receiver.answer(200);
    receiver
        .wait_for_delivered(2, Duration::from_secs(60))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let age = metric(&address, series).await;
        if age == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "still {age:?} s once delivered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
