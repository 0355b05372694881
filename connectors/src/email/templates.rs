// Over 500 lines: its tests are the last 190; the rest is one idea, the words of an email.
//! The words of an email: one subject, text and HTML template per event type, built in
//! and overridable file by file from `templates_dir`, and the context they are rendered
//! with (the event envelope plus values derived from it, so templates stay simple).

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::chat::digest::human_duration;
use crate::lead::Lead;
use crate::template_dir;
use crate::{Event, EventType, TemplateError};

/// The three parts of a message, each its own template file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    fn suffix(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Text => "txt",
            Part::Html => "html",
        }
    }
}

/// `<event type>.subject.txt`, `<event type>.txt`, `<event type>.html`: the name of the
/// built-in, of its override in `templates_dir`, and of the template in the environment.
/// minijinja escapes by this name: `.html` is autoescaped as HTML, `.txt` not at all.
pub fn template_name(kind: EventType, part: Part) -> String {
    format!("{}.{}", kind.as_str(), part.suffix())
}

/// The built-in templates, embedded at compile time.
const BUILT_IN: [(&str, &str); 9] = [
    (
        "brief.created.subject.txt",
        include_str!("../../templates/brief.created.subject.txt"),
    ),
    (
        "brief.created.txt",
        include_str!("../../templates/brief.created.txt"),
    ),
    (
        "brief.created.html",
        include_str!("../../templates/brief.created.html"),
    ),
    (
        "meeting.processed.subject.txt",
        include_str!("../../templates/meeting.processed.subject.txt"),
    ),
    (
        "meeting.processed.txt",
        include_str!("../../templates/meeting.processed.txt"),
    ),
    (
        "meeting.processed.html",
        include_str!("../../templates/meeting.processed.html"),
    ),
    (
        "conversation.updated.subject.txt",
        include_str!("../../templates/conversation.updated.subject.txt"),
    ),
    (
        "conversation.updated.txt",
        include_str!("../../templates/conversation.updated.txt"),
    ),
    (
        "conversation.updated.html",
        include_str!("../../templates/conversation.updated.html"),
    ),
];

/// How much of a meeting's transcript an email quotes: about a page, enough to recall
/// the meeting, while the whole transcript (often tens of thousands of characters)
/// stays in Clairo.
const TRANSCRIPT_EXCERPT_CHARS: usize = 1500;

/// Longest subject sent. Mail clients show about 80 characters; beyond a few hundred a
/// subject is a template mistake (a whole summary), and some servers refuse long headers.
const MAX_SUBJECT_CHARS: usize = 200;

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Every template of every event type, built-ins with overrides in their place.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-ins, each replaced by the file of the same name in `dir` if there is one.
    /// Every override is parsed and rendered once against a sample event of its type, so a
    /// template that cannot render fails here, at start-up, not at a delivery. The errors
    /// name the file and say what to do.
    pub fn load(dir: Option<&Path>) -> Result<Self, Vec<TemplateError>> {
        let mut env = Environment::new();
        // Event data is loosely shaped: a missing field (even a nested one) renders as
        // nothing instead of failing the whole email.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        let mut errors = Vec::new();
        let mut overridden = Vec::new();
        for (name, source) in BUILT_IN {
            let source = match dir {
                Some(dir) => match template_dir::read(dir, name, "the built-in") {
                    Ok(Some(text)) => {
                        overridden.push(name);
                        text
                    }
                    Ok(None) => source.to_owned(),
                    Err(error) => {
                        errors.push(error);
                        continue;
                    }
                },
                None => source.to_owned(),
            };
            match env.add_template_owned(name, source) {
                Ok(()) => {}
                Err(error) => {
                    overridden.retain(|overridden| *overridden != name);
                    errors.push(TemplateError::Parse {
                        name: name.to_owned(),
                        error,
                    });
                }
            }
        }
        let templates = Self { env };
        for name in overridden {
            let kind = EventType::ALL
                .into_iter()
                .find(|kind| name.starts_with(&format!("{}.", kind.as_str())))
                .expect("every built-in name starts with its event type");
            let context = context(&sample_event(kind), "sample", "Sample subject");
            if let Err(error) = templates.render_one(name, &context) {
                errors.push(TemplateError::EmailSample {
                    name: name.to_owned(),
                    kind,
                    error: Box::new(error),
                });
            }
        }
        if errors.is_empty() {
            Ok(templates)
        } else {
            Err(errors)
        }
    }

    /// Subject, text and HTML for `event`; `connector` is the connector's name, which
    /// templates may show. An error names the template that failed.
    pub fn render(&self, event: &Event, connector: &str) -> Result<Rendered, TemplateError> {
        let subject_context = context(event, connector, "");
        let subject =
            self.render_one(&template_name(event.kind, Part::Subject), &subject_context)?;
        let subject = one_line(&subject, MAX_SUBJECT_CHARS);
        let subject = if subject.is_empty() {
            format!("clairo-sync: {}", event.kind)
        } else {
            subject
        };
        let context = context(event, connector, &subject);
        Ok(Rendered {
            text: self.render_one(&template_name(event.kind, Part::Text), &context)?,
            html: self.render_one(&template_name(event.kind, Part::Html), &context)?,
            subject,
        })
    }

    fn render_one(&self, name: &str, context: &Value) -> Result<String, TemplateError> {
        self.env
            .get_template(name)
            .and_then(|template| template.render(context))
            .map_err(|error| TemplateError::Render {
                name: name.to_owned(),
                error,
            })
    }
}

/// Whitespace (line breaks included) collapsed to single spaces, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", line[..cut].trim_end()),
        None => line,
    }
}

/// What templates see: `event` (the envelope: id, type, timestamp, data), `event_time`,
/// `connector`, `subject` (in the text and HTML parts), and per type `lead` and `brief`,
/// `meeting`, or `conversation`.
pub fn context(event: &Event, connector: &str, subject: &str) -> Value {
    let mut context = json!({
        "event": {
            "id": event.id,
            "type": event.kind.as_str(),
            "timestamp": event.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": event.data,
        },
        "event_time": human_time(&event.timestamp),
        "connector": connector,
        "subject": subject,
    });
    let data = &event.data;
    let derived = match event.kind {
        EventType::BriefCreated => json!({
            "lead": lead(data),
            "brief": {
                "id": text(data.get("id")),
                "agent_id": text(data.get("agentId")),
                "conversation_id": text(data.get("conversationId")),
                "created_at": text(data.get("createdAt")),
                "created_time": data.get("createdAt").and_then(Value::as_str).and_then(parse_time).map(|time| human_time(&time)),
            },
        }),
        EventType::MeetingProcessed => json!({ "meeting": meeting(data) }),
        EventType::ConversationUpdated => json!({ "conversation": conversation(data) }),
    };
    if let (Value::Object(context), Value::Object(derived)) = (&mut context, derived) {
        context.extend(derived);
    }
    without_nulls(&mut context);
    context
}

/// Removes null members of objects, at any depth: minijinja prints a null as `none`,
/// while a missing member renders as nothing and is falsy, as a template author expects
/// of a field the API left out.
fn without_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, member| !member.is_null());
            map.values_mut().for_each(without_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(without_nulls),
        _ => {}
    }
}

fn lead(data: &Value) -> Value {
    let lead = Lead::from_brief(data, None);
    let answers: Vec<Value> = lead
        .answers
        .iter()
        .map(|(key, answer)| json!({"key": key, "label": label(key), "answer": answer}))
        .collect();
    json!({
        "email": lead.email,
        "name": lead.name,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "company": lead.company,
        "budget": lead.budget,
        "summary": lead.summary,
        "answers": answers,
    })
}

fn meeting(data: &Value) -> Value {
    let summary = data.get("summary").and_then(Value::as_str).unwrap_or("");
    let (summary_body, action_items) = action_items(summary);
    let transcript = data.get("transcript").and_then(Value::as_str).unwrap_or("");
    let (excerpt, truncated) = excerpt(transcript, TRANSCRIPT_EXCERPT_CHARS);
    let excerpt_chars = excerpt.chars().count();
    let excerpt = if truncated {
        format!("{excerpt}…")
    } else {
        excerpt
    };
    let seconds = data.get("durationSec").and_then(Value::as_f64);
    json!({
        "id": text(data.get("id")),
        "title": text(data.get("title")),
        "file_name": text(data.get("fileName")),
        "agent_id": text(data.get("agentId")),
        "sha256": text(data.get("sha256")),
        "duration_sec": seconds,
        "duration": seconds.and_then(human_duration),
        "summary": summary,
        "summary_body": summary_body,
        "action_items": action_items,
        "transcript_excerpt": excerpt,
        "transcript_excerpt_chars": excerpt_chars,
        "transcript_chars": transcript.trim().chars().count(),
        "transcript_truncated": truncated,
    })
}

fn conversation(data: &Value) -> Value {
    let conversation = data.get("conversation").unwrap_or(&Value::Null);
    let new_messages: Vec<Value> = data
        .get("newMessages")
        .and_then(Value::as_array)
        .map(|messages| messages.iter().map(message).collect())
        .unwrap_or_default();
    json!({
        "id": text(conversation.get("id")),
        "agent_id": text(conversation.get("agentId")),
        "status": text(conversation.get("status")),
        "message_count": conversation.get("messages").and_then(Value::as_array).map_or(new_messages.len(), Vec::len),
        "new_messages": new_messages,
    })
}

fn message(message: &Value) -> Value {
    let role = text(message.get("role")).unwrap_or_default();
    let created_at = message.get("createdAt").and_then(Value::as_str);
    json!({
        "role": role,
        "role_label": match role.as_str() {
            "user" => "Visitor".to_owned(),
            "assistant" => "Agent".to_owned(),
            "" => "Unknown".to_owned(),
            other => capitalized(other),
        },
        "content": text(message.get("content")).unwrap_or_default(),
        "created_at": created_at,
        // Shown as the API gave it when it is not an RFC 3339 time.
        "time": created_at.map(|raw| parse_time(raw).map_or_else(|| raw.to_owned(), |time| human_time(&time))),
    })
}

/// A JSON value as text: strings as they are, other values (not null) as JSON.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

fn human_time(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Splits a meeting summary at its "Action items" heading, if it has one: the text
/// before it, and the items listed after it (bullets and numbering removed). The list
/// ends at the next heading.
fn action_items(summary: &str) -> (String, Vec<String>) {
    let lines: Vec<&str> = summary.lines().collect();
    let Some(heading) = lines.iter().position(|line| is_action_items_heading(line)) else {
        return (summary.trim().to_owned(), Vec::new());
    };
    let mut items = Vec::new();
    // "Action items: call Ann" holds an item on the heading's own line.
    if let Some((_, rest)) = lines[heading].split_once(':') {
        let rest = rest.trim().trim_matches('*').trim();
        if !rest.is_empty() {
            items.push(rest.to_owned());
        }
    }
    for line in &lines[heading + 1..] {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let item = strip_bullet(line);
        let is_heading = line.starts_with('#') || (item == line && line.ends_with(':'));
        if is_heading {
            break;
        }
        if !item.is_empty() {
            items.push(item.to_owned());
        }
    }
    (lines[..heading].join("\n").trim().to_owned(), items)
}

fn is_action_items_heading(line: &str) -> bool {
    let bare = line
        .trim()
        .trim_start_matches(|c: char| matches!(c, '#' | '*' | '_') || c.is_whitespace())
        .to_lowercase();
    bare.starts_with("action items") || bare.starts_with("action item:")
}

/// `- x`, `* x`, `• x`, `1. x`, `2) x`, `[ ] x` → `x`; other lines as they are.
fn strip_bullet(line: &str) -> &str {
    let without = if let Some(rest) = line.strip_prefix(['-', '*', '•', '–', '—']) {
        rest
    } else {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        match line[digits..].strip_prefix(['.', ')']) {
            Some(rest) if digits > 0 => rest,
            _ => line,
        }
    };
    let without = without.trim_start();
    let without = ["[ ]", "[x]", "[X]"]
        .iter()
        .find_map(|box_| without.strip_prefix(box_))
        .unwrap_or(without);
    without.trim()
}

/// The first `max` characters of `text`, ended at a word where one is near, and whether
/// something was left out.
fn excerpt(text: &str, max: usize) -> (String, bool) {
    let text = text.trim();
    let Some((cut, _)) = text.char_indices().nth(max) else {
        return (text.to_owned(), false);
    };
    let head = &text[..cut];
    // Back up to a space if one is within the last tenth; a word cut in half reads badly.
    let head = match head.rfind(char::is_whitespace) {
        Some(space) if head[space..].chars().count() <= max / 10 => &head[..space],
        _ => head,
    };
    (head.trim_end().to_owned(), true)
}

/// `workEmail` → `Work email`, `company_name` → `Company name`; a key that already
/// reads as words (has a space) is kept as it is.
fn label(key: &str) -> String {
    if key.contains(' ') {
        return key.to_owned();
    }
    let mut words = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if c == '_' || c == '-' {
            words.push(' ');
            previous_lower = false;
        } else if c.is_uppercase() && previous_lower {
            words.push(' ');
            words.extend(c.to_lowercase());
            previous_lower = false;
        } else {
            words.extend(c.to_lowercase());
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
        }
    }
    capitalized(
        words
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .as_str(),
    )
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A plausible event of each type: what overrides are test-rendered against, so a
/// template that fails on real data is found when the config is checked.
pub fn sample_event(kind: EventType) -> Event {
    let data = match kind {
        EventType::BriefCreated => json!({
            "id": "cm3sample",
            "agentId": "cm1sample",
            "conversationId": "cm2sample",
            "summary": "Ann Example, CTO of Example Ltd. Wants a support chatbot. Budget: $100/month.",
            "answers": {
                "name": "Ann Example",
                "email": "ann@example.com",
                "company": "Example Ltd",
                "budget": "$100/month",
            },
            "conversation": {"id": "cm2sample", "messages": []},
            "createdAt": "2026-04-01T14:30:00Z",
        }),
        EventType::MeetingProcessed => json!({
            "id": "cm4sample",
            "title": "Weekly standup",
            "transcript": "Ann: Good morning. Bob: Morning.",
            "summary": "Short standup.\n\nAction items:\n- Bob sends the quote",
            "durationSec": 900,
            "agentId": "cm1sample",
            "fileName": "standup.webm",
            "sha256": "0".repeat(64),
        }),
        EventType::ConversationUpdated => json!({
            "conversation": {
                "id": "cm2sample",
                "agentId": "cm1sample",
                "status": "ACTIVE",
                "messages": [
                    {"role": "user", "content": "Hello!", "createdAt": "2026-04-01T14:30:00Z"},
                    {"role": "assistant", "content": "Hi! How can I help?", "createdAt": "2026-04-01T14:30:02Z"},
                ],
            },
            "newMessages": [
                {"role": "assistant", "content": "Hi! How can I help?", "createdAt": "2026-04-01T14:30:02Z"},
            ],
        }),
    };
    Event {
        id: crate::event_id(kind, "sample"),
        kind,
        timestamp: parse_time("2026-04-01T14:31:00Z").expect("a valid time"),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in() -> Templates {
        Templates::load(None).unwrap()
    }

    #[test]
    fn every_built_in_renders_its_sample_event() {
        let templates = built_in();
        for kind in EventType::ALL {
            let rendered = templates.render(&sample_event(kind), "sales_mail").unwrap();
            assert!(!rendered.subject.is_empty(), "{kind}");
            assert!(rendered.text.contains(&sample_event(kind).id), "{kind}");
            assert!(rendered.html.starts_with("<!DOCTYPE html>"), "{kind}");
        }
    }

    #[test]
    fn a_brief_shows_the_lead_and_every_answer_with_html_escaped_and_text_not() {
        let mut event = sample_event(EventType::BriefCreated);
        event.data["answers"] = json!({
            "name": "Jürgen Müller",
            "workEmail": "j.mueller@example.de",
            "company": "Müller & Söhne – Café",
            "budget": "<500 €/month",
            "useCase": "Bookings & <script>alert(1)</script>",
        });
        let rendered = built_in().render(&event, "sales_mail").unwrap();
        assert_eq!(
            rendered.subject,
            "New lead: Jürgen Müller (Müller & Söhne – Café)"
        );
        assert!(
            rendered.text.contains("Company:  Müller & Söhne – Café"),
            "{}",
            rendered.text
        );
        assert!(
            rendered.text.contains("Budget:   <500 €/month"),
            "{}",
            rendered.text
        );
        assert!(
            rendered.text.contains("Use case: Bookings & <script>"),
            "{}",
            rendered.text
        );
        assert!(
            rendered.html.contains("Müller &amp; Söhne – Café"),
            "{}",
            rendered.html
        );
        assert!(
            rendered.html.contains("&lt;script&gt;"),
            "{}",
            rendered.html
        );
        assert!(!rendered.html.contains("<script>"), "{}", rendered.html);
        assert!(
            rendered.html.contains("mailto:j.mueller@example.de"),
            "{}",
            rendered.html
        );
    }

    #[test]
    fn a_meeting_shows_its_duration_action_items_and_a_transcript_excerpt() {
        let mut event = sample_event(EventType::MeetingProcessed);
        event.data["durationSec"] = json!(2700);
        event.data["summary"] = json!(
            "Pricing was agreed.\n\n**Action items:**\n- Bob sends the quote\n2. Ann books the demo\n\nNext steps:\nnone"
        );
        event.data["transcript"] = json!("word ".repeat(1000));
        let rendered = built_in().render(&event, "sales_mail").unwrap();
        assert_eq!(
            rendered.subject,
            "Meeting processed: Weekly standup (45 min)"
        );
        assert!(
            rendered
                .text
                .contains("- Bob sends the quote\n- Ann books the demo\n"),
            "{}",
            rendered.text
        );
        assert!(!rendered.text.contains("none"), "{}", rendered.text);
        assert!(
            rendered.text.contains("Pricing was agreed."),
            "{}",
            rendered.text
        );
        assert!(
            rendered.text.contains("of 4999 characters"),
            "{}",
            rendered.text
        );
        assert!(
            rendered.html.contains("<li>Ann books the demo</li>"),
            "{}",
            rendered.html
        );
        let context = context(&event, "x", "");
        let excerpt = context["meeting"]["transcript_excerpt"].as_str().unwrap();
        assert!(excerpt.ends_with("word…"), "{excerpt}");
        assert!(excerpt.chars().count() <= TRANSCRIPT_EXCERPT_CHARS + 1);
    }

    #[test]
    fn a_conversation_update_lists_the_new_messages_with_role_and_time() {
        let rendered = built_in()
            .render(&sample_event(EventType::ConversationUpdated), "sales_mail")
            .unwrap();
        assert_eq!(rendered.subject, "Conversation cm2sample: 1 new message");
        assert!(
            rendered
                .text
                .contains("[2026-04-01 14:30 UTC] Agent:\nHi! How can I help?"),
            "{}",
            rendered.text
        );
        assert!(
            rendered.text.contains("2 in all, 1 new"),
            "{}",
            rendered.text
        );
        assert!(!rendered.text.contains("Hello!"), "{}", rendered.text);
    }

    #[test]
    fn missing_data_renders_as_placeholders_not_errors() {
        for kind in EventType::ALL {
            let mut event = sample_event(kind);
            event.data = json!({});
            let rendered = built_in().render(&event, "sales_mail").unwrap();
            assert!(!rendered.subject.is_empty(), "{kind}");
        }
    }

    #[test]
    fn a_field_the_api_left_null_renders_as_nothing_not_none() {
        let mut event = sample_event(EventType::BriefCreated);
        event.data["conversationId"] = Value::Null;
        let env = Environment::new();
        let rendered = env
            .render_str(
                "[{{ event.data.conversationId }}][{{ brief.conversation_id }}]",
                context(&event, "x", ""),
            )
            .unwrap();
        assert_eq!(rendered, "[][]");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(42.0).as_deref(), Some("42 s"));
        assert_eq!(human_duration(2700.0).as_deref(), Some("45 min"));
        assert_eq!(human_duration(3900.0).as_deref(), Some("1 h 5 min"));
        assert_eq!(human_duration(7200.0).as_deref(), Some("2 h"));
        assert_eq!(human_duration(-1.0), None);
    }

    #[test]
    fn a_summary_without_action_items_is_kept_whole() {
        let (body, items) = action_items("All fine.\nNothing to do.");
        assert_eq!(body, "All fine.\nNothing to do.");
        assert!(items.is_empty());
        let (body, items) = action_items("Done.\nAction items: call Ann");
        assert_eq!(body, "Done.");
        assert_eq!(items, ["call Ann"]);
    }

    #[test]
    fn answer_keys_become_labels() {
        assert_eq!(label("workEmail"), "Work email");
        assert_eq!(label("company_name"), "Company name");
        assert_eq!(label("What is your budget?"), "What is your budget?");
    }

    #[test]
    fn a_subject_is_one_line_and_bounded() {
        assert_eq!(one_line(" a\r\nb \t c\n", 200), "a b c");
        assert_eq!(one_line(&"x".repeat(300), 200).chars().count(), 201);
    }
}
