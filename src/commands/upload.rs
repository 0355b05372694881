//! `clairo-sync upload FILE --agent ID [--title T]`: one recording, now, with the checks
//! and conversion a drop folder applies. With a config file it goes through the state
//! database like a dropped file (the same content is never sent twice; the
//! `meeting.processed` event is queued for the running daemon to deliver); with none
//! (`CLAIRO_API_KEY` alone) it is just sent. Either way the meeting's summary is printed.
//! The file itself is never moved. A link named on the command line is followed (the
//! operator chose it; drop folders never follow one); what it resolves to is then opened
//! once and checked, hashed and sent from that one descriptor.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use serde_json::{Value, json};

use crate::cli::UploadArgs;
use crate::commands::{CommandError, CommandResult, load_api_config, shown};
use crate::config::StateBackend;
use crate::metrics::Metrics;
use crate::sources::SourceContext;
use crate::sources::meetings::upload::{
    self, Outcome, PrepareError, Prepared, SendError, Uploader, Wanted,
};
use crate::sources::meetings::{self as meetings};
use crate::store::meetings::{MeetingResult, MeetingRow};
use crate::store::{Store, Wakers};

pub async fn upload(path: Option<&Path>, args: &UploadArgs) -> CommandResult {
    let loaded = load_api_config(path)?;
    let config = &loaded.config;
    let metrics = Metrics::new();
    let client = crate::daemon::build_client(&loaded, None, metrics.clone())?;
    let named =
        std::path::absolute(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let Ok(file) = std::fs::canonicalize(&named) else {
        return Err(anyhow!(
            "{}: no such file; name the recording to upload",
            named.display()
        )
        .into());
    };
    let with_state = loaded.path.is_some();
    let temp_dir = if with_state {
        meetings::temp_dir(config)
    } else {
        std::env::temp_dir()
    };
    let (conversion, transcoder) = meetings::converter(config.meetings.transcode, temp_dir).await;
    let prepared = {
        let (file, agent, title) = (file.clone(), args.agent.clone(), args.title.clone());
        tokio::task::spawn_blocking(move || {
            let wanted = Wanted {
                agent_id: &agent,
                title: title.as_deref(),
                sidecar_agent: false,
            };
            upload::prepare(&file, &wanted, conversion)
        })
        .await
        .context("checking the recording")?
    };
    let prepared = prepared.map_err(|error| match error {
        PrepareError::Rejected { rejection, .. } => anyhow!("{}: {}; {}", file.display(), rejection.why, rejection.what),
        PrepareError::NotAFile { rejection, .. } => anyhow!("{}: {}; {}", file.display(), rejection.why, rejection.what),
        PrepareError::Gone => anyhow!("{}: the file disappeared while being read", file.display()),
        PrepareError::Changed => anyhow!(
            "{}: the file changed while being read; wait until it is completely written, then try again",
            file.display()
        ),
        PrepareError::Io(error) => anyhow!("{}: cannot read it: {error}", file.display()),
    })?;
    let uploader = Uploader { client, transcoder };
    if !with_state {
        let sent = uploader
            .send(&prepared, None)
            .await
            .map_err(|error| send_error(&file, error))?;
        let result = upload::result_of(&sent, &prepared);
        print_meeting(&summary_json(&result, &prepared), args.json);
        return Ok(());
    }
    let backend = config.state.backend();
    if let StateBackend::Sqlite(state) = backend
        && let Some(parent) = state.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the state directory {}", parent.display()))?;
    }
    let password = loaded.state_password.as_ref().map(|secret| secret.expose());
    let store = Store::open_state(backend, password).await.map_err(|error| match backend {
        StateBackend::Sqlite(_) => anyhow!("{error}; run the command as the user the daemon runs as (e.g. `sudo -u clairo-sync clairo-sync upload …`)"),
        StateBackend::Postgres(_) => anyhow!(error),
    })?;
    let context = SourceContext::new(
        config,
        uploader.client.clone(),
        store.clone(),
        metrics,
        Wakers::default(),
        // One upload: no other task to pause after a refusal.
        Default::default(),
    );
    let outcome = upload::process(&context, &uploader, &prepared).await;
    store.close().await;
    match outcome.map_err(anyhow::Error::from)? {
        Outcome::Uploaded(result) => {
            print_meeting(&summary_json(&result, &prepared), args.json);
            let connectors = context.router.connectors_for(clairo_connectors::EventType::MeetingProcessed, Some(&prepared.agent_id));
            if !args.json && !connectors.is_empty() {
                println!(
                    "\nThe meeting.processed event is queued for {}; the running daemon delivers it (or run `clairo-sync sync --once`).",
                    connectors.join(", ")
                );
            }
            Ok(())
        }
        Outcome::AlreadyUploaded(row) => {
            if !args.json {
                println!(
                    "Not sent again: the same recording was uploaded before from {} as meeting {}.\n",
                    shown::one_line(&row.source_path),
                    shown::one_line(row.meeting_id.as_deref().unwrap_or("-"))
                );
            }
            print_meeting(&stored_json(&row), args.json);
            Ok(())
        }
        Outcome::Busy(row) => Err(anyhow!(
            "{}: the same recording is being uploaded right now (from {}); try again in a few minutes",
            file.display(),
            row.source_path
        )
        .into()),
        Outcome::Rejected(rejection) => Err(anyhow!("{}", shown::one_line(&format!("{}: {}; {}", file.display(), rejection.why, rejection.what))).into()),
        Outcome::Retry { error, .. } => Err(anyhow!("{}", shown::one_line(&format!("{}: {error}", file.display()))).into()),
    }
}

fn send_error(file: &Path, error: SendError) -> CommandError {
    match error {
        SendError::Rejected(rejection) => anyhow!(
            "{}",
            shown::one_line(&format!(
                "{}: {}; {}",
                file.display(),
                rejection.why,
                rejection.what
            ))
        )
        .into(),
        SendError::Retry { error, .. } => anyhow!(
            "{}",
            shown::one_line(&format!("{}: {error}", file.display()))
        )
        .into(),
    }
}

/// The meeting as printed: the event's fields, plus what the file was sent as.
fn summary_json(result: &MeetingResult, prepared: &Prepared) -> Value {
    json!({
        "id": result.meeting_id,
        "title": result.title,
        "summary": result.summary,
        "transcript": result.transcript,
        "durationSec": result.raw.get("durationSec").cloned().unwrap_or_else(|| json!(result.duration_sec)),
        "agentId": prepared.agent_id,
        "fileName": prepared.file_name,
        "uploadedAs": result.uploaded_as,
        "sha256": prepared.sha256,
        "duplicate": false,
    })
}

fn stored_json(row: &MeetingRow) -> Value {
    json!({
        "id": row.meeting_id,
        "title": row.title,
        "summary": row.summary,
        "transcript": row.transcript,
        "durationSec": row.raw.as_ref().and_then(|raw| raw.get("durationSec").cloned()).unwrap_or_else(|| json!(row.duration_sec)),
        "agentId": row.agent_id,
        "fileName": row.file_name,
        "uploadedAs": row.uploaded_as,
        "sha256": row.sha256,
        "duplicate": true,
    })
}

fn print_meeting(meeting: &Value, as_json: bool) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(meeting).unwrap_or_default()
        );
        return;
    }
    // What the server sent is shown escaped: a title or summary cannot act on the terminal.
    let text = |key: &str| shown::one_line(meeting.get(key).and_then(Value::as_str).unwrap_or("-"));
    let duration = meeting
        .get("durationSec")
        .and_then(Value::as_f64)
        // The server's number: negative or absurd is shown as unknown, never a panic.
        .and_then(|seconds| std::time::Duration::try_from_secs_f64(seconds).ok())
        .filter(|duration| *duration <= meetings::transcode::LONGEST_BELIEVABLE)
        .map(meetings::transcode::human_duration)
        .unwrap_or_else(|| "-".to_owned());
    println!(
        "Meeting {}  \"{}\"  ({duration})",
        text("id"),
        text("title")
    );
    println!(
        "Agent {}  file {}  sent as {}",
        text("agentId"),
        text("fileName"),
        text("uploadedAs")
    );
    println!(
        "\nSummary\n{}",
        shown::block(
            meeting
                .get("summary")
                .and_then(Value::as_str)
                .unwrap_or("-")
        )
    );
    if let Some(transcript) = meeting.get("transcript").and_then(Value::as_str) {
        println!(
            "\nTranscript: {} characters (use --json to see it)",
            transcript.chars().count()
        );
    }
}
