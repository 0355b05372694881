//! The webhook connector: POSTs the event envelope signed per the Standard Webhooks
//! specification, and turns the receiver's answer into a [`Verdict`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sha2::Sha256;
use url::Url;

use crate::http::{self, NoAnswer};
use crate::{
    Attempt, ConfigProblem, Connector, Delivery, MAX_RESPONSE_CHARS, Secret, SecretSlot, Verdict,
    truncate_response,
};

/// The prefix the Standard Webhooks specification gives symmetric signing secrets.
const SECRET_PREFIX: &str = "whsec_";

/// Standard base64, accepting the key with or without its `=` padding: receivers print
/// secrets both ways, and a missing `=` says nothing about the key itself.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Headers clairo-sync sets itself: a configured value would break the signature or the
/// body's framing, so `headers` may not name them.
const RESERVED_HEADERS: [&str; 7] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
];

/// Bytes of a response body read at most: enough for [`MAX_RESPONSE_CHARS`] + 1 characters
/// of any width, so that [`truncate_response`] sees a longer body as longer and marks it,
/// while a receiver answering with megabytes costs nothing.
const RESPONSE_BYTES_READ: usize = (MAX_RESPONSE_CHARS + 1) * 4;

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[connectors.NAME] type = "webhook"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed: an http:// or https:// address.
    pub url: String,
    /// The signing secret (`whsec_…`), usually filled in from `secret_file` or a credential.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Limit on one whole attempt: connecting, sending, and reading the answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra headers sent on every request (a gateway's token, say). Their values are
    /// secrets: never printed, and scrubbed from a receiver's answer that echoes them.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// A file of `Name: value` lines adding to `headers` (or the credential
    /// `<connector name>-headers`), so a gateway token need not sit in the config.
    #[serde(default)]
    pub headers_file: Option<PathBuf>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret)
            .field("secret_file", &self.secret_file)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("headers_file", &self.headers_file)
            .finish()
    }
}

impl WebhookConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        vec![SecretSlot {
            key: "secret",
            value: &mut self.secret,
            file: self.secret_file.as_ref(),
            required: true,
        }]
    }

    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(message) = parse_url(&self.url) {
            problems.push(ConfigProblem::new("url", message));
        }
        match &self.secret {
            None => problems.push(ConfigProblem::new("secret", MISSING_SECRET)),
            Some(secret) => {
                if let Err(message) = signing_key(secret) {
                    problems.push(ConfigProblem::new("secret", message));
                }
            }
        }
        if self.timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "timeout",
                "is zero; set how long to wait for the receiver, e.g. \"10s\"",
            ));
        }
        for (name, value) in &self.headers {
            if let Err(message) = custom_header(name, value.expose()) {
                problems.push(ConfigProblem::new(format!("headers.{name}"), message));
            }
        }
        problems
    }
}

const MISSING_SECRET: &str = "is missing; set `secret_file` to a file holding the receiver's \
    whsec_… signing secret (or provide the systemd credential `<connector name>-secret`)";

fn parse_url(text: &str) -> Result<Url, String> {
    http::parse_url(text, "https://hooks.example.com/clairo")
}

/// The HMAC key in a `whsec_…` secret. Messages never include the secret.
fn signing_key(secret: &Secret) -> Result<Vec<u8>, String> {
    let encoded = secret.expose().trim().strip_prefix(SECRET_PREFIX).ok_or(
        "does not start with `whsec_`; use the signing secret exactly as the receiver \
         gave it (whsec_ followed by base64)",
    )?;
    let key = SECRET_BASE64.decode(encoded).map_err(|_| {
        "is not valid base64 after `whsec_`; copy the whole secret again from the receiver"
            .to_owned()
    })?;
    if key.is_empty() {
        return Err(
            "has no key after `whsec_`; copy the whole secret again from the receiver".to_owned(),
        );
    }
    Ok(key)
}

/// `Name: value` lines (a `headers_file` or the `<connector name>-headers` credential);
/// blank lines and `#` comments are skipped. An error names the line by its number,
/// never by its text: the values are credentials.
pub fn parse_header_lines(text: &str) -> Result<Vec<(String, Secret)>, String> {
    let mut headers = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "line {} is not `Name: value`; write one header per line, e.g. `X-Gateway-Token: …`",
                index + 1
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!(
                "line {} has no header name before `:`; write `Name: value`",
                index + 1
            ));
        }
        headers.push((name.to_owned(), Secret::new(value.trim())));
    }
    Ok(headers)
}

fn custom_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        format!("`{name}` is not a valid HTTP header name; use letters, digits and `-`")
    })?;
    if RESERVED_HEADERS.contains(&header_name.as_str()) {
        return Err(format!(
            "`{name}` is set by clairo-sync itself; remove it from `headers`"
        ));
    }
    // The value is left out of the message: it is often a credential.
    let mut header_value = HeaderValue::from_str(value).map_err(|_| {
        "the value is not a valid HTTP header value (a line break, control or non-ASCII \
         character); fix the value"
            .to_owned()
    })?;
    header_value.set_sensitive(true);
    Ok((header_name, header_value))
}

/// The Standard Webhooks `v1` signature: `v1,` + base64 of HMAC-SHA256, keyed with the
/// base64-decoded part of the `whsec_…` secret, over `{msg_id}.{timestamp}.{body}`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let key = signing_key(secret).map_err(|message| format!("the secret {message}"))?;
    Ok(sign_with_key(&key, msg_id, timestamp, body))
}

fn sign_with_key(key: &[u8], msg_id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts a key of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Holds the decoded HMAC key; deliberately without `Debug`.
struct SigningKey(Vec<u8>);

/// A running webhook connector: one HTTP client, reused for every delivery.
pub struct WebhookConnector {
    name: String,
    url: Url,
    key: SigningKey,
    headers: HeaderMap,
    /// The configured header values, longest first, to scrub from answers that echo them.
    scrubbed: Vec<String>,
    timeout: Duration,
    client: reqwest::Client,
}

impl WebhookConnector {
    pub fn new(name: &str, config: &WebhookConfig) -> Result<Self, String> {
        let url = parse_url(&config.url).map_err(|message| format!("url: {message}"))?;
        let secret = config
            .secret
            .as_ref()
            .ok_or_else(|| format!("secret: {MISSING_SECRET}"))?;
        let key = signing_key(secret).map_err(|message| format!("secret: {message}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let (name, value) = custom_header(name, value.expose())
                .map_err(|message| format!("headers.{name}: {message}"))?;
            headers.insert(name, value);
        }
        if config.timeout.is_zero() {
            return Err("timeout: is zero; set how long to wait for the receiver".to_owned());
        }
        let client = http::client(config.timeout, HeaderMap::new())?;
        Ok(Self {
            name: name.to_owned(),
            url,
            key: SigningKey(key),
            headers,
            scrubbed: scrubbed_values(&config.headers),
            timeout: config.timeout,
            client,
        })
    }

    /// `host:port` of the receiver: enough to say where.
    fn endpoint(&self) -> String {
        http::endpoint(&self.url, "the receiver")
    }

    /// The attempt for a request that got no HTTP answer, in plain words. The cause is
    /// read without the URL, which may hold a token.
    fn unanswered(&self, error: reqwest::Error) -> Attempt {
        match NoAnswer::of(&error.without_url()) {
            NoAnswer::TimedOut => Attempt::retry(
                format!(
                    "{} gave no answer within {:?} (`timeout`); raise `timeout` if the \
                     receiver is just slow",
                    self.endpoint(),
                    self.timeout
                ),
                None,
            ),
            NoAnswer::Connect(cause) => Attempt::retry(
                format!("could not connect to {}: {cause}", self.endpoint()),
                None,
            ),
            NoAnswer::Build(cause) => {
                Attempt::permanent(format!("could not build the request: {cause}"))
            }
            NoAnswer::Failed(cause) => Attempt::retry(
                format!("the request to {} failed: {cause}", self.endpoint()),
                None,
            ),
        }
    }
}

#[async_trait]
impl Connector for WebhookConnector {
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let body = event.to_json();
        // Made afresh at every attempt: receivers reject stale timestamps (typically
        // after 5 minutes), and a retry may come hours later.
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign_with_key(&self.key.0, &event.id, timestamp, &body);
        let sent = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", event.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let attempt = match sent {
            Ok(response) => answered(response, &self.scrubbed).await,
            Err(error) => self.unanswered(error),
        };
        delivery.log_finished(&self.name, "Webhook", &attempt);
        attempt
    }

    /// Any HTTP answer to a HEAD request means the receiver is reachable; no event is sent.
    async fn probe(&self) -> Result<String, String> {
        let sent = self
            .client
            .head(self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await;
        match sent {
            Ok(response) => Ok(format!(
                "{} is reachable (answered {} to a HEAD request)",
                self.endpoint(),
                http::describe(response.status())
            )),
            Err(error) => Err(self.unanswered(error).reason()),
        }
    }
}

/// Turns an HTTP answer into an attempt record: the verdict, the status, and the
/// start of the body, with the values of `scrubbed` taken out.
async fn answered(response: reqwest::Response, scrubbed: &[String]) -> Attempt {
    let status = response.status();
    let wait = http::retry_after(response.headers(), SystemTime::now());
    let body = read_response(response, scrubbed).await;
    Attempt {
        verdict: verdict_for(status, wait),
        status_code: Some(status.as_u16()),
        response: body,
    }
}

/// Standard Webhooks' status handling, with `wait` the receiver's `Retry-After`.
fn verdict_for(status: StatusCode, wait: Option<Duration>) -> Verdict {
    let described = http::describe(status);
    let passing = |what: String| {
        let reason = match wait {
            Some(wait) => format!("{what}; it asked to wait {}s", wait.as_secs()),
            None => what,
        };
        Verdict::Retry {
            after: wait,
            reason,
        }
    };
    match status.as_u16() {
        200..=299 => Verdict::Delivered,
        300..=399 => Verdict::Permanent {
            reason: format!(
                "the receiver answered {described}, a redirect, and redirects are not \
                 followed; set `url` to the address it redirects to"
            ),
        },
        410 => Verdict::Permanent {
            reason: format!(
                "endpoint gone: the receiver answered {described}, so it wants no more \
                 webhooks at this address; fix `url` or take the connector out of its routes"
            ),
        },
        408 => passing(format!(
            "the receiver gave up waiting for the request ({described})"
        )),
        429 => passing(format!("the receiver is rate-limiting ({described})")),
        400..=499 => Verdict::Permanent {
            reason: format!(
                "the receiver rejected the event ({described}); see its response, fix the \
                 receiver or `url`, then replay the delivery"
            ),
        },
        500..=599 => passing(format!("the receiver failed ({described})")),
        _ => passing(format!(
            "the receiver answered an unknown status ({described})"
        )),
    }
}

/// The start of the response body, as text cut with [`truncate_response`], without the
/// header values in `scrubbed`; `None` when the body is empty. Scrubbed before it is cut,
/// so that a value across the cut cannot be left half shown.
async fn read_response(response: reqwest::Response, scrubbed: &[String]) -> Option<String> {
    let text = http::read_body(response, RESPONSE_BYTES_READ).await;
    (!text.is_empty()).then(|| truncate_response(&scrub(&text, scrubbed)))
}

/// Stands in for a header value in a stored answer.
const REDACTED: &str = "**REDACTED**";

/// A value shorter than this is not looked for at the end of a body that was cut: such a
/// short prefix says nothing, and matching it would blank ordinary text.
const MIN_SCRUBBED_PREFIX: usize = 4;

/// The header values worth scrubbing, longest first (so that a value containing another
/// is replaced whole).
fn scrubbed_values(headers: &BTreeMap<String, Secret>) -> Vec<String> {
    let mut values: Vec<String> = headers
        .values()
        .map(|value| value.expose().trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    values.sort_by_key(|value| std::cmp::Reverse(value.len()));
    values.dedup();
    values
}

/// `text` with every value of `scrubbed` replaced by [`REDACTED`], and the start of one
/// at the very end (a body cut at the read limit) too.
fn scrub(text: &str, scrubbed: &[String]) -> String {
    let mut text = text.to_owned();
    for value in scrubbed {
        if text.contains(value.as_str()) {
            text = text.replace(value.as_str(), REDACTED);
        }
    }
    for value in scrubbed {
        let cut = (MIN_SCRUBBED_PREFIX..value.len())
            .rev()
            .filter(|&len| value.is_char_boundary(len))
            .find(|&len| text.ends_with(&value[..len]));
        if let Some(len) = cut {
            text.truncate(text.len() - len);
            text.push_str(REDACTED);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap as ReceivedHeaders, StatusCode as Status, header};
    use axum::routing::post;
    use chrono::Utc;

    use super::*;
    use crate::testkit::{first_attempt, keys, serve, table, unused_address};
    use crate::{ConnectorConfig, Event, EventType};

    /// The secret of the Standard Webhooks reference libraries' published test vector.
    const TEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signatures_reproduce_the_standard_webhooks_test_vector() {
        let signature = sign(
            &Secret::new(TEST_SECRET),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signing_with_a_malformed_secret_fails_without_echoing_it() {
        let error = sign(&Secret::new("sk_live_hunter2"), "evt_1", 1, "{}").unwrap_err();
        assert!(error.contains("whsec_"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    fn event() -> Event {
        crate::testkit::event(
            EventType::BriefCreated,
            "cm3brief",
            serde_json::json!({"id": "cm3brief", "summary": "Wants a demo — ünïcode"}),
        )
    }

    fn config(url: String) -> WebhookConfig {
        WebhookConfig {
            url,
            secret: Some(Secret::new(TEST_SECRET)),
            secret_file: None,
            timeout: Duration::from_secs(5),
            headers: BTreeMap::new(),
            headers_file: None,
        }
    }

    async fn deliver(config: &WebhookConfig, event: &Event) -> Attempt {
        let connector = WebhookConnector::new("sales_hook", config).unwrap();
        first_attempt(&connector, event).await
    }

    /// Every request the receiver got: its headers and body.
    #[derive(Clone, Default)]
    struct Received(Arc<Mutex<Vec<(ReceivedHeaders, String)>>>);

    impl Received {
        fn all(&self) -> Vec<(ReceivedHeaders, String)> {
            self.0.lock().unwrap().clone()
        }
    }

    async fn record(
        State(received): State<Received>,
        headers: ReceivedHeaders,
        body: String,
    ) -> Status {
        received.0.lock().unwrap().push((headers, body));
        Status::NO_CONTENT
    }

    /// A receiver on 127.0.0.1 with one route per behaviour; returns its base address.
    async fn receiver(received: Received) -> String {
        let router = Router::new()
            .route("/ok", post(record))
            .route("/gone", post(|| async { Status::GONE }))
            .route(
                "/bad",
                post(|| async { (Status::BAD_REQUEST, "missing field `email`") }),
            )
            .route(
                "/unavailable",
                post(|| async { (Status::SERVICE_UNAVAILABLE, "maintenance") }),
            )
            .route(
                "/busy",
                post(|| async {
                    (
                        Status::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "3")],
                        "slow down",
                    )
                }),
            )
            .route(
                "/moved",
                post(|| async { (Status::FOUND, [(header::LOCATION, "/ok")]) }),
            )
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Status::OK
                }),
            )
            .route(
                "/huge",
                post(|| async { (Status::INTERNAL_SERVER_ERROR, "x".repeat(20_000)) }),
            )
            .with_state(received);
        serve(router).await
    }

    fn header_text<'a>(headers: &'a ReceivedHeaders, name: &str) -> &'a str {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn a_delivered_event_carries_a_signature_an_independent_verifier_accepts() {
        let received = Received::default();
        let base = receiver(received.clone()).await;
        let event = event();

        let attempt = deliver(&config(format!("{base}/ok")), &event).await;

        assert_eq!(attempt.verdict, Verdict::Delivered);
        assert_eq!(attempt.status_code, Some(204));
        let requests = received.all();
        assert_eq!(requests.len(), 1);
        let (headers, body) = &requests[0];
        assert_eq!(body, &event.to_json());
        assert_eq!(header_text(headers, "content-type"), "application/json");
        assert!(header_text(headers, "user-agent").starts_with("clairo-sync/"));
        assert_eq!(header_text(headers, "webhook-id"), event.id);
        let timestamp: i64 = header_text(headers, "webhook-timestamp").parse().unwrap();
        assert!((Utc::now().timestamp() - timestamp).abs() < 60);

        // Verify as a receiver would, sharing nothing with the signing code.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{timestamp}.{body}", event.id).as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(header_text(headers, "webhook-signature"), expected);
    }

    #[tokio::test]
    async fn every_attempt_is_signed_with_a_fresh_timestamp() {
        let received = Received::default();
        let base = receiver(received.clone()).await;
        let config = config(format!("{base}/ok"));
        let event = event();

        deliver(&config, &event).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        deliver(&config, &event).await;

        let requests = received.all();
        let stamp = |index: usize| header_text(&requests[index].0, "webhook-timestamp").to_owned();
        let signature =
            |index: usize| header_text(&requests[index].0, "webhook-signature").to_owned();
        assert_eq!(header_text(&requests[0].0, "webhook-id"), event.id);
        assert_eq!(header_text(&requests[1].0, "webhook-id"), event.id);
        assert_ne!(stamp(0), stamp(1));
        assert_ne!(signature(0), signature(1));
    }

    #[tokio::test]
    async fn custom_headers_are_sent_with_every_request() {
        let received = Received::default();
        let base = receiver(received.clone()).await;
        let mut config = config(format!("{base}/ok"));
        config
            .headers
            .insert("X-Gateway-Token".to_owned(), Secret::new("tok_abc123"));
        config
            .headers
            .insert("X-Team".to_owned(), Secret::new("sales"));

        let attempt = deliver(&config, &event()).await;

        assert_eq!(attempt.verdict, Verdict::Delivered);
        let (headers, _) = &received.all()[0];
        assert_eq!(header_text(headers, "x-gateway-token"), "tok_abc123");
        assert_eq!(header_text(headers, "x-team"), "sales");
        assert!(header_text(headers, "webhook-signature").starts_with("v1,"));
    }

    #[test]
    fn a_config_never_prints_header_values_or_the_secret() {
        let mut config = config("https://hooks.example.com/clairo".to_owned());
        config
            .headers
            .insert("Authorization".to_owned(), Secret::new("Bearer tok_abc123"));
        let printed = format!("{config:?}");
        assert!(printed.contains("Authorization"), "{printed}");
        assert!(!printed.contains("tok_abc123"), "{printed}");
        assert!(!printed.contains("MfKQ9r8"), "{printed}");
    }

    #[tokio::test]
    async fn a_410_means_the_endpoint_is_gone_and_the_delivery_dead_at_once() {
        let base = receiver(Received::default()).await;

        let attempt = deliver(&config(format!("{base}/gone")), &event()).await;

        assert_eq!(attempt.status_code, Some(410));
        match attempt.verdict {
            Verdict::Permanent { reason } => assert!(reason.contains("endpoint gone"), "{reason}"),
            other => panic!("expected Permanent, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_400_is_permanent_and_keeps_the_receivers_answer() {
        let base = receiver(Received::default()).await;

        let attempt = deliver(&config(format!("{base}/bad")), &event()).await;

        assert_eq!(attempt.status_code, Some(400));
        assert_eq!(attempt.response.as_deref(), Some("missing field `email`"));
        match attempt.verdict {
            Verdict::Permanent { reason } => {
                assert!(reason.contains("400 Bad Request"), "{reason}")
            }
            other => panic!("expected Permanent, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_503_is_retried_on_the_dispatchers_schedule() {
        let base = receiver(Received::default()).await;

        let attempt = deliver(&config(format!("{base}/unavailable")), &event()).await;

        assert_eq!(attempt.status_code, Some(503));
        assert_eq!(attempt.response.as_deref(), Some("maintenance"));
        match attempt.verdict {
            Verdict::Retry { after, reason } => {
                assert_eq!(after, None);
                assert!(reason.contains("503 Service Unavailable"), "{reason}");
            }
            other => panic!("expected Retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_429_with_retry_after_is_retried_after_the_wait_it_asked_for() {
        let base = receiver(Received::default()).await;

        let attempt = deliver(&config(format!("{base}/busy")), &event()).await;

        assert_eq!(attempt.status_code, Some(429));
        match attempt.verdict {
            Verdict::Retry { after, reason } => {
                assert_eq!(after, Some(Duration::from_secs(3)));
                assert!(reason.contains("rate-limiting"), "{reason}");
            }
            other => panic!("expected Retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_is_permanent() {
        let received = Received::default();
        let base = receiver(received.clone()).await;

        let attempt = deliver(&config(format!("{base}/moved")), &event()).await;

        assert_eq!(attempt.status_code, Some(302));
        assert!(
            matches!(attempt.verdict, Verdict::Permanent { .. }),
            "{attempt:?}"
        );
        assert!(received.all().is_empty(), "the redirect target was called");
    }

    #[tokio::test]
    async fn a_receiver_slower_than_the_timeout_means_retry() {
        let base = receiver(Received::default()).await;
        let mut config = config(format!("{base}/slow"));
        config.timeout = Duration::from_millis(300);

        let started = std::time::Instant::now();
        let attempt = deliver(&config, &event()).await;

        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(attempt.status_code, None);
        match attempt.verdict {
            Verdict::Retry { after, reason } => {
                assert_eq!(after, None);
                assert!(reason.contains("no answer within 300ms"), "{reason}");
            }
            other => panic!("expected Retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_means_retry_and_the_reason_holds_no_header_value() {
        let address = unused_address();
        let mut config = config(format!("http://{address}/hook?token=tok_in_query"));
        config
            .headers
            .insert("Authorization".to_owned(), Secret::new("Bearer tok_abc123"));

        let attempt = deliver(&config, &event()).await;

        match attempt.verdict {
            Verdict::Retry { reason, .. } => {
                assert!(reason.contains("could not connect"), "{reason}");
                assert!(reason.contains(&address.to_string()), "{reason}");
                assert!(!reason.contains("tok_"), "{reason}");
                assert!(!reason.contains("MfKQ9r8"), "{reason}");
            }
            other => panic!("expected Retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_long_response_is_truncated_on_the_attempt() {
        let base = receiver(Received::default()).await;

        let attempt = deliver(&config(format!("{base}/huge")), &event()).await;

        assert_eq!(attempt.status_code, Some(500));
        let response = attempt.response.unwrap();
        assert!(response.ends_with("(truncated)"), "{response}");
        assert_eq!(
            response.chars().filter(|c| *c == 'x').count(),
            MAX_RESPONSE_CHARS
        );
    }

    #[tokio::test]
    async fn probing_a_listening_receiver_sends_no_event() {
        let received = Received::default();
        let base = receiver(received.clone()).await;
        let connector = WebhookConnector::new("sales_hook", &config(format!("{base}/ok"))).unwrap();

        let description = connector.probe().await.unwrap();

        assert!(description.contains("reachable"), "{description}");
        assert!(received.all().is_empty());
    }

    #[tokio::test]
    async fn probing_where_nothing_listens_fails_in_plain_words() {
        let address = unused_address();
        let connector =
            WebhookConnector::new("sales_hook", &config(format!("http://{address}/hook"))).unwrap();

        let error = connector.probe().await.unwrap_err();

        assert!(error.contains("could not connect"), "{error}");
    }

    #[test]
    fn statuses_map_to_verdicts_as_standard_webhooks_suggests() {
        let delivered = |code: u16| verdict_for(StatusCode::from_u16(code).unwrap(), None);
        assert_eq!(delivered(200), Verdict::Delivered);
        assert_eq!(delivered(202), Verdict::Delivered);
        for code in [301, 307, 400, 401, 403, 404, 410, 422] {
            assert!(
                matches!(delivered(code), Verdict::Permanent { .. }),
                "{code}"
            );
        }
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(delivered(code), Verdict::Retry { .. }), "{code}");
        }
    }

    #[test]
    fn a_webhook_table_parses_with_a_humantime_timeout_and_headers() {
        let text = r#"
            type = "webhook"
            url = "https://hooks.example.com/clairo"
            secret_file = "/etc/clairo-sync/webhook-secret"
            timeout = "30s"
            headers = { "X-Team" = "sales" }
        "#;
        let Ok(ConnectorConfig::Webhook(config)) = table(text) else {
            panic!("not a webhook");
        };
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.headers["X-Team"].expose(), "sales");
        assert!(config.secret.is_none());

        let minimal = "type = \"webhook\"\nurl = \"https://hooks.example.com/clairo\"\n";
        let Ok(ConnectorConfig::Webhook(config)) = table(minimal) else {
            panic!("not a webhook");
        };
        assert_eq!(config.timeout, Duration::from_secs(10));
    }

    #[test]
    fn an_unknown_key_in_a_webhook_table_is_rejected() {
        let error = table(
            r#"
            type = "webhook"
            url = "https://hooks.example.com/clairo"
            secert_file = "/etc/clairo-sync/webhook-secret"
        "#,
        )
        .unwrap_err();
        assert!(error.contains("secert_file"), "{error}");
    }

    #[test]
    fn a_valid_config_has_no_problems() {
        let mut config = config("https://hooks.example.com/clairo".to_owned());
        config
            .headers
            .insert("Authorization".to_owned(), Secret::new("Bearer tok_abc123"));
        assert_eq!(config.validate(), Vec::new());
    }

    #[test]
    fn validation_names_each_key_and_never_echoes_the_secret() {
        let problems_with = |secret: &str| {
            let mut config = config("ftp://hooks.example.com/clairo".to_owned());
            config.secret = Some(Secret::new(secret));
            config.timeout = Duration::ZERO;
            config
                .headers
                .insert("webhook-signature".to_owned(), Secret::new("v1,forged"));
            config
                .headers
                .insert("X-Token".to_owned(), Secret::new("tok\nsecret_value"));
            config.validate()
        };
        for secret in ["sk_live_hunter2", "whsec_hunter2!!not*base64", "whsec_"] {
            let problems = problems_with(secret);
            assert_eq!(
                keys(&problems),
                [
                    "url",
                    "secret",
                    "timeout",
                    "headers.X-Token",
                    "headers.webhook-signature"
                ],
                "{problems:?}"
            );
            for problem in &problems {
                assert!(problem.message.contains("; "), "{problem:?}");
                assert!(!problem.message.contains("hunter2"), "{problem:?}");
                assert!(!problem.message.contains("secret_value"), "{problem:?}");
            }
        }
    }

    #[test]
    fn a_missing_secret_is_a_problem_that_says_where_to_put_it() {
        let mut config = config("https://hooks.example.com/clairo".to_owned());
        config.secret = None;
        let problems = config.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "secret");
        assert!(problems[0].message.contains("secret_file"), "{problems:?}");
        assert!(WebhookConnector::new("sales_hook", &config).is_err());
    }
}
