//! The pollers' schedules: a source runs once at start-up (covering runs missed while
//! down), then whenever its croner schedule fires, never twice at once; each run is
//! recorded, counted and logged, and a refused key pauses polling (the auth gate).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::auth::AUTH_BACKOFF;
use crate::config::{Config, Schedule};
use crate::metrics::{PollLabels, SourceLabels};
use crate::shutdown::CancellationToken;
use crate::sources::{self, PollError, SourceContext, SourceKind};

use super::{Generation, Leadership};

/// The longest single sleep of the scheduler: after it, the wall clock is read again, so
/// a clock that jumped (NTP, suspend) is noticed within this long.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// One run of one source: recorded in the store, counted, logged.
pub async fn run_source(
    kind: SourceKind,
    context: &SourceContext,
    config: &Config,
) -> Result<sources::PollReport, PollError> {
    let source = kind.name();
    let auth = &context.auth;
    if let Err(error) = context.store.start_run(source).await {
        if error.is_unavailable() {
            // Nothing polled now could be recorded: spend no API requests on it.
            if context.store.is_server() {
                tracing::error!(source, %error, "The state database cannot record now; this poll is skipped, and polling resumes once it does.");
            } else {
                tracing::error!(source, %error, "The state database cannot be written (disk full or read-only); this poll is skipped and the next scheduled one tries again. Free space under the state directory.");
            }
            context
                .metrics
                .poll_runs
                .get_or_create(&PollLabels {
                    source: source.to_owned(),
                    outcome: "failure".to_owned(),
                })
                .inc();
            return Err(PollError::Store(error));
        }
        tracing::error!(source, %error, "Cannot record the start of a poll run.");
    }
    let started = Instant::now();
    let result = sources::poll(kind, context, config).await;
    let outcome = if result.is_ok() { "success" } else { "failure" };
    context
        .metrics
        .poll_runs
        .get_or_create(&PollLabels {
            source: source.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
    let error_text = result.as_ref().err().map(ToString::to_string);
    if let Err(error) = context
        .store
        .finish_run(source, error_text.as_deref())
        .await
    {
        tracing::error!(source, %error, "Cannot record the end of a poll run.");
    }
    match &result {
        Ok(report) => {
            auth.accept();
            context
                .metrics
                .last_success
                .get_or_create(&SourceLabels {
                    source: source.to_owned(),
                })
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            tracing::info!(
                source,
                listed = report.listed,
                new = report.new_items,
                events = report.events,
                detail_calls = report.detail_calls,
                skipped = report.skipped,
                elapsed_ms = (started.elapsed().as_micros() as f64 / 1000.0),
                "Poll run finished."
            );
        }
        Err(error) if error.is_auth_failure() => {
            auth.refuse(error.to_string());
            tracing::error!(
                source,
                %error,
                pause_s = AUTH_BACKOFF.as_secs(),
                "Clairo refused the credentials; polling pauses. Fix the key, then reload (systemctl reload clairo-sync)."
            );
        }
        Err(error) => {
            tracing::error!(source, %error, "Poll run failed; the next scheduled run tries again.")
        }
    }
    result
}

/// Sleeps until `schedule` next fires, re-reading the wall clock at least every
/// [`MAX_SLEEP`] so a clock jump neither loses a run nor causes a burst of them.
/// Returns false when `shutdown` was cancelled meanwhile.
pub async fn sleep_until_next(schedule: &Schedule, shutdown: &CancellationToken) -> bool {
    let Some(mut target) = schedule.next_after(chrono::Utc::now()) else {
        // A schedule that never fires again (a date in the past): wait for shutdown.
        shutdown.cancelled().await;
        return false;
    };
    loop {
        let now = chrono::Utc::now();
        if now >= target {
            return true;
        }
        // The clock went backwards: a sooner firing exists now.
        if let Some(sooner) = schedule.next_after(now)
            && sooner < target
        {
            target = sooner;
        }
        let wait = (target - now).to_std().unwrap_or_default().min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// A source's life in the daemon: once at start-up (covering runs missed while down),
/// then on its schedule, never two runs at once (the loop is sequential), runs missed
/// while one was going coalesced into the next. A reload swaps the schedule at once; a run
/// in progress finishes on the config it started with. After a failed run, a reload runs
/// the source at once (the fix for a rejected key takes effect without waiting).
///
/// With several instances, only the holder of the source's lease runs it: the others
/// skip their firings, and one that takes the lease over runs at once; a run whose lease
/// is lost midway stops there (no two instances ever poll one source).
pub async fn source_loop(
    kind: SourceKind,
    mut generations: watch::Receiver<Arc<Generation>>,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    let mut run_now = true;
    let mut last_failed = false;
    loop {
        let generation = generations.borrow_and_update().clone();
        let Some(schedule) = generation.schedule(kind) else {
            // Not configured (now): wait for a reload that turns it on.
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            run_now = true;
            continue;
        };
        if !run_now {
            let held = leadership.holds(kind);
            tokio::select! {
                fired = sleep_until_next(&schedule, &shutdown) => if !fired { return },
                changed = generations.changed() => {
                    if changed.is_err() { return }
                    run_now = last_failed;
                    continue;
                }
                // Taken over from an instance that stopped: its missed runs are covered
                // now, as at start-up.
                () = leadership.taken(kind), if !held => {
                    run_now = true;
                    continue;
                }
            }
        }
        run_now = false;
        if shutdown.is_cancelled() {
            return;
        }
        if !leadership.holds(kind) {
            tracing::debug!(
                source = kind.name(),
                "Another instance polls this source (it holds the lease)."
            );
            continue;
        }
        if let Some(reason) = generation.context.auth.paused() {
            tracing::debug!(source = kind.name(), %reason, "Polling paused after Clairo refused the credentials.");
            continue;
        }
        let run = run_source(kind, &generation.context, &generation.config);
        tokio::select! {
            result = run => last_failed = result.is_err(),
            () = leadership.lost(kind) => {
                tracing::warn!(source = kind.name(), "This instance's lease on the source ran out or went to another instance during a run; the run stops here, and the lease's holder polls the source.");
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
