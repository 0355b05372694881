//! What the HubSpot and Pipedrive connectors share: the note a brief or a meeting becomes
//! (HTML, escaped, cut to fit), the no-email policy, the progress a delivery saves between
//! calls, and the HTTP plumbing that turns one call into an answer or a failed [`Attempt`].

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Days, SecondsFormat, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tracing::warn;
use url::Url;

use crate::lead::Lead;
use crate::{Attempt, CheckpointSink, Event, Secret, Verdict};

/// Sent on every request, so the CRM's API logs say who called.
const USER_AGENT: &str = concat!("clairo-sync/", env!("CARGO_PKG_VERSION"));

/// The longest wait a CRM's answer can impose. HubSpot's daily limit resets at most a day
/// away; anything longer is more likely a bug than a plan.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Bytes of an answer read at most. CRM answers to these calls are a few kilobytes; the
/// bound keeps a misbehaving proxy from filling memory.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// HubSpot caps `hs_note_body` at 65,536 characters. Notes stop well short, counting UTF-16
/// units (what HubSpot's Java back end counts), so neither escaping nor emoji can tip a
/// note over. Pipedrive documents no cap; the same bound keeps its notes readable.
pub(crate) const NOTE_LIMIT: usize = 65_000;

/// A meeting's note shows only the start of its transcript: it is read on a CRM timeline,
/// and the whole transcript stays in Clairo.
const TRANSCRIPT_EXCERPT_CHARS: usize = 2_000;

/// A question is a label, not content: a longer one is cut so the answers keep the room.
/// Ids and file names in a note's footer are cut the same way, so the footer, which is
/// always kept, stays small.
const LABEL_CHARS: usize = 200;

const CUT_NOTICE: &str =
    "<p><em>(cut to fit the CRM's note size; the whole brief is in Clairo)</em></p>";

/// What a CRM connector does with a brief that names no contact email (design §5: an email
/// is never guessed, so neither is the contact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithoutEmail {
    /// Record the brief as a note attached to no contact, so the lead is not lost.
    #[default]
    Note,
    /// Record nothing: the delivery is done, and its response says it was skipped.
    Skip,
}

/// The words an answer for `conversation.updated` carries: a CRM records leads and
/// meetings, not every chat message, so the event is acknowledged and left out.
pub(crate) const IGNORED_CONVERSATION: &str = "ignored: conversation.updated (a CRM records briefs and meetings; route conversations \
     to a webhook, email or file connector instead)";

// ---------------------------------------------------------------------------------------
// Notes

/// HTML built under a size budget: every piece is escaped, and a piece that does not fit is
/// cut on a character boundary (never inside an entity or a tag), after which nothing more
/// is added but the footer, which is reserved from the start.
struct NoteHtml {
    html: String,
    used: usize,
    budget: usize,
    cut: bool,
}

fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

fn escaped(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        '\n' => Some("<br>"),
        '\r' => Some(""),
        _ => None,
    }
}

/// `text` with HTML's special characters escaped and line breaks as `<br>`.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match escaped(c) {
            Some(replacement) => out.push_str(replacement),
            None => out.push(c),
        }
    }
    out
}

/// Escapes as much of `text` as fits in `room` UTF-16 units, ending with `…` when cut;
/// the flag says whether it was cut.
fn escape_within(text: &str, room: usize) -> (String, bool) {
    let whole = escape_html(text);
    if units(&whole) <= room {
        return (whole, false);
    }
    // One unit is kept for the ellipsis that marks the cut.
    let room = room.saturating_sub(1);
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let piece_units = match escaped(c) {
            Some(replacement) => units(replacement),
            None => c.len_utf16(),
        };
        if used + piece_units > room {
            break;
        }
        match escaped(c) {
            Some(replacement) => out.push_str(replacement),
            None => out.push(c),
        }
        used += piece_units;
    }
    out.push('…');
    (out, true)
}

impl NoteHtml {
    fn new(limit: usize, footer: &str) -> Self {
        Self {
            html: String::new(),
            used: 0,
            budget: limit.saturating_sub(units(footer) + units(CUT_NOTICE)),
            cut: false,
        }
    }

    /// Appends `<p><strong>label</strong> text</p>`, cutting `text` if it does not fit.
    fn paragraph(&mut self, label: Option<&str>, text: &str) {
        if self.cut {
            return;
        }
        let label = label.map(|label| {
            let short: String = label.chars().take(LABEL_CHARS).collect();
            let ellipsis = if short.len() < label.len() { "…" } else { "" };
            let gap = if text.is_empty() { "" } else { " " };
            format!("<strong>{}{ellipsis}</strong>{gap}", escape_html(&short))
        });
        let label = label.unwrap_or_default();
        let fixed = units("<p></p>") + units(&label);
        // Room for the markup and at least a character and the ellipsis.
        if self.used + fixed + 2 > self.budget {
            self.cut = true;
            return;
        }
        let (body, cut) = escape_within(text, self.budget - self.used - fixed);
        self.cut = cut;
        let piece = format!("<p>{label}{body}</p>");
        self.used += units(&piece);
        self.html.push_str(&piece);
    }

    fn finish(mut self, footer: &str) -> String {
        if self.cut {
            self.html.push_str(CUT_NOTICE);
        }
        self.html.push_str(footer);
        self.html
    }
}

/// The note a brief becomes: who, the summary, every answer, and a footer naming the brief
/// and the event. The event id in the footer is how a retry recognises a note an earlier
/// attempt created without learning its id.
pub(crate) fn brief_note(event: &Event, lead: &Lead, limit: usize) -> String {
    let data = &event.data;
    let mut ids = Vec::new();
    if let Some(id) = text_field(data, "id") {
        ids.push(format!("brief {}", clip(&id)));
    }
    if let Some(id) = text_field(data, "conversationId") {
        ids.push(format!("conversation {}", clip(&id)));
    }
    ids.push(format!("event {}", event.id));
    let footer = format!(
        "<p><small>Clairo {}</small></p>",
        escape_html(&ids.join(" · "))
    );
    let mut note = NoteHtml::new(limit, &footer);
    let mut who = Vec::new();
    if let Some(name) = lead_name(lead) {
        who.push(name);
    }
    if let Some(email) = &lead.email {
        who.push(format!("<{email}>"));
    }
    if let Some(company) = &lead.company {
        who.push(company.clone());
    }
    note.paragraph(Some("Clairo brief"), &who.join(" · "));
    if let Some(summary) = lead
        .summary
        .as_deref()
        .filter(|text| !text.trim().is_empty())
    {
        note.paragraph(None, summary.trim());
    }
    for (question, answer) in &lead.answers {
        note.paragraph(Some(&format!("{question}:")), answer);
    }
    note.finish(&footer)
}

/// The note a processed meeting becomes: title, duration, summary, and the start of the
/// transcript.
pub(crate) fn meeting_note(event: &Event, limit: usize) -> String {
    let data = &event.data;
    let mut ids = Vec::new();
    if let Some(id) = text_field(data, "id") {
        ids.push(format!("meeting {}", clip(&id)));
    }
    if let Some(file) = text_field(data, "fileName") {
        ids.push(format!("recording {}", clip(&file)));
    }
    ids.push(format!("event {}", event.id));
    let footer = format!(
        "<p><small>Clairo {}</small></p>",
        escape_html(&ids.join(" · "))
    );
    let mut note = NoteHtml::new(limit, &footer);
    let title = text_field(data, "title")
        .or_else(|| text_field(data, "fileName"))
        .unwrap_or_else(|| "untitled".to_owned());
    let heading = match data.get("durationSec").and_then(Value::as_f64) {
        Some(seconds) => format!("{title} ({})", duration_words(seconds)),
        None => title,
    };
    note.paragraph(Some("Meeting:"), &heading);
    if let Some(summary) = text_field(data, "summary") {
        note.paragraph(None, &summary);
    }
    if let Some(transcript) = text_field(data, "transcript") {
        let mut excerpt: String = transcript.chars().take(TRANSCRIPT_EXCERPT_CHARS).collect();
        if excerpt.len() < transcript.len() {
            excerpt.push('…');
        }
        note.paragraph(Some("Transcript (start):"), &excerpt);
    }
    note.finish(&footer)
}

fn clip(text: &str) -> String {
    text.chars().take(LABEL_CHARS).collect()
}

/// The contact's name as the brief gives it, whole or from its parts.
pub(crate) fn lead_name(lead: &Lead) -> Option<String> {
    lead.name.clone().or_else(|| {
        let parts: Vec<&str> = [lead.first_name.as_deref(), lead.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    })
}

/// A field as trimmed text: strings as they are, numbers and others as JSON; `None` when
/// absent, null or blank.
pub(crate) fn text_field(data: &Value, key: &str) -> Option<String> {
    let text = match data.get(key)? {
        Value::Null => return None,
        Value::String(text) => text.trim().to_owned(),
        other => other.to_string(),
    };
    (!text.is_empty()).then_some(text)
}

/// `45 min`, `1 h 5 min`, `40 s`.
fn duration_words(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (hours, minutes, secs) = (total / 3600, total % 3600 / 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{secs} s"),
        (0, minutes) => format!("{minutes} min"),
        (hours, 0) => format!("{hours} h"),
        (hours, minutes) => format!("{hours} h {minutes} min"),
    }
}

/// When what the event describes happened: a brief's `createdAt`, else the event's time.
/// A CRM places the note on its timeline by this.
pub(crate) fn occurred_at(event: &Event) -> DateTime<Utc> {
    event
        .data
        .get("createdAt")
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map_or(event.timestamp, |time| time.with_timezone(&Utc))
}

/// ISO 8601 with milliseconds, in UTC: `2026-04-01T14:30:00.000Z`.
pub(crate) fn iso_millis(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------------------
// Progress

/// The progress saved on the delivery, read back; a checkpoint this connector cannot read
/// (written by another version, or edited by hand) is set aside with a warning. Starting
/// over is safe for contacts: both CRMs' contact step finds an existing contact by email.
pub(crate) fn load_progress<T: DeserializeOwned + Default>(
    checkpoint: Option<&Value>,
    connector: &str,
) -> T {
    let Some(value) = checkpoint else {
        return T::default();
    };
    serde_json::from_value(value.clone()).unwrap_or_else(|error| {
        warn!(
            connector = %connector,
            %error,
            "Ignoring a checkpoint this connector cannot read; starting the delivery over."
        );
        T::default()
    })
}

/// Saves `progress` on the delivery; the dispatcher has persisted it when this returns.
pub(crate) async fn save_progress<T: Serialize>(
    sink: &dyn CheckpointSink,
    progress: &T,
) -> Result<(), String> {
    let value = serde_json::to_value(progress).map_err(|error| error.to_string())?;
    sink.save(value).await
}

/// The attempt for a checkpoint that could not be saved: stop before making changes whose
/// record would be lost, and try again.
pub(crate) fn unsaved(error: &str, done: &str) -> Attempt {
    Attempt::retry(
        format!(
            "{done}, but the progress could not be saved ({error}); stopping so that nothing \
             is created without a record, and retrying"
        ),
        None,
    )
}

/// Reads an id given as a string or a number (CRMs use both) as text.
pub(crate) fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// `deserialize_with` for an optional id saved as a string or a number.
pub(crate) fn optional_id<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?
        .as_ref()
        .and_then(id_text))
}

pub(crate) fn is_false(value: &bool) -> bool {
    !value
}

/// Adds what had already been done to a failed attempt's reason, so an operator reading
/// it knows that a retry will not repeat it.
pub(crate) fn with_context(mut attempt: Attempt, context: &str) -> Attempt {
    if context.is_empty() {
        return attempt;
    }
    match &mut attempt.verdict {
        Verdict::Retry { reason, .. } | Verdict::Permanent { reason } => {
            reason.push_str("; ");
            reason.push_str(context);
        }
        Verdict::Delivered => {}
    }
    attempt
}

// ---------------------------------------------------------------------------------------
// HTTP

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
        service: &'static str,
        base_url: &str,
        timeout: Duration,
        auth: (HeaderName, String),
        secret: &str,
    ) -> Result<Self, String> {
        let base = parse_base_url(base_url).map_err(|message| format!("base_url: {message}"))?;
        if timeout.is_zero() {
            return Err(format!(
                "timeout: is zero; set how long to wait for {service}, e.g. \"30s\""
            ));
        }
        let (name, value) = auth;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            "the credential holds a line break or another character not allowed in an HTTP \
             header; copy it again into its file"
                .to_owned()
        })?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(name, value);
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            // A redirect from a CRM API means `base_url` is wrong; following it could carry
            // the credential to another host.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|error| format!("could not set up the HTTP client: {error}"))?;
        Ok(Self {
            service,
            base,
            timeout,
            secret: secret.to_owned(),
            client,
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

    /// `host:port` of the API: enough to say where.
    pub fn endpoint(&self) -> String {
        let host = self.base.host_str().unwrap_or(self.service);
        match self.base.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// Sends one call; an answer of any status is `Ok`. No answer at all becomes the failed
    /// attempt: a timeout or a refused connection is passing, a request that cannot even be
    /// built is not. `doing` says what the call was for ("creating the note").
    pub async fn send(&self, request: RequestBuilder, doing: &str) -> Result<Answer, Attempt> {
        let response = request
            .send()
            .await
            .map_err(|error| self.transport_failure(&error, doing))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = read_body(response).await;
        let json = serde_json::from_str(&text).ok();
        Ok(Answer {
            status,
            headers,
            text,
            json,
        })
    }

    fn transport_failure(&self, error: &reqwest::Error, doing: &str) -> Attempt {
        let service = self.service;
        let endpoint = self.endpoint();
        if error.is_timeout() {
            return Attempt::retry(
                format!(
                    "{service} ({endpoint}) gave no answer within {:?} (`timeout`) while \
                     {doing}; raise `timeout` if {service} is just slow",
                    self.timeout
                ),
                None,
            );
        }
        let cause = self.redact(&root_cause(error));
        if error.is_connect() {
            Attempt::retry(
                format!("could not connect to {service} ({endpoint}) while {doing}: {cause}"),
                None,
            )
        } else if error.is_builder() {
            Attempt::permanent(format!("could not build the request for {doing}: {cause}"))
        } else {
            Attempt::retry(
                format!("the request to {service} ({endpoint}) failed while {doing}: {cause}"),
                None,
            )
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

/// An attempt's reason, for `probe`'s plain words.
pub(crate) fn reason(attempt: &Attempt) -> String {
    match &attempt.verdict {
        Verdict::Retry { reason, .. } | Verdict::Permanent { reason } => reason.clone(),
        Verdict::Delivered => "done".to_owned(),
    }
}

/// Checks a `base_url`: an http:// or https:// address.
pub(crate) fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| {
        format!("is not a valid address ({error}); write the full address, e.g. \"https://api.example.com\"")
    })?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        "http" | "https" => Err("has no host; write the full address".to_owned()),
        other => Err(format!(
            "uses the scheme `{other}`; use an http:// or https:// address"
        )),
    }
}

/// Checks a secret's form without echoing it.
pub(crate) fn secret_problem(secret: &Secret) -> Option<&'static str> {
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

async fn read_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_BODY_BYTES - bytes.len();
        if chunk.len() >= room {
            bytes.extend_from_slice(&chunk[..room]);
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `503 Service Unavailable`, or just the number for a status without a standard name.
pub(crate) fn describe(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The innermost cause (`Connection refused (os error 111)`).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// `Retry-After` (delay in seconds, or an HTTP date), capped at [`MAX_WAIT`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .ok()?,
    };
    Some(wait.min(MAX_WAIT))
}

/// A header holding a number (`10000`, `2`, `1.5`).
pub(crate) fn header_number(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite() && *number >= 0.0)
}

/// How long until the next midnight, UTC.
pub(crate) fn until_next_utc_midnight(now: DateTime<Utc>) -> Duration {
    let midnight = now
        .date_naive()
        .checked_add_days(Days::new(1))
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|time| time.and_utc());
    midnight
        .and_then(|midnight| (midnight - now).to_std().ok())
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! What both CRM connectors' tests need: a checkpoint store that behaves like the
    //! dispatcher's, events, and a way to re-deliver as the dispatcher would.

    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::Utc;
    use serde_json::{Value, json};

    use crate::{Attempt, CheckpointSink, Connector, Delivery, Event, EventType, event_id};

    /// Keeps the last checkpoint in memory, as the dispatcher keeps it in the state file.
    #[derive(Default)]
    pub struct MemoryCheckpoints {
        saved: Mutex<Option<Value>>,
        saves: Mutex<u32>,
    }

    impl MemoryCheckpoints {
        pub fn current(&self) -> Option<Value> {
            self.saved.lock().unwrap().clone()
        }

        pub fn saves(&self) -> u32 {
            *self.saves.lock().unwrap()
        }
    }

    #[async_trait]
    impl CheckpointSink for MemoryCheckpoints {
        async fn save(&self, checkpoint: Value) -> Result<(), String> {
            *self.saved.lock().unwrap() = Some(checkpoint);
            *self.saves.lock().unwrap() += 1;
            Ok(())
        }
    }

    /// One attempt, handed the checkpoint saved so far, as the dispatcher does.
    pub async fn attempt(
        connector: &dyn Connector,
        event: &Event,
        checkpoints: &MemoryCheckpoints,
        number: u32,
    ) -> Attempt {
        connector
            .deliver(Delivery {
                event,
                attempt: number,
                checkpoint: checkpoints.current(),
                checkpoints,
            })
            .await
    }

    pub fn brief(answers: Value, summary: &str) -> Event {
        let mut data = json!({
            "id": "cm3brief",
            "agentId": "cm1agent",
            "conversationId": "cm2conv",
            "summary": summary,
            "createdAt": "2026-04-01T14:30:00Z",
        });
        data["answers"] = answers;
        Event {
            id: event_id(EventType::BriefCreated, "cm3brief"),
            kind: EventType::BriefCreated,
            timestamp: Utc::now(),
            data,
        }
    }

    pub fn john_brief() -> Event {
        brief(
            json!({
                "name": "John Smith",
                "email": "John@TechStart.io",
                "company": "TechStart",
                "budget": "$50-100/month",
                "team_size": 50,
            }),
            "John Smith, CEO of TechStart. Looking for an AI chatbot for support.",
        )
    }

    pub fn anonymous_brief() -> Event {
        brief(
            json!({"name": "Ann", "company": "Corp"}),
            "Ann from Corp wants a demo; reach her @ the office.",
        )
    }

    pub fn meeting() -> Event {
        Event {
            id: event_id(EventType::MeetingProcessed, "abc123"),
            kind: EventType::MeetingProcessed,
            timestamp: Utc::now(),
            data: json!({
                "id": "cm4meet",
                "title": "Weekly standup",
                "transcript": "Alice: hello <everyone> & welcome.\nBob: hi.",
                "summary": "Decided to ship.",
                "durationSec": 2700,
                "agentId": "cm1agent",
                "fileName": "standup.webm",
                "sha256": "abc123",
            }),
        }
    }

    pub fn conversation() -> Event {
        Event {
            id: event_id(EventType::ConversationUpdated, "cm2conv\n3"),
            kind: EventType::ConversationUpdated,
            timestamp: Utc::now(),
            data: json!({"conversation": {"id": "cm2conv", "messages": []}, "newMessages": []}),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_support::*;
    use super::*;

    #[test]
    fn html_is_escaped_and_line_breaks_kept() {
        assert_eq!(
            escape_html("a<b> & \"c\" 'd'\r\ne"),
            "a&lt;b&gt; &amp; &quot;c&quot; &#39;d&#39;<br>e"
        );
    }

    #[test]
    fn a_brief_note_holds_the_contact_the_summary_every_answer_and_the_event_id() {
        let event = john_brief();
        let lead = Lead::from_brief(&event.data, None);
        let note = brief_note(&event, &lead, NOTE_LIMIT);
        assert!(
            note.contains("John Smith · &lt;john@techstart.io&gt; · TechStart"),
            "{note}"
        );
        assert!(note.contains("CEO of TechStart"), "{note}");
        assert!(
            note.contains("<strong>budget:</strong> $50-100/month"),
            "{note}"
        );
        assert!(note.contains("<strong>team_size:</strong> 50"), "{note}");
        assert!(note.contains(&event.id), "{note}");
        assert!(note.contains("brief cm3brief"), "{note}");
    }

    #[test]
    fn a_huge_brief_is_cut_below_the_limit_on_a_character_boundary_keeping_the_footer() {
        let long = "é😀<".repeat(40_000);
        let event = brief(json!({"email": "a@b.io", "story": long}), &long);
        let lead = Lead::from_brief(&event.data, None);
        let note = brief_note(&event, &lead, NOTE_LIMIT);
        assert!(units(&note) <= NOTE_LIMIT, "{}", units(&note));
        assert!(units(&note) > NOTE_LIMIT - 100, "{}", units(&note));
        assert!(note.contains("cut to fit"));
        assert!(note.ends_with("</small></p>"));
        assert!(note.contains(&event.id));
        // The cut never splits an entity.
        let before_notice = note.split("<p><em>").next().unwrap();
        assert!(
            before_notice.ends_with("…</p>"),
            "{}",
            &before_notice[before_notice.len() - 40..]
        );
        assert!(!before_notice.ends_with("&l…</p>"));
    }

    #[test]
    fn a_meeting_note_has_title_duration_summary_and_an_escaped_transcript_excerpt() {
        let note = meeting_note(&meeting(), NOTE_LIMIT);
        assert!(note.contains("Weekly standup (45 min)"), "{note}");
        assert!(note.contains("Decided to ship."), "{note}");
        assert!(
            note.contains("hello &lt;everyone&gt; &amp; welcome.<br>Bob: hi."),
            "{note}"
        );
        assert!(note.contains("recording standup.webm"), "{note}");
    }

    #[test]
    fn long_transcripts_are_excerpted() {
        let mut event = meeting();
        event.data["transcript"] = json!("word ".repeat(10_000));
        let note = meeting_note(&event, NOTE_LIMIT);
        assert!(note.len() < 4_000, "{}", note.len());
        assert!(note.contains("word …"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_words(40.0), "40 s");
        assert_eq!(duration_words(2700.0), "45 min");
        assert_eq!(duration_words(3900.0), "1 h 5 min");
        assert_eq!(duration_words(7200.0), "2 h");
    }

    #[test]
    fn the_next_utc_midnight_is_at_most_a_day_away() {
        let now = DateTime::parse_from_rfc3339("2026-04-01T23:59:30Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(until_next_utc_midnight(now), Duration::from_secs(30));
        let now = DateTime::parse_from_rfc3339("2026-04-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(until_next_utc_midnight(now), MAX_WAIT);
    }

    #[test]
    fn a_brief_note_is_placed_at_the_briefs_creation_time() {
        let event = john_brief();
        assert_eq!(iso_millis(occurred_at(&event)), "2026-04-01T14:30:00.000Z");
    }

    #[test]
    fn an_unreadable_checkpoint_is_set_aside() {
        #[derive(Default, serde::Deserialize)]
        struct Progress {
            #[serde(default, deserialize_with = "optional_id")]
            contact_id: Option<String>,
        }
        let progress: Progress = load_progress(Some(&json!({"contact_id": 12})), "crm");
        assert_eq!(progress.contact_id.as_deref(), Some("12"));
        let progress: Progress = load_progress(Some(&json!("garbage")), "crm");
        assert_eq!(progress.contact_id, None);
    }
}
