//! How the sandbox answers: JSON bodies, and errors in the docs' `{"error": "…"}` shape.

use std::borrow::Cow;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error the API reports to its caller; every one becomes `{"error": message}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: Cow<'static, str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
    }
    json(status, &Body { error: message })
}

/// A serialisable value as a JSON response.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => raw_json(status, bytes),
        // Only a bug (a non-string map key) could get here; say so in the documented shape.
        Err(_) => raw_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"Internal server error"}"#.to_vec(),
        ),
    }
}

/// Already-rendered JSON (the lists are rendered under the store's lock, item by item).
pub(crate) fn raw_json(status: StatusCode, bytes: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The message a status gets when a fault is injected with it (`fail_next`, `error_rate`):
/// the docs' wording where they give one.
pub(crate) fn canned_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad Request — check your parameters",
        401 => "Invalid API key",
        403 => "API access requires the Max plan",
        404 => "Resource not found",
        429 => "Too many requests — slow down",
        500 => "Internal server error",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Gateway timeout",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}
