//! Readiness staleness: a source that has not completed a run for longer than its
//! schedule allows is stuck. [`stale_reason`] says why (for `/readyz`); [`stale_loop`]
//! keeps the `clairo_sync_source_stale` gauge current.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Schedule;
use crate::metrics::{Metrics, SourceLabels};
use crate::shutdown::CancellationToken;
use crate::sources::SourceKind;
use crate::store::Store;

use super::{Generation, StateHealth, every};

/// Schedule firings a source may let pass without completing a run before it counts as
/// stale: one run may be slow (the firings it overlaps coalesce into the next run) and the
/// next may fail and be retried, but three in a row means it is stuck.
pub const STALE_AFTER_FIRINGS: usize = 3;

/// Added to those firings: a sound run may wait out a whole rate window
/// ([`crate::clairo::MAX_RESET_WAIT`], 65 s) and then still has its requests to make.
pub const STALE_MARGIN: Duration = Duration::from_secs(90);

/// How often the `source_stale` gauge is brought up to date.
const STALE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why `kind` is stale at `now_ms`, or `None` while it keeps to its schedule: no run of it
/// completed (successfully or not) within [`STALE_AFTER_FIRINGS`] firings of its schedule
/// plus [`STALE_MARGIN`], counted from its last completed run or from the start of the
/// run still going, whichever is later (a restart starts a fresh run).
pub fn stale_reason(
    kind: SourceKind,
    schedule: &Schedule,
    run: Option<&crate::store::SourceRun>,
    now_ms: i64,
) -> Option<String> {
    // No run yet: readiness already says so, and the first starts at start-up.
    let run = run?;
    let finished = run.last_finished_at;
    let since_ms = finished.map_or(run.last_started_at, |at| at.max(run.last_started_at));
    let since = chrono::DateTime::from_timestamp_millis(since_ms)?;
    let mut deadline = since;
    for _ in 0..STALE_AFTER_FIRINGS {
        // A schedule that fires no more cannot be behind it.
        deadline = schedule.next_after(deadline)?;
    }
    let deadline = deadline + chrono::TimeDelta::from_std(STALE_MARGIN).ok()?;
    if deadline.timestamp_millis() >= now_ms {
        return None;
    }
    let show = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || "an unknown time".to_owned(),
            |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    };
    let completed = finished.map_or_else(|| "the daemon first started".to_owned(), show);
    let going = if finished.is_none_or(|at| run.last_started_at > at) {
        format!(
            "; the run that started at {} is still going",
            show(run.last_started_at)
        )
    } else {
        String::new()
    };
    Some(format!(
        "source {} has not completed a run since {completed}{going}, longer than {STALE_AFTER_FIRINGS} runs of its schedule (\"{}\") and {} s allow; see `clairo-sync status` and the daemon's log",
        kind.name(),
        schedule.as_str(),
        STALE_MARGIN.as_secs(),
    ))
}

/// Keeps `clairo_sync_source_stale{source}` current: 1 while [`stale_reason`] has one.
/// Its own task, so a source stuck in a run still shows as stale.
pub async fn stale_loop(
    generations: watch::Receiver<Arc<Generation>>,
    store: Store,
    metrics: Metrics,
    state: StateHealth,
    stop: CancellationToken,
) {
    every(STALE_CHECK_EVERY, &stop, || async {
        // While the database is away the runs cannot be read (and /readyz says why).
        if !state.is_up() {
            return;
        }
        let Ok(runs) = store.source_runs().await else {
            return;
        };
        let generation = generations.borrow().clone();
        let now = crate::store::now_ms();
        for kind in SourceKind::enabled(&generation.config) {
            let Some(schedule) = generation.schedule(kind) else {
                continue;
            };
            let run = runs.iter().find(|run| run.source == kind.name());
            let stale = stale_reason(kind, &schedule, run, now).is_some();
            metrics
                .source_stale
                .get_or_create(&SourceLabels {
                    source: kind.name().to_owned(),
                })
                .set(i64::from(stale));
        }
    })
    .await;
}
