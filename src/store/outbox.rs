//! The outbox: events, their deliveries (one per routed connector), each attempt's
//! record, and the leases under which workers claim deliveries (docs/architecture.md,
//! sections 2 and 3).

use clairo_connectors::Event;
use serde::Serialize;
use sqlx::Row;

use super::packed::{Packed, Span, postgres_text, sqlite_text};
use super::{Result, Store, Tx, now_ms};

/// An event to record, with the connectors its routes send it to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    pub agent_id: Option<String>,
    pub connectors: Vec<String>,
    /// Connectors a route filter failed on for this event: recorded dead with the reason,
    /// so nothing is dropped and `deliveries retry` can send them after the fix.
    pub failed: Vec<FailedRoute>,
}

/// A delivery whose route filter failed when its event was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRoute {
    pub connector: String,
    /// `route filter failed: routes[N].when: …; …`.
    pub reason: String,
}

/// One attempt's record, as kept for `deliveries list`.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub attempt: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub outcome: String,
    pub reason: Option<String>,
    pub response: Option<String>,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    Delivered,
    Retry { at_ms: i64 },
    Dead,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub connector: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
    pub last_attempt: Option<AttemptRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    pub connector: String,
    pub pending: i64,
    pub oldest_pending_at: Option<i64>,
    pub dead: i64,
    pub delivered: i64,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub dead_only: bool,
    pub connector: Option<String>,
    pub limit: i64,
}

impl Store {
    pub async fn event_count(&self) -> Result<i64> {
        let portable = "SELECT COUNT(*) FROM events";
        Ok(on_pool!(self, (portable, portable), |sql, ex| {
            sqlx::query_scalar(sql).fetch_one(ex).await?
        }))
    }

    /// Gives back leases this process holds (shutdown), so another run takes them at once.
    pub async fn release_leases(&self, owner: &str) -> Result<u64> {
        Ok(on_pool!(
            self,
            (
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? AND status = 'pending'",
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND status = 'pending'"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(owner)
                .execute(ex)
                .await?
                .rows_affected()
        ))
    }

    /// When the next pending delivery of `connector` is due (ms), if any, counting leases.
    /// Two index lookups whatever the backlog: the earliest unleased row in due order, and
    /// the few leased ones (the `deliveries_leased` partial index).
    pub async fn next_due_at(&self, connector: &str) -> Result<Option<i64>> {
        Ok(on_pool!(
            self,
            (
                "SELECT MIN(due) FROM (
                     SELECT MIN(next_attempt_at) AS due FROM deliveries
                     WHERE connector = ? AND status = 'pending' AND lease_until IS NULL
                     UNION ALL
                     SELECT MIN(MAX(next_attempt_at, lease_until)) FROM deliveries
                     WHERE connector = ? AND lease_until IS NOT NULL AND status = 'pending')",
                "SELECT MIN(due) FROM (
                     SELECT MIN(next_attempt_at) AS due FROM deliveries
                     WHERE connector = $1 AND status = 'pending' AND lease_until IS NULL
                     UNION ALL
                     SELECT MIN(GREATEST(next_attempt_at, lease_until)) FROM deliveries
                     WHERE connector = $2 AND lease_until IS NOT NULL AND status = 'pending') AS due_times"
            ),
            |sql, ex| sqlx::query_scalar(sql)
                .bind(connector)
                .bind(connector)
                .fetch_one(ex)
                .await?
        ))
    }

    /// Pending deliveries of one connector (an index range, cheap however many rows the
    /// outbox keeps).
    pub async fn pending_count(&self, connector: &str) -> Result<i64> {
        Ok(self.pending(connector).await?.0)
    }

    /// Pending deliveries of one connector and when the oldest of them was made (ms).
    pub async fn pending(&self, connector: &str) -> Result<(i64, Option<i64>)> {
        Ok(on_pool!(
            self,
            (
                "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE connector = ? AND status = 'pending'",
                "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE connector = $1 AND status = 'pending'"
            ),
            |sql, ex| sqlx::query_as(sql).bind(connector).fetch_one(ex).await?
        ))
    }

    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        Ok(on_pool!(
            self,
            (
                "SELECT connector,
                        SUM(status = 'pending') AS pending,
                        MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest,
                        SUM(status = 'dead') AS dead,
                        SUM(status = 'delivered') AS delivered
                 FROM deliveries GROUP BY connector ORDER BY connector",
                "SELECT connector,
                        COUNT(*) FILTER (WHERE status = 'pending') AS pending,
                        MIN(created_at) FILTER (WHERE status = 'pending') AS oldest,
                        COUNT(*) FILTER (WHERE status = 'dead') AS dead,
                        COUNT(*) FILTER (WHERE status = 'delivered') AS delivered
                 FROM deliveries GROUP BY connector ORDER BY connector"
            ),
            |sql, ex| sqlx::query(sql)
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| QueueStats {
                    connector: row.get("connector"),
                    pending: row.get("pending"),
                    oldest_pending_at: row.get("oldest"),
                    dead: row.get("dead"),
                    delivered: row.get("delivered"),
                })
                .collect()
        ))
    }

    /// Deliveries with their last attempt (one query, not one per row), most recent
    /// activity first: what an operator just re-queued, or what just failed, is at the top
    /// (docs/operations.md §8).
    pub async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRow>> {
        Ok(on_pool!(
            self,
            (
                "SELECT d.id, d.event_id, e.type, d.connector, d.status, d.attempts, d.next_attempt_at, d.last_error,
                        d.created_at, d.updated_at, d.delivered_at,
                        a.attempt, a.started_at, a.duration_ms, a.status_code, a.outcome, a.reason, a.response
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 LEFT JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE delivery_id = d.id)
                 WHERE (? = 0 OR d.status = 'dead') AND (? IS NULL OR d.connector = ?)
                 ORDER BY d.updated_at DESC, d.id DESC LIMIT ?",
                "SELECT d.id, d.event_id, e.type, d.connector, d.status, d.attempts, d.next_attempt_at, d.last_error,
                        d.created_at, d.updated_at, d.delivered_at,
                        a.attempt, a.started_at, a.duration_ms, a.status_code, a.outcome, a.reason, a.response
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 LEFT JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE delivery_id = d.id)
                 WHERE ($1 = false OR d.status = 'dead') AND ($2::text IS NULL OR d.connector = $3)
                 ORDER BY d.updated_at DESC, d.id DESC LIMIT $4"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(filter.dead_only)
                .bind(&filter.connector)
                .bind(&filter.connector)
                .bind(if filter.limit > 0 { filter.limit } else { i64::MAX })
                .fetch_all(ex)
                .await?
                .iter()
                .map(|row| DeliveryRow {
                    id: row.get("id"),
                    event_id: row.get("event_id"),
                    event_type: row.get("type"),
                    connector: row.get("connector"),
                    status: row.get("status"),
                    attempts: row.get("attempts"),
                    next_attempt_at: row.get("next_attempt_at"),
                    last_error: row.get("last_error"),
                    created_at: row.get("created_at"),
                    updated_at: row.get("updated_at"),
                    delivered_at: row.get("delivered_at"),
                    last_attempt: row
                        .get::<Option<i64>, _>("attempt")
                        .map(|_| attempt_from_row!(row)),
                })
                .collect()
        ))
    }

    /// Re-queues deliveries (attempts reset, the event and its id unchanged). `ids` empty
    /// with `all_dead` re-queues every dead delivery. Returns how many were re-queued.
    pub async fn retry_deliveries(&self, ids: &[i64], all_dead: bool) -> Result<u64> {
        let now = now_ms();
        let affected = if all_dead {
            on_pool!(
                self,
                (
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, lease_owner = NULL,
                            lease_until = NULL, updated_at = ? WHERE status = 'dead'",
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, lease_owner = NULL,
                            lease_until = NULL, updated_at = $2 WHERE status = 'dead'"
                ),
                |sql, ex| sqlx::query(sql)
                    .bind(now)
                    .bind(now)
                    .execute(ex)
                    .await?
                    .rows_affected()
            )
        } else {
            on_pool!(
                self,
                (
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, lease_owner = NULL,
                            lease_until = NULL, updated_at = ?
                     WHERE id IN (SELECT value FROM json_each(?)) AND status <> 'pending'",
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, lease_owner = NULL,
                            lease_until = NULL, updated_at = $2
                     WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text($3::text::jsonb) AS ids (value))
                       AND status <> 'pending'"
                ),
                |sql, ex| sqlx::query(sql)
                    .bind(now)
                    .bind(now)
                    .bind(serde_json::to_string(ids).expect("ids serialize"))
                    .execute(ex)
                    .await?
                    .rows_affected()
            )
        };
        Ok(affected)
    }

    /// Connectors with pending deliveries (including ones no longer configured).
    pub async fn pending_connectors(&self) -> Result<Vec<String>> {
        let portable =
            "SELECT DISTINCT connector FROM deliveries WHERE status = 'pending' ORDER BY connector";
        Ok(on_pool!(self, (portable, portable), |sql, ex| {
            sqlx::query_scalar(sql).fetch_all(ex).await?
        }))
    }
}

/// Inserts an event and its deliveries; whether it was new (an id recorded already is
/// the same event, whose deliveries exist).
pub(super) async fn insert_event(tx: &mut Tx, event: &NewEvent) -> Result<bool> {
    Ok(insert_events(tx, &[event]).await?.first() == Some(&true))
}

/// Inserts events with their deliveries (pending to each routed connector, dead to each
/// whose route filter failed) in two statements whatever their number. An event already
/// recorded (same stable id) is left alone with its deliveries: says, for each in order,
/// whether it was new.
pub(super) async fn insert_events(tx: &mut Tx, events: &[&NewEvent]) -> Result<Vec<bool>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    /// One event as a row of the array bound below; its envelope is in the blob.
    #[derive(serde::Serialize)]
    struct EventRow<'a> {
        id: &'a str,
        r#type: &'a str,
        agent_id: Option<&'a str>,
        envelope: Span,
    }
    let mut texts = Packed::default();
    let rows: Vec<EventRow<'_>> = events
        .iter()
        .map(|new| EventRow {
            id: &new.event.id,
            r#type: new.event.kind.as_str(),
            agent_id: new.agent_id.as_deref(),
            envelope: texts.push_json(&new.event),
        })
        .collect();
    let rows = serde_json::to_string(&rows).expect("rows of strings serialize");
    // In the order given, so deliveries (claimed in id order) go out as their events came.
    let inserted: Vec<String> = on_tx!(
        &mut *tx,
        (
            concat!(
                "INSERT INTO events (id, type, agent_id, created_at, envelope)
                 SELECT j.value ->> 'id', j.value ->> 'type', j.value ->> 'agent_id', ?2, ",
                sqlite_text!("?3", "envelope"),
                "
                 FROM json_each(?1) AS j WHERE true ORDER BY j.key
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            concat!(
                "INSERT INTO events (id, type, agent_id, created_at, envelope)
                 SELECT j.value ->> 'id', j.value ->> 'type', j.value ->> 'agent_id', $2, ",
                postgres_text!("$3", "envelope"),
                "
                 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (value, n) ORDER BY j.n
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            )
        ),
        |sql, ex| sqlx::query_scalar(sql)
            .bind(&rows)
            .bind(now)
            .bind(texts.blob())
            .fetch_all(&mut *ex)
            .await?
    );
    let new: Vec<bool> = events
        .iter()
        .map(|event| inserted.contains(&event.event.id))
        .collect();
    /// One delivery as a row of the array bound below.
    #[derive(serde::Serialize)]
    struct NewDelivery<'a> {
        event_id: &'a str,
        connector: &'a str,
        status: &'static str,
        last_error: Option<&'a str>,
    }
    let mut deliveries = Vec::new();
    for (event, _) in events.iter().zip(&new).filter(|(_, new)| **new) {
        let event_id = event.event.id.as_str();
        for connector in &event.connectors {
            deliveries.push(NewDelivery {
                event_id,
                connector,
                status: "pending",
                last_error: None,
            });
        }
        for failed in &event.failed {
            deliveries.push(NewDelivery {
                event_id,
                connector: &failed.connector,
                status: "dead",
                last_error: Some(&failed.reason),
            });
        }
    }
    if deliveries.is_empty() {
        return Ok(new);
    }
    let deliveries = serde_json::to_string(&deliveries).expect("rows of strings serialize");
    on_tx!(
        &mut *tx,
        (
            "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, last_error, created_at, updated_at)
             SELECT j.value ->> 'event_id', j.value ->> 'connector', j.value ->> 'status', ?2,
                    j.value ->> 'last_error', ?2, ?2
             FROM json_each(?1) AS j WHERE true ORDER BY j.key
             ON CONFLICT (event_id, connector) DO NOTHING",
            "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, last_error, created_at, updated_at)
             SELECT j.value ->> 'event_id', j.value ->> 'connector', j.value ->> 'status', $2,
                    j.value ->> 'last_error', $2, $2
             FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (value, n) ORDER BY j.n
             ON CONFLICT (event_id, connector) DO NOTHING"
        ),
        |sql, ex| sqlx::query(sql)
            .bind(&deliveries)
            .bind(now)
            .execute(&mut *ex)
            .await?
            .rows_affected()
    );
    Ok(new)
}

/// An attempt from a row with its columns, on either backend.
macro_rules! attempt_from_row {
    ($row:expr) => {
        AttemptRow {
            attempt: $row.get("attempt"),
            started_at: $row.get("started_at"),
            duration_ms: $row.get("duration_ms"),
            status_code: $row.get("status_code"),
            outcome: $row.get("outcome"),
            reason: $row.get("reason"),
            response: $row.get("response"),
        }
    };
}
use attempt_from_row;
