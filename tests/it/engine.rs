//! The sync engine end to end: the real binary, a real SQLite file, the sandbox and a
//! webhook receiver over HTTP.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::support::{
    Daemon, LoggedDaemon, Receiver, SECRET, daemon_config, run_cli, sandbox, signature_is_valid,
    write,
};

#[tokio::test(flavor = "multi_thread")]
async fn thirty_briefs_reach_the_webhook_exactly_once_with_valid_signatures_each_logged_once() {
    let sandbox = sandbox(0, 0).await;
    sandbox.add_briefs(30);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let daemon = LoggedDaemon::start(&config, &[]);
    let delivered = receiver
        .wait_for_delivered(30, Duration::from_secs(60))
        .await;
    // A few more poll cycles: nothing else may arrive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let received = receiver.received();
    assert_eq!(delivered.len(), 30, "delivered: {}", delivered.len());
    assert_eq!(received.len(), 30, "no duplicate and no extra request");
    let ids: HashSet<_> = received.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 30);
    for request in &received {
        assert!(
            signature_is_valid(request, SECRET),
            "bad signature on {}",
            request.id
        );
        let event = request.json();
        assert_eq!(event["type"], "brief.created");
        assert_eq!(event["id"], request.id.as_str());
        assert!(
            event["data"]["answers"].is_object(),
            "the detail's answers are merged in"
        );
        assert!(
            event["data"]["agentId"].is_string(),
            "the list's agentId is merged in"
        );
    }
    let archive = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    assert_eq!(
        archive.lines().count(),
        30,
        "the file connector got each event once too"
    );
    let ids: Vec<String> = ids.into_iter().collect();
    assert_each_delivery_logged_once(&daemon, &ids);
}

/// One info line per turn names the events it delivered to the webhook ("Delivered." for
/// one, "Delivered N events." with their ids for several): each of `ids` exactly once.
/// Says how many lines named several.
fn assert_each_delivery_logged_once(daemon: &LoggedDaemon, ids: &[String]) -> usize {
    let mut logged: HashMap<String, usize> = HashMap::new();
    let mut several = 0;
    for line in daemon.log() {
        if !(line.contains(" INFO ") && line.contains(" Delivered") && line.contains("\"hook\"")) {
            continue;
        }
        let field = ["event_id=", "event_ids="]
            .iter()
            .find_map(|name| line.split(name).nth(1))
            .unwrap_or_else(|| panic!("a delivered line without its event ids: {line}"));
        let named: Vec<&str> = field
            .split_whitespace()
            .next()
            .unwrap()
            .split(',')
            .collect();
        if let Some(count) = line
            .split("Delivered ")
            .nth(1)
            .filter(|rest| rest.contains(" events."))
        {
            let count: usize = count.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(count, named.len(), "{line}");
            several += 1;
        }
        for id in named {
            *logged.entry(id.to_owned()).or_default() += 1;
        }
    }
    let expected: HashMap<String, usize> = ids.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(logged, expected, "each delivery to the webhook logged once");
    several
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_is_logged_one_line_per_turn_naming_every_event_once() {
    let sandbox = sandbox(40, 0).await;
    let receiver = Receiver::start().await;
    // Every first attempt is refused for good: forty dead deliveries.
    receiver.answer(400);
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let config_arg = config.to_str().unwrap();
    let daemon = LoggedDaemon::start(&config, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while receiver.received().len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first attempts never came"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Re-queued at once, they are a backlog: four go out together and, the receiver
    // taking the same time over each, finish together, so turns record several.
    receiver.answer(200);
    receiver.delay(Duration::from_millis(200));
    let (code, stdout, _) = run_cli(&["deliveries", "retry", "--all-dead", "-c", config_arg]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("40 deliveries re-queued"), "{stdout}");
    let delivered = receiver
        .wait_for_delivered(40, Duration::from_secs(60))
        .await;
    let ids: Vec<String> = delivered.iter().map(|request| request.id.clone()).collect();
    // The records (and their log lines) follow the answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let several = assert_each_delivery_logged_once(&daemon, &ids);
    assert!(several > 0, "no turn delivered several events");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_cycle_makes_exactly_one_list_request_per_source() {
    let sandbox = sandbox(3, 3).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[sync.conversations]\nschedule = \"*/2 * * * * *\"\n",
    );
    let config = config.to_str().unwrap();
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config]);
    assert_eq!(code, 0, "{stderr}");
    sandbox.reset_stats();
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config]);
    assert_eq!(code, 0, "{stderr}");
    let stats = sandbox.stats();
    let mut expected = std::collections::BTreeMap::new();
    expected.insert("GET /briefs".to_owned(), 1u64);
    expected.insert("GET /conversations".to_owned(), 1u64);
    assert_eq!(
        stats.by_endpoint, expected,
        "an idle cycle lists each source once and fetches no detail"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_that_gains_messages_emits_one_update_with_only_the_new_messages() {
    let sandbox = sandbox(0, 0).await;
    let support = sandbox.agent_id("SUPPORT");
    let conversation =
        sandbox.add_conversation(&support, &[("user", "Hello"), ("assistant", "Hi!")]);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[sync.conversations]\nschedule = \"0 0 1 1 *\"\n",
    );
    let config = config.to_str().unwrap();
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        receiver.received().len(),
        1,
        "the new conversation is one event"
    );
    sandbox.add_message(&conversation, "user", "Do you ship to Norway?");
    sandbox.add_message(&conversation, "assistant", "Yes.");
    for _ in 0..2 {
        let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config]);
        assert_eq!(code, 0, "{stderr}");
    }
    let received = receiver.received();
    assert_eq!(
        received.len(),
        2,
        "exactly one more event for the new messages"
    );
    let update = received[1].json();
    assert_eq!(update["type"], "conversation.updated");
    let new: Vec<&str> = update["data"]["newMessages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(new, ["Do you ship to Norway?", "Yes."]);
    assert_eq!(
        update["data"]["conversation"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_ne!(received[0].id, received[1].id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_answering_503_for_a_while_gets_everything_and_nothing_dies() {
    let sandbox = sandbox(0, 0).await;
    sandbox.add_briefs(5);
    let receiver = Receiver::start().await;
    receiver.script(8, 503, None);
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[delivery]\nretry_schedule = [\"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\"]\n",
    );
    let _daemon = Daemon::start(&config);
    let delivered = receiver
        .wait_for_delivered(5, Duration::from_secs(60))
        .await;
    let ids: HashSet<_> = delivered.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 5);
    let (code, stdout, _) = run_cli(&[
        "deliveries",
        "list",
        "--dead",
        "--json",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let dead: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(dead.as_array().unwrap().len(), 0, "none dead: {stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_400_is_dead_listed_and_delivered_after_retry_all_dead() {
    let sandbox = sandbox(1, 0).await;
    let receiver = Receiver::start().await;
    receiver.answer(400);
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let config_arg = config.to_str().unwrap();
    let _daemon = Daemon::start(&config);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (_, stdout, _) = run_cli(&["deliveries", "list", "--dead", "--json", "-c", config_arg]);
        let dead: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
        if dead.as_array().is_some_and(|rows| !rows.is_empty())
            || std::time::Instant::now() > deadline
        {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rows = dead.as_array().expect("a list");
    assert_eq!(rows.len(), 1, "{dead}");
    assert_eq!(rows[0]["connector"], "hook");
    assert_eq!(rows[0]["last_attempt"]["status_code"], 400);
    assert_eq!(receiver.received().len(), 1, "a 400 is not retried");
    receiver.answer(200);
    let (code, stdout, _) = run_cli(&["deliveries", "retry", "--all-dead", "-c", config_arg]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("1 deliveries re-queued"), "{stdout}");
    let delivered = receiver
        .wait_for_delivered(1, Duration::from_secs(20))
        .await;
    assert_eq!(
        delivered.len(),
        1,
        "the running daemon picked the replay up"
    );
    assert_eq!(
        delivered[0].id,
        receiver.received()[0].id,
        "the replay keeps the event id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_3_is_not_retried_sooner() {
    let sandbox = sandbox(1, 0).await;
    let receiver = Receiver::start().await;
    receiver.script(1, 429, Some("3"));
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[delivery]\nretry_schedule = [\"100ms\", \"100ms\"]\n",
    );
    let _daemon = Daemon::start(&config);
    let delivered = receiver
        .wait_for_delivered(1, Duration::from_secs(30))
        .await;
    assert_eq!(delivered.len(), 1);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    let gap = received[1].at - received[0].at;
    assert!(gap >= Duration::from_millis(2900), "retried after {gap:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_delivery_loses_nothing_and_duplicates_keep_their_id() {
    let sandbox = sandbox(0, 0).await;
    sandbox.add_briefs(40);
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[delivery]\nlease = \"5s\"\nconcurrency = 2\n",
    );
    let mut daemon = Daemon::start(&config);
    receiver
        .wait_for_delivered(8, Duration::from_secs(30))
        .await;
    daemon.kill9();
    let before = receiver.delivered().len();
    assert!(before < 40, "killed mid-delivery ({before} delivered)");
    let _daemon = Daemon::start(&config);
    let delivered = receiver
        .wait_for_delivered(40, Duration::from_secs(90))
        .await;
    let mut by_id: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for request in &delivered {
        by_id
            .entry(request.id.clone())
            .or_default()
            .push(request.json());
    }
    assert_eq!(by_id.len(), 40, "every event delivered at least once");
    for (id, copies) in by_id {
        for copy in &copies {
            assert_eq!(
                copy["id"],
                id.as_str(),
                "a duplicate carries the same webhook-id and event id"
            );
            assert_eq!(copy["data"], copies[0]["data"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_backlog_exits_0_and_loses_nothing() {
    let sandbox = sandbox(0, 0).await;
    sandbox.add_briefs(30);
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[delivery]\nconcurrency = 1\nshutdown_timeout = \"3s\"\n",
    );
    let mut daemon = Daemon::start(&config);
    receiver
        .wait_for_delivered(5, Duration::from_secs(30))
        .await;
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "SIGTERM exits 0 within the shutdown timeout"
    );
    assert!(receiver.delivered().len() < 30, "stopped mid-backlog");
    let _daemon = Daemon::start(&config);
    let delivered = receiver
        .wait_for_delivered(30, Duration::from_secs(60))
        .await;
    let ids: HashSet<_> = delivered.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn start_from_now_emits_only_what_comes_after_the_first_run() {
    let sandbox = sandbox(3, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[sync]\nstart_from = \"now\"\n",
    );
    let config = config.to_str().unwrap();
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        receiver.received().is_empty(),
        "existing briefs are recorded as seen"
    );
    assert_eq!(
        sandbox.stats().by_endpoint.get("GET /briefs/{id}"),
        None,
        "and not fetched"
    );
    sandbox.add_briefs(1);
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_item_is_skipped_and_the_rest_delivered() {
    let sandbox = sandbox(3, 0).await;
    sandbox.set_faults(clairo_sandbox::Faults {
        malformed_items: 1,
        ..Default::default()
    });
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(receiver.received().len(), 3);
    assert!(stderr.contains("Skipped an item"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_key_fails_the_run_with_plain_words_and_one_request() {
    let sandbox = sandbox(3, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("clr_sandbox_key", "clr_revoked_key");
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("rejected the API key"), "{stderr}");
    assert!(
        !stderr.contains("clr_revoked_key"),
        "the key leaked: {stderr}"
    );
    assert_eq!(sandbox.stats().requests, 1, "no retry loop on 401");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_deliveries_work_without_the_services_secrets() {
    let sandbox = sandbox(2, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let config_arg = config.to_str().unwrap();
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config_arg]);
    assert_eq!(code, 0, "{stderr}");
    // From a shell, the credentials systemd hands the service are not there.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "api_key = \"clr_sandbox_key\"",
            "api_key_file = \"/run/credentials/clairo-sync.service/clairo-api-key\"",
        )
        .replace(
            &format!("secret = \"{SECRET}\""),
            "secret_file = \"/nonexistent/hook-secret\"",
        );
    std::fs::write(&config, text).unwrap();
    let (code, stdout, stderr) = run_cli(&["status", "--json", "-c", config_arg]);
    assert_eq!(code, 0, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let hook = status["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connector"] == "hook")
        .unwrap();
    assert_eq!(hook["delivered"], 2);
    assert_eq!(status["sources"][0]["source"], "briefs");
    assert_eq!(status["sources"][0]["last_outcome"], "success");
    let (code, stdout, stderr) = run_cli(&["deliveries", "list", "--json", "-c", config_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

/// The deliveries `deliveries list --json` shows, as (event id, status).
fn deliveries(config: &std::path::Path) -> Vec<(String, String)> {
    let (code, stdout, stderr) = run_cli(&[
        "deliveries",
        "list",
        "--json",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    rows.iter()
        .map(|row| {
            (
                row["event_id"].as_str().unwrap().to_owned(),
                row["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn delivered_events_past_the_retention_are_pruned_and_their_briefs_stay_known() {
    let sandbox = sandbox(3, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let retention = [("CLAIRO_SYNC_STATE__DELIVERED_RETENTION", "1s")];
    let mut first = LoggedDaemon::start(&config, &retention);
    receiver
        .wait_for_delivered(3, Duration::from_secs(30))
        .await;
    // Both connectors (hook and archive) have all three.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while deliveries(&config)
        .iter()
        .filter(|(_, status)| status == "delivered")
        .count()
        < 6
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            deliveries(&config)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.daemon.terminate(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let second = LoggedDaemon::start(&config, &retention);
    let pruned = second
        .wait_for_line("Pruned delivered events", Duration::from_secs(20))
        .await
        .expect("the start-up prune says what it did");
    assert!(pruned.contains("pruned=3"), "{pruned}");
    assert!(deliveries(&config).is_empty(), "{:?}", deliveries(&config));
    // The briefs are still recorded: polling again announces none of them twice.
    sandbox.reset_stats();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sandbox
        .stats()
        .by_endpoint
        .get("GET /briefs")
        .copied()
        .unwrap_or(0)
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "the daemon polls");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids: HashSet<String> = receiver.delivered().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(receiver.delivered().len(), 3, "nothing was sent again");
}

/// A receiver that answers 400 with a body echoing the gateway token it was sent and
/// carrying terminal escape sequences (recolour, retitle the window, ring the bell).
/// Returns its URL and the tokens it saw.
async fn hostile_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::{HeaderMap, StatusCode};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                let token = headers
                    .get("x-gateway-token")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                record.lock().unwrap().push(token.clone());
                (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "token {token} refused \u{1b}[31mRED\u{1b}[0m \u{1b}]0;pwned\u{7} \u{9b}2J end"
                    ),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/hook"), seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receivers_answer_is_listed_with_control_characters_escaped_and_header_values_scrubbed() {
    const TOKEN: &str = "gw_tok_0123456789";
    let sandbox = sandbox(1, 0).await;
    let placeholder = Receiver::start().await;
    let (url, seen) = hostile_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let headers = write(
        dir.path(),
        "hook-headers",
        &format!("# the gateway's token\nX-Gateway-Token: {TOKEN}\n\nX-Team: sales\n"),
    );
    let config = daemon_config(dir.path(), &sandbox, &placeholder, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&placeholder.url, &url)
        .replace(
            "timeout = \"5s\"",
            &format!("timeout = \"5s\"\nheaders_file = {headers:?}"),
        );
    std::fs::write(&config, &text).unwrap();
    let config_arg = config.to_str().unwrap();

    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [TOKEN],
        "the header from headers_file was sent"
    );
    assert!(
        !stderr.contains(TOKEN),
        "the token reached the log:\n{stderr}"
    );

    let (code, listed, _) = run_cli(&["deliveries", "list", "-c", config_arg]);
    assert_eq!(code, 0);
    assert!(
        !listed.contains('\u{1b}') && !listed.contains('\u{7}') && !listed.contains('\u{9b}'),
        "raw control characters reached the terminal:\n{listed:?}"
    );
    assert!(
        listed.contains("\\u{1b}[31mRED") && listed.contains("\\u{9b}2J"),
        "the receiver's answer is shown, escaped:\n{listed}"
    );
    assert!(!listed.contains(TOKEN), "{listed}");
    assert!(listed.contains("token **REDACTED** refused"), "{listed}");
    let (_, json, _) = run_cli(&["deliveries", "list", "--json", "-c", config_arg]);
    assert!(!json.contains(TOKEN), "{json}");

    // The same headers from the systemd credential `<connector name>-headers`.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::rename(&headers, credentials.join("hook-headers")).unwrap();
    std::fs::write(
        &config,
        text.replace(&format!("\nheaders_file = {headers:?}"), ""),
    )
    .unwrap();
    sandbox.add_briefs(1);
    let output = std::process::Command::new(crate::support::bin())
        .args(["sync", "--once", "-c", config_arg])
        .env_remove("CLAIRO_API_KEY")
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(seen.lock().unwrap().as_slice(), [TOKEN, TOKEN]);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_a_servers_error_text_with_control_characters_escaped() {
    // A Clairo stand-in that refuses every list with escape sequences in its error text.
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": "bad \u{1b}[2J\u{1b}[31mcleared\u{1b}[0m\nforged line \u{1b}]0;title\u{7}"
            })),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&sandbox.base_url(), &format!("http://{address}/api/v1"));
    std::fs::write(&config, text).unwrap();
    let config_arg = config.to_str().unwrap();

    let (code, _, _) = run_cli(&["sync", "--once", "-c", config_arg]);
    assert_eq!(code, 1, "the poll failed");
    let (code, status, _) = run_cli(&["status", "-c", config_arg]);
    assert_eq!(code, 0);
    assert!(
        !status.contains('\u{1b}') && !status.contains('\u{7}'),
        "raw control characters reached the terminal:\n{status:?}"
    );
    assert!(
        status.contains("\\u{1b}[2J") && status.contains("\\u{a}forged line"),
        "the error is shown on its line, escaped:\n{status}"
    );
}
