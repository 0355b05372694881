//! The JSON endpoints of `/api/v1` (everything but `/meetings`): request validation with
//! the docs' error shape, then one call into the store.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::reply::{ApiError, json, raw_json};
use crate::server::{App, lock};

/// `limit`'s default, as documented.
const DEFAULT_LIMIT: usize = 50;

pub(crate) async fn agents(State(app): State<App>) -> Response {
    let malformed = app.malformed_items();
    let body = lock(&app.store).agents_json(malformed);
    raw_json(StatusCode::OK, body)
}

/// The body `/chat` and `/discover` share.
#[derive(Debug, PartialEq, Eq)]
struct MessageRequest {
    agent_id: String,
    message: String,
    conversation_id: Option<String>,
}

/// Parses by hand rather than with `Json<T>` so every failure answers in the docs'
/// `{"error"}` shape, and so an empty `conversationId` starts a new conversation (as a
/// JavaScript server testing `if (conversationId)` would).
fn message_request(body: Result<Bytes, BytesRejection>) -> Result<MessageRequest, ApiError> {
    let body = body.map_err(|_| ApiError::bad_request("Could not read the request body"))?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("Invalid JSON body"))?;
    let text = |name: &str| match value.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    };
    let (Some(agent_id), Some(message)) = (text("agentId"), text("message")) else {
        return Err(ApiError::bad_request("agentId and message are required"));
    };
    let conversation_id = match value.get("conversationId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("conversationId must be a string")),
    };
    Ok(MessageRequest {
        agent_id,
        message,
        conversation_id,
    })
}

pub(crate) async fn chat(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
    let request = match message_request(body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let outcome = lock(&app.store).chat(
        &request.agent_id,
        &request.message,
        request.conversation_id.as_deref(),
        now_ms(),
    );
    match outcome {
        Ok(o) => json(
            StatusCode::OK,
            &json!({ "reply": o.reply, "conversationId": o.conversation_id }),
        ),
        Err(error) => error.into_response(),
    }
}

pub(crate) async fn discover(
    State(app): State<App>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = match message_request(body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let outcome = lock(&app.store).discover(
        &request.agent_id,
        &request.message,
        request.conversation_id.as_deref(),
        now_ms(),
    );
    match outcome {
        Ok(o) => json(
            StatusCode::OK,
            &json!({
                "reply": o.reply,
                "conversationId": o.conversation_id,
                "progress": o.progress,
                "completed": o.completed,
            }),
        ),
        Err(error) => error.into_response(),
    }
}

/// `limit` must be a positive integer; a huge one is simply "everything".
fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    let invalid = || ApiError::bad_request("limit must be a positive integer");
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match raw.parse::<usize>() {
        Ok(0) => Err(invalid()),
        Ok(n) => Ok(n),
        Err(_) => Ok(usize::MAX), // all digits, too long to fit: positive, and enormous
    }
}

pub(crate) async fn conversations(
    State(app): State<App>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::bad_request("Invalid query string").into_response();
    };
    let limit = match parse_limit(query.get("limit").map(String::as_str)) {
        Ok(limit) => limit,
        Err(error) => return error.into_response(),
    };
    let agent = query
        .get("agentId")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let malformed = app.malformed_items();
    let body = lock(&app.store).conversations_json(agent, limit, malformed);
    raw_json(StatusCode::OK, body)
}

pub(crate) async fn conversation(State(app): State<App>, Path(id): Path<String>) -> Response {
    match lock(&app.store).conversation_json(&id) {
        Ok(body) => raw_json(StatusCode::OK, body),
        Err(error) => error.into_response(),
    }
}

pub(crate) async fn briefs(
    State(app): State<App>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let faults = app.faults();
    let limit = match (faults.briefs_honour_limit, query) {
        (false, _) => usize::MAX,
        (true, Ok(Query(query))) => match parse_limit(query.get("limit").map(String::as_str)) {
            Ok(limit) => limit,
            Err(error) => return error.into_response(),
        },
        (true, Err(_)) => return ApiError::bad_request("Invalid query string").into_response(),
    };
    let body = lock(&app.store).briefs_json(limit, faults.malformed_items);
    raw_json(StatusCode::OK, body)
}

pub(crate) async fn brief(State(app): State<App>, Path(id): Path<String>) -> Response {
    match lock(&app.store).brief_json(&id) {
        Ok(body) => raw_json(StatusCode::OK, body),
        Err(error) => error.into_response(),
    }
}

pub(crate) async fn not_found() -> Response {
    ApiError::not_found("Not found").into_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<MessageRequest, ApiError> {
        message_request(Ok(Bytes::from(body.to_owned())))
    }

    #[test]
    fn message_requests_need_agent_and_message() {
        assert_eq!(
            parse(r#"{"agentId":"a","message":"hi","conversationId":""}"#),
            Ok(MessageRequest {
                agent_id: "a".into(),
                message: "hi".into(),
                conversation_id: None
            })
        );
        for bad in [
            r#"{"agentId":"a"}"#,
            r#"{"message":"hi"}"#,
            r#"{"agentId":1,"message":"hi"}"#,
            "[]",
            "nope",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert!(parse(r#"{"agentId":"a","message":"hi","conversationId":3}"#).is_err());
    }

    #[test]
    fn limit_must_be_a_positive_integer() {
        assert_eq!(parse_limit(None), Ok(50));
        assert_eq!(parse_limit(Some("7")), Ok(7));
        assert_eq!(parse_limit(Some("99999999999999999999999")), Ok(usize::MAX));
        for bad in ["0", "-1", "1.5", "abc", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
