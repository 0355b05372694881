// Over 500 lines: the request loop, and one short method per endpoint that shares it.
//! The Clairo API client: authentication, the shared rate limiter, retries with backoff,
//! tolerant parsing and typed errors. Every call to Clairo in the daemon goes through here.
//!
//! One attempt ends in a [`RetryAction`]; [`ClairoClient::execute`] loops on it:
//! - 429: every request of the process waits for `Retry-After` or the reset (through the
//!   shared [`RateLimiter`]), then this one is sent again; at most [`MAX_THROTTLED_RETRIES`]
//!   times, not counted against `max_attempts`;
//! - 5xx, timeouts, connection failures: exponential backoff with full jitter, at most
//!   `max_attempts` attempts in all;
//! - any other 4xx: no retry, a typed error at once.

mod error;
mod limiter;
mod types;

use std::sync::Arc;
use std::time::Duration;

use clairo_connectors::Secret;
use clairo_connectors::retry::Backoff;
use reqwest::header::{AUTHORIZATION, HeaderValue, USER_AGENT};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

pub use error::{BILLING_URL, ClairoError};
pub use limiter::{
    Answered, LATE_RESET_SLACK, MAX_PACING_WAIT, MAX_RESET_WAIT, Permit, RESET_JITTER_MAX,
    RateLimitHeaders, RateLimiter, wait_after_answers,
};
pub use types::{
    Agent, BriefDetail, BriefSummary, ChatReply, Conversation, ConversationSummary, DiscoverReply,
    Listing, Meeting, MeetingUpload, Message, SkippedItem,
};

use crate::metrics::Metrics;
use types::{ApiObject, ListItem, parse_json, parse_listing, parse_object};

/// The public API's address.
pub const DEFAULT_BASE_URL: &str = "https://clairo.tech/api/v1";

/// How many 429s one request sits out before giving up with [`ClairoError::RateLimited`].
/// Each wait follows the server's own Retry-After/Reset, so ten in a row means something
/// else is spending the business's budget; the caller's next run tries again.
pub const MAX_THROTTLED_RETRIES: u32 = 10;

/// An upload's answer comes after Clairo has transcribed and summarised the recording
/// (up to 25 MB of audio), so it gets at least this long, whatever `timeout` says.
pub const UPLOAD_TIMEOUT_FLOOR: Duration = Duration::from_secs(10 * 60);

/// The default `clairo.max_response_size`: 64 MiB. A list of `limit` items is far smaller
/// (100,000 briefs are about 28 MB of JSON).
pub const DEFAULT_MAX_RESPONSE_SIZE: u64 = 64 * 1024 * 1024;

/// An error answer is read only this far: its message is cut to a few hundred
/// characters anyway, and a server sending an endless error page gets no more memory.
const ERROR_BODY_BYTES: u64 = 64 * 1024;

const USER_AGENT_VALUE: &str = concat!("clairo-sync/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub base_url: Url,
    pub api_key: Secret,
    /// The process's budget; keep it under the business's limit (1,000/min), which other
    /// integrations share.
    pub max_requests_per_minute: u32,
    /// Per request, from connecting to the end of the response body.
    pub timeout: Duration,
    /// Attempts in all for a request failing with 5xx or a transport error.
    pub max_attempts: u32,
    /// The first backoff; each retry doubles it, up to `backoff_cap`, with full jitter.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// The largest successful answer body read, in bytes (`clairo.max_response_size`); a
    /// larger one fails the request with [`ClairoError::ResponseTooLarge`].
    pub max_response_size: u64,
}

impl ClientOptions {
    /// The defaults: 900 requests a minute (headroom under the business's 1,000 for its
    /// other integrations), 30 s timeout, 5 attempts, backoff from 500 ms up to 30 s,
    /// answers up to 64 MiB.
    pub fn new(base_url: Url, api_key: Secret) -> Self {
        Self {
            base_url,
            api_key,
            max_requests_per_minute: 900,
            timeout: Duration::from_secs(30),
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
        }
    }
}

/// A Clairo API client. Cheap to clone; every clone shares the HTTP connection pool, and
/// every client given the same `Arc<RateLimiter>` shares one request budget.
#[derive(Clone)]
pub struct ClairoClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    api_key: Secret,
    authorization: HeaderValue,
    options: ClientOptions,
    limiter: Arc<RateLimiter>,
    metrics: Metrics,
}

impl std::fmt::Debug for ClairoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClairoClient")
            .field("base_url", &self.inner.base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// A request's body, rebuilt for every attempt (an upload reopens its file).
enum Body<'a> {
    Empty,
    Json(Value),
    Upload(&'a MeetingUpload),
}

/// One API call: what to send, and the route template it is logged and counted under.
struct Call<'a> {
    method: Method,
    /// `GET /briefs/{id}`: never an id, so metric labels stay bounded.
    endpoint: &'static str,
    url: Url,
    query: Vec<(&'static str, String)>,
    body: Body<'a>,
}

/// What one attempt's outcome calls for.
enum RetryAction {
    /// The body of a 2xx answer, not yet decoded.
    Successful(bytes::Bytes),
    /// 429: wait as the server asks (the limiter already holds every request back).
    Throttled {
        waited: Duration,
    },
    /// Worth another attempt after a backoff; `error` is reported if none is left.
    /// `at_least` is a server's Retry-After on a 5xx.
    Retry {
        reason: String,
        error: ClairoError,
        at_least: Option<Duration>,
    },
    DontRetry(ClairoError),
}

impl ClairoClient {
    pub fn new(
        options: ClientOptions,
        limiter: Arc<RateLimiter>,
        metrics: Metrics,
    ) -> Result<Self, ClairoError> {
        let base_url = options.base_url.clone();
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(ClairoError::Config(format!(
                "clairo.base_url: `{base_url}` is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}"
            )));
        }
        let key = options.api_key.expose();
        if !key.starts_with("clr_") {
            return Err(ClairoError::Config(
                "clairo.api_key: a Clairo API key starts with `clr_`; copy it again from \
                 Settings → API Keys in the Clairo dashboard"
                    .to_owned(),
            ));
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            ClairoError::Config(
                "clairo.api_key: the key holds characters an HTTP header cannot carry (a \
                 stray newline?); write the key alone on one line"
                    .to_owned(),
            )
        })?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(clairo_connectors::tls_config())
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|error| ClairoError::Config(format!("cannot set up HTTP: {error}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                api_key: options.api_key.clone(),
                authorization,
                options,
                limiter,
                metrics,
            }),
        })
    }

    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.inner.limiter
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    pub async fn agents(&self) -> Result<Listing<Agent>, ClairoError> {
        let call = self.get("GET /agents", &["agents"]);
        self.listing(call, "agents").await
    }

    pub async fn conversations(
        &self,
        agent_id: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Listing<ConversationSummary>, ClairoError> {
        let mut call = self.get("GET /conversations", &["conversations"]);
        if let Some(agent_id) = agent_id {
            call.query.push(("agentId", agent_id.to_owned()));
        }
        if let Some(limit) = limit {
            call.query.push(("limit", limit.to_string()));
        }
        self.listing(call, "conversations").await
    }

    pub async fn conversation(&self, id: &str) -> Result<Conversation, ClairoError> {
        let call = self.get("GET /conversations/{id}", &["conversations", id]);
        self.object(call).await
    }

    pub async fn briefs(&self, limit: Option<u32>) -> Result<Listing<BriefSummary>, ClairoError> {
        let mut call = self.get("GET /briefs", &["briefs"]);
        if let Some(limit) = limit {
            call.query.push(("limit", limit.to_string()));
        }
        self.listing(call, "briefs").await
    }

    pub async fn brief(&self, id: &str) -> Result<BriefDetail, ClairoError> {
        let call = self.get("GET /briefs/{id}", &["briefs", id]);
        self.object(call).await
    }

    pub async fn chat(
        &self,
        agent_id: &str,
        message: &str,
        conversation_id: Option<&str>,
    ) -> Result<ChatReply, ClairoError> {
        let body = message_body(agent_id, message, conversation_id);
        let call = self.post("POST /chat", "chat", Body::Json(body));
        self.object(call).await
    }

    pub async fn discover(
        &self,
        agent_id: &str,
        message: &str,
        conversation_id: Option<&str>,
    ) -> Result<DiscoverReply, ClairoError> {
        let body = message_body(agent_id, message, conversation_id);
        let call = self.post("POST /discover", "discover", Body::Json(body));
        self.object(call).await
    }

    /// Sends a recording, streamed from disk (memory does not grow with its size).
    pub async fn upload_meeting(&self, upload: &MeetingUpload) -> Result<Meeting, ClairoError> {
        let call = self.post("POST /meetings", "meetings", Body::Upload(upload));
        self.object(call).await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base_url.clone();
        url.path_segments_mut()
            .expect("checked in new: an http(s) URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn get(&self, endpoint: &'static str, segments: &[&str]) -> Call<'static> {
        Call {
            method: Method::GET,
            endpoint,
            url: self.url(segments),
            query: Vec::new(),
            body: Body::Empty,
        }
    }

    fn post<'a>(&self, endpoint: &'static str, segment: &str, body: Body<'a>) -> Call<'a> {
        Call {
            method: Method::POST,
            endpoint,
            url: self.url(&[segment]),
            query: Vec::new(),
            body,
        }
    }

    async fn listing<T: ListItem>(
        &self,
        call: Call<'_>,
        key: &str,
    ) -> Result<Listing<T>, ClairoError> {
        let endpoint = call.endpoint;
        let body = self.execute(&call).await?;
        let listing = parse_listing::<T>(&body, key)
            .map_err(|reason| ClairoError::Decode(format!("{endpoint}: {reason}")))?;
        for skipped in &listing.skipped {
            // The caller warns and counts (it knows the source); this is for tracing.
            debug!(
                endpoint,
                index = skipped.index,
                id = skipped.id.as_deref().unwrap_or("-"),
                reason = %skipped.reason,
                "A list item does not parse; the rest of the list is used."
            );
        }
        Ok(listing)
    }

    async fn object<T: ApiObject>(&self, call: Call<'_>) -> Result<T, ClairoError> {
        let endpoint = call.endpoint;
        let body = self.execute(&call).await?;
        parse_json(&body)
            .and_then(parse_object)
            .map_err(|reason| ClairoError::Decode(format!("{endpoint}: {reason}")))
    }

    /// Sends `call` until it succeeds or a [`RetryAction`] says stop; the successful
    /// answer's body, which the caller decodes.
    async fn execute(&self, call: &Call<'_>) -> Result<bytes::Bytes, ClairoError> {
        let options = &self.inner.options;
        let max_attempts = options.max_attempts.max(1);
        let backoff = Backoff::new(options.backoff_base, options.backoff_cap);
        let mut attempts = 0;
        let mut throttled = 0;
        loop {
            match self.attempt(call, throttled).await {
                RetryAction::Successful(body) => return Ok(body),
                RetryAction::DontRetry(error) => return Err(error),
                RetryAction::Throttled { waited } => {
                    throttled += 1;
                    if throttled > MAX_THROTTLED_RETRIES {
                        warn!(
                            endpoint = call.endpoint,
                            throttled, "Giving up after repeated 429s."
                        );
                        return Err(ClairoError::RateLimited);
                    }
                    debug!(
                        endpoint = call.endpoint,
                        throttled,
                        wait_ms = waited.as_millis() as u64,
                        "Throttled (429); waiting for the server's reset before retrying."
                    );
                }
                RetryAction::Retry {
                    reason,
                    error,
                    at_least,
                } => {
                    attempts += 1;
                    if attempts >= max_attempts {
                        warn!(endpoint = call.endpoint, attempts, %error, "Giving up on the request.");
                        return Err(error);
                    }
                    // `attempts` counts this failure: the first retry waits the first step.
                    let delay = backoff
                        .full_jitter(attempts - 1)
                        .max(at_least.unwrap_or_default());
                    warn!(
                        endpoint = call.endpoint,
                        attempt = attempts,
                        max_attempts,
                        reason = %reason,
                        delay_ms = delay.as_millis() as u64,
                        "Clairo request failed; will retry."
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One attempt: a slot from the limiter, the request, and what its outcome calls for.
    async fn attempt(&self, call: &Call<'_>, throttled_so_far: u32) -> RetryAction {
        let inner = &self.inner;
        let request = match self.build(call).await {
            Ok(request) => request,
            Err(error) => return RetryAction::DontRetry(error),
        };
        let permit = inner.limiter.acquire().await;
        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                inner.metrics.api_request(call.endpoint, "error");
                let error_text = transport_text(&error);
                debug!(
                    method = %call.method,
                    endpoint = call.endpoint,
                    status = "error",
                    duration_ms = started.elapsed().as_millis() as u64,
                    error = %error_text,
                    "Clairo API request"
                );
                return self.transport_action(call, &error, error_text);
            }
        };
        let status = response.status();
        let rate_limit = RateLimitHeaders::from_headers(response.headers());
        if let Some(remaining) = rate_limit.remaining {
            inner
                .metrics
                .api_rate_limit_remaining
                .set(i64::from(remaining));
        }
        permit.observe(&rate_limit);
        inner.metrics.api_request(call.endpoint, status.as_str());
        if status == StatusCode::TOO_MANY_REQUESTS {
            inner.metrics.api_throttled.inc();
            let fallback = Backoff::new(
                options_base_for_throttle(&inner.options),
                inner.options.backoff_cap,
            )
            .full_jitter(throttled_so_far);
            let waited = permit.throttled(&rate_limit, fallback);
            drop(permit);
            self.log_response(call, status, started);
            return RetryAction::Throttled { waited };
        }
        // A success is read whole up to the cap (a larger one is refused, never cut: a
        // truncated list would read as a shorter one); an error answer only for its message.
        let body = if status.is_success() {
            read_capped(response, inner.options.max_response_size, Overflow::Refuse).await
        } else {
            read_capped(response, ERROR_BODY_BYTES, Overflow::Truncate).await
        };
        drop(permit);
        self.log_response(call, status, started);
        let body = match body {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return RetryAction::DontRetry(ClairoError::ResponseTooLarge {
                    endpoint: call.endpoint,
                    limit: inner.options.max_response_size,
                });
            }
            Err(BodyError::Transport(error)) => {
                let error_text = transport_text(&error);
                return self.transport_action(call, &error, error_text);
            }
        };
        if status.is_success() {
            return RetryAction::Successful(body);
        }
        let message = self.server_message(&body, status);
        match status.as_u16() {
            400 => RetryAction::DontRetry(ClairoError::BadRequest { message }),
            401 => RetryAction::DontRetry(ClairoError::InvalidKey),
            403 => RetryAction::DontRetry(ClairoError::PlanRequired),
            404 => RetryAction::DontRetry(ClairoError::NotFound {
                endpoint: call.endpoint,
            }),
            500..=599 => RetryAction::Retry {
                reason: format!("{status} from the server"),
                error: ClairoError::Server {
                    status: status.as_u16(),
                    message,
                },
                at_least: rate_limit
                    .retry_after
                    .map(|wait| wait.min(inner.options.backoff_cap)),
            },
            // 413 (the recording is too large), 422 and the like: sending again cannot help.
            _ => RetryAction::DontRetry(ClairoError::BadRequest {
                message: format!("{status}: {message}"),
            }),
        }
    }

    fn log_response(&self, call: &Call<'_>, status: StatusCode, started: Instant) {
        debug!(
            method = %call.method,
            endpoint = call.endpoint,
            status = status.as_u16(),
            duration_ms = started.elapsed().as_millis() as u64,
            "Clairo API request"
        );
    }

    /// A transport failure's verdict. A POST that may have reached Clairo (a timeout,
    /// a connection dropped mid-answer) is not sent again: chat, discover and meetings
    /// are not idempotent, and a second meeting upload is a second transcription.
    fn transport_action(
        &self,
        call: &Call<'_>,
        error: &reqwest::Error,
        error_text: String,
    ) -> RetryAction {
        let idempotent = call.method == Method::GET;
        if idempotent || error.is_connect() {
            let kind = if error.is_timeout() {
                "timeout"
            } else {
                "transport error"
            };
            RetryAction::Retry {
                reason: format!("{kind}: {error_text}"),
                error: ClairoError::Transport(error_text),
                at_least: None,
            }
        } else {
            RetryAction::DontRetry(ClairoError::Transport(format!(
                "{error_text}; Clairo may have received the request, so it was not sent again"
            )))
        }
    }

    /// The server's `error` text, or the body's start; scrubbed of the key.
    fn server_message(&self, body: &[u8], status: StatusCode) -> String {
        let text = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|value| {
                value
                    .get("error")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let text = error::scrub(&text, self.inner.api_key.expose());
        if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned()
        } else {
            text
        }
    }

    async fn build(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, ClairoError> {
        let inner = &self.inner;
        let mut request = inner
            .http
            .request(call.method.clone(), call.url.clone())
            .header(AUTHORIZATION, inner.authorization.clone())
            .header(USER_AGENT, USER_AGENT_VALUE);
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        Ok(match &call.body {
            Body::Empty => request,
            Body::Json(body) => request.json(body),
            Body::Upload(upload) => {
                let form = upload_form(upload).await?;
                request
                    .multipart(form)
                    .timeout(inner.options.timeout.max(UPLOAD_TIMEOUT_FLOOR))
            }
        })
    }
}

/// What to do with a body longer than the cap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Refuse,
    Truncate,
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a body chunk by chunk, never holding more than `cap` bytes of it: an announced
/// `Content-Length` over the cap is refused before reading, a stream that grows past it is
/// dropped there (the connection with it).
async fn read_capped(
    mut response: reqwest::Response,
    cap: u64,
    overflow: Overflow,
) -> Result<bytes::Bytes, BodyError> {
    let announced = response.content_length();
    if overflow == Overflow::Refuse && announced.is_some_and(|length| length > cap) {
        return Err(BodyError::TooLarge);
    }
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    // Sized from the announced length when there is one (it is within the cap), so a
    // large list is not copied again and again as it grows.
    let initial = announced
        .and_then(|length| usize::try_from(length).ok())
        .unwrap_or(0)
        .min(cap);
    let mut body = Vec::with_capacity(initial);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        let room = cap - body.len();
        if chunk.len() > room {
            if overflow == Overflow::Refuse {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// The multipart form for `POST /meetings`, the recording streamed from its open file,
/// rewound (so a retry starts from its first byte) and cut at the size that was checked.
async fn upload_form(upload: &MeetingUpload) -> Result<Form, ClairoError> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let file_error =
        |error: std::io::Error| ClairoError::File(format!("{}: {error}", upload.file_name));
    // A duplicate shares the descriptor's offset: rewinding it rewinds this attempt only
    // (attempts never overlap).
    let mut file = tokio::fs::File::from_std(upload.file.try_clone().map_err(file_error)?);
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(file_error)?;
    let length = upload.size;
    let stream = tokio_util::io::ReaderStream::new(file.take(length));
    let body = match &upload.sha256 {
        Some(expected) => reqwest::Body::wrap_stream(verified(stream, expected.clone(), length)),
        None => reqwest::Body::wrap_stream(stream),
    };
    let audio = Part::stream_with_length(body, length)
        .file_name(upload.file_name.clone())
        .mime_str(audio_mime(&upload.file_name))
        .map_err(|error| ClairoError::File(format!("{}: {error}", upload.file_name)))?;
    Ok(Form::new()
        .text("agentId", upload.agent_id.clone())
        .text("title", upload.title.clone())
        .part("audio", audio))
}

/// Passes a recording's bytes through while hashing them; the piece that completes
/// `size` bytes is passed on only if the whole has the `expected` sha256, else the body
/// fails there and the request with it: a file changed in place after it was checked is
/// never received whole, so never recorded under the old key.
fn verified<S>(
    stream: S,
    expected: String,
    size: u64,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    use futures_util::StreamExt as _;
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut seen = 0u64;
    stream.map(move |piece| {
        let piece = piece?;
        hasher.update(&piece);
        seen = seen.saturating_add(piece.len() as u64);
        if seen >= size {
            let digest: String = hasher
                .finalize_reset()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            if digest != expected {
                return Err(std::io::Error::other(
                    "the recording changed after it was checked (its content is no longer what was hashed); it is checked again before the next try",
                ));
            }
        }
        Ok(piece)
    })
}

/// The MIME type Clairo expects for a recording, by the file name's extension.
pub fn audio_mime(file_name: &str) -> &'static str {
    let extension = std::path::Path::new(file_name)
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("webm") => "audio/webm",
        Some("mp3") => "audio/mpeg",
        Some("wav") => "audio/wav",
        _ => "application/octet-stream",
    }
}

fn message_body(agent_id: &str, message: &str, conversation_id: Option<&str>) -> Value {
    let mut body = json!({ "agentId": agent_id, "message": message });
    if let Some(conversation_id) = conversation_id {
        body["conversationId"] = Value::from(conversation_id);
    }
    body
}

/// A transport error with its causes ("error sending request: connection refused"):
/// reqwest's own text stops at the outermost layer. URLs hold no secret (the key travels
/// only in a header), so they stay.
fn transport_text(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The fallback wait for a 429 that names no time: at least a second, doubling.
fn options_base_for_throttle(options: &ClientOptions) -> Duration {
    options.backoff_base.max(Duration::from_secs(1))
}

/// Decodes `body` as the client decodes a successful answer (a list item by item from its
/// text, an object from its JSON), as every list and every object the API returns, and
/// says how many of those decodings succeeded. The fuzz target `clairo_response` drives
/// it: no answer, however odd, may panic the client.
pub fn decode_as_every_answer(body: &[u8]) -> usize {
    let lists = [
        parse_listing::<Agent>(body, "agents").is_ok(),
        parse_listing::<ConversationSummary>(body, "conversations").is_ok(),
        parse_listing::<BriefSummary>(body, "briefs").is_ok(),
    ];
    let lists = lists.iter().filter(|ok| **ok).count();
    let Ok(value) = parse_json(body) else {
        return lists;
    };
    let objects = [
        parse_object::<Conversation>(value.clone()).is_ok(),
        parse_object::<BriefDetail>(value.clone()).is_ok(),
        parse_object::<ChatReply>(value.clone()).is_ok(),
        parse_object::<DiscoverReply>(value.clone()).is_ok(),
        parse_object::<Meeting>(value).is_ok(),
    ];
    lists + objects.iter().filter(|ok| **ok).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_client(base_url: &str, key: &str) -> Result<ClairoClient, ClairoError> {
        let options = ClientOptions::new(base_url.parse().unwrap(), Secret::new(key));
        ClairoClient::new(options, Arc::new(RateLimiter::new(100)), Metrics::new())
    }

    #[test]
    fn urls_keep_the_base_path_and_escape_ids() {
        let client = new_client("http://127.0.0.1:1/api/v1", "clr_k").unwrap();
        assert_eq!(
            client.url(&["briefs"]).as_str(),
            "http://127.0.0.1:1/api/v1/briefs"
        );
        assert_eq!(
            client.url(&["briefs", "a/b c"]).as_str(),
            "http://127.0.0.1:1/api/v1/briefs/a%2Fb%20c"
        );
        let client = new_client("http://127.0.0.1:1/api/v1/", "clr_k").unwrap();
        assert_eq!(
            client.url(&["agents"]).as_str(),
            "http://127.0.0.1:1/api/v1/agents"
        );
    }

    #[test]
    fn a_bad_key_or_url_is_a_config_error_that_does_not_show_the_key() {
        let error = new_client("http://x/api/v1", "sk_live_123").unwrap_err();
        assert!(matches!(error, ClairoError::Config(_)));
        assert!(!error.to_string().contains("sk_live_123"));
        let error = new_client("http://x/api/v1", "clr_bad\nkey").unwrap_err();
        assert!(!error.to_string().contains("clr_bad"), "{error}");
        assert!(matches!(
            new_client("mailto:a@b.c", "clr_k"),
            Err(ClairoError::Config(_))
        ));
    }

    #[test]
    fn recordings_are_sent_with_their_audio_type() {
        assert_eq!(audio_mime("standup.webm"), "audio/webm");
        assert_eq!(audio_mime("call.MP3"), "audio/mpeg");
        assert_eq!(audio_mime("room.wav"), "audio/wav");
        assert_eq!(audio_mime("notes"), "application/octet-stream");
    }

    #[test]
    fn any_body_decodes_as_the_answers_whose_shape_it_has_and_never_panics() {
        assert_eq!(
            decode_as_every_answer(b"[]"),
            3,
            "a bare list is every list"
        );
        assert_eq!(
            decode_as_every_answer(br#"{"id": "x", "agents": [1]}"#),
            6,
            "every object, and the agents list"
        );
        for body in [
            &b"{"[..],
            b"",
            b"null",
            b"\xff",
            b"[[[[[[",
            br#"{"briefs": "#,
        ] {
            assert_eq!(decode_as_every_answer(body), 0);
        }
    }
}
