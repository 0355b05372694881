//! The HTTP plumbing the webhook and CRM connectors share: how a client is built, how an
//! answer is read without letting it fill memory, how `Retry-After` is read, and how a
//! request that got no answer at all is told apart (passing or lasting).

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use url::Url;

use crate::{BuildError, USER_AGENT, UrlError, retry, root_cause};

/// The longest wait a receiver's answer can impose (`Retry-After`, a CRM's rate-limit
/// reset). Beyond the retry schedule's longest step (24 hours), and beyond HubSpot's daily
/// reset, a request to wait is more likely a receiver's bug than a plan, and honouring it
/// would leave the delivery neither sent nor dead for that long.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Makes ring the process's TLS crypto provider, once; every HTTPS client (reqwest for
/// Clairo, webhooks and CRMs; lettre for SMTP) uses it. Call it before building a
/// `reqwest::Client`: reqwest is built without a provider of its own, so that only one
/// (ring, the smaller) is linked in.
pub fn install_crypto_provider() {
    // Losing a race to another caller installs the same provider: nothing to report.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client sending clairo-sync's `User-Agent` and `headers` on every request, giving up
/// after `timeout` (connecting included), and never following a redirect: for a webhook
/// (Standard Webhooks) a redirect is a failure and the operator updates `url`; from a CRM
/// API it means `base_url` is wrong, and following it could carry the credential to
/// another host.
pub(crate) fn client(timeout: Duration, headers: HeaderMap) -> Result<reqwest::Client, BuildError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(BuildError::HttpClient)
}

/// Checks an http:// or https:// address. The address is never echoed: it may carry a
/// token in its path or query. `example` shows the operator what to write.
pub(crate) fn parse_url(text: &str, example: &'static str) -> Result<Url, UrlError> {
    let url = Url::parse(text).map_err(|error| UrlError::Invalid { error, example })?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        "http" | "https" => Err(UrlError::NoHost),
        other => Err(UrlError::Scheme(other.to_owned())),
    }
}

/// `host:port` of `url`: enough to say where, without a path or query that may hold a
/// token. `unnamed` stands in for an address without a host.
pub(crate) fn endpoint(url: &Url, unnamed: &str) -> String {
    let host = url.host_str().unwrap_or(unnamed);
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// `503 Service Unavailable`, or just the number for a status without a standard name.
pub(crate) fn describe(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// `Retry-After` (delay in seconds, or an HTTP date; see [`retry::parse_retry_after`]),
/// capped at [`MAX_WAIT`]. A date already past asks for no wait at all.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    retry::retry_after(headers, now).map(|wait| wait.min(MAX_WAIT))
}

/// The start of the response body, at most `limit` bytes, as text (invalid UTF-8
/// replaced); empty when the body is. A body that breaks off midway still shows what
/// arrived.
pub(crate) async fn read_body(mut response: reqwest::Response, limit: usize) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit - bytes.len();
        if chunk.len() >= room {
            bytes.extend_from_slice(&chunk[..room]);
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Why a request got no HTTP answer at all; each connector words it for its operator.
pub(crate) enum NoAnswer {
    /// Nothing came back within the client's timeout: passing.
    TimedOut,
    /// No connection could be made; the network or the receiver may recover: passing.
    Connect(String),
    /// The request could not even be built; trying again would fail the same way: lasting.
    Build(String),
    /// The request broke off on its way (a reset, TLS, the protocol): passing.
    Failed(String),
}

impl NoAnswer {
    /// Sorts a failed send; each variant but [`NoAnswer::TimedOut`] holds the error's
    /// [`root_cause`].
    pub(crate) fn of(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            return Self::TimedOut;
        }
        let cause = root_cause(error);
        if error.is_connect() {
            Self::Connect(cause)
        } else if error.is_builder() {
            Self::Build(cause)
        } else {
            Self::Failed(cause)
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn retry_after_accepts_seconds_or_an_http_date_and_is_capped() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(with("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            with("Wed, 21 Oct 2026 07:30:00 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(with("Wed, 21 Oct 2026 07:00:00 GMT"), None);
        assert_eq!(with("99999999"), Some(MAX_WAIT));
        assert_eq!(with("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
