//! `deliveries replay`: stored events queued again for one connector, with their original
//! ids — by default those the current routes (events, agents, `when`) send it, with
//! `--all` every one; events pruned from the outbox are rebuilt from the recorded items
//! (docs/operations.md, "Replay and backfill").

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clairo_connectors::EventType;
use serde_json::json;

use crate::cli::ReplayArgs;
use crate::config::{ConfigErrors, Need, Problem, SecretSources};
use crate::sources::{Router, rebuild};
use crate::store::{ReplayCount, Store, StoredEvent};

use super::{CommandError, CommandResult};

/// Which stored events a replay takes.
struct Selection {
    connector: String,
    router: Option<Router>,
    types: Vec<EventType>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Selection {
    fn takes(&self, stored: &StoredEvent) -> bool {
        let event = &stored.event;
        (self.types.is_empty() || self.types.contains(&event.kind))
            && self.since.is_none_or(|since| event.timestamp >= since)
            && self.until.is_none_or(|until| event.timestamp < until)
            && self.router.as_ref().is_none_or(|router| {
                router
                    .route(event, stored.agent_id.as_deref())
                    .connectors
                    .contains(&self.connector)
            })
    }
}

pub async fn replay(path: Option<&Path>, args: &ReplayArgs) -> CommandResult {
    let path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    // No secret is read: the state and the routes are all a replay needs, so it works
    // from a shell where only the service has its credentials.
    let loaded = crate::config::load(Some(&path), Need::StateOnly, &SecretSources::default())?;
    let config = loaded.config;
    let mut problems = Vec::new();
    if !config.connectors.contains_key(&args.connector) {
        let known: Vec<&str> = config.connectors.keys().map(String::as_str).collect();
        return Err(CommandError::Other(anyhow::anyhow!(
            "--connector {:?} is not in the config; name one of: {}",
            args.connector,
            if known.is_empty() {
                "(none configured)".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    for (index, route) in config.routes.iter().enumerate() {
        if let Some(problem) = route.when.as_ref().and_then(|when| when.problem()) {
            problems.push(Problem::new(format!("routes[{index}].when"), problem));
        }
    }
    if !problems.is_empty() && !args.all {
        return Err(ConfigErrors(problems).into());
    }
    let now = Utc::now();
    let selection = Selection {
        connector: args.connector.clone(),
        router: (!args.all).then(|| Router::new(&config.routes)),
        types: args
            .types
            .iter()
            .map(|name| {
                EventType::parse(name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--type {name:?} is not an event type; use brief.created, conversation.updated or meeting.processed"
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
        since: args
            .since
            .as_deref()
            .map(|text| parse_time("--since", text, now))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|text| parse_time("--until", text, now))
            .transpose()?,
    };
    let database = config.state.path.clone();
    let store = Store::open_existing(&database, !args.dry_run)
        .await
        .map_err(anyhow::Error::from)?;
    let result = queue(&store, &selection, args.dry_run).await;
    store.close().await;
    super::outbox::hand_side_files_back(&database);
    let counts = result.map_err(anyhow::Error::from)?;
    report(args, &counts)
}

/// The events selected, stored ones and rebuilt ones, queued (or counted, for a dry run).
async fn queue(
    store: &Store,
    selection: &Selection,
    dry_run: bool,
) -> Result<BTreeMap<String, ReplayCount>, crate::store::StoreError> {
    let mut chosen = Vec::new();
    let mut stored_ids = HashSet::new();
    store
        .each_event(|stored| {
            stored_ids.insert(stored.event.id.clone());
            if selection.takes(&stored) {
                chosen.push(stored);
            }
        })
        .await?;
    // Oldest first, as they were first sent: stored events, then the rebuilt ones.
    for item in store.announced_items().await? {
        let Some(rebuilt) = rebuild::event(&item) else {
            continue;
        };
        if stored_ids.insert(rebuilt.event.id.clone()) && selection.takes(&rebuilt) {
            chosen.push(rebuilt);
        }
    }
    chosen.sort_by_key(|stored| stored.event.timestamp);
    store
        .queue_replay(&selection.connector, &chosen, dry_run)
        .await
}

/// RFC 3339, or an age before `now` (`7d`, `12h`).
fn parse_time(flag: &str, text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(time.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(text.trim()).map_err(|_| {
        anyhow::anyhow!(
            "{flag} {text:?} is neither a time nor an age; write RFC 3339 (2026-03-01T00:00:00Z) or an age such as 7d or 12h"
        )
    })?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .with_context(|| format!("{flag} {text:?} reaches before any date; write a shorter age"))
}

fn report(args: &ReplayArgs, counts: &BTreeMap<String, ReplayCount>) -> CommandResult {
    let queued: u64 = counts.values().map(|count| count.queued).sum();
    let pending: u64 = counts.values().map(|count| count.already_pending).sum();
    if args.json {
        let value = json!({
            "connector": args.connector,
            "dry_run": args.dry_run,
            "queued": queued,
            "already_pending": pending,
            "types": counts,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).context("encoding JSON")?
        );
        return Ok(());
    }
    if queued == 0 {
        let why = if pending > 0 {
            format!(" ({pending} already pending, left as they are)")
        } else if args.all {
            " (no stored event matches the options)".to_owned()
        } else {
            " (no stored event that the routes send it matches the options; --all takes every event)"
                .to_owned()
        };
        println!("Nothing to replay to {}{why}.", args.connector);
        return Ok(());
    }
    let verb = if args.dry_run {
        "Would queue"
    } else {
        "Queued"
    };
    println!("{verb} {queued} events for {}:", args.connector);
    for (kind, count) in counts.iter().filter(|(_, count)| count.queued > 0) {
        let rebuilt = if count.rebuilt > 0 {
            format!(" ({} rebuilt from the recorded items)", count.rebuilt)
        } else {
            String::new()
        };
        println!("  {kind:<22} {}{rebuilt}", count.queued);
    }
    if pending > 0 {
        println!("{pending} more were already pending, left as they are.");
    }
    if args.dry_run {
        println!("Nothing was changed (--dry-run).");
    } else {
        println!(
            "A running daemon sends them within seconds; otherwise the next `run` or `sync --once` does."
        );
    }
    Ok(())
}
