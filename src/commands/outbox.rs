//! `status` and `deliveries list/retry`: the state database, read by an operator.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{TimeZone, Utc};
use serde_json::json;

use crate::cli::DeliveriesCommand;
use crate::store::{DeliveryFilter, Store, now_ms};

use crate::config::{Need, SecretSources, StateBackend};

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

/// The state database the config names, as it is: a missing file is "no state yet",
/// never created here (src/store: `Store::open_existing`); a PostgreSQL database is
/// never migrated here. Returns the SQLite file, if that is where the state is, what
/// `status` shows of where it is, and `state.lease` in milliseconds.
pub(super) async fn open_store(
    path: Option<&Path>,
    writable: bool,
) -> Result<(Store, Option<PathBuf>, String, i64), super::CommandError> {
    let path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    // No secret but the database's password is read, and only with `state.url` set.
    let loaded = crate::config::load(
        Some(&path),
        Need::StateOnly,
        &SecretSources::from_env(Some(&path)),
    )?;
    let state = &loaded.config.state;
    let password = loaded.state_password.as_ref().map(|secret| secret.expose());
    let store = Store::open_existing_state(state.backend(), password, writable)
        .await
        .map_err(anyhow::Error::from)?;
    let file = match state.backend() {
        StateBackend::Sqlite(file) => Some(file.to_path_buf()),
        StateBackend::Postgres(url) => {
            // The database exists but the daemon has not made its tables yet: say so,
            // as for a SQLite file not made yet, rather than "relation does not exist".
            if let Ok(crate::store::Schema::Older { pending }) = store.schema().await
                && pending == crate::store::Store::migrations_known(state.backend())
            {
                store.close().await;
                return Err(anyhow::anyhow!(
                    "no state yet: {url} has no clairo-sync tables; the daemon creates them at its first start (sudo systemctl enable --now clairo-sync)"
                )
                .into());
            }
            None
        }
    };
    let lease = i64::try_from(state.lease.as_millis()).unwrap_or(i64::MAX);
    Ok((store, file, state.location(), lease))
}

/// SQLite makes `-wal`/`-shm` files beside the database when a command opens it while the
/// daemon does not. Run from a root shell they would be root's, and the service could no
/// longer write its own database: give them to the database's owner, as the daemon's.
pub(super) fn hand_side_files_back(database: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(owner), Ok(me)) = (std::fs::metadata(database), std::fs::metadata("/proc/self")) else {
        return;
    };
    if me.uid() != 0 || owner.uid() == 0 {
        return;
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = database.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if std::fs::symlink_metadata(&side).is_ok_and(|meta| meta.is_file() && meta.uid() == 0) {
            let _ = std::os::unix::fs::chown(&side, Some(owner.uid()), Some(owner.gid()));
        }
    }
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
    let (store, database, location, lease) = open_store(path, false).await?;
    // Instances share a database on PostgreSQL only; on SQLite the daemon is alone.
    let shared = database.is_none();
    // An instance is gone once its heartbeat is older than the lease: by then another
    // would have taken its sources over. This config's lease, which the instances
    // sharing the database are meant to share.
    let read = async {
        let instances = if shared {
            store.instances(lease).await?
        } else {
            Vec::new()
        };
        Ok::<_, crate::store::StoreError>((
            store.source_runs().await?,
            store.queue_stats().await?,
            instances,
        ))
    }
    .await;
    store.close().await;
    if let Some(database) = &database {
        hand_side_files_back(database);
    }
    let (runs, queues, instances) = read.map_err(anyhow::Error::from)?;
    if as_json {
        let value = json!({
            "state": location,
            "instances": instances,
            "sources": runs,
            "connectors": queues,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).context("encoding JSON")?
        );
        return Ok(());
    }
    println!("State  {location}\n");
    if shared {
        println!("Instances");
        if instances.is_empty() {
            println!("  (none running)");
        }
        for instance in &instances {
            let leads = if instance.sources.is_empty() {
                "-".to_owned()
            } else {
                instance.sources.join(", ")
            };
            println!(
                "  {:<14} host {:<16} last heartbeat {} ago{}  polls {}  deliveries in flight {}",
                shown::one_line(&instance.name),
                shown::one_line(&instance.host),
                age(Some(instance.last_heartbeat_at)),
                if instance.live { "" } else { " (gone)" },
                leads,
                instance.deliveries_in_flight
            );
        }
        if instances.iter().any(|instance| !instance.live) {
            println!(
                "  (gone: no heartbeat for longer than state.lease; it stopped without a clean stop, and its row stays until an instance of that name starts again)"
            );
        }
        println!();
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
    Ok(())
}

pub async fn deliveries(path: Option<&Path>, command: DeliveriesCommand) -> CommandResult {
    if let DeliveriesCommand::Replay(args) = &command {
        return super::replay::replay(path, args).await;
    }
    let writable = matches!(command, DeliveriesCommand::Retry { .. });
    let (store, database, _, _) = open_store(path, writable).await?;
    let result = deliveries_in(&store, command).await;
    store.close().await;
    if let Some(database) = &database {
        hand_side_files_back(database);
    }
    result
}

async fn deliveries_in(store: &Store, command: DeliveriesCommand) -> CommandResult {
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
                    // A delivered row's last attempt succeeded: there is no error to show.
                    let last = row
                        .last_attempt
                        .as_ref()
                        .filter(|_| row.status != "delivered")
                        .map(|attempt| {
                            let code = attempt
                                .status_code
                                .map_or_else(String::new, |c| format!("[{c}] "));
                            let reason = attempt.reason.as_deref().unwrap_or("");
                            format!("{code}{}", shown::one_line(reason))
                        })
                        // Dead with no attempt: a route filter failed when the event
                        // was written, and the reason is all there is.
                        .or_else(|| {
                            row.last_error
                                .as_deref()
                                .filter(|_| row.status == "dead")
                                .map(shown::one_line)
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
        DeliveriesCommand::Replay(_) => unreachable!("replay is handled by commands::replay"),
    }
    Ok(())
}
