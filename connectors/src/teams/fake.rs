//! A local stand-in for a Teams Workflows webhook ("Post to a channel when a webhook
//! request is received"), refusing what Teams refuses: a body that is not JSON, a message
//! without the `{"type": "message", "attachments": [...]}` envelope, an attachment that is
//! not an Adaptive Card (`type: AdaptiveCard` with a `version`), and a message over 28 KiB.
//! It answers 202 Accepted with no body on success, and Azure Logic Apps' error bodies
//! (`{"error": {"code", "message"}}`) otherwise. Faults are injected for the next requests.
//!
//! The real trigger accepts a message first (202) and a too-large or malformed card then
//! fails in the flow's run (`MessageSizeExceeded`, 28,672 bytes at most); the fake
//! answers that failure at once, as a 400, so a test sees it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::card::{CARD_CONTENT_TYPE, TEAMS_LIMIT_BYTES};
use crate::chat::fake::Hook;

/// A failure to meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a Logic Apps error body.
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    Throttled { retry_after_secs: u64 },
}

/// A running fake Teams workflow webhook; clones share its state.
pub type FakeTeams = Hook<Fault>;

impl FakeTeams {
    pub async fn start() -> Self {
        let path = "/workflows/0f1e2d3c4b5a69788796a5b4c3d2e1f0/triggers/manual/paths/invoke";
        // Workflows-shaped, with its `sig=`.
        let url = |address| {
            format!(
                "http://{address}{path}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=FAKEsigFAKEsig"
            )
        };
        Self::serve(path, url, handle).await
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn code_of(status: u16) -> &'static str {
    match status {
        400 => "InvalidRequestContent",
        401 => "DirectApiAuthorizationRequired",
        403 => "AuthorizationFailed",
        404 => "WorkflowNotFound",
        429 => "WorkflowTriggerIsThrottled",
        _ => "InternalServerError",
    }
}

async fn handle(
    State(fake): State<FakeTeams>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.count_request();
    if uri.path() != fake.path() {
        return error(
            StatusCode::NOT_FOUND,
            "WorkflowNotFound",
            "The workflow could not be found.",
        );
    }
    if !uri.query().unwrap_or("").contains("sig=") {
        return error(
            StatusCode::UNAUTHORIZED,
            "DirectApiAuthorizationRequired",
            "The request must be authenticated only by Shared Access scheme.",
        );
    }
    if method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "TriggerRequestMethodNotValid",
            "The HTTP method for this request is not valid: expected 'Post'.",
        );
    }
    if let Some(fault) = fake.take_fault() {
        return match fault {
            Fault::Throttled { retry_after_secs } => {
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    code_of(429),
                    "The workflow trigger is throttled; retry later.",
                );
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    retry_after_secs.to_string().parse().expect("a number"),
                );
                response
            }
            Fault::Status(status) => {
                let status = StatusCode::from_u16(status).expect("a valid status");
                error(status, code_of(status.as_u16()), "Injected fault.")
            }
        };
    }
    match check(&headers, &body) {
        Ok(message) => {
            fake.accept(message);
            StatusCode::ACCEPTED.into_response()
        }
        Err((code, message)) => {
            fake.refuse(400, format!("{code}: {message}"));
            error(StatusCode::BAD_REQUEST, code, &message)
        }
    }
}

fn check(headers: &HeaderMap, body: &[u8]) -> Result<Value, (&'static str, String)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err((
            "InvalidRequestContent",
            "The request content type must be application/json.".to_owned(),
        ));
    }
    if body.len() > TEAMS_LIMIT_BYTES {
        return Err((
            "MessageSizeExceeded",
            format!(
                "Message properties size exceeded. Actual message properties size: {} bytes, \
                 whereas max allowed size is {TEAMS_LIMIT_BYTES} bytes",
                body.len()
            ),
        ));
    }
    let message: Value = serde_json::from_slice(body).map_err(|error| {
        (
            "InvalidRequestContent",
            format!("The request content is not valid JSON: {error}"),
        )
    })?;
    let shape = |message: &str| ("InvalidTemplate", message.to_owned());
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return Err(shape("The message must have \"type\": \"message\"."));
    }
    let attachments = message
        .get("attachments")
        .and_then(Value::as_array)
        .filter(|attachments| !attachments.is_empty())
        .ok_or_else(|| shape("The message must have a non-empty \"attachments\" array."))?;
    for attachment in attachments {
        if attachment.get("contentType").and_then(Value::as_str) != Some(CARD_CONTENT_TYPE) {
            return Err(shape(
                "Each attachment must have contentType application/vnd.microsoft.card.adaptive.",
            ));
        }
        let card = attachment
            .get("content")
            .ok_or_else(|| shape("An attachment has no content."))?;
        if card.get("type").and_then(Value::as_str) != Some("AdaptiveCard") {
            return Err(shape("The card must have \"type\": \"AdaptiveCard\"."));
        }
        if !card.get("version").is_some_and(Value::is_string) {
            return Err(shape("The card must have a \"version\"."));
        }
        let elements = card.get("body").and_then(Value::as_array);
        if elements.is_some_and(|elements| {
            elements
                .iter()
                .any(|element| element.get("type").and_then(Value::as_str).is_none())
        }) {
            return Err(shape(
                "Every element of the card's body must have a \"type\".",
            ));
        }
    }
    Ok(message)
}
