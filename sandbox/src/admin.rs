//! `/_sandbox`: the admin surface that lets benchmarks and demos drive a sandbox running in
//! another process. No auth, no rate limit, not counted in the stats — it is not the API.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use crate::clock::now_ms;
use crate::config::Faults;
use crate::reply::{ApiError, json};
use crate::server::{App, lock};

/// More briefs than any benchmark needs; a typo'd count shouldn't exhaust memory.
const MAX_BRIEFS_PER_CALL: usize = 1_000_000;

pub(crate) fn router() -> Router<App> {
    Router::new()
        .route("/stats", get(stats))
        .route("/reset-stats", post(reset_stats))
        .route("/agents", get(agents))
        .route("/briefs", post(add_briefs))
        .route("/conversations", post(add_conversation))
        .route("/conversations/{id}/messages", post(add_message))
        .route("/conversations/{id}/truncate", post(truncate_messages))
        .route("/conversations/{id}/status", put(set_status))
        .route("/faults", get(faults).put(set_faults))
        .route("/fail-next", post(fail_next))
        .route("/rate-limit", put(set_rate_limit))
        .fallback(|| async { ApiError::not_found("Not found") })
}

/// Admin bodies are JSON; a bad one is a 400 in the same `{"error"}` shape as the API's.
fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload
        .map(|Json(value)| value)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `?log=false` leaves out the per-request log, which can run to a million entries.
async fn stats(State(app): State<App>, Query(query): Query<HashMap<String, String>>) -> Response {
    let with_log = query.get("log").is_none_or(|v| v != "false");
    let stats = lock(&app.stats).snapshot(with_log);
    json(StatusCode::OK, &stats)
}

async fn reset_stats(State(app): State<App>) -> StatusCode {
    lock(&app.stats).reset();
    StatusCode::NO_CONTENT
}

async fn agents(State(app): State<App>) -> Response {
    let agents = lock(&app.store).agent_infos();
    json(StatusCode::OK, &json!({ "agents": agents }))
}

#[derive(Deserialize)]
struct CountBody {
    count: usize,
}

async fn add_briefs(
    State(app): State<App>,
    payload: Result<Json<CountBody>, JsonRejection>,
) -> Response {
    respond(
        async move {
            let count = body(payload)?.count;
            if count > MAX_BRIEFS_PER_CALL {
                return Err(ApiError::bad_request(format!(
                    "count must be at most {MAX_BRIEFS_PER_CALL}"
                )));
            }
            // Off the async threads: 100k briefs take a moment and the API keeps serving.
            let ids = tokio::task::spawn_blocking(move || {
                lock(&app.store).add_generated_briefs(count, now_ms())
            })
            .await
            .map_err(|_| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            })?;
            Ok(json(StatusCode::OK, &json!({ "ids": ids })))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct MessageBody {
    role: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConversationBody {
    agent_id: String,
    #[serde(default)]
    messages: Vec<MessageBody>,
}

async fn add_conversation(
    State(app): State<App>,
    payload: Result<Json<ConversationBody>, JsonRejection>,
) -> Response {
    respond(body(payload).and_then(|b| {
        let messages: Vec<(&str, &str)> = b
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        let id = lock(&app.store).add_conversation(&b.agent_id, &messages, now_ms())?;
        Ok(json(StatusCode::OK, &json!({ "id": id })))
    }))
}

async fn add_message(
    State(app): State<App>,
    Path(id): Path<String>,
    payload: Result<Json<MessageBody>, JsonRejection>,
) -> Response {
    respond(body(payload).and_then(|m| {
        let count = lock(&app.store).add_message(&id, &m.role, &m.content, now_ms())?;
        Ok(json(
            StatusCode::OK,
            &json!({ "id": id, "messageCount": count }),
        ))
    }))
}

#[derive(Deserialize)]
struct TruncateBody {
    keep: usize,
}

async fn truncate_messages(
    State(app): State<App>,
    Path(id): Path<String>,
    payload: Result<Json<TruncateBody>, JsonRejection>,
) -> Response {
    respond(body(payload).and_then(|b| {
        let count = lock(&app.store).truncate_messages(&id, b.keep, now_ms())?;
        Ok(json(
            StatusCode::OK,
            &json!({ "id": id, "messageCount": count }),
        ))
    }))
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

async fn set_status(
    State(app): State<App>,
    Path(id): Path<String>,
    payload: Result<Json<StatusBody>, JsonRejection>,
) -> Response {
    respond(body(payload).and_then(|b| {
        lock(&app.store).set_status(&id, &b.status, now_ms())?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }))
}

async fn faults(State(app): State<App>) -> Response {
    json(StatusCode::OK, &app.faults())
}

async fn set_faults(
    State(app): State<App>,
    payload: Result<Json<Faults>, JsonRejection>,
) -> Response {
    respond(body(payload).map(|faults| {
        lock(&app.gate).set_faults(faults.clone());
        json(StatusCode::OK, &faults)
    }))
}

#[derive(Deserialize)]
struct FailNextBody {
    count: usize,
    status: u16,
}

async fn fail_next(
    State(app): State<App>,
    payload: Result<Json<FailNextBody>, JsonRejection>,
) -> Response {
    respond(body(payload).and_then(|b| {
        let status = StatusCode::from_u16(b.status)
            .map_err(|_| ApiError::bad_request("status must be an HTTP status code"))?;
        lock(&app.gate).fail_next(b.count, status);
        Ok(StatusCode::NO_CONTENT.into_response())
    }))
}

#[derive(Deserialize)]
struct RateLimitBody {
    limit: u32,
    window_ms: u64,
}

async fn set_rate_limit(
    State(app): State<App>,
    payload: Result<Json<RateLimitBody>, JsonRejection>,
) -> Response {
    respond(body(payload).map(|b| {
        lock(&app.gate).set_rate_limit(b.limit, Duration::from_millis(b.window_ms));
        json(
            StatusCode::OK,
            &json!({ "limit": b.limit, "window_ms": b.window_ms }),
        )
    }))
}
