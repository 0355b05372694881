//! The outbox: events, their deliveries (one per routed connector), each attempt's
//! record, and the leases under which workers claim deliveries (docs/architecture.md,
//! sections 2 and 3).

use clairo_connectors::Event;
use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, StoreError, Tx, now_ms};

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

/// One claim of one delivery: the owner it was claimed by and the end of the lease it
/// got. A later claim of the same delivery (after this lease ran out) has a later end,
/// so the pair names one claim even when the same process claims the delivery twice.
/// Every write about the delivery's outcome is made only while the row still holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub delivery_id: i64,
    pub owner: String,
    pub until: i64,
}

/// A delivery claimed by a dispatcher worker, under [`ClaimedDelivery::lease`].
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub lease: Lease,
    pub connector: String,
    pub event: Event,
    pub event_created_at: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    pub checkpoint: Option<serde_json::Value>,
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

    /// Claims up to `limit` due deliveries of `connector` (pending, next attempt due,
    /// lease free or expired) under a lease that ends at `lease_until`.
    pub async fn claim_due(
        &self,
        connector: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let mut tx = self.write_tx().await?;
        // PostgreSQL: instances claim concurrently; SKIP LOCKED lets each take rows the
        // others are not claiming at that instant, instead of queueing behind them. The
        // event comes back with the claim (subqueries in RETURNING): one statement, not one
        // more round trip to the connection's thread per delivery claimed.
        let claimed = on_tx!(
            &mut tx,
            (
                "UPDATE deliveries SET lease_owner = ?, lease_until = ?, updated_at = ?
                 WHERE id IN (
                     SELECT id FROM deliveries
                     WHERE connector = ? AND status = 'pending' AND next_attempt_at <= ?
                       AND (lease_until IS NULL OR lease_until <= ?)
                     ORDER BY next_attempt_at, id LIMIT ?)
                 RETURNING id, event_id, attempts, checkpoint,
                     (SELECT envelope FROM events WHERE events.id = deliveries.event_id) AS envelope,
                     (SELECT created_at FROM events WHERE events.id = deliveries.event_id) AS event_created_at",
                "UPDATE deliveries SET lease_owner = $1, lease_until = $2, updated_at = $3
                 WHERE id IN (
                     SELECT id FROM deliveries
                     WHERE connector = $4 AND status = 'pending' AND next_attempt_at <= $5
                       AND (lease_until IS NULL OR lease_until <= $6)
                     ORDER BY next_attempt_at, id LIMIT $7
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id, event_id, attempts, checkpoint,
                     (SELECT envelope FROM events WHERE events.id = deliveries.event_id) AS envelope,
                     (SELECT created_at FROM events WHERE events.id = deliveries.event_id) AS event_created_at"
            ),
            |sql, ex| {
                let rows = sqlx::query(sql)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(connector)
                    .bind(now)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *ex)
                    .await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    let event_id: String = row.get("event_id");
                    // NULL only if the event row were gone, which its foreign key forbids.
                    let envelope: Option<String> = row.get("envelope");
                    let envelope = envelope.ok_or_else(|| {
                        sqlx::Error::Decode(format!("event {event_id}: no such event").into())
                    })?;
                    let event: Event = serde_json::from_str(&envelope).map_err(|error| {
                        sqlx::Error::Decode(format!("event {event_id}: {error}").into())
                    })?;
                    let checkpoint: Option<String> = row.get("checkpoint");
                    let id: i64 = row.get("id");
                    claimed.push(ClaimedDelivery {
                        id,
                        lease: Lease {
                            delivery_id: id,
                            owner: owner.to_owned(),
                            until: lease_until,
                        },
                        connector: connector.to_owned(),
                        event,
                        event_created_at: row
                            .get::<Option<i64>, _>("event_created_at")
                            .unwrap_or_default(),
                        attempts: row.get("attempts"),
                        checkpoint: checkpoint.and_then(|text| serde_json::from_str(&text).ok()),
                    });
                }
                claimed
            }
        );
        let mut claimed = claimed;
        tx.commit().await?;
        claimed.sort_by_key(|delivery| delivery.id);
        Ok(claimed)
    }

    /// Saves a connector's progress on a delivery (kept across retries and crashes).
    pub async fn save_checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &serde_json::Value,
    ) -> Result<()> {
        let saved = on_pool!(
            self,
            (
                "UPDATE deliveries SET checkpoint = ?, updated_at = ?
                 WHERE id = ? AND lease_owner = ? AND lease_until = ?",
                "UPDATE deliveries SET checkpoint = $1, updated_at = $2
                 WHERE id = $3 AND lease_owner = $4 AND lease_until = $5"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(checkpoint.to_string())
                .bind(now_ms())
                .bind(lease.delivery_id)
                .bind(&lease.owner)
                .bind(lease.until)
                .execute(ex)
                .await?
                .rows_affected()
        );
        if saved == 0 {
            return Err(StoreError::LeaseLost {
                delivery_id: lease.delivery_id,
            });
        }
        Ok(())
    }

    /// Records an attempt and moves the delivery to its next state, releasing the lease.
    /// Only while `lease` still holds the row: a worker whose lease ran out (and was
    /// claimed by another) gets [`StoreError::LeaseLost`], and nothing is written.
    pub async fn finish_attempt(
        &self,
        lease: &Lease,
        attempt: &AttemptRow,
        next: &NextState,
    ) -> Result<()> {
        let delivery_id = lease.delivery_id;
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let (status, next_at, delivered_at) = match next {
            NextState::Delivered => ("delivered", now, Some(now)),
            NextState::Retry { at_ms } => ("pending", *at_ms, None),
            NextState::Dead => ("dead", now, None),
        };
        // The update goes first: when the lease is gone it changes nothing, and the
        // transaction is dropped (rolled back) before the attempt is inserted.
        let last_error = if matches!(next, NextState::Delivered) {
            None
        } else {
            attempt.reason.clone()
        };
        let updated = on_tx!(
            &mut tx,
            (
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, delivered_at = ?,
                        last_error = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?
                 WHERE id = ? AND lease_owner = ? AND lease_until = ?",
                "UPDATE deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, delivered_at = $3,
                        last_error = $4, lease_owner = NULL, lease_until = NULL, updated_at = $5
                 WHERE id = $6 AND lease_owner = $7 AND lease_until = $8"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(status)
                .bind(next_at)
                .bind(delivered_at)
                .bind(&last_error)
                .bind(now)
                .bind(delivery_id)
                .bind(&lease.owner)
                .bind(lease.until)
                .execute(ex)
                .await?
                .rows_affected()
        );
        if updated == 0 {
            return Err(StoreError::LeaseLost { delivery_id });
        }
        on_tx!(
            &mut tx,
            (
                "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, reason, response)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, reason, response)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(delivery_id)
                .bind(attempt.attempt)
                .bind(attempt.started_at)
                .bind(attempt.duration_ms)
                .bind(attempt.status_code)
                .bind(&attempt.outcome)
                .bind(&attempt.reason)
                .bind(&attempt.response)
                .execute(ex)
                .await?
                .rows_affected()
        );
        tx.commit().await?;
        Ok(())
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
        Ok(on_pool!(
            self,
            (
                "SELECT COUNT(*) FROM deliveries WHERE connector = ? AND status = 'pending'",
                "SELECT COUNT(*) FROM deliveries WHERE connector = $1 AND status = 'pending'"
            ),
            |sql, ex| sqlx::query_scalar(sql)
                .bind(connector)
                .fetch_one(ex)
                .await?
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
    let now = now_ms();
    let inserted = on_tx!(
        &mut *tx,
        (
            "INSERT INTO events (id, type, agent_id, created_at, envelope) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            "INSERT INTO events (id, type, agent_id, created_at, envelope) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING"
        ),
        |sql, ex| sqlx::query(sql)
            .bind(&event.event.id)
            .bind(event.event.kind.as_str())
            .bind(&event.agent_id)
            .bind(now)
            .bind(event.event.to_json())
            .execute(ex)
            .await?
            .rows_affected()
    );
    if inserted == 0 {
        // The same event (same stable id) was recorded before: its deliveries exist.
        return Ok(false);
    }
    for connector in &event.connectors {
        on_tx!(
            &mut *tx,
            (
                "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, created_at, updated_at)
                 VALUES (?, ?, 'pending', ?, ?, ?) ON CONFLICT (event_id, connector) DO NOTHING",
                "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, created_at, updated_at)
                 VALUES ($1, $2, 'pending', $3, $4, $5) ON CONFLICT (event_id, connector) DO NOTHING"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&event.event.id)
                .bind(connector)
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
        );
    }
    for failed in &event.failed {
        on_tx!(
            &mut *tx,
            (
                "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, last_error, created_at, updated_at)
             VALUES (?, ?, 'dead', ?, ?, ?, ?) ON CONFLICT (event_id, connector) DO NOTHING",
                "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, last_error, created_at, updated_at)
                 VALUES ($1, $2, 'dead', $3, $4, $5, $6) ON CONFLICT (event_id, connector) DO NOTHING"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&event.event.id)
                .bind(&failed.connector)
                .bind(now)
                .bind(&failed.reason)
                .bind(now)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
        );
    }
    Ok(true)
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
