//! `status` and `deliveries list/retry`: the state database, read by an operator.

use std::path::Path;

use anyhow::Context as _;
use chrono::{TimeZone, Utc};
use serde_json::json;

use crate::cli::DeliveriesCommand;
use crate::store::{DeliveryFilter, Store, now_ms};

use crate::config::{Need, SecretSources};

use super::{CommandResult, shown};

/// Characters of a receiver's answer shown under a delivery in `deliveries list`; the
/// whole stored answer is in `--json`.
const RESPONSE_EXCERPT_CHARS: usize = 300;

/// The start of a stored answer, on one line, control characters escaped.
fn excerpt(response: &str) -> String {
    let line = shown::one_line(response.trim());
    match line.char_indices().nth(RESPONSE_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}… (--json shows it all)", &line[..cut]),
        None => line,
    }
}

async fn open_store(path: Option<&Path>) -> Result<Store, super::CommandError> {
    let path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    let loaded = crate::config::load(Some(&path), Need::StateOnly, &SecretSources::default())?;
    Ok(Store::open(&loaded.config.state.path)
        .await
        .map_err(anyhow::Error::from)?)
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

fn age(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| {
            let secs = ((now_ms() - ms).max(0) / 1000) as u64;
            humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
        },
    )
}

pub async fn status(path: Option<&Path>, as_json: bool) -> CommandResult {
    let store = open_store(path).await?;
    let runs = store.source_runs().await.map_err(anyhow::Error::from)?;
    let queues = store.queue_stats().await.map_err(anyhow::Error::from)?;
    if as_json {
        let value = json!({ "sources": runs, "connectors": queues });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).context("encoding JSON")?
        );
        return Ok(());
    }
    println!("Sources");
    if runs.is_empty() {
        println!("  (no run yet)");
    }
    for run in &runs {
        println!(
            "  {:<14} last run {}  {}  last success {}  runs {}",
            run.source,
            time(Some(run.last_started_at)),
            run.last_outcome.as_deref().unwrap_or("running"),
            time(run.last_success_at),
            run.runs
        );
        if let Some(error) = &run.last_error {
            println!("  {:<14} error: {}", "", shown::one_line(error));
        }
    }
    println!("\nDeliveries");
    if queues.is_empty() {
        println!("  (none yet)");
    }
    for queue in &queues {
        println!(
            "  {:<14} pending {:<6} oldest pending {:<12} delivered {:<8} dead {}",
            queue.connector,
            queue.pending,
            age(queue.oldest_pending_at),
            queue.delivered,
            queue.dead
        );
    }
    let dead: i64 = queues.iter().map(|q| q.dead).sum();
    if dead > 0 {
        println!(
            "\n{dead} dead deliveries: `clairo-sync deliveries list --dead` shows why, `clairo-sync deliveries retry --all-dead` replays them."
        );
    }
    store.close().await;
    Ok(())
}

pub async fn deliveries(path: Option<&Path>, command: DeliveriesCommand) -> CommandResult {
    let store = open_store(path).await?;
    match command {
        DeliveriesCommand::List {
            dead,
            connector,
            limit,
            json: as_json,
        } => {
            let rows = store
                .list_deliveries(&DeliveryFilter {
                    dead_only: dead,
                    connector,
                    limit,
                })
                .await
                .map_err(anyhow::Error::from)?;
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).context("encoding JSON")?
                );
            } else if rows.is_empty() {
                println!("No deliveries{}.", if dead { " are dead" } else { "" });
            } else {
                println!(
                    "{:<6} {:<14} {:<21} {:<9} {:<8} {:<19} LAST ERROR",
                    "ID", "CONNECTOR", "EVENT", "STATUS", "ATTEMPTS", "UPDATED"
                );
                for row in rows {
                    let last = row
                        .last_attempt
                        .as_ref()
                        .map(|attempt| {
                            let code = attempt
                                .status_code
                                .map_or_else(String::new, |c| format!("[{c}] "));
                            let reason = attempt.reason.as_deref().unwrap_or("");
                            format!("{code}{}", shown::one_line(reason))
                        })
                        .unwrap_or_default();
                    println!(
                        "{:<6} {:<14} {:<21} {:<9} {:<8} {:<19} {}",
                        row.id,
                        row.connector,
                        format!("{}", row.event_type),
                        row.status,
                        row.attempts,
                        time(Some(row.updated_at)),
                        last
                    );
                    println!("{:<6} event {}", "", row.event_id);
                    // The receiver's own words, when the last attempt failed: the reason
                    // often says "see its response".
                    if let Some(attempt) = &row.last_attempt
                        && attempt.outcome != "delivered"
                        && let Some(response) = attempt.response.as_deref()
                    {
                        println!("{:<6} response {}", "", excerpt(response));
                    }
                }
            }
        }
        DeliveriesCommand::Retry { ids, all_dead } => {
            let count = store
                .retry_deliveries(&ids, all_dead)
                .await
                .map_err(anyhow::Error::from)?;
            println!(
                "{count} deliveries re-queued; a running daemon sends them within seconds, otherwise the next `run` or `sync --once` does."
            );
        }
    }
    store.close().await;
    Ok(())
}
