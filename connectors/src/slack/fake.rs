//! A local stand-in for a Slack incoming webhook, refusing what Slack refuses with Slack's
//! answers: plain-text bodies (`ok`, `invalid_payload`, `no_text`, `invalid_blocks`, …)
//! and the statuses of Slack's incoming-webhook error list (400, 403, 404, 410, 429 with
//! `Retry-After`, 500). A refused message is recorded, so a test can assert there were
//! none. Faults are injected for the next requests.
//!
//! It checks what the connector could get wrong: the body's content type (JSON, or the
//! form-encoded `payload=` Slack also takes), the message shape (`text` or `blocks`), the
//! known block types, and the Block Kit limits (header 150, section text 3,000, fields
//! 10 × 2,000, 50 blocks).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::chat::fake::Hook;

/// Block types Slack's Block Kit knows; anything else is `invalid_blocks`.
const BLOCK_TYPES: [&str; 12] = [
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "table",
    "video",
];

/// A failure to meet, as Slack answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 404 `no_service`: the webhook was removed.
    NoService,
    /// 404 `channel_not_found`.
    ChannelNotFound,
    /// 410 `channel_is_archived`.
    ChannelIsArchived,
    /// 403 `action_prohibited`: an admin restriction.
    ActionProhibited,
    /// 403 `invalid_token`: the webhook was revoked.
    InvalidToken,
    /// 429 `rate_limited`, with `Retry-After` in seconds.
    RateLimited { retry_after_secs: u64 },
    /// 500 `rollup_error`.
    ServerError,
    /// Answer only after this long (past the connector's timeout).
    Slow(Duration),
}

impl Fault {
    fn answer(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NoService => (StatusCode::NOT_FOUND, "no_service"),
            Self::ChannelNotFound => (StatusCode::NOT_FOUND, "channel_not_found"),
            Self::ChannelIsArchived => (StatusCode::GONE, "channel_is_archived"),
            Self::ActionProhibited => (StatusCode::FORBIDDEN, "action_prohibited"),
            Self::InvalidToken => (StatusCode::FORBIDDEN, "invalid_token"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "rollup_error"),
            Self::Slow(_) => (StatusCode::OK, "ok"),
        }
    }
}

/// A running fake Slack webhook; clones share its state.
pub type FakeSlack = Hook<Fault>;

impl FakeSlack {
    /// Starts a webhook on 127.0.0.1 at a Slack-shaped path.
    pub async fn start() -> Self {
        Self::start_at("/services/T00FAKE00/B00FAKE00/XXXXXXXXXXXXXXXXXXXXXXXX").await
    }

    /// Starts a webhook answering at `path` (other paths get `no_service`).
    pub async fn start_at(path: &str) -> Self {
        Self::serve(path, |address| format!("http://{address}{path}"), handle).await
    }
}

/// Slack answers `text/html` with a one-word body, whatever the outcome.
fn word(status: StatusCode, word: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html")],
        word.to_owned(),
    )
        .into_response()
}

async fn handle(
    State(fake): State<FakeSlack>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.count_request();
    if uri.path() != fake.path() {
        return word(StatusCode::NOT_FOUND, "no_service");
    }
    if method != axum::http::Method::POST {
        return word(StatusCode::METHOD_NOT_ALLOWED, "invalid_method");
    }
    if let Some(fault) = fake.take_fault() {
        match fault {
            Fault::Slow(delay) => tokio::time::sleep(delay).await,
            Fault::RateLimited { retry_after_secs } => {
                let mut response = word(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    retry_after_secs.to_string().parse().expect("a number"),
                );
                return response;
            }
            other => {
                let (status, text) = other.answer();
                return word(status, text);
            }
        }
    }
    match check(&headers, &body) {
        Ok(message) => {
            fake.accept(message);
            word(StatusCode::OK, "ok")
        }
        Err(refusal) => {
            fake.refuse(StatusCode::BAD_REQUEST.as_u16(), refusal.to_owned());
            word(StatusCode::BAD_REQUEST, refusal)
        }
    }
}

/// The message in the request, or Slack's word for what is wrong with it.
fn check(headers: &HeaderMap, body: &[u8]) -> Result<Value, &'static str> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let message: Value = match content_type.as_str() {
        "application/json" => serde_json::from_slice(body).map_err(|_| "invalid_payload")?,
        "application/x-www-form-urlencoded" => {
            let payload = url::form_urlencoded::parse(body)
                .find(|(key, _)| key == "payload")
                .ok_or("invalid_payload")?
                .1;
            serde_json::from_str(&payload).map_err(|_| "invalid_payload")?
        }
        _ => return Err("invalid_payload"),
    };
    if !message.is_object() {
        return Err("invalid_payload");
    }
    let has_text = message
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|text| !text.trim().is_empty());
    match message.get("blocks") {
        None | Some(Value::Null) if !has_text => return Err("no_text"),
        None | Some(Value::Null) => {}
        Some(Value::Array(blocks)) if blocks.is_empty() && !has_text => return Err("no_text"),
        Some(Value::Array(blocks)) => check_blocks(blocks)?,
        Some(_) => return Err("invalid_blocks_format"),
    }
    Ok(message)
}

fn check_blocks(blocks: &[Value]) -> Result<(), &'static str> {
    if blocks.len() > 50 {
        return Err("invalid_blocks");
    }
    for block in blocks {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        if !BLOCK_TYPES.contains(&kind) {
            return Err("invalid_blocks");
        }
        match kind {
            "header" => {
                let text = block.get("text").ok_or("invalid_blocks")?;
                if text.get("type").and_then(Value::as_str) != Some("plain_text") {
                    return Err("invalid_blocks");
                }
                text_object(text, 150)?;
            }
            "section" => {
                let text = block.get("text");
                let fields = block.get("fields");
                if text.is_none() && fields.is_none() {
                    return Err("invalid_blocks");
                }
                if let Some(text) = text {
                    text_object(text, 3000)?;
                }
                if let Some(fields) = fields {
                    let fields = fields.as_array().ok_or("invalid_blocks")?;
                    if fields.is_empty() || fields.len() > 10 {
                        return Err("invalid_blocks");
                    }
                    for field in fields {
                        text_object(field, 2000)?;
                    }
                }
            }
            "context" => {
                let elements = block
                    .get("elements")
                    .and_then(Value::as_array)
                    .ok_or("invalid_blocks")?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err("invalid_blocks");
                }
                for element in elements {
                    if element.get("type").and_then(Value::as_str) != Some("image") {
                        text_object(element, 3000)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A `plain_text` or `mrkdwn` object whose text is 1..=`max` characters.
fn text_object(object: &Value, max: usize) -> Result<(), &'static str> {
    let kind = object.get("type").and_then(Value::as_str);
    if !matches!(kind, Some("plain_text" | "mrkdwn")) {
        return Err("invalid_blocks");
    }
    let text = object
        .get("text")
        .and_then(Value::as_str)
        .ok_or("invalid_blocks")?;
    let length = text.chars().count();
    if length == 0 || length > max {
        return Err("invalid_blocks");
    }
    Ok(())
}
