//! The HTTP side both CRMs share: the keys their tables have in common, the client that
//! holds the credential, and how one call becomes an [`Answer`] or a failed [`Attempt`].

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use url::Url;

use crate::http::{self, NoAnswer};
use crate::retry;
use crate::{Attempt, BuildError, ConfigProblem, Secret, UrlError};

/// Bytes of an answer read at most. CRM answers to these calls are a few kilobytes; the
/// bound keeps a misbehaving proxy from filling memory.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest error message from a CRM quoted in a reason; the whole body is on the
/// attempt's response.
const MESSAGE_CHARS: usize = 300;

/// The keys both CRM connectors' tables have, checked alike.
pub(crate) struct CommonKeys<'a> {
    /// The CRM as messages name it (`HubSpot`).
    pub service: &'static str,
    pub base_url: &'a str,
    /// The credential's key (`token`), its value, and what to say when it is missing.
    pub token_key: &'static str,
    pub token: Option<&'a Secret>,
    pub missing_token: &'static str,
    pub timeout: Duration,
    pub email_answer_key: Option<&'a str>,
}

impl<'a> CommonKeys<'a> {
    /// The problems with these keys, in the order the table documents them.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(message) = parse_base_url(self.base_url) {
            problems.push(ConfigProblem::new("base_url", message));
        }
        match self.token {
            None => problems.push(ConfigProblem::new(self.token_key, self.missing_token)),
            Some(token) => {
                if let Some(message) = secret_problem(token) {
                    problems.push(ConfigProblem::new(self.token_key, message));
                }
            }
        }
        if self.timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "timeout",
                format!(
                    "is zero; set how long to wait for {}, e.g. \"30s\"",
                    self.service
                ),
            ));
        }
        if self
            .email_answer_key
            .is_some_and(|key| key.trim().is_empty())
        {
            problems.push(ConfigProblem::new(
                "email_answer_key",
                "is empty; name the answer holding the contact's email, or remove the key \
                 to use any answer whose name mentions \"email\"",
            ));
        }
        problems
    }

    /// The credential, trimmed; or, keyed, why there is none fit to send.
    pub fn token(&self) -> Result<&'a str, BuildError> {
        let key = self.token_key;
        let token = self
            .token
            .ok_or_else(|| BuildError::key(key, self.missing_token))?;
        if let Some(message) = secret_problem(token) {
            return Err(BuildError::key(key, message));
        }
        Ok(token.expose().trim())
    }
}

/// One CRM's HTTP side: the client (built once, holding the credential as a sensitive
/// default header), the base address, and the secret to scrub from anything kept.
pub(crate) struct Api {
    service: &'static str,
    base: Url,
    timeout: Duration,
    secret: String,
    client: reqwest::Client,
}

/// An HTTP answer, read whole (up to [`MAX_BODY_BYTES`]).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Option<Value>,
}

impl Answer {
    pub fn json(&self) -> &Value {
        self.json.as_ref().unwrap_or(&Value::Null)
    }

    /// A string field of the JSON body.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.json().get(key).and_then(Value::as_str)
    }
}

impl Api {
    /// `auth` is the header carrying the credential; `secret` is the credential itself,
    /// scrubbed from every answer that is kept.
    pub fn new(
        keys: &CommonKeys<'_>,
        auth: (HeaderName, String),
        secret: &str,
    ) -> Result<Self, BuildError> {
        let service = keys.service;
        let base =
            parse_base_url(keys.base_url).map_err(|error| BuildError::key("base_url", error))?;
        if keys.timeout.is_zero() {
            return Err(BuildError::key(
                "timeout",
                format!("is zero; set how long to wait for {service}, e.g. \"30s\""),
            ));
        }
        let (name, value) = auth;
        let mut value =
            HeaderValue::from_str(&value).map_err(|_| BuildError::CredentialNotAHeader)?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(name, value);
        Ok(Self {
            service,
            base,
            timeout: keys.timeout,
            secret: secret.to_owned(),
            client: http::client(keys.timeout, headers)?,
        })
    }

    /// `base_url` + `path`, keeping any path prefix `base_url` has (a proxy's, say).
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.client.put(self.url(path))
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.client.patch(self.url(path))
    }

    /// `host:port` of the API: enough to say where.
    pub fn endpoint(&self) -> String {
        http::endpoint(&self.base, self.service)
    }

    /// Sends one call; an answer of any status is `Ok`. No answer at all becomes the failed
    /// attempt: a timeout or a refused connection is passing, a request that cannot even be
    /// built is not. `doing` says what the call was for ("creating the note").
    pub async fn send(&self, request: RequestBuilder, doing: &str) -> Result<Answer, Attempt> {
        let response = request
            .send()
            .await
            .map_err(|error| self.unanswered(&error, doing))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = http::read_body(response, MAX_BODY_BYTES).await;
        let json = serde_json::from_str(&text).ok();
        Ok(Answer {
            status,
            headers,
            text,
            json,
        })
    }

    fn unanswered(&self, error: &reqwest::Error, doing: &str) -> Attempt {
        let service = self.service;
        let endpoint = self.endpoint();
        match NoAnswer::of(error) {
            NoAnswer::TimedOut => Attempt::retry(
                format!(
                    "{service} ({endpoint}) gave no answer within {:?} (`timeout`) while \
                     {doing}; raise `timeout` if {service} is just slow",
                    self.timeout
                ),
                None,
            ),
            NoAnswer::Connect(cause) => Attempt::retry(
                format!(
                    "could not connect to {service} ({endpoint}) while {doing}: {}",
                    self.redact(&cause)
                ),
                None,
            ),
            NoAnswer::Build(cause) => Attempt::permanent(format!(
                "could not build the request for {doing}: {}",
                self.redact(&cause)
            )),
            NoAnswer::Failed(cause) => Attempt::retry(
                format!(
                    "the request to {service} ({endpoint}) failed while {doing}: {}",
                    self.redact(&cause)
                ),
                None,
            ),
        }
    }

    /// `text` with the credential replaced: what is kept on an attempt never holds it, even
    /// when an API or a proxy echoes it back.
    pub fn redact(&self, text: &str) -> String {
        if self.secret.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.secret, "**REDACTED**")
        }
    }

    /// The answer's body as kept on an attempt (which truncates it): scrubbed.
    pub fn kept(&self, answer: &Answer) -> String {
        self.redact(&answer.text)
    }

    /// `attempt` with the answer's status and scrubbed body recorded on it.
    pub fn recorded(&self, attempt: Attempt, answer: &Answer) -> Attempt {
        attempt
            .with_status(answer.status.as_u16())
            .with_response(self.kept(answer))
    }

    /// `: <the CRM's message>`, read from the body's `field`, scrubbed and cut short; empty
    /// when the body has none.
    fn says(&self, answer: &Answer, field: &str) -> String {
        answer
            .field(field)
            .map(|message| {
                let message: String = self.redact(message).chars().take(MESSAGE_CHARS).collect();
                format!(": {message}")
            })
            .unwrap_or_default()
    }

    /// An answer that is not a success, as a failed attempt keeping the status and the
    /// (scrubbed) body. `own` decides the statuses this CRM treats its own way, given the
    /// status, the status in words, and [`Api::says`] of the body's `message_field`; `None`
    /// leaves the status to the rules every CRM shares: a redirect is lasting (`base_url`
    /// is wrong), a 5xx or a status nobody expects passing.
    pub fn failure(
        &self,
        answer: &Answer,
        doing: &str,
        message_field: &str,
        own: impl FnOnce(u16, &str, &str) -> Option<Attempt>,
    ) -> Attempt {
        let service = self.service;
        let status = answer.status.as_u16();
        let described = http::describe(answer.status);
        let says = self.says(answer, message_field);
        let attempt = own(status, &described, &says).unwrap_or_else(|| match status {
            300..=399 => Attempt::permanent(format!(
                "{service} answered {doing} with a redirect ({described}), which is not \
                 followed; check `base_url`"
            )),
            500..=599 => Attempt::retry(
                format!("{service} failed while {doing} ({described}{says})"),
                None,
            ),
            _ => Attempt::retry(
                format!("{service} answered {doing} with an unexpected status ({described})"),
                None,
            ),
        });
        self.recorded(attempt, answer)
    }

    /// A success without the id the next step needs.
    pub fn no_id(&self, answer: &Answer, doing: &str) -> Attempt {
        let attempt = Attempt::permanent(format!(
            "{} answered {} to {doing} but gave no id; see its response",
            self.service,
            http::describe(answer.status)
        ));
        self.recorded(attempt, answer)
    }
}

/// `text` made safe as one URL path segment (an id read back from a checkpoint).
pub(crate) fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Checks a `base_url`: an http:// or https:// address.
fn parse_base_url(text: &str) -> Result<Url, UrlError> {
    http::parse_url(text, "https://api.example.com")
}

/// Checks a secret's form without echoing it.
fn secret_problem(secret: &Secret) -> Option<&'static str> {
    let value = secret.expose().trim();
    if value.is_empty() {
        Some("is empty; put the token in its file (one line)")
    } else if !value.chars().all(|c| c.is_ascii_graphic()) {
        Some(
            "holds a space, a line break, or a character that is not plain ASCII; copy the \
             token again into its file",
        )
    } else {
        None
    }
}

/// A header holding a number (`10000`, `2`, `1.5`), read by [`retry::header_number`].
pub(crate) fn header_number(headers: &HeaderMap, name: &str) -> Option<f64> {
    retry::header_number(headers.get(name)?.to_str().ok()?)
}
