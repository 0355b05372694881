//! Reading stored events again, and queueing them again for one connector: `deliveries
//! replay` (docs/operations.md, "Replay and backfill") and `check`'s preview of route
//! filters. Events pruned from the outbox come back from the recorded items (briefs,
//! conversations, meetings), rebuilt by the sources' own functions, with their ids.

use std::collections::{BTreeMap, HashSet};

use clairo_connectors::Event;
use serde::Serialize;
use sqlx::Row;

use super::meetings::MeetingRow;
use super::{Result, Store, now_ms};

/// Events read per query while walking the whole outbox.
const PAGE: i64 = 500;

/// An event as stored, with the agent it is about (what routes filter on).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: Event,
    pub agent_id: Option<String>,
}

/// A recorded item whose event may have been pruned, as the store has it.
#[derive(Debug, Clone)]
pub enum RecordedItem {
    /// A brief: its id, agent, the event's data as recorded, and when it was seen (ms).
    Brief {
        id: String,
        agent_id: Option<String>,
        raw: String,
        seen_at: i64,
    },
    /// A conversation's latest state: its JSON as the API last gave it.
    Conversation {
        agent_id: Option<String>,
        raw: String,
        checked_at: i64,
    },
    /// An uploaded recording with Clairo's answer.
    Meeting(Box<MeetingRow>),
}

/// What a replay did (or would do) for one event type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayCount {
    /// Deliveries made pending (new, or delivered/dead before).
    pub queued: u64,
    /// Of those, events rebuilt from the recorded items (their outbox rows were pruned).
    pub rebuilt: u64,
    /// Already pending for the connector: left as they are.
    pub already_pending: u64,
}

impl Store {
    /// The newest `limit` events, newest first.
    pub async fn recent_events(&self, limit: i64) -> Result<Vec<StoredEvent>> {
        // PostgreSQL compares text by the database's collation; `COLLATE "C"` orders ids
        // bytewise, as SQLite does (here and below), so both backends read the same order.
        Ok(on_pool!(
            self,
            (
                "SELECT envelope, agent_id FROM events ORDER BY created_at DESC, id DESC LIMIT ?",
                "SELECT envelope, agent_id FROM events ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $1"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(limit)
                .fetch_all(ex)
                .await?
                .iter()
                .filter_map(|row| stored_event!(row))
                .collect()
        ))
    }

    /// Calls `each` with every stored event, oldest first, a page at a time (the outbox
    /// may hold more than is worth holding in memory at once).
    pub async fn each_event(&self, mut each: impl FnMut(StoredEvent)) -> Result<()> {
        let mut after: (i64, String) = (i64::MIN, String::new());
        loop {
            let (events, last, fetched): (Vec<StoredEvent>, Option<(i64, String)>, usize) = on_pool!(
                self,
                (
                    "SELECT envelope, agent_id, created_at, id FROM events
                 WHERE (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?",
                    "SELECT envelope, agent_id, created_at, id FROM events
                     WHERE (created_at, id COLLATE \"C\") > ($1, $2) ORDER BY created_at, id COLLATE \"C\" LIMIT $3"
                ),
                |sql, ex| {
                    let rows = sqlx::query(sql)
                        .bind(after.0)
                        .bind(&after.1)
                        .bind(PAGE)
                        .fetch_all(ex)
                        .await?;
                    (
                        rows.iter().filter_map(|row| stored_event!(row)).collect(),
                        rows.last().map(|row| (row.get("created_at"), row.get("id"))),
                        rows.len(),
                    )
                }
            );
            let Some(last) = last else {
                return Ok(());
            };
            after = last;
            let full = fetched as i64 == PAGE;
            events.into_iter().for_each(&mut each);
            if !full {
                return Ok(());
            }
        }
    }

    /// Which of `ids` are in the outbox's events.
    pub async fn stored_event_ids(&self, ids: &[String]) -> Result<HashSet<String>> {
        let ids = serde_json::to_string(ids).expect("strings serialize");
        let rows: Vec<String> = on_pool!(
            self,
            (
                "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(?))",
                "SELECT id FROM events
                 WHERE id IN (SELECT value FROM jsonb_array_elements_text($1::text::jsonb) AS ids (value))"
            ),
            |sql, ex| sqlx::query_scalar(sql).bind(&ids).fetch_all(ex).await?
        );
        Ok(rows.into_iter().collect())
    }

    /// Every recorded item that was announced by an event: briefs and conversations seen
    /// after the `start_from = "now"` baseline (`baseline_done.<source>` in `meta`; what
    /// the baseline recorded had no event), and recordings Clairo answered.
    pub async fn announced_items(&self) -> Result<Vec<RecordedItem>> {
        let baseline = |source: &'static str| async move {
            Ok::<i64, super::StoreError>(
                self.meta(&format!("baseline_done.{source}"))
                    .await?
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(i64::MIN),
            )
        };
        let briefs_after = baseline("briefs").await?;
        let conversations_after = baseline("conversations").await?;
        let mut items: Vec<RecordedItem> = on_pool!(
            self,
            (
                "SELECT id, agent_id, raw, seen_at FROM briefs WHERE seen_at > ? ORDER BY seen_at, id",
                "SELECT id, agent_id, raw, seen_at FROM briefs WHERE seen_at > $1 ORDER BY seen_at, id COLLATE \"C\""
            ),
            |sql, ex| sqlx::query(sql)
                .bind(briefs_after)
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| RecordedItem::Brief {
                    id: row.get("id"),
                    agent_id: row.get("agent_id"),
                    raw: row.get("raw"),
                    seen_at: row.get("seen_at"),
                })
                .collect()
        );
        let conversations: Vec<RecordedItem> = on_pool!(
            self,
            (
                "SELECT agent_id, raw, last_checked_at FROM conversations
             WHERE raw IS NOT NULL AND message_count > 0 AND last_checked_at > ?
             ORDER BY last_checked_at, id",
                "SELECT agent_id, raw, last_checked_at FROM conversations
                 WHERE raw IS NOT NULL AND message_count > 0 AND last_checked_at > $1
                 ORDER BY last_checked_at, id COLLATE \"C\""
            ),
            |sql, ex| sqlx::query(sql)
                .bind(conversations_after)
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| RecordedItem::Conversation {
                    agent_id: row.get("agent_id"),
                    raw: row.get("raw"),
                    checked_at: row.get("last_checked_at"),
                })
                .collect()
        );
        items.extend(conversations);
        for row in self.done_meetings().await? {
            items.push(RecordedItem::Meeting(Box::new(row)));
        }
        Ok(items)
    }

    /// Makes one delivery of each event to `connector` pending, recording the events
    /// that are not in the outbox (rebuilt ones) first. A delivery already pending is left
    /// alone: a replay never makes a second one. With `dry_run` nothing is written (the
    /// transaction is rolled back) and the counts say what would be done.
    /// Returns the counts per event type.
    pub async fn queue_replay(
        &self,
        connector: &str,
        events: &[StoredEvent],
        dry_run: bool,
    ) -> Result<BTreeMap<String, ReplayCount>> {
        let mut counts: BTreeMap<String, ReplayCount> = BTreeMap::new();
        for chunk in events.chunks(PAGE as usize) {
            // A dry run only reads: it works on a read-only open, and takes no write lock.
            let mut tx = if dry_run {
                self.read_tx().await?
            } else {
                self.write_tx().await?
            };
            let now = now_ms();
            for stored in chunk {
                let event = &stored.event;
                let count = counts.entry(event.kind.as_str().to_owned()).or_default();
                let rebuilt = if dry_run {
                    on_tx!(
                        &mut tx,
                        (
                            "SELECT COUNT(*) FROM events WHERE id = ?",
                            "SELECT COUNT(*) FROM events WHERE id = $1"
                        ),
                        |sql, ex| sqlx::query_scalar::<_, i64>(sql)
                            .bind(&event.id)
                            .fetch_one(ex)
                            .await?
                    ) == 0
                } else {
                    on_tx!(
                        &mut tx,
                        (
                            "INSERT INTO events (id, type, agent_id, created_at, envelope) VALUES (?, ?, ?, ?, ?)
                         ON CONFLICT (id) DO NOTHING",
                            "INSERT INTO events (id, type, agent_id, created_at, envelope) VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (id) DO NOTHING"
                        ),
                        |sql, ex| sqlx::query(sql)
                            .bind(&event.id)
                            .bind(event.kind.as_str())
                            .bind(&stored.agent_id)
                            .bind(now)
                            .bind(event.to_json())
                            .execute(ex)
                            .await?
                            .rows_affected()
                    ) == 1
                };
                let status: Option<String> = on_tx!(
                    &mut tx,
                    (
                        "SELECT status FROM deliveries WHERE event_id = ? AND connector = ?",
                        "SELECT status FROM deliveries WHERE event_id = $1 AND connector = $2"
                    ),
                    |sql, ex| sqlx::query_scalar(sql)
                        .bind(&event.id)
                        .bind(connector)
                        .fetch_optional(ex)
                        .await?
                );
                if status.as_deref() == Some("pending") {
                    count.already_pending += 1;
                    continue;
                }
                count.queued += 1;
                count.rebuilt += u64::from(rebuilt);
                if dry_run {
                    continue;
                }
                if status.is_some() {
                    on_tx!(
                        &mut tx,
                        (
                            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, delivered_at = NULL,
                                lease_owner = NULL, lease_until = NULL, updated_at = ?
                         WHERE event_id = ? AND connector = ? AND status <> 'pending'",
                            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, delivered_at = NULL,
                                    lease_owner = NULL, lease_until = NULL, updated_at = $2
                             WHERE event_id = $3 AND connector = $4 AND status <> 'pending'"
                        ),
                        |sql, ex| sqlx::query(sql)
                            .bind(now)
                            .bind(now)
                            .bind(&event.id)
                            .bind(connector)
                            .execute(ex)
                            .await?
                            .rows_affected()
                    );
                } else {
                    on_tx!(
                        &mut tx,
                        (
                            "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, created_at, updated_at)
                         VALUES (?, ?, 'pending', ?, ?, ?) ON CONFLICT (event_id, connector) DO NOTHING",
                            "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, created_at, updated_at)
                             VALUES ($1, $2, 'pending', $3, $4, $5) ON CONFLICT (event_id, connector) DO NOTHING"
                        ),
                        |sql, ex| sqlx::query(sql)
                            .bind(&event.id)
                            .bind(connector)
                            .bind(now)
                            .bind(now)
                            .bind(now)
                            .execute(ex)
                            .await?
                            .rows_affected()
                    );
                }
            }
            if dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
        }
        Ok(counts)
    }
}

/// An event from a row with `envelope` and `agent_id`, on either backend. An envelope
/// that does not parse was never sent either; it is left out (`None`), not fatal.
macro_rules! stored_event {
    ($row:expr) => {{
        let row = $row;
        let envelope: String = row.get("envelope");
        serde_json::from_str(&envelope)
            .ok()
            .map(|event| StoredEvent {
                event,
                agent_id: row.get("agent_id"),
            })
    }};
}
use stored_event;
