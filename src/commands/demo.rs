//! `clairo-sync demo`: the whole flow on one machine, with no account — the sandbox API,
//! a temporary state directory, a file connector, a signed webhook to a local receiver, a
//! Slack channel stand-in behind a route filter and a pace, and new leads and messages
//! arriving while you watch.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clairo_connectors::Secret;
use clairo_sandbox::{BriefSpec, SandboxConfig};

use crate::cli::DemoArgs;
use crate::config::{self, Need, SecretSources};
use crate::daemon::Runtime;

use super::{CommandError, CommandResult};

/// The demo webhook's secret; it protects nothing (everything runs on loopback).
const DEMO_SECRET: &str = "whsec_ZGVtby1zZWNyZXQtZm9yLWNsYWlyby1zeW5j";

const LEADS: [(&str, &str, &str); 5] = [
    (
        "Maria Lopez",
        "maria@lopez-logistics.example",
        "Lopez Logistics",
    ),
    ("Ken Watanabe", "ken@kumo.example", "Kumo Studio"),
    ("Aisha Bello", "aisha@greenleaf.example", "Greenleaf Foods"),
    ("Tom Becker", "tom@becker-bau.example", "Becker Bau"),
    ("Priya Nair", "priya@orbital.example", "Orbital Analytics"),
];

pub async fn demo(args: &DemoArgs) -> CommandResult {
    let sandbox = clairo_sandbox::start(
        SandboxConfig::default(),
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    .context("starting the sandbox")?;
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo webhook receiver")?;
    let receiver_url = format!(
        "http://{}/hook",
        receiver.local_addr().context("receiver address")?
    );
    tokio::spawn(async move {
        let app = Router::new()
            .route("/hook", post(receive))
            .route("/slack", post(receive_slack))
            .with_state(Arc::new(DEMO_SECRET.to_owned()));
        let _ = axum::serve(receiver, app).await;
    });

    let dir = tempfile_dir()?;
    let events_file = dir.join("events.jsonl");
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).with_context(|| format!("creating {}", inbox.display()))?;
    let config_path = dir.join("clairo-sync.toml");
    let text = format!(
        r#"log_level = "warn"

[clairo]
base_url = "{base}"
api_key = "clr_sandbox_key"

[state]
path = "{state}"

[http]
listen = "127.0.0.1:0"
enabled = false

[sync.briefs]
schedule = "*/5 * * * * *"

[sync.conversations]
schedule = "*/5 * * * * *"
refresh_interval = "10s"

[[meetings.folders]]
path = "{inbox}"
agent = "{meeting_agent}"
settle = "1s"

[connectors.demo_hook]
type = "webhook"
url = "{receiver_url}"
secret = "{DEMO_SECRET}"

[connectors.archive]
type = "file"
path = "{events}"

# A stand-in for a Slack incoming webhook, on this machine.
[connectors.sales_slack]
type = "slack"
url = "{slack_url}"
rate_limit = "1/s"

[[routes]]
events = ["brief.created", "conversation.updated", "meeting.processed"]
to = ["demo_hook", "archive"]

# Only the leads that matter reach the channel.
[[routes]]
events = ["brief.created"]
when = "contact_email is not none and ('Logistics' in data.summary or 'Analytics' in data.summary)"
to = ["sales_slack"]

[delivery]
retry_schedule = ["1s", "5s", "30s"]
"#,
        base = sandbox.base_url(),
        state = dir.join("state.db").display(),
        events = events_file.display(),
        inbox = inbox.display(),
        meeting_agent = sandbox.agent_id("MEETING"),
        slack_url = receiver_url.replace("/hook", "/slack"),
    );
    std::fs::write(&config_path, text).context("writing the demo config")?;
    let loaded = config::load(Some(&config_path), Need::Daemon, &SecretSources::default())?;
    super::daemon::init_logging(&loaded.config);

    println!("clairo-sync demo");
    println!("  sandbox API      {}", sandbox.base_url());
    println!("  config           {}", config_path.display());
    println!("  events (JSONL)   {}", events_file.display());
    println!("  webhook receiver {receiver_url} (checks each Standard Webhooks signature)");
    println!(
        "  Slack stand-in   {} (gets only logistics and analytics leads, at most 1/s)",
        receiver_url.replace("/hook", "/slack")
    );
    println!(
        "  drop folder      {} (put a webm, mp3 or wav here)",
        inbox.display()
    );
    println!(
        "New leads, chat messages and recordings arrive every few seconds; each event is printed as the webhook (and, for leads the filter picks, the Slack channel) receives it."
    );
    println!("Press Ctrl-C to stop.\n");

    let runtime = Runtime::start(&loaded, None)
        .await
        .map_err(CommandError::Other)?;
    let stop = crate::shutdown::CancellationToken::new();
    let traffic = {
        let sandbox = sandbox.clone();
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let support = sandbox.agent_id("SUPPORT");
            let conversation =
                sandbox.add_conversation(&support, &[("user", "Hi, do you ship to Norway?")]);
            for round in 0usize.. {
                tokio::time::sleep(Duration::from_secs(6)).await;
                let (name, email, company) = LEADS[round % LEADS.len()];
                sandbox.add_brief(BriefSpec {
                    name: name.to_owned(),
                    email: Some(email.to_owned()),
                    company: company.to_owned(),
                    budget: format!("${}-{}/month", 50 * (round + 1), 100 * (round + 1)),
                });
                tokio::time::sleep(Duration::from_secs(4)).await;
                sandbox.add_message(
                    &conversation,
                    "user",
                    &format!("Follow-up question number {}", round + 1),
                );
                sandbox.add_message(&conversation, "assistant", "Happy to help: yes, we do.");
                if round % 2 == 0 {
                    // A recording dropped the way a person would: written beside, then moved in.
                    let staging = inbox.join(format!(".standup-{round}.wav.part"));
                    let target = inbox.join(format!("standup-{}.wav", round / 2 + 1));
                    if std::fs::write(&staging, silent_wav(round as u32 + 2)).is_ok() {
                        let _ = std::fs::rename(&staging, &target);
                    }
                }
            }
        })
    };
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let serving = tokio::spawn(crate::daemon::serve(runtime, reload_rx, stop.clone()));
    match args.duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    traffic.abort();
    stop.cancel();
    let _ = serving.await;
    sandbox.stop();
    let lines = std::fs::read_to_string(&events_file)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    println!("\n{lines} events archived in {}", events_file.display());
    println!(
        "Inspect the outbox: clairo-sync status -c {}",
        config_path.display()
    );
    Ok(())
}

/// A mono 16 kHz WAV of `seconds` of near-silence, different for each length.
fn silent_wav(seconds: u32) -> Vec<u8> {
    let rate: u32 = 16_000;
    let data_len = rate * 2 * seconds;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend((0..data_len / 2).flat_map(|i| (((i % 64) as i16) - 32).to_le_bytes()));
    wav
}

/// The Slack stand-in: prints the message's `text`, what the channel's notification
/// shows (the Block Kit blocks hold the same, laid out).
async fn receive_slack(body: Bytes) -> StatusCode {
    let message: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    println!(
        "→ slack    #sales  {}",
        message["text"].as_str().unwrap_or("?")
    );
    StatusCode::OK
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("clairo-sync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn receive(State(secret): State<Arc<String>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    // Checked with the connector's own signing, as a receiver's library would check it.
    let expected = match (timestamp.parse::<i64>(), std::str::from_utf8(&body)) {
        (Ok(timestamp), Ok(text)) => {
            clairo_connectors::webhook::sign(&Secret::new(secret.as_str()), &id, timestamp, text)
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    let valid = !expected.is_empty() && signature.split(' ').any(|candidate| candidate == expected);
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let kind = event["type"].as_str().unwrap_or("?");
    let what = match kind {
        "brief.created" => event["data"]["summary"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(70)
            .collect::<String>(),
        "meeting.processed" => format!(
            "{} ({}s): {}",
            event["data"]["title"].as_str().unwrap_or("?"),
            event["data"]["durationSec"],
            event["data"]["summary"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(50)
                .collect::<String>()
        ),
        "conversation.updated" => {
            let new = event["data"]["newMessages"].as_array().map_or(0, Vec::len);
            format!(
                "conversation {} +{new} message(s)",
                event["data"]["conversation"]["id"].as_str().unwrap_or("?")
            )
        }
        _ => String::new(),
    };
    println!(
        "→ webhook  {kind:<21} {id}  signature {}  {what}",
        if valid { "ok " } else { "BAD" }
    );
    if valid {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}
