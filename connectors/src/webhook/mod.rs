//! The webhook connector: POSTs the event envelope (or the body a `body_template` makes
//! of it) signed per the Standard Webhooks specification, with one signature per secret
//! while a secret is rotated, and turns the receiver's answer into a [`Verdict`].

mod body;

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

use self::body::{Body, DEFAULT_CONTENT_TYPE};
use crate::http::{self, NoAnswer};
use crate::{
    Attempt, BuildError, ConfigProblem, Connector, Delivery, HeaderLineError, MAX_RESPONSE_CHARS,
    ProbeError, Secret, SecretError, SecretSlot, UrlError, Verdict, truncate_response,
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
    /// A minijinja template of the body, for receivers that want their own shape
    /// (replaces the envelope; the signature covers what it renders).
    #[serde(default)]
    pub body_template: Option<String>,
    /// The same, read from a file.
    #[serde(default)]
    pub body_template_file: Option<PathBuf>,
    /// The body's `Content-Type`; `application/json` unless set. A JSON type makes the
    /// template a JSON template (values inserted as JSON, the output checked to parse).
    #[serde(default)]
    pub content_type: Option<String>,
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
            .field("body_template", &self.body_template)
            .field("body_template_file", &self.body_template_file)
            .field("content_type", &self.content_type)
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
                if let Err(message) = signing_keys(secret) {
                    problems.push(ConfigProblem::new("secret", message));
                }
            }
        }
        if let Err(message) = body::content_type_header(self.content_type()) {
            problems.push(ConfigProblem::new("content_type", message));
        }
        match self.body() {
            Ok(body) => {
                let key = if self.body_template_file.is_some() {
                    "body_template_file"
                } else {
                    "body_template"
                };
                problems.extend(body.check_on_samples(key));
            }
            Err(problem) => problems.push(problem),
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

impl WebhookConfig {
    fn content_type(&self) -> &str {
        self.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE)
    }

    fn body(&self) -> Result<Body, ConfigProblem> {
        Body::new(
            self.body_template.as_deref(),
            self.body_template_file.as_deref(),
            self.content_type(),
        )
    }
}

const MISSING_SECRET: &str = "is missing; set `secret_file` to a file holding the receiver's \
    whsec_… signing secret (or provide the systemd credential `<connector name>-secret`)";

fn parse_url(text: &str) -> Result<Url, UrlError> {
    http::parse_url(text, "https://hooks.example.com/clairo")
}

/// The HMAC key in a `whsec_…` secret. Messages never include the secret.
fn signing_key(secret: &Secret) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .expose()
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::NoPrefix)?;
    let key = SECRET_BASE64
        .decode(encoded)
        .map_err(|_| SecretError::NotBase64)?;
    if key.is_empty() {
        return Err(SecretError::NoKey);
    }
    Ok(key)
}

/// The HMAC keys of every `whsec_…` secret in `secret`, one a line: while a secret is
/// rotated the file holds the old and the new, and each request is signed with both.
/// Blank lines and `#` comments are skipped. Messages name a line by its number only.
fn signing_keys(secret: &Secret) -> Result<Vec<Vec<u8>>, String> {
    let lines: Vec<(usize, &str)> = secret
        .expose()
        .lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let several = lines.len() > 1;
    let keys = lines
        .into_iter()
        .map(|(index, line)| {
            signing_key(&Secret::new(line)).map_err(|message| {
                if several {
                    format!("line {}: {message}", index + 1)
                } else {
                    message.to_string()
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err("holds no secret; put the receiver's whsec_… signing secret in it".to_owned());
    }
    Ok(keys)
}

/// `Name: value` lines (a `headers_file` or the `<connector name>-headers` credential);
/// blank lines and `#` comments are skipped. An error names the line by its number,
/// never by its text: the values are credentials.
pub fn parse_header_lines(text: &str) -> Result<Vec<(String, Secret)>, HeaderLineError> {
    let mut headers = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeaderLineError::NotNameValue { line: index + 1 });
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(HeaderLineError::NoName { line: index + 1 });
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
/// The error says what is wrong with the secret.
pub fn sign(
    secret: &Secret,
    msg_id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, SecretError> {
    let key = signing_key(secret)?;
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
    /// One per secret: every request carries a signature made with each.
    keys: Vec<SigningKey>,
    body: Body,
    content_type: HeaderValue,
    headers: HeaderMap,
    /// The configured header values, longest first, to scrub from answers that echo them.
    scrubbed: Vec<String>,
    timeout: Duration,
    client: reqwest::Client,
}

impl WebhookConnector {
    pub fn new(name: &str, config: &WebhookConfig) -> Result<Self, BuildError> {
        let url = parse_url(&config.url).map_err(|error| BuildError::key("url", error))?;
        let secret = config
            .secret
            .as_ref()
            .ok_or_else(|| BuildError::key("secret", MISSING_SECRET))?;
        let keys = signing_keys(secret)
            .map_err(|message| BuildError::key("secret", message))?
            .into_iter()
            .map(SigningKey)
            .collect();
        let content_type = body::content_type_header(config.content_type())
            .map_err(|message| BuildError::key("content_type", message))?;
        let body = config
            .body()
            .map_err(|problem| BuildError::key(problem.key, problem.message))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let (name, value) = custom_header(name, value.expose())
                .map_err(|message| BuildError::key(format!("headers.{name}"), message))?;
            headers.insert(name, value);
        }
        if config.timeout.is_zero() {
            return Err(BuildError::key(
                "timeout",
                "is zero; set how long to wait for the receiver",
            ));
        }
        let client = http::client(config.timeout, HeaderMap::new())?;
        Ok(Self {
            name: name.to_owned(),
            url,
            keys,
            body,
            content_type,
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
        let body = match self.body.render(event, delivery.envelope) {
            Ok(body) => body,
            Err(error) => {
                let attempt = Attempt::permanent(format!(
                    "the body could not be made: {error}; fix `body_template`, reload, then \
                     `clairo-sync deliveries retry` the delivery"
                ));
                delivery.log_finished(&self.name, "Webhook", &attempt);
                return attempt;
            }
        };
        // Made afresh at every attempt: receivers reject stale timestamps (typically
        // after 5 minutes), and a retry may come hours later.
        let timestamp = chrono::Utc::now().timestamp();
        // One signature per secret, space separated, as Standard Webhooks specifies: a
        // receiver that has either secret accepts the request.
        let signature = self
            .keys
            .iter()
            .map(|key| sign_with_key(&key.0, &event.id, timestamp, &body))
            .collect::<Vec<_>>()
            .join(" ");
        let sent = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, self.content_type.clone())
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
    async fn probe(&self) -> Result<String, ProbeError> {
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
            Err(error) => Err(self.unanswered(error).into()),
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
mod tests;
