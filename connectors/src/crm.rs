//! What the HubSpot and Pipedrive connectors share: the note a brief or a meeting becomes
//! (HTML, escaped, cut to fit), the no-email policy, the progress a delivery saves between
//! calls, the config keys both tables have, and the API client that turns one call into an
//! answer or a failed [`Attempt`] (on top of the plumbing in [`crate::http`]).

use std::time::Duration;

use chrono::{DateTime, Days, SecondsFormat, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tracing::warn;
use url::Url;

use crate::http::{self, MAX_WAIT, NoAnswer};
use crate::lead::Lead;
use crate::{Attempt, CheckpointSink, ConfigProblem, Delivery, Event, Secret, Verdict};

/// Bytes of an answer read at most. CRM answers to these calls are a few kilobytes; the
/// bound keeps a misbehaving proxy from filling memory.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest error message from a CRM quoted in a reason; the whole body is on the
/// attempt's response.
const MESSAGE_CHARS: usize = 300;

/// HubSpot caps `hs_note_body` at 65,536 characters. Notes stop well short, counting UTF-16
/// units (what HubSpot's Java back end counts), so neither escaping nor emoji can tip a
/// note over. Pipedrive documents no cap; the same bound keeps its notes readable.
pub(crate) const NOTE_LIMIT: usize = 65_000;

/// `timeout` of a CRM connector when the config gives none: the limit on each call.
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

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

/// The answer to a brief without an email under `without_email = "skip"`.
pub(crate) fn skipped_without_email(service: &str) -> Attempt {
    Attempt::delivered(
        None,
        Some(format!(
            "skipped: the brief names no contact email, and `without_email = \"skip\"`; \
             nothing was written to {service}"
        )),
    )
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
    let footer = footer(event, [("brief", "id"), ("conversation", "conversationId")]);
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
    let footer = footer(event, [("meeting", "id"), ("recording", "fileName")]);
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

/// A note's footer: what the note is about, each `(label, field)` naming an id read from
/// the event's data, then the event itself.
fn footer(event: &Event, ids: [(&str, &str); 2]) -> String {
    let mut named: Vec<String> = ids
        .into_iter()
        .filter_map(|(label, key)| {
            text_field(&event.data, key).map(|id| format!("{label} {}", clip(&id)))
        })
        .collect();
    named.push(format!("event {}", event.id));
    format!(
        "<p><small>Clairo {}</small></p>",
        escape_html(&named.join(" · "))
    )
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

/// Saves the progress of a finished delivery. Failing is only logged: the work is done,
/// and a retry would find what it recorded rather than create it again.
pub(crate) async fn save_last<T: Serialize>(
    delivery: &Delivery<'_>,
    progress: &T,
    connector: &str,
) {
    if let Err(error) = save_progress(delivery.checkpoints, progress).await {
        warn!(connector = %connector, %error, "Could not save the delivery's final progress.");
    }
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
    pub fn token(&self) -> Result<&'a str, String> {
        let key = self.token_key;
        let token = self
            .token
            .ok_or_else(|| format!("{key}: {}", self.missing_token))?;
        if let Some(message) = secret_problem(token) {
            return Err(format!("{key}: {message}"));
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
    ) -> Result<Self, String> {
        let service = keys.service;
        let base =
            parse_base_url(keys.base_url).map_err(|message| format!("base_url: {message}"))?;
        if keys.timeout.is_zero() {
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
fn parse_base_url(text: &str) -> Result<Url, String> {
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
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testkit::*;

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
