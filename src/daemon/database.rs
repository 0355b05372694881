//! Whether the state database records now. A PostgreSQL server can be down when the
//! daemon starts, go away under it (stopped, failed over, made read-only, out of disk) and
//! come back: the daemon stays up through all of it. [`StateHealth::run`] reaches the
//! database (and migrates it) at start, checks every few seconds that it takes a write,
//! and while it does not, says why (`/readyz`, one log line per change, the
//! `clairo_sync_state_up` gauge) and tries again with a capped backoff. The pollers, the
//! leases and the dispatcher wait for it (docs/operations.md, "When the database is not
//! there").
//!
//! A SQLite file is opened at start or the daemon does not start; nothing watches it here
//! (no task, no timer), and `/readyz` checks it as before.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::shutdown::CancellationToken;
use crate::store::{Store, StoreError};

use super::systemd;

/// The first retry after a failure; each next one waits twice as long, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two tries: a database back from an outage is used within
/// this long.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often a database that records is checked (one small write), and sooner when a
/// renewal of the leases or `/readyz` met an error.
const CHECK_EVERY: Duration = Duration::from_secs(3);

/// How long that check may take before a connection of its own is tried (the pool would
/// wait for its own acquire timeout, 10 s, on a server that refuses connections). A
/// slow check alone is no outage: only that connection's failure is.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What every problem says about what the daemon does meanwhile.
const RETRYING: &str = "the daemon polls and delivers nothing meanwhile and tries again by itself (after 1 s, then twice as long each time, up to every 30 s)";

/// Cheap to clone; the supervisor, the leases, the dispatcher and `/readyz` hold one.
#[derive(Clone)]
pub struct StateHealth {
    /// None: SQLite, opened at start, not watched here.
    watched: Option<Arc<Watched>>,
}

struct Watched {
    store: Store,
    metrics: Metrics,
    /// None while the database records; otherwise why not, in an operator's words.
    problem: watch::Sender<Option<String>>,
    /// Rung by a part that met an error from the database: checked at once.
    suspect: tokio::sync::Notify,
}

impl StateHealth {
    /// A SQLite file, opened at start: always up here.
    pub fn local(metrics: &Metrics) -> Self {
        metrics.state_up.set(1);
        Self { watched: None }
    }

    /// A PostgreSQL database, watched by [`StateHealth::run`]: `reached` when it was
    /// connected to and migrated already, else it counts as down until `run` reaches it.
    pub fn watched(store: Store, metrics: Metrics, reached: bool) -> Self {
        let problem = (!reached).then(|| {
            format!(
                "the state database has not been reached yet (the daemon is connecting); {RETRYING}"
            )
        });
        metrics.state_up.set(i64::from(reached));
        Self {
            watched: Some(Arc::new(Watched {
                store,
                metrics,
                problem: watch::Sender::new(problem),
                suspect: tokio::sync::Notify::new(),
            })),
        }
    }

    /// Whether a task watches the database (PostgreSQL).
    pub fn is_watched(&self) -> bool {
        self.watched.is_some()
    }

    /// Why the database does not record now (None: it does, or it is SQLite).
    pub fn problem(&self) -> Option<String> {
        self.watched
            .as_ref()
            .and_then(|watched| watched.problem.borrow().clone())
    }

    pub fn is_up(&self) -> bool {
        self.watched
            .as_ref()
            .is_none_or(|watched| watched.problem.borrow().is_none())
    }

    /// Someone met an error from the database, or a reload may have fixed what kept it
    /// away: it is checked (or tried again) now rather than at the next period. Nothing
    /// on SQLite.
    pub fn suspect(&self) {
        if let Some(watched) = &self.watched {
            watched.suspect.notify_one();
        }
    }

    /// Completes once the database records (at once on SQLite).
    pub async fn up(&self) {
        self.wait_for(true).await;
    }

    /// Completes once the database stops recording (never on SQLite).
    pub async fn down(&self) {
        self.wait_for(false).await;
    }

    async fn wait_for(&self, up: bool) {
        let Some(watched) = &self.watched else {
            if up {
                return;
            }
            return std::future::pending().await;
        };
        let mut problem = watched.problem.subscribe();
        if problem
            .wait_for(|problem| problem.is_none() == up)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }

    /// Reaches the database and keeps watching it until `stop`. Nothing on SQLite.
    pub async fn run(&self, stop: CancellationToken) {
        let Some(watched) = &self.watched else {
            return;
        };
        let mut retry = RETRY_FIRST;
        // Whether the database has recorded since the start (the wording differs).
        let mut reached = self.is_up();
        loop {
            let wait = if self.is_up() {
                match watched.check().await {
                    Ok(()) => CHECK_EVERY,
                    Err(reason) => {
                        watched.fall(&reason, reached);
                        retry = RETRY_FIRST;
                        RETRY_FIRST
                    }
                }
            } else {
                match watched.store.prepare().await {
                    Ok(()) => {
                        watched.rise(reached);
                        reached = true;
                        retry = RETRY_FIRST;
                        CHECK_EVERY
                    }
                    Err(error) => {
                        watched.fall(&describe(&error), reached);
                        let wait = retry;
                        retry = (retry * 2).min(RETRY_MAX);
                        wait
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                () = watched.suspect.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

impl Watched {
    /// One write through the pool; when it fails, a connection of its own says why (the
    /// pool's own error may be just its timeout). A pool that fails while a new
    /// connection works (one statement cut short) is not an outage.
    async fn check(&self) -> Result<(), String> {
        let checked = tokio::time::timeout(CHECK_TIMEOUT, self.store.check_writable()).await;
        let pool_error = match checked {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => describe(&error),
            Err(_) => format!(
                "the state database did not take a write within {} s",
                CHECK_TIMEOUT.as_secs()
            ),
        };
        match self.store.prepare().await {
            Ok(()) => {
                tracing::warn!(error = %pool_error, "A check of the state database failed, but a new connection to it works; carrying on.");
                Ok(())
            }
            Err(error) => Err(describe(&error)),
        }
    }

    /// The database does not record: says why, once per change of reason.
    fn fall(&self, reason: &str, reached: bool) {
        let problem = format!("{reason}; {RETRYING}");
        let was_up = self.problem.borrow().is_none();
        let changed = self.problem.send_if_modified(|current| {
            if current.as_deref() == Some(problem.as_str()) {
                return false;
            }
            *current = Some(problem.clone());
            true
        });
        if !changed {
            return;
        }
        self.metrics.state_up.set(0);
        if was_up {
            tracing::error!(error = %reason, "The state database stopped recording. Polling and deliveries pause; nothing is lost (what was not recorded is polled or sent again), and the daemon resumes by itself once the database answers.");
        } else if reached {
            tracing::error!(error = %reason, "The state database still cannot be used, for another reason now.");
        } else {
            tracing::error!(error = %reason, "The state database cannot be used. The daemon stays up (/readyz says why), polls and delivers nothing, and tries again by itself: after 1 s, then up to every 30 s.");
        }
        systemd::notify(&[sd_notify::NotifyState::Status(
            "waiting for the state database (see /readyz or the log)",
        )]);
    }

    /// The database records (again).
    fn rise(&self, reached_before: bool) {
        self.problem.send_replace(None);
        self.metrics.state_up.set(1);
        if reached_before {
            tracing::info!("The state database records again; polling and deliveries resume.");
        } else {
            tracing::info!(
                "Reached the state database and brought its schema up to date; polling and deliveries start."
            );
        }
        systemd::notify(&[sd_notify::NotifyState::Status("running")]);
    }
}

/// A store error as `/readyz` and the log say it: already in an operator's words.
fn describe(error: &StoreError) -> String {
    error.to_string()
}
