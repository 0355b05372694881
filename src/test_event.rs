//! The test event of `check --online --send-test`: a `brief.created` about nobody, marked
//! as a test, so receivers can tell it from a lead.

use async_trait::async_trait;
use clairo_connectors::{Attempt, CheckpointSink, Connector, Delivery, Event, EventType, event_id};

pub fn test_event() -> Event {
    let now = chrono::Utc::now();
    Event {
        id: event_id(
            EventType::BriefCreated,
            &format!("clairo-sync-test-{}", now.timestamp_millis()),
        ),
        kind: EventType::BriefCreated,
        timestamp: now,
        data: serde_json::json!({
            "id": "test",
            "test": true,
            "summary": "A test event sent by `clairo-sync check --online --send-test`. It describes no real lead.",
            "answers": {},
        }),
    }
}

struct Discard;

#[async_trait]
impl CheckpointSink for Discard {
    async fn save(
        &self,
        _checkpoint: serde_json::Value,
    ) -> Result<(), clairo_connectors::CheckpointError> {
        Ok(())
    }
}

pub async fn send(connector: &dyn Connector, event: &Event) -> Attempt {
    connector
        .deliver(Delivery {
            event,
            envelope: None,
            attempt: 1,
            checkpoint: None,
            checkpoints: &Discard,
        })
        .await
}
