//! `/metrics`, `/healthz` and `/readyz` on `[http] listen`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;

use crate::daemon::{AuthGate, Generation, Runtime};
use crate::metrics::Metrics;
use crate::store::{Store, now_ms};

#[derive(Clone)]
pub struct HealthState {
    metrics: Metrics,
    store: Store,
    auth: Arc<AuthGate>,
    generations: watch::Receiver<Arc<Generation>>,
}

impl HealthState {
    pub fn new(runtime: &Runtime, generations: watch::Receiver<Arc<Generation>>) -> Self {
        Self {
            metrics: runtime.metrics.clone(),
            store: runtime.store.clone(),
            auth: runtime.auth.clone(),
            generations,
        }
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HealthState,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let shutdown = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%error, "The metrics and health endpoint stopped.");
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
    if let Err(error) = state.store.check_writable().await {
        failing.insert("state_db".into(), json!(error.to_string()));
    }
    if let Some(reason) = state.auth.rejected() {
        failing.insert("api_key".into(), json!(reason));
    }
    let generation = state.generations.borrow().clone();
    if let Ok(runs) = state.store.source_runs().await {
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
