//! The event envelope (a contract: docs/architecture.md §7): `{"id", "type", "timestamp", "data"}`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The kinds of event clairo-sync emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "brief.created")]
    BriefCreated,
    #[serde(rename = "conversation.updated")]
    ConversationUpdated,
    #[serde(rename = "meeting.processed")]
    MeetingProcessed,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::BriefCreated,
        EventType::ConversationUpdated,
        EventType::MeetingProcessed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BriefCreated => "brief.created",
            Self::ConversationUpdated => "conversation.updated",
            Self::MeetingProcessed => "meeting.processed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, exactly as receivers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl Event {
    /// The envelope as compact JSON: the webhook body and the JSONL line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }
}

/// The stable id of the event that describes `key` (a brief id; a conversation id and
/// message count; a file's sha256): the same thing always gets the same id, so a repeated
/// delivery carries it and receivers can drop duplicates. `evt_` + 32 hex digits, no `.`.
pub fn event_id(kind: EventType, key: &str) -> String {
    let digest = Sha256::digest(format!("{}\n{}", kind.as_str(), key).as_bytes());
    let hex: String = digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("evt_{hex}")
}

mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_prefixed_and_dot_free() {
        let first = event_id(EventType::BriefCreated, "cm3abc");
        assert_eq!(first, event_id(EventType::BriefCreated, "cm3abc"));
        assert_ne!(first, event_id(EventType::BriefCreated, "cm3abd"));
        assert_ne!(first, event_id(EventType::MeetingProcessed, "cm3abc"));
        assert!(first.starts_with("evt_"));
        assert!(!first.contains('.'));
    }

    #[test]
    fn the_envelope_has_the_contract_fields() {
        let event = Event {
            id: event_id(EventType::BriefCreated, "b1"),
            kind: EventType::BriefCreated,
            timestamp: DateTime::parse_from_rfc3339("2026-04-01T14:30:00Z")
                .unwrap()
                .with_timezone(&Utc),
            data: serde_json::json!({"id": "b1"}),
        };
        let value: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(value["type"], "brief.created");
        assert_eq!(value["timestamp"], "2026-04-01T14:30:00.000Z");
        assert_eq!(value["data"]["id"], "b1");
        assert_eq!(value["id"], event.id.as_str());
    }
}
