//! What can go wrong talking to Clairo, in words an operator can act on.
//!
//! No message ever holds the API key or any header value: server texts are scrubbed of
//! the key before they are kept (see [`scrub`]).

use thiserror::Error;

/// Where an operator upgrades the account when Clairo answers 403.
pub const BILLING_URL: &str = "https://clairo.tech/settings/billing";

/// A server's error text is kept to this many characters: enough to read the reason,
/// not enough to flood a log line with an HTML error page.
const MAX_SERVER_MESSAGE_CHARS: usize = 300;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ClairoError {
    #[error(
        "Clairo rejected the API key (401 Invalid API key): check clairo.api_key_file / \
         CLAIRO_API_KEY, then reload the daemon"
    )]
    InvalidKey,

    #[error(
        "Clairo refused API access (403 Forbidden): the Clairo account lacks the Max plan, \
         which API access requires: upgrade at {BILLING_URL}, then reload the daemon"
    )]
    PlanRequired,

    /// `endpoint` is the route template (`GET /briefs/{id}`), never the id itself.
    #[error(
        "Clairo has no such item ({endpoint}: 404 Not Found): it may have been deleted, or \
         the id is wrong"
    )]
    NotFound { endpoint: &'static str },

    #[error("Clairo refused the request as malformed (400 Bad Request): {message}")]
    BadRequest { message: String },

    #[error(
        "Clairo kept answering 429 Too Many Requests although the client waited as told each \
         time: other integrations may be using the business's request budget; lower \
         clairo.max_requests_per_minute or try again later"
    )]
    RateLimited,

    #[error(
        "Clairo answered {status} ({message}) to every attempt; the request will be tried \
         again on the next run"
    )]
    Server { status: u16, message: String },

    #[error("could not reach Clairo ({0}); check clairo.base_url and the network")]
    Transport(String),

    #[error("Clairo sent a response this client cannot read: {0}")]
    Decode(String),

    /// `limit` is `clairo.max_response_size` in bytes.
    #[error(
        "the {endpoint} answer is larger than clairo.max_response_size ({}); the read was \
         stopped there. Raise clairo.max_response_size if the account really has that much \
         data, or lower the source's `limit`",
        crate::config::ByteSize(*limit)
    )]
    ResponseTooLarge { endpoint: &'static str, limit: u64 },

    #[error("cannot read the recording to upload: {0}")]
    File(String),

    #[error("{0}")]
    Config(String),
}

impl ClairoError {
    /// The key was rejected (401) or the account may not use the API (403): retrying in a
    /// loop cannot help; an operator has to fix the key or the plan and reload.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Self::InvalidKey | Self::PlanRequired)
    }
}

/// Keeps a server-supplied text fit for logs: the key replaced wherever it appears
/// (a server that echoes the Authorization header must not leak it), and truncated.
pub(crate) fn scrub(text: &str, key: &str) -> String {
    let text = text.trim();
    let text = if key.is_empty() {
        text.to_owned()
    } else {
        text.replace(key, "**REDACTED**")
    };
    match text.char_indices().nth(MAX_SERVER_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_401_and_403_only() {
        assert!(ClairoError::InvalidKey.is_auth_failure());
        assert!(ClairoError::PlanRequired.is_auth_failure());
        assert!(
            !ClairoError::NotFound {
                endpoint: "GET /briefs/{id}"
            }
            .is_auth_failure()
        );
        assert!(!ClairoError::RateLimited.is_auth_failure());
    }

    #[test]
    fn a_server_text_echoing_the_key_is_scrubbed_and_truncated() {
        let scrubbed = scrub("bad header Bearer clr_secret123", "clr_secret123");
        assert_eq!(scrubbed, "bad header Bearer **REDACTED**");
        let long = "é".repeat(1000);
        assert_eq!(
            scrub(&long, "clr_x").chars().count(),
            MAX_SERVER_MESSAGE_CHARS + 1
        );
    }
}
