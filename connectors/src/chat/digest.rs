//! What a chat message says about an event, before it is dressed for Slack or Teams: a
//! title, a few labelled facts, the contact email, a summary, the newest messages of a
//! conversation, and a context line. All text here is raw (untrusted); each medium
//! escapes it as it lays it out.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::lead::{Lead, answer_pairs};
use crate::{Event, EventType};

/// How many of a conversation's new messages a chat message shows: the newest ones.
/// A phone screen holds about that many; the rest are in Clairo.
pub const MAX_MESSAGES: usize = 10;

/// Longest text quoted from one conversation message: a few lines on a phone.
pub const MESSAGE_CHARS: usize = 1000;

/// One message of a conversation, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    /// `Visitor`, `Agent`, or the role as the API names it.
    pub who: String,
    /// `14:30 UTC` when the API gave a time.
    pub when: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub title: String,
    /// (label, value) pairs, each value present.
    pub facts: Vec<(&'static str, String)>,
    /// Found by the contact-email rule (answers, then the summary); never invented.
    pub email: Option<String>,
    /// The heading over `body`.
    pub body_label: &'static str,
    pub body: Option<String>,
    pub messages: Vec<Said>,
    /// New messages left out (older than the [`MAX_MESSAGES`] shown).
    pub messages_left_out: usize,
    /// `brief.created · evt_… · 2026-04-01 14:31 UTC`.
    pub context: String,
}

impl Digest {
    pub fn of(event: &Event, email_answer_key: Option<&str>) -> Self {
        let data = &event.data;
        let context = format!(
            "{} · {} · {}",
            event.kind,
            event.id,
            human_time(&event.timestamp)
        );
        let mut digest = Self {
            title: String::new(),
            facts: Vec::new(),
            email: None,
            body_label: "Summary",
            body: None,
            messages: Vec::new(),
            messages_left_out: 0,
            context,
        };
        match event.kind {
            EventType::BriefCreated => digest.brief(data, email_answer_key),
            EventType::ConversationUpdated => digest.conversation(data),
            EventType::MeetingProcessed => digest.meeting(data),
        }
        digest
    }

    /// The one line a notification or a client without blocks/cards shows.
    pub fn fallback(&self) -> String {
        match &self.body {
            Some(body) => format!("{}: {}", self.title, one_line(body)),
            None => self.title.clone(),
        }
    }

    fn brief(&mut self, data: &Value, email_answer_key: Option<&str>) {
        let lead = Lead::from_brief(data, email_answer_key);
        let answers = answer_pairs(data.get("answers"));
        self.title = match (&lead.name, &lead.company) {
            (Some(name), Some(company)) => format!("New lead: {name} ({company})"),
            (Some(name), None) => format!("New lead: {name}"),
            (None, Some(company)) => format!("New lead from {company}"),
            (None, None) => "New lead".to_owned(),
        };
        let need = answers
            .iter()
            .find(|(key, value)| is_need_key(key) && !value.trim().is_empty())
            .map(|(_, value)| value.trim().to_owned());
        for (label, value) in [
            ("Who", lead.name.clone()),
            ("Company", lead.company.clone()),
            ("Needs", need),
            ("Budget", lead.budget.clone()),
        ] {
            if let Some(value) = value {
                self.facts.push((label, value));
            }
        }
        self.email = lead.email;
        self.body = lead.summary.filter(|summary| !summary.trim().is_empty());
    }

    fn conversation(&mut self, data: &Value) {
        let conversation = data.get("conversation").unwrap_or(&Value::Null);
        let id = text(conversation.get("id")).unwrap_or_else(|| "?".to_owned());
        let new: Vec<&Value> = data
            .get("newMessages")
            .and_then(Value::as_array)
            .map(|messages| messages.iter().collect())
            .unwrap_or_default();
        let all = conversation
            .get("messages")
            .and_then(Value::as_array)
            .map_or(new.len(), Vec::len)
            .max(new.len());
        self.title = match new.len() {
            1 => format!("Conversation {id}: 1 new message"),
            count => format!("Conversation {id}: {count} new messages"),
        };
        if let Some(status) = text(conversation.get("status")) {
            self.facts.push(("Status", status));
        }
        if let Some(agent) = text(conversation.get("agentId")) {
            self.facts.push(("Agent", agent));
        }
        self.facts
            .push(("Messages", format!("{all} in all, {} new", new.len())));
        self.body_label = "New messages";
        let shown = new.len().min(MAX_MESSAGES);
        self.messages_left_out = new.len() - shown;
        self.messages = new[new.len() - shown..]
            .iter()
            .map(|message| said(message))
            .collect();
    }

    fn meeting(&mut self, data: &Value) {
        let title = text(data.get("title")).filter(|title| !title.trim().is_empty());
        let duration = data
            .get("durationSec")
            .and_then(Value::as_f64)
            .and_then(human_duration);
        self.title = match (&title, &duration) {
            (Some(title), Some(duration)) => format!("Meeting processed: {title} ({duration})"),
            (Some(title), None) => format!("Meeting processed: {title}"),
            (None, Some(duration)) => format!("Meeting processed ({duration})"),
            (None, None) => "Meeting processed".to_owned(),
        };
        for (label, value) in [
            ("Title", title),
            ("Duration", duration),
            ("File", text(data.get("fileName"))),
        ] {
            if let Some(value) = value {
                self.facts.push((label, value));
            }
        }
        self.body = text(data.get("summary")).filter(|summary| !summary.trim().is_empty());
    }
}

/// An answer that says what the lead needs, whatever the agent called the question.
fn is_need_key(key: &str) -> bool {
    let normal: String = key
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    [
        "need",
        "needs",
        "usecase",
        "requirement",
        "requirements",
        "goal",
        "interest",
        "lookingfor",
        "problem",
        "project",
    ]
    .contains(&normal.as_str())
}

fn said(message: &Value) -> Said {
    let role = text(message.get("role")).unwrap_or_default();
    let who = match role.as_str() {
        "user" => "Visitor".to_owned(),
        "assistant" => "Agent".to_owned(),
        "" => "Unknown".to_owned(),
        other => other.to_owned(),
    };
    let when = message
        .get("createdAt")
        .and_then(Value::as_str)
        .and_then(|raw| DateTime::parse_from_rfc3339(raw).ok())
        .map(|time| time.with_timezone(&Utc).format("%H:%M UTC").to_string());
    let text = text(message.get("content")).unwrap_or_default();
    let text = match text.char_indices().nth(MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
        None => text,
    };
    Said { who, when, text }
}

/// A JSON value as text: strings as they are, other values (not null) as JSON.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

pub fn human_time(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `42 s`, `45 min`, `1 h 5 min`, `2 h`: rounded to the minute from a minute on; `None`
/// for what is no sound duration (negative, or so large the sum would overflow). Email
/// templates use it too.
pub(crate) fn human_duration(seconds: f64) -> Option<String> {
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return None;
    }
    let seconds = seconds.round() as u64;
    if seconds < 60 {
        return Some(format!("{seconds} s"));
    }
    let minutes = (seconds + 30) / 60;
    Some(match (minutes / 60, minutes % 60) {
        (0, minutes) => format!("{minutes} min"),
        (hours, 0) => format!("{hours} h"),
        (hours, minutes) => format!("{hours} h {minutes} min"),
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testkit;

    #[test]
    fn a_brief_says_who_which_company_what_they_need_and_how_to_reach_them() {
        let event = testkit::brief(
            json!({"name": "Ann Example", "workEmail": "Ann@Example.com", "company": "Example Ltd",
                   "useCase": "A support bot", "budget": "$100"}),
            "Ann wants a bot.",
        );
        let digest = Digest::of(&event, None);
        assert_eq!(digest.title, "New lead: Ann Example (Example Ltd)");
        assert_eq!(
            digest.facts,
            [
                ("Who", "Ann Example".to_owned()),
                ("Company", "Example Ltd".to_owned()),
                ("Needs", "A support bot".to_owned()),
                ("Budget", "$100".to_owned()),
            ]
        );
        assert_eq!(digest.email.as_deref(), Some("ann@example.com"));
        assert_eq!(digest.body.as_deref(), Some("Ann wants a bot."));
        assert!(
            digest.context.starts_with("brief.created · evt_"),
            "{}",
            digest.context
        );
    }

    #[test]
    fn a_conversation_shows_only_its_newest_messages() {
        let messages: Vec<Value> = (0..15)
            .map(|index| json!({"role": "user", "content": format!("message {index}"), "createdAt": "2026-04-01T14:30:00Z"}))
            .collect();
        let event = testkit::event(
            EventType::ConversationUpdated,
            "c\n15",
            json!({"conversation": {"id": "cm2", "status": "ACTIVE", "messages": messages}, "newMessages": messages}),
        );
        let digest = Digest::of(&event, None);
        assert_eq!(digest.title, "Conversation cm2: 15 new messages");
        assert_eq!(digest.messages.len(), MAX_MESSAGES);
        assert_eq!(digest.messages_left_out, 5);
        assert_eq!(digest.messages[0].text, "message 5");
        assert_eq!(digest.messages[0].who, "Visitor");
        assert_eq!(digest.messages[0].when.as_deref(), Some("14:30 UTC"));
    }

    #[test]
    fn a_meeting_shows_its_title_and_duration() {
        let digest = Digest::of(&testkit::meeting(), None);
        assert_eq!(digest.title, "Meeting processed: Weekly standup (45 min)");
        assert_eq!(digest.body.as_deref(), Some("Decided to ship."));
    }

    #[test]
    fn missing_data_still_makes_a_message() {
        for kind in EventType::ALL {
            let digest = Digest::of(&testkit::event(kind, "x", json!({})), None);
            assert!(!digest.title.is_empty(), "{kind}");
        }
    }
}
