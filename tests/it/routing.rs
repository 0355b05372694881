//! Routes that choose (`when`), replay and backfill (`deliveries replay`), and a
//! connector's pace (`rate_limit`), through the real binary, the sandbox and receivers on
//! 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use clairo_sandbox::BriefSpec;

// A config polling briefs, with a webhook `hook` and a file `archive`; routes are the test's.
use crate::support::config_without_routes as config;
use crate::support::{Receiver, SECRET, run_cli, sandbox};

fn brief(name: &str, email: Option<&str>, company: &str) -> BriefSpec {
    BriefSpec {
        name: name.to_owned(),
        email: email.map(str::to_owned),
        company: company.to_owned(),
        budget: "$100/month".to_owned(),
    }
}

fn archived(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn sync_once(config: &Path) {
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_filter_sends_only_the_leads_it_chooses_and_a_failing_filter_makes_dead_replayable_deliveries()
 {
    let sandbox = sandbox(0, 0).await;
    let wanted = sandbox.add_brief(brief("Ann", Some("ann@acme.example"), "ACME Enterprise"));
    sandbox.add_brief(brief("Bob", None, "Enterprise Without Email"));
    sandbox.add_brief(brief("Carl", Some("carl@shop.example"), "Carl's Shop"));
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sandbox,
        &receiver,
        r#"
[[routes]]
events = ["brief.created"]
when = "contact_email is not none and 'enterprise' in (data.summary | lower)"
to = ["hook"]

[[routes]]
events = ["brief.created"]
# A budget is text ("$100/month"): adding a number to it fails on every brief.
when = "data.answers.budget + 1 > 0"
to = ["archive"]
"#,
    );
    let path = config.to_str().unwrap();

    sync_once(&config);

    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "only the enterprise lead with an email");
    assert_eq!(delivered[0].json()["data"]["id"], wanted.as_str());
    assert!(
        archived(dir.path()).is_empty(),
        "the failing filter sent nothing"
    );
    let (code, stdout, stderr) = run_cli(&["deliveries", "list", "--dead", "-c", path]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout
            .matches("route filter failed: routes[1].when")
            .count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("invalid operation"), "{stdout}");

    // `check` tries each filter on what is stored.
    let (code, stdout, stderr) = run_cli(&["check", "-c", path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("routes[0].when: would have taken 1 of the last 3 stored events"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "routes[1].when: would have taken 0 of the last 3 stored events; it fails on 3 of them"
        ),
        "{stdout}"
    );

    // Nothing was dropped: after the fix the dead deliveries replay.
    let (code, _, stderr) = run_cli(&["deliveries", "retry", "--all-dead", "-c", path]);
    assert_eq!(code, 0, "{stderr}");
    sync_once(&config);
    assert_eq!(archived(dir.path()).len(), 3);
    assert_eq!(receiver.delivered().len(), 1, "the hook got nothing twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_that_cannot_work_is_a_config_error_naming_its_route() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sandbox,
        &receiver,
        r#"
[[routes]]
events = ["brief.created"]
to = ["hook"]

[[routes]]
events = ["brief.created"]
when = "contact_email is not none and (data.summary | lower"
to = ["hook"]

[[routes]]
events = ["brief.created"]
when = "data.summary | lowercase == 'x'"
to = ["archive"]

[[routes]]
events = ["brief.created"]
# Only some events would fail this (a text teamSize): not a config error.
when = "data.answers.teamSize + 1 > 10"
to = ["archive"]
"#,
    );

    let (code, _, stderr) = run_cli(&["check", "-c", config.to_str().unwrap()]);

    assert_eq!(code, 78, "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("routes["))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("routes[1].when: does not parse"),
        "{stderr}"
    );
    assert!(lines[0].contains("; check the quotes"), "{stderr}");
    assert!(
        lines[1].starts_with("routes[2].when: unknown filter `lowercase`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_into_a_paced_connector_is_spread_out_and_loses_nothing() {
    const EVENTS: usize = 20;
    const PER_SECOND: usize = 10;
    let sandbox = sandbox(EVENTS, 0).await;
    let receiver = Receiver::start().await;
    let paced = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sandbox,
        &receiver,
        &format!(
            r#"
[connectors.paced]
type = "webhook"
url = "{url}"
secret = "{SECRET}"
rate_limit = "{PER_SECOND}/s"

[[routes]]
events = ["brief.created"]
to = ["paced"]
"#,
            url = paced.url
        ),
    );

    let _daemon = crate::support::Daemon::start(&config);
    let delivered = paced
        .wait_for_delivered(EVENTS, Duration::from_secs(60))
        .await;

    let ids: std::collections::HashSet<String> = delivered.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), EVENTS, "every brief arrives");
    let mut arrivals: Vec<_> = paced.received().iter().map(|r| r.at).collect();
    arrivals.sort();
    // The receiver's clock also sees each request's trip (scheduling on a busy machine):
    // up to 100 ms of it is allowed for, by counting windows 100 ms short of a second.
    // Unpaced, the twenty arrive within a fraction of that.
    let window = Duration::from_millis(900);
    for (index, start) in arrivals.iter().enumerate() {
        let within = arrivals[index..]
            .iter()
            .take_while(|at| at.duration_since(*start) < window)
            .count();
        assert!(
            within <= PER_SECOND,
            "{within} deliveries started within {window:?} of arrival {index}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_in_another_form_is_refused_with_its_key() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sandbox,
        &receiver,
        r#"
[connectors.slow]
type = "file"
path = "/tmp/never-written.jsonl"
rate_limit = "5/h"

[[routes]]
events = ["brief.created"]
to = ["slow"]
"#,
    );

    let (code, _, stderr) = run_cli(&["check", "-c", config.to_str().unwrap()]);

    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(
            "connectors.slow.rate_limit: \"5/h\" is not a rate; write \"N/s\" or \"N/m\""
        ),
        "{stderr}"
    );
}

/// `[connectors.late]`, a webhook to `late`, and a route of briefs to it.
fn late_connector(late: &Receiver) -> String {
    format!(
        r#"
[connectors.late]
type = "webhook"
url = "{url}"
secret = "{SECRET}"

[[routes]]
events = ["brief.created"]
to = ["late"]
"#,
        url = late.url
    )
}

const HOOK_ROUTE: &str = r#"
[[routes]]
events = ["brief.created"]
to = ["hook"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_connector_added_today_gets_last_months_briefs_on_request_with_their_original_ids() {
    let sandbox = sandbox(3, 0).await;
    let hook = Receiver::start().await;
    let late = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sandbox, &hook, HOOK_ROUTE);
    sync_once(&config);
    assert_eq!(hook.delivered().len(), 3);

    // The connector is added: that alone sends it nothing.
    let config = self::config(
        dir.path(),
        &sandbox,
        &hook,
        &format!("{HOOK_ROUTE}{}", late_connector(&late)),
    );
    let path = config.to_str().unwrap();
    sync_once(&config);
    assert!(
        late.received().is_empty(),
        "adding a connector backfilled it"
    );

    let (code, stdout, stderr) = run_cli(&[
        "deliveries",
        "replay",
        "--connector",
        "late",
        "--since",
        "30d",
        "--dry-run",
        "-c",
        path,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Would queue 3 events for late"), "{stdout}");
    assert!(stdout.contains("brief.created"), "{stdout}");
    sync_once(&config);
    assert!(late.received().is_empty(), "a dry run queued something");

    let (code, stdout, stderr) = run_cli(&[
        "deliveries",
        "replay",
        "--connector",
        "late",
        "--since",
        "30d",
        "-c",
        path,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Queued 3 events for late"), "{stdout}");
    // Asked twice before the daemon sent them: still one pending delivery each.
    let (code, stdout, stderr) = run_cli(&[
        "deliveries",
        "replay",
        "--connector",
        "late",
        "--json",
        "-c",
        path,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let counts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(counts["queued"], 0, "{stdout}");
    assert_eq!(counts["already_pending"], 3, "{stdout}");

    sync_once(&config);
    let mut sent: Vec<String> = hook.delivered().iter().map(|r| r.id.clone()).collect();
    let mut replayed: Vec<String> = late.delivered().iter().map(|r| r.id.clone()).collect();
    sent.sort();
    replayed.sort();
    assert_eq!(
        replayed, sent,
        "the same events, under their original ids, once each"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_with_nothing_to_replay_says_so() {
    let sandbox = sandbox(2, 0).await;
    let hook = Receiver::start().await;
    let late = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sandbox,
        &hook,
        &format!("{HOOK_ROUTE}{}", late_connector(&late)),
    );
    let path = config.to_str().unwrap();
    sync_once(&config);

    for args in [
        &["--type", "meeting.processed"][..],
        &["--until", "2000-01-01T00:00:00Z"][..],
    ] {
        let mut command = vec!["deliveries", "replay", "--connector", "hook", "-c", path];
        command.extend_from_slice(args);
        let (code, stdout, stderr) = run_cli(&command);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.starts_with("Nothing to replay to hook"),
            "{args:?}: {stdout}"
        );
    }
    let (code, _, stderr) = run_cli(&["deliveries", "replay", "--connector", "nobody", "-c", path]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "--connector \"nobody\" is not in the config; name one of: archive, hook, late"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_pruned_from_the_outbox_is_rebuilt_from_the_recorded_brief_with_the_same_id() {
    let sandbox = sandbox(2, 0).await;
    let hook = Receiver::start().await;
    let late = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sandbox,
        &hook,
        &format!("{HOOK_ROUTE}{}", late_connector(&late)),
    );
    sync_once(&config);
    let original = hook.delivered();
    assert_eq!(original.len(), 2);
    assert_eq!(late.delivered().len(), 2);
    // Both events are fully delivered, so a daemon with a tiny retention prunes them at
    // its start.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[state]\n", "[state]\ndelivered_retention = \"1ms\"\n");
    std::fs::write(&config, text).unwrap();
    let mut daemon = crate::support::LoggedDaemon::start(&config, &[]);
    let pruned = daemon
        .wait_for_line("Pruned delivered events", Duration::from_secs(20))
        .await;
    assert_eq!(daemon.daemon.terminate(Duration::from_secs(10)), Some(0));
    assert!(
        pruned.is_some_and(|line| line.contains("pruned=2")),
        "{:?}",
        daemon.log()
    );

    let (code, stdout, stderr) = run_cli(&[
        "deliveries",
        "replay",
        "--connector",
        "late",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Queued 2 events for late"), "{stdout}");
    assert!(
        stdout.contains("(2 rebuilt from the recorded items)"),
        "{stdout}"
    );
    sync_once(&config);

    let replayed = late.delivered();
    assert_eq!(replayed.len(), 4, "sent once before, once replayed");
    for first in &original {
        let again: Vec<_> = replayed[2..].iter().filter(|r| r.id == first.id).collect();
        assert_eq!(again.len(), 1, "{} was not rebuilt under its id", first.id);
        assert_eq!(again[0].json()["data"], first.json()["data"]);
    }
}
