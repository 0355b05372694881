//! Claims and outcomes: a dispatcher worker claims due deliveries under a lease, and
//! records each attempt (moving its delivery on and releasing the lease) only while that
//! lease still holds the row (docs/architecture.md, section 3).
//!
//! A busy worker's whole turn — record the attempts that finished, claim the slots they
//! freed — is one transaction. On SQLite it is also one statement list sent to the
//! connection's thread at once: each round trip there costs two or three thread wake-ups,
//! which were most of the CPU per event (BENCHMARKS.md, issue 16). On PostgreSQL it is a
//! transaction of two statements.

use clairo_connectors::Event;
use sqlx::Row;

use super::{AttemptRow, NextState, Pool, Result, Store, StoreError, now_ms};

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
    /// `event` as stored: its compact JSON, which connectors sending the envelope send as
    /// it is.
    pub envelope: String,
    pub event_created_at: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    pub checkpoint: Option<serde_json::Value>,
}

/// What [`Store::finish_and_claim`] claims: up to `limit` due deliveries of `connector`,
/// for `owner`, as of `now`, under a lease that ends at `lease_until`.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub connector: &'a str,
    pub owner: &'a str,
    pub now: i64,
    pub lease_until: i64,
    pub limit: i64,
}

/// One attempt to record: the claim it was made under, its record, and where the
/// delivery goes next.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    pub lease: &'a Lease,
    pub attempt: &'a AttemptRow,
    pub next: &'a NextState,
}

/// SQLite: the attempts whose lease still holds their row (`?1`, a JSON array made by
/// [`finish_rows`]; `?2` now), then their deliveries, whose RETURNING names the rows
/// recorded. The attempt goes first because the update clears the lease.
macro_rules! sqlite_finish {
    () => {
        "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, reason, response)
         SELECT j.value ->> 'id', j.value ->> 'attempt', j.value ->> 'started_at', j.value ->> 'duration_ms',
                j.value ->> 'status_code', j.value ->> 'outcome', j.value ->> 'reason', j.value ->> 'response'
         FROM json_each(?1) AS j JOIN deliveries AS d
           ON d.id = j.value ->> 'id' AND d.lease_owner = j.value ->> 'owner'
          AND d.lease_until = j.value ->> 'until';
         UPDATE deliveries SET status = j.value ->> 'status', attempts = attempts + 1,
                next_attempt_at = j.value ->> 'next_at', delivered_at = j.value ->> 'delivered_at',
                last_error = j.value ->> 'last_error', lease_owner = NULL, lease_until = NULL,
                updated_at = ?2
         FROM json_each(?1) AS j
         WHERE deliveries.id = j.value ->> 'id' AND deliveries.lease_owner = j.value ->> 'owner'
           AND deliveries.lease_until = j.value ->> 'until'
         RETURNING deliveries.id"
    };
}

/// SQLite: claims up to `?6` due deliveries of connector `?5` for owner `?3` until `?4`
/// (`?2` now), each with its event (subqueries in RETURNING: no further round trip).
macro_rules! sqlite_claim {
    () => {
        "UPDATE deliveries SET lease_owner = ?3, lease_until = ?4, updated_at = ?2
         WHERE id IN (
             SELECT id FROM deliveries
             WHERE connector = ?5 AND status = 'pending' AND next_attempt_at <= ?2
               AND (lease_until IS NULL OR lease_until <= ?2)
             ORDER BY next_attempt_at, id LIMIT ?6)
         RETURNING id, event_id, attempts, checkpoint,
             (SELECT envelope FROM events WHERE events.id = deliveries.event_id) AS envelope,
             (SELECT created_at FROM events WHERE events.id = deliveries.event_id) AS event_created_at"
    };
}

/// A worker's turn on SQLite, sent as one list: its statements' results come back in
/// order, each statement's rows followed by its completion.
const SQLITE_TURN: &str = concat!(
    "BEGIN IMMEDIATE;\n",
    sqlite_finish!(),
    ";\n",
    sqlite_claim!(),
    ";\nCOMMIT"
);

/// The statements of [`SQLITE_TURN`] whose rows are the recorded ids and the claims.
const TURN_FINISH_UPDATE: usize = 2;
const TURN_CLAIM: usize = 3;

/// A claimed delivery from a claim's RETURNING row, on either backend.
macro_rules! claimed_from_row {
    ($row:expr, $claim:expr) => {{
        let row = $row;
        let claim: &Claim<'_> = $claim;
        let event_id: String = row.try_get("event_id")?;
        // NULL only if the event row were gone, which its foreign key forbids.
        let envelope: Option<String> = row.try_get("envelope")?;
        let envelope = envelope.ok_or_else(|| {
            sqlx::Error::Decode(format!("event {event_id}: no such event").into())
        })?;
        let event: Event = serde_json::from_str(&envelope)
            .map_err(|error| sqlx::Error::Decode(format!("event {event_id}: {error}").into()))?;
        let checkpoint: Option<String> = row.try_get("checkpoint")?;
        let id: i64 = row.try_get("id")?;
        ClaimedDelivery {
            id,
            lease: Lease {
                delivery_id: id,
                owner: claim.owner.to_owned(),
                until: claim.lease_until,
            },
            connector: claim.connector.to_owned(),
            event,
            envelope,
            event_created_at: row
                .try_get::<Option<i64>, _>("event_created_at")?
                .unwrap_or_default(),
            attempts: row.try_get("attempts")?,
            checkpoint: checkpoint.and_then(|text| serde_json::from_str(&text).ok()),
        }
    }};
}

impl Store {
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
        let claim = Claim {
            connector,
            owner,
            now,
            lease_until,
            limit,
        };
        Ok(self.finish_and_claim(&[], &claim).await?.1)
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
        let finish = Finish {
            lease,
            attempt,
            next,
        };
        if self.finish_attempts(&[finish]).await?.first() != Some(&true) {
            return Err(StoreError::LeaseLost {
                delivery_id: lease.delivery_id,
            });
        }
        Ok(())
    }

    /// [`Store::finish_attempt`] for many attempts in one transaction, whatever their
    /// number. Says, for each in order, whether it was recorded (`false`: its lease was
    /// gone, and nothing of it was written).
    pub async fn finish_attempts(&self, finished: &[Finish<'_>]) -> Result<Vec<bool>> {
        let nothing = Claim {
            connector: "",
            owner: "",
            now: now_ms(),
            lease_until: 0,
            limit: 0,
        };
        Ok(self.finish_and_claim(finished, &nothing).await?.0)
    }

    /// Records attempts that finished ([`Store::finish_attempts`]) and claims due
    /// deliveries ([`Store::claim_due`]) in one transaction: a busy worker's whole turn.
    /// The claims come in id order.
    pub async fn finish_and_claim(
        &self,
        finished: &[Finish<'_>],
        claim: &Claim<'_>,
    ) -> Result<(Vec<bool>, Vec<ClaimedDelivery>)> {
        if finished.is_empty() && claim.limit <= 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let rows = finish_rows(finished, claim.now);
        let (recorded, mut claimed) = match &self.pool {
            Pool::Sqlite(pool) => sqlite_turn(pool, &rows, claim).await?,
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => postgres::turn(pool, &rows, claim).await?,
        };
        claimed.sort_by_key(|delivery| delivery.id);
        Ok((
            finished
                .iter()
                .map(|finish| recorded.contains(&finish.lease.delivery_id))
                .collect(),
            claimed,
        ))
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
}

/// One attempt as a row of [`finish_rows`]'s array (borrowed: nothing is copied to write it).
#[derive(serde::Serialize)]
struct FinishRow<'a> {
    id: i64,
    owner: &'a str,
    until: i64,
    status: &'static str,
    next_at: i64,
    delivered_at: Option<i64>,
    last_error: Option<&'a str>,
    attempt: i64,
    started_at: i64,
    duration_ms: i64,
    status_code: Option<i64>,
    outcome: &'a str,
    reason: Option<&'a str>,
    response: Option<&'a str>,
}

/// The attempts to record as one JSON array (one bind whatever their number).
fn finish_rows(finished: &[Finish<'_>], now: i64) -> String {
    let rows: Vec<FinishRow<'_>> = finished
        .iter()
        .map(|finish| {
            let (status, next_at, delivered_at) = match finish.next {
                NextState::Delivered => ("delivered", now, Some(now)),
                NextState::Retry { at_ms } => ("pending", *at_ms, None),
                NextState::Dead => ("dead", now, None),
            };
            let last_error = match finish.next {
                NextState::Delivered => None,
                _ => finish.attempt.reason.as_deref(),
            };
            let attempt = finish.attempt;
            FinishRow {
                id: finish.lease.delivery_id,
                owner: &finish.lease.owner,
                until: finish.lease.until,
                status,
                next_at,
                delivered_at,
                last_error,
                attempt: attempt.attempt,
                started_at: attempt.started_at,
                duration_ms: attempt.duration_ms,
                status_code: attempt.status_code,
                outcome: &attempt.outcome,
                reason: attempt.reason.as_deref(),
                response: attempt.response.as_deref(),
            }
        })
        .collect();
    serde_json::to_string(&rows).expect("rows of strings and numbers serialize")
}

/// [`SQLITE_TURN`] on one connection. sqlx does not know the list opens a transaction:
/// when it fails part-way the transaction may still be open on the connection, so it is
/// rolled back there and the connection closed rather than pooled (a pooled connection
/// inside a transaction would refuse every later BEGIN).
async fn sqlite_turn(
    pool: &sqlx::SqlitePool,
    rows: &str,
    claim: &Claim<'_>,
) -> Result<(Vec<i64>, Vec<ClaimedDelivery>)> {
    use futures_util::TryStreamExt as _;
    let mut connection = pool.acquire().await?;
    // sqlx 0.9 deprecates several statements in one query (only its SQLite driver runs
    // them, and binds by number across them). It is kept here, where it saves two thirds
    // of the round trips per event; should a later sqlx drop it, this turn becomes the
    // PostgreSQL shape below (BEGIN, two statements, COMMIT).
    #[allow(deprecated)]
    let results: std::result::Result<Vec<_>, sqlx::Error> = sqlx::query(SQLITE_TURN)
        .bind(rows)
        .bind(claim.now)
        .bind(claim.owner)
        .bind(claim.lease_until)
        .bind(claim.connector)
        .bind(claim.limit)
        .fetch_many(&mut *connection)
        .try_collect()
        .await;
    let results = match results {
        Ok(results) => results,
        Err(error) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await;
            connection.close_on_drop();
            return Err(error.into());
        }
    };
    let mut recorded = Vec::new();
    let mut claimed = Vec::new();
    let mut statement = 0;
    for result in results {
        match result {
            sqlx::Either::Left(_) => statement += 1,
            sqlx::Either::Right(row) if statement == TURN_FINISH_UPDATE => {
                recorded.push(row.try_get::<i64, _>(0)?);
            }
            sqlx::Either::Right(row) if statement == TURN_CLAIM => {
                claimed.push(claimed_from_row!(row, claim));
            }
            sqlx::Either::Right(_) => {}
        }
    }
    Ok((recorded, claimed))
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    /// A worker's turn on PostgreSQL: one transaction of two statements. Instances claim
    /// concurrently; SKIP LOCKED lets each take rows the others are not claiming at that
    /// instant, instead of queueing behind them. The finishing statement's data-modifying
    /// CTEs see one snapshot, so the attempts insert joins the update's result.
    pub(super) async fn turn(
        pool: &sqlx::PgPool,
        rows: &str,
        claim: &Claim<'_>,
    ) -> Result<(Vec<i64>, Vec<ClaimedDelivery>)> {
        let mut tx = pool.begin().await?;
        let mut recorded = Vec::new();
        if rows != "[]" {
            recorded = sqlx::query_scalar(
            "WITH j AS (
                 SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS j (
                     id bigint, owner text, until bigint, status text, next_at bigint,
                     delivered_at bigint, last_error text, attempt bigint, started_at bigint,
                     duration_ms bigint, status_code bigint, outcome text, reason text, response text)),
             updated AS (
                 UPDATE deliveries AS d SET status = j.status, attempts = d.attempts + 1,
                        next_attempt_at = j.next_at, delivered_at = j.delivered_at,
                        last_error = j.last_error, lease_owner = NULL, lease_until = NULL,
                        updated_at = $2
                 FROM j
                 WHERE d.id = j.id AND d.lease_owner = j.owner AND d.lease_until = j.until
                 RETURNING d.id),
             attempts AS (
                 INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, reason, response)
                 SELECT j.id, j.attempt, j.started_at, j.duration_ms, j.status_code, j.outcome, j.reason, j.response
                 FROM j JOIN updated ON updated.id = j.id)
             SELECT id FROM updated",
        )
        .bind(rows)
        .bind(claim.now)
        .fetch_all(&mut *tx)
        .await?;
        }
        let mut claimed = Vec::new();
        if claim.limit > 0 {
            let rows = sqlx::query(
                "UPDATE deliveries SET lease_owner = $1, lease_until = $2, updated_at = $3
                 WHERE id IN (
                     SELECT id FROM deliveries
                     WHERE connector = $4 AND status = 'pending' AND next_attempt_at <= $3
                       AND (lease_until IS NULL OR lease_until <= $3)
                     ORDER BY next_attempt_at, id LIMIT $5
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id, event_id, attempts, checkpoint,
                     (SELECT envelope FROM events WHERE events.id = deliveries.event_id) AS envelope,
                     (SELECT created_at FROM events WHERE events.id = deliveries.event_id) AS event_created_at",
            )
            .bind(claim.owner)
            .bind(claim.lease_until)
            .bind(claim.now)
            .bind(claim.connector)
            .bind(claim.limit)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                claimed.push(claimed_from_row!(row, claim));
            }
        }
        tx.commit().await?;
        Ok((recorded, claimed))
    }
}
