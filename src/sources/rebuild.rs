//! Events rebuilt from the recorded items, for a replay whose events were pruned from the
//! outbox (`state.delivered_retention`): the same functions that made them the first time,
//! so the ids and the data are the same.
//!
//! A brief's event comes back whole (its data is what was recorded). A conversation keeps
//! only its latest state, so its pruned events come back as one: the latest, under that
//! state's id, with every message counted as new (to a connector that never had it, each
//! is). A recording's event comes back from Clairo's recorded answer.

use chrono::{DateTime, TimeZone, Utc};
use clairo_connectors::{Event, EventType};

use crate::clairo::Conversation;
use crate::store::meetings::{MeetingResult, MeetingRow};
use crate::store::{RecordedItem, StoredEvent};

use super::{conversations, make_event, meetings};

/// The event a recorded item was announced by; `None` when its record cannot be read
/// (it is left out of the replay, not fatal).
pub fn event(item: &RecordedItem) -> Option<StoredEvent> {
    match item {
        RecordedItem::Brief {
            id,
            agent_id,
            raw,
            seen_at,
        } => Some(StoredEvent {
            event: make_event(
                EventType::BriefCreated,
                id,
                time(*seen_at),
                serde_json::from_str(raw).ok()?,
            ),
            agent_id: agent_id.clone(),
        }),
        RecordedItem::Conversation {
            agent_id,
            raw,
            checked_at,
        } => {
            let raw: serde_json::Value = serde_json::from_str(raw).ok()?;
            let mut conversation: Conversation = serde_json::from_value(raw.clone()).ok()?;
            conversation.raw = raw;
            Some(StoredEvent {
                event: make_event(
                    EventType::ConversationUpdated,
                    &conversations::event_key(&conversation),
                    time(*checked_at),
                    conversations::event_data(&conversation, 0),
                ),
                agent_id: conversation.agent_id.clone().or_else(|| agent_id.clone()),
            })
        }
        RecordedItem::Meeting(row) => Some(StoredEvent {
            event: meeting_event(row)?,
            agent_id: Some(row.agent_id.clone()),
        }),
    }
}

fn meeting_event(row: &MeetingRow) -> Option<Event> {
    let result = MeetingResult {
        meeting_id: row.meeting_id.clone()?,
        title: row.title.clone(),
        transcript: row.transcript.clone(),
        summary: row.summary.clone(),
        duration_sec: row.duration_sec,
        uploaded_as: row.uploaded_as.clone().unwrap_or_default(),
        raw: row.raw.clone().unwrap_or_default(),
    };
    Some(make_event(
        EventType::MeetingProcessed,
        &row.sha256,
        time(row.updated_at),
        meetings::upload::event_data(&result, &row.agent_id, &row.file_name, &row.sha256),
    ))
}

/// When the item was recorded, which is when its event was made (within a transaction).
fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}
