//! `/metrics`, `/healthz` and `/readyz` on `[http] listen`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::auth::AuthGate;
use crate::daemon::{Generation, Runtime, StateHealth};
use crate::metrics::Metrics;
use crate::shutdown::{self, CancellationToken};
use crate::store::{Store, now_ms};

#[derive(Clone)]
pub struct HealthState {
    metrics: Metrics,
    store: Store,
    auth: Arc<AuthGate>,
    state: StateHealth,
    generations: watch::Receiver<Arc<Generation>>,
}

impl HealthState {
    pub fn new(runtime: &Runtime, generations: watch::Receiver<Arc<Generation>>) -> Self {
        Self {
            metrics: runtime.metrics.clone(),
            store: runtime.store.clone(),
            auth: runtime.auth.clone(),
            state: runtime.state.clone(),
            generations,
        }
    }
}

/// Connections served at once. A scraper and a health check or two use a handful; beyond
/// this a new connection is closed at once rather than queued: the process's descriptors
/// stay bounded whatever a client does, and a real request is never queued behind a
/// flood's slow ones (a scraper simply tries again at its next interval).
const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request's headers, counted from when the connection
/// is ready for one; it also ends a keep-alive connection left idle that long. Scrapers
/// and probes send theirs at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection is kept, whatever it does: covers a client that sends its
/// headers and then a body byte by byte, or never reads the answer.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// At shutdown, how long a request being answered may finish (capped by
/// `delivery.shutdown_timeout`) before its connection is cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long `/readyz` waits for a PostgreSQL state to read the sources' runs.
const WATCHED_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// After a failed `accept` (out of descriptors, say), the pause before the next one:
/// the error would repeat at once, and the loop would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves until `stop` is cancelled, then stops accepting, lets requests in progress finish
/// for a short grace, and cuts the connections still open: a slow or stuck client never
/// holds the daemon's exit past `delivery.shutdown_timeout`.
pub async fn serve(listener: tokio::net::TcpListener, state: HealthState, stop: CancellationToken) {
    let grace = SHUTDOWN_GRACE.min(state.generations.borrow().config.delivery.shutdown_timeout);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Tells the open connections to finish: cancelled when the listener stops.
    let closing = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut refused = 0u64;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "The metrics and health endpoint cannot accept a connection; trying again shortly.");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            // Once per burst, not once per connection: a flood must not flood the log.
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max = MAX_CONNECTIONS,
                    "The metrics and health endpoint has its maximum of connections open; new ones are closed at once."
                );
            }
            continue;
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let closing = closing.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            let age = tokio::time::sleep(MAX_CONNECTION_AGE);
            tokio::pin!(age);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closing.cancelled() => {}
                _ = &mut age => {}
            }
            // Closes an idle connection at once, and one in the middle of a request
            // after its answer; the caller's grace (or the age) bounds the wait.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        });
    }
    drop(listener);
    closing.cancel();
    let open = shutdown::drain(&mut connections, grace).await;
    if open > 0 {
        tracing::info!(
            open,
            "Closed the metrics and health connections still open at shutdown."
        );
    }
}

/// OpenMetrics when the scraper asks for it (as Prometheus does), else the classic text
/// format 0.0.4 (what `curl` and older scrapers read).
async fn metrics(State(state): State<HealthState>, headers: HeaderMap) -> Response {
    let body = state.metrics.encode_openmetrics();
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            openmetrics_to_classic(&body),
        )
            .into_response()
    }
}

/// The classic format differs from OpenMetrics in what this registry emits only in two
/// ways: a counter's HELP and TYPE name the `_total` series itself, and there is no
/// `# EOF` trailer.
pub fn openmetrics_to_classic(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + counters.len() * 16);
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// 200 only when the state DB takes writes, Clairo accepts the key, and every source's
/// last run succeeded or is younger than its schedule allows, and no source has gone
/// longer than its schedule allows without completing a run (stuck in one, or not
/// running at all); otherwise 503 naming the failing checks.
async fn readyz(State(state): State<HealthState>) -> Response {
    let mut failing = serde_json::Map::new();
    // A PostgreSQL state that does not record is said as the daemon last found it,
    // without waiting on a server that does not answer; the checks that read the
    // database wait for it.
    let state_problem = state.state.problem();
    if let Some(problem) = &state_problem {
        failing.insert("state_db".into(), json!(problem));
    } else if state.state.is_watched() {
        // PostgreSQL: the daemon's watch writes every few seconds and says what it
        // found; a server that just went away would hold this answer for the pool's
        // whole timeout.
    } else if let Err(error) = state.store.check_writable().await {
        failing.insert("state_db".into(), json!(error.to_string()));
    }
    if let Some(reason) = state.auth.rejected() {
        failing.insert("api_key".into(), json!(reason));
    }
    let blocked = state.metrics.meeting_folders_blocked.get();
    if blocked > 0 {
        failing.insert(
            "meetings".into(),
            json!(format!(
                "{blocked} drop folder(s) take nothing: processed/ or failed/ is a link or not a directory (the log says which and what to do)"
            )),
        );
    }
    let generation = state.generations.borrow().clone();
    let runs = match state_problem {
        None if state.state.is_watched() => {
            // Bounded for the same reason; a read that does not come back in time is
            // the watch's to find out about.
            match tokio::time::timeout(WATCHED_READ_TIMEOUT, state.store.source_runs()).await {
                Ok(runs) => runs.ok(),
                Err(_) => {
                    state.state.suspect();
                    None
                }
            }
        }
        None => state.store.source_runs().await.ok(),
        Some(_) => None,
    };
    if let Some(runs) = runs {
        for kind in crate::sources::SourceKind::enabled(&generation.config) {
            let schedule = generation.schedule(kind);
            let Some(run) = runs.iter().find(|run| run.source == kind.name()) else {
                failing.insert(format!("source.{}", kind.name()), json!("no run yet"));
                continue;
            };
            if let Some(schedule) = &schedule
                && let Some(reason) =
                    crate::daemon::stale_reason(kind, schedule, Some(run), now_ms())
            {
                failing.insert(format!("source.{}", kind.name()), json!(reason));
                continue;
            }
            if run.last_outcome.as_deref() == Some("failure") {
                // A failure is tolerated until the run after next was due.
                let allowed_until = schedule.as_ref().and_then(|schedule| {
                    let since = chrono::DateTime::from_timestamp_millis(
                        run.last_success_at.unwrap_or(run.last_started_at),
                    )?;
                    let next = schedule.next_after(since)?;
                    schedule.next_after(next)
                });
                let stale = allowed_until.is_none_or(|until| until.timestamp_millis() < now_ms());
                if stale {
                    failing.insert(
                        format!("source.{}", kind.name()),
                        json!(
                            run.last_error
                                .clone()
                                .unwrap_or_else(|| "last run failed".into())
                        ),
                    );
                }
            }
        }
    }
    if failing.is_empty() {
        (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready", "failing": failing})),
        )
            .into_response()
    }
}
