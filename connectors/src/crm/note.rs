//! The note a brief or a meeting becomes: HTML, escaped, cut to fit the CRM's size limit
//! on a character boundary, with a footer naming the event so a retry can recognise it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::Event;
use crate::lead::Lead;

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
    fn a_brief_note_is_placed_at_the_briefs_creation_time() {
        let event = john_brief();
        assert_eq!(iso_millis(occurred_at(&event)), "2026-04-01T14:30:00.000Z");
    }
}
