//! What the connectors' tests share: a checkpoint store that behaves like the dispatcher's,
//! attempts made the way the dispatcher makes them, the events tests deliver, reading a
//! connector's table, local servers, and the bookkeeping of the fake CRM APIs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};

use crate::{
    Attempt, CheckpointSink, ConfigProblem, Connector, ConnectorConfig, Delivery, Event, EventType,
    Verdict, event_id,
};

// ---------------------------------------------------------------------------------------
// Attempts

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
    async fn save(&self, checkpoint: Value) -> Result<(), crate::CheckpointError> {
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
            envelope: None,
            attempt: number,
            checkpoint: checkpoints.current(),
            checkpoints,
        })
        .await
}

/// The first attempt at a new delivery: no checkpoint yet.
pub async fn first_attempt(connector: &dyn Connector, event: &Event) -> Attempt {
    attempt(connector, event, &MemoryCheckpoints::default(), 1).await
}

/// The reason and the wait of a retry; panics on any other verdict.
pub fn retry_of(attempt: &Attempt) -> (Option<Duration>, String) {
    match &attempt.verdict {
        Verdict::Retry { after, reason } => (*after, reason.clone()),
        other => panic!("expected Retry, got {other:?} ({attempt:?})"),
    }
}

/// The reason of a permanent failure; panics on any other verdict.
pub fn permanent_of(attempt: &Attempt) -> String {
    match &attempt.verdict {
        Verdict::Permanent { reason } => reason.clone(),
        other => panic!("expected Permanent, got {other:?} ({attempt:?})"),
    }
}

// ---------------------------------------------------------------------------------------
// Events

/// The event of `kind` describing `key`, stamped now.
pub fn event(kind: EventType, key: &str, data: Value) -> Event {
    Event {
        id: event_id(kind, key),
        kind,
        timestamp: Utc::now(),
        data,
    }
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
    event(EventType::BriefCreated, "cm3brief", data)
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
    event(
        EventType::MeetingProcessed,
        "abc123",
        json!({
            "id": "cm4meet",
            "title": "Weekly standup",
            "transcript": "Alice: hello <everyone> & welcome.\nBob: hi.",
            "summary": "Decided to ship.",
            "durationSec": 2700,
            "agentId": "cm1agent",
            "fileName": "standup.webm",
            "sha256": "abc123",
        }),
    )
}

pub fn conversation() -> Event {
    event(
        EventType::ConversationUpdated,
        "cm2conv\n3",
        json!({"conversation": {"id": "cm2conv", "messages": []}, "newMessages": []}),
    )
}

// ---------------------------------------------------------------------------------------
// Configuration

/// A `[connectors.NAME]` table read as the config loader reads it; the error as text.
pub fn table(text: &str) -> Result<ConnectorConfig, String> {
    toml::from_str::<ConnectorConfig>(text).map_err(|error| error.to_string())
}

/// A Slack or Teams table with `url` and the defaults a test does not care about.
pub fn chat_config(url: &str) -> crate::ChatConfig {
    crate::ChatConfig {
        url: Some(crate::Secret::new(url)),
        url_file: None,
        templates_dir: None,
        timeout: Duration::from_secs(5),
        email_answer_key: None,
    }
}

/// Every string anywhere in a message, joined: what a reader could see.
pub fn all_text(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text}\n"),
        Value::Array(items) => items.iter().map(all_text).collect(),
        Value::Object(map) => map.values().map(all_text).collect(),
        _ => String::new(),
    }
}

/// The keys the problems name, in order.
pub fn keys(problems: &[ConfigProblem]) -> Vec<&str> {
    problems
        .iter()
        .map(|problem| problem.key.as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Servers

pub use crate::fake_api::{FakeApi, serve};

/// An address of 127.0.0.1 nothing listens on right now: a connection to it is refused.
pub fn unused_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------
// A sales team's week

/// The people of [`sales_briefs`]: (name, email, company). Five business domains and three
/// free-mail ones.
pub const PEOPLE: [(&str, &str, &str); 12] = [
    ("Ada Park", "ada@acme.io", "Acme"),
    ("Ben Ortiz", "ben@acme.io", "Acme"),
    ("Cleo Diaz", "Cleo@Acme.io", "Acme"),
    ("Dev Shah", "dev@globex.com", "Globex"),
    ("Eva Lund", "eva@globex.com", "Globex"),
    ("Finn Roe", "finn@initech.net", "Initech"),
    ("Gia Moss", "gia@initech.net", "Initech"),
    ("Hal Kent", "hal@umbrella.co", "Umbrella"),
    ("Ivy Chen", "ivy@hooli.xyz", "Hooli"),
    ("Jon Bell", "jon.bell@gmail.com", "Bell Consulting"),
    ("Kai Ward", "kai.ward@outlook.com", "Ward & Sons"),
    ("Lea Fox", "lea.fox@yahoo.com", "Fox Studio"),
];

/// The domains of [`PEOPLE`] that are companies (not free-mail).
pub const COMPANY_DOMAINS: [&str; 5] = [
    "acme.io",
    "globex.com",
    "initech.net",
    "umbrella.co",
    "hooli.xyz",
];

/// Twenty briefs: each of the twelve people once, then eight of them again.
pub fn sales_briefs() -> Vec<Event> {
    let order = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 3, 5, 9, 1, 8, 10, 6,
    ];
    order
        .iter()
        .enumerate()
        .map(|(number, &person)| {
            let (name, email, company) = PEOPLE[person];
            let id = format!("cm3brief{number:02}");
            let data = json!({
                "id": id,
                "agentId": "cm1agent",
                "conversationId": format!("cm2conv{number:02}"),
                "summary": format!("{name} of {company} wants a demo."),
                "createdAt": "2026-04-01T14:30:00Z",
                "answers": {
                    "name": name,
                    "email": email,
                    "company": company,
                    "budget": format!("${}00/month", number + 1),
                    "team_size": 10 + number,
                },
            });
            event(EventType::BriefCreated, &id, data)
        })
        .collect()
}

/// Delivers `event` as the dispatcher would: attempt after attempt, each handed the
/// checkpoint saved so far, until one is not a retry (at most `max` attempts). Returns the
/// last attempt and how many were made.
pub async fn deliver_until_done(
    connector: &dyn Connector,
    event: &Event,
    max: u32,
) -> (Attempt, u32) {
    let checkpoints = MemoryCheckpoints::default();
    let mut number = 1;
    loop {
        let attempt = attempt(connector, event, &checkpoints, number).await;
        if !matches!(attempt.verdict, Verdict::Retry { .. }) || number >= max {
            return (attempt, number);
        }
        number += 1;
    }
}

/// Delivers every event, four at a time as the dispatcher's default concurrency does,
/// each until done; panics on any that is not delivered.
pub async fn deliver_all(connector: Arc<dyn Connector>, events: Vec<Event>) -> u32 {
    let mut retries = 0;
    for chunk in events.chunks(4) {
        let mut tasks = tokio::task::JoinSet::new();
        for event in chunk.iter().cloned() {
            let connector = Arc::clone(&connector);
            tasks.spawn(async move {
                let (attempt, made) = deliver_until_done(&*connector, &event, 6).await;
                assert_eq!(
                    attempt.verdict,
                    Verdict::Delivered,
                    "{}: {attempt:?}",
                    event.id
                );
                made - 1
            });
        }
        while let Some(result) = tasks.join_next().await {
            retries += result.unwrap();
        }
    }
    retries
}
