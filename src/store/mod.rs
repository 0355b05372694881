//! The state database (SQLite, WAL): what has been seen, the events made from it and the
//! outbox of deliveries. Every SQL statement of clairo-sync lives in this module, so that
//! another backend can be added without touching sources, dispatch or connectors.
//!
//! The outbox rule: an item, its event and one delivery per routed connector are written
//! in ONE transaction, so a crash either loses nothing or repeats a delivery whose outcome
//! was unknown.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use clairo_connectors::Event;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

pub mod meetings;
mod retention;

/// How long a writer waits for another connection's write lock before failing. Writes are
/// short (one small transaction), so a wait this long means something is wrong.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows written per transaction when recording many items at once.
const BATCH: usize = 500;

/// Connections in the pool: the dispatcher's workers and the pollers read concurrently
/// under WAL; SQLite serializes writers anyway. Each connection is a thread with its own
/// page and statement caches and malloc arena, about 0.5 MiB at idle: four delivered a
/// backlog ~35% faster (873 vs 648 events/s, far beyond what the API budget can feed)
/// but missed the idle-memory goal (10.6 MiB), so two (BENCHMARKS.md).
const MAX_CONNECTIONS: u32 = 2;

/// WAL pages written before a commit copies them into the database file (SQLite's default
/// is 1,000). A checkpoint costs two fsyncs and rewrites each page once however often it
/// changed: the outbox rewrites the same few pages with every event, so checkpointing
/// every ~40 MB instead of every ~4 MB saves most of that work (BENCHMARKS.md, issue 16).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state database {path}: {source}; check that the directory exists and is writable by the clairo-sync user"
    )]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "no state yet: {path} does not exist; the service creates it at its first start (sudo systemctl enable --now clairo-sync)"
    )]
    NoState { path: String },
    #[error(
        "cannot migrate the state database: {0}; restore a backup or move the file aside to start afresh"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// The worker's lease ran out and another worker claimed the delivery: what this
    /// worker learnt is stale, and the newer claim's record wins.
    #[error(
        "the lease on delivery {delivery_id} was lost to another worker; its outcome was not recorded (the lease ran out before the attempt finished: raise delivery.lease above the connectors' timeouts)"
    )]
    LeaseLost { delivery_id: i64 },
}

impl StoreError {
    /// Another worker holds the delivery now; nothing was written.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::LeaseLost { .. })
    }

    /// The disk is full (or the file system read-only): new work must wait.
    pub fn is_disk_full(&self) -> bool {
        let text = self.to_string().to_ascii_lowercase();
        text.contains("database or disk is full")
            || text.contains("readonly")
            || text.contains("read-only")
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, the store's unit of time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// An event to record, with the connectors its routes send it to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    pub agent_id: Option<String>,
    pub connectors: Vec<String>,
}

/// A brief seen in the list, merged with its detail.
#[derive(Debug, Clone)]
pub struct BriefRecord<'a> {
    pub id: String,
    pub agent_id: Option<String>,
    pub conversation_id: Option<String>,
    pub created_at: Option<String>,
    /// The brief's JSON text, stored as it is. Borrowed when it is the list item's own
    /// text (recording a whole list as seen copies none of it), owned when merged.
    pub raw: Cow<'a, str>,
}

/// What the store remembers of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationState {
    pub id: String,
    pub agent_id: Option<String>,
    pub status: Option<String>,
    pub message_count: i64,
    pub updated_at: Option<String>,
    pub last_checked_at: i64,
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

#[derive(Debug, Clone, Serialize)]
pub struct SourceRun {
    pub source: String,
    pub last_started_at: i64,
    pub last_finished_at: Option<i64>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub last_success_at: Option<i64>,
    pub runs: i64,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub dead_only: bool,
    pub connector: Option<String>,
    pub limit: i64,
}

impl Store {
    /// Opens (creating if missing) the state file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The daemon and an operator's `status` may open a new file at the same moment:
        // switching a new file to WAL and migrating it are not covered by SQLite's busy
        // handler, so opening and migrating take turns under an flock. (flock and SQLite's
        // own fcntl locks do not interfere on Linux.)
        let guard = open_lock(path).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A ping is a round trip to the connection's thread (two thread wake-ups) and
            // tells nothing about a local file: not one before every checkout.
            .test_before_acquire(false)
            // After SQLITE_FULL (or an I/O error) SQLite rolls the transaction back itself;
            // the driver's ROLLBACK then fails and it still counts the connection as inside
            // a transaction, refusing every later BEGIN on it. Such a connection is closed
            // instead of pooled, so the store recovers once the disk has room again.
            .after_release(|connection, _| {
                Box::pin(async move {
                    // Outside a transaction (the driver's depth counter, no round trip) is
                    // the common case: nothing to wait for.
                    if !sqlx::Connection::is_in_transaction(connection) {
                        return Ok(true);
                    }
                    // The ping lets a rollback still queued on the connection finish first,
                    // so a healthy connection is not closed needlessly.
                    sqlx::Connection::ping(connection).await?;
                    Ok(!sqlx::Connection::is_in_transaction(connection))
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let migrated = sqlx::migrate!("./migrations").run(&pool).await;
        drop(guard);
        migrated?;
        Ok(Self { pool })
    }

    /// Opens the daemon's existing state for an operator's command (`status`,
    /// `deliveries`): never creates the file and never migrates it. Run from a root shell
    /// before the first start, creating it would leave a root-owned database the service
    /// cannot write; migrating is the daemon's job at its start. `writable` only for
    /// commands that change it (`deliveries retry`).
    pub async fn open_existing(path: &Path, writable: bool) -> Result<Self> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if !path.try_exists().unwrap_or(true) {
            return Err(StoreError::NoState {
                path: path.display().to_string(),
            });
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_error)?
            .filename(path)
            .create_if_missing(false)
            .read_only(!writable)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writers take the lock at BEGIN, so two writers queue on the busy timeout instead
    /// of one failing at once when it upgrades a read transaction.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Checks that the database accepts a write (readiness).
    pub async fn check_writable(&self) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('last_write_check', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(now_ms().to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- briefs ----

    /// Which of `ids` are not recorded yet. An idle poll returns no row, however long
    /// the history: the cost is one index lookup per listed id.
    pub async fn unknown_briefs(&self, ids: &[String]) -> Result<HashSet<String>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT value FROM json_each(?) WHERE value NOT IN (SELECT id FROM briefs)",
        )
        .bind(serde_json::to_string(ids).expect("strings serialize"))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records a brief and, in the same transaction, its event and deliveries.
    /// A brief already recorded is left alone (and no event is made twice). Says whether
    /// the brief was new and, when an event was given, whether it was written too.
    pub async fn record_brief(
        &self,
        brief: &BriefRecord<'_>,
        event: Option<&NewEvent>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let inserted = insert_brief(&mut tx, brief, now_ms()).await?;
        let written = match event {
            Some(event) if inserted => insert_event(&mut tx, event).await?,
            _ => inserted,
        };
        tx.commit().await?;
        Ok(written)
    }

    /// Records briefs as seen, without events (`start_from = "now"`), in transactions of
    /// [`BATCH`] rows rather than one per brief.
    pub async fn record_briefs_seen(&self, briefs: &[BriefRecord<'_>]) -> Result<()> {
        let now = now_ms();
        for chunk in briefs.chunks(BATCH) {
            let mut tx = self.write_tx().await?;
            for brief in chunk {
                insert_brief(&mut tx, brief, now).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    pub async fn brief_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM briefs")
            .fetch_one(&self.pool)
            .await?)
    }

    // ---- conversations ----

    pub async fn conversation_states(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, ConversationState>> {
        let rows = sqlx::query(
            "SELECT id, agent_id, status, message_count, updated_at, last_checked_at FROM conversations WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(ids).expect("strings serialize"))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let state = conversation_from_row(&row);
                (state.id.clone(), state)
            })
            .collect())
    }

    /// ACTIVE conversations last checked before `checked_before` (ms), oldest first.
    pub async fn active_conversations_due(
        &self,
        checked_before: i64,
        agents: &[String],
    ) -> Result<Vec<ConversationState>> {
        let rows = sqlx::query(
            "SELECT id, agent_id, status, message_count, updated_at, last_checked_at FROM conversations
             WHERE status = 'ACTIVE' AND last_checked_at < ?
               AND (json_array_length(?) = 0 OR agent_id IN (SELECT value FROM json_each(?)))
             ORDER BY last_checked_at",
        )
        .bind(checked_before)
        .bind(serde_json::to_string(agents).expect("strings serialize"))
        .bind(serde_json::to_string(agents).expect("strings serialize"))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(conversation_from_row).collect())
    }

    /// Records what is now known of a conversation and, in the same transaction, its
    /// event. `raw` is the conversation's JSON text, stored as it is. `previous_count`
    /// guards against a concurrent writer: the row is updated only if it still holds the
    /// count the caller diffed against. Says whether the event was written: an event
    /// whose id is recorded already is not written again.
    pub async fn record_conversation(
        &self,
        state: &ConversationState,
        raw: Option<&str>,
        previous_count: Option<i64>,
        event: Option<&NewEvent>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let changed = match previous_count {
            None => sqlx::query(
                "INSERT INTO conversations (id, agent_id, status, message_count, updated_at, last_checked_at, raw)
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&state.id)
            .bind(&state.agent_id)
            .bind(&state.status)
            .bind(state.message_count)
            .bind(&state.updated_at)
            .bind(state.last_checked_at)
            .bind(raw)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(previous) => sqlx::query(
                "UPDATE conversations SET agent_id = COALESCE(?, agent_id), status = ?, message_count = ?, updated_at = ?,
                        last_checked_at = ?, raw = COALESCE(?, raw)
                 WHERE id = ? AND message_count = ?",
            )
            .bind(&state.agent_id)
            .bind(&state.status)
            .bind(state.message_count)
            .bind(&state.updated_at)
            .bind(state.last_checked_at)
            .bind(raw)
            .bind(&state.id)
            .bind(previous)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        } == 1;
        let written = match event {
            Some(event) if changed => insert_event(&mut tx, event).await?,
            _ => false,
        };
        tx.commit().await?;
        Ok(written)
    }

    // ---- events and deliveries ----

    pub async fn event_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
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
        // The event comes back with the claim (subqueries in RETURNING): one statement,
        // not one more round trip to the connection's thread per delivery claimed.
        let rows = sqlx::query(
            "UPDATE deliveries SET lease_owner = ?, lease_until = ?, updated_at = ?
             WHERE id IN (
                 SELECT id FROM deliveries
                 WHERE connector = ? AND status = 'pending' AND next_attempt_at <= ?
                   AND (lease_until IS NULL OR lease_until <= ?)
                 ORDER BY next_attempt_at, id LIMIT ?)
             RETURNING id, event_id, attempts, checkpoint,
                 (SELECT envelope FROM events WHERE events.id = deliveries.event_id) AS envelope,
                 (SELECT created_at FROM events WHERE events.id = deliveries.event_id) AS event_created_at",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(connector)
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
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
        let saved = sqlx::query(
            "UPDATE deliveries SET checkpoint = ?, updated_at = ?
             WHERE id = ? AND lease_owner = ? AND lease_until = ?",
        )
        .bind(checkpoint.to_string())
        .bind(now_ms())
        .bind(lease.delivery_id)
        .bind(&lease.owner)
        .bind(lease.until)
        .execute(&self.pool)
        .await?
        .rows_affected();
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
        let updated = sqlx::query(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, delivered_at = ?,
                    last_error = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?
             WHERE id = ? AND lease_owner = ? AND lease_until = ?",
        )
        .bind(status)
        .bind(next_at)
        .bind(delivered_at)
        .bind(if matches!(next, NextState::Delivered) { None } else { attempt.reason.clone() })
        .bind(now)
        .bind(delivery_id)
        .bind(&lease.owner)
        .bind(lease.until)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::LeaseLost { delivery_id });
        }
        sqlx::query(
            "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, reason, response)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(delivery_id)
        .bind(attempt.attempt)
        .bind(attempt.started_at)
        .bind(attempt.duration_ms)
        .bind(attempt.status_code)
        .bind(&attempt.outcome)
        .bind(&attempt.reason)
        .bind(&attempt.response)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives back leases this process holds (shutdown), so another run takes them at once.
    pub async fn release_leases(&self, owner: &str) -> Result<u64> {
        Ok(sqlx::query("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? AND status = 'pending'")
            .bind(owner)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// When the next pending delivery of `connector` is due (ms), if any, counting leases.
    /// Two index lookups whatever the backlog: the earliest unleased row in due order, and
    /// the few leased ones (the `deliveries_leased` partial index).
    pub async fn next_due_at(&self, connector: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(due) FROM (
                 SELECT MIN(next_attempt_at) AS due FROM deliveries
                 WHERE connector = ? AND status = 'pending' AND lease_until IS NULL
                 UNION ALL
                 SELECT MIN(MAX(next_attempt_at, lease_until)) FROM deliveries
                 WHERE connector = ? AND lease_until IS NOT NULL AND status = 'pending')",
        )
        .bind(connector)
        .bind(connector)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Pending deliveries of one connector (an index range, cheap however many rows the
    /// outbox keeps).
    pub async fn pending_count(&self, connector: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE connector = ? AND status = 'pending'",
        )
        .bind(connector)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        let rows = sqlx::query(
            "SELECT connector,
                    SUM(status = 'pending') AS pending,
                    MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest,
                    SUM(status = 'dead') AS dead,
                    SUM(status = 'delivered') AS delivered
             FROM deliveries GROUP BY connector ORDER BY connector",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| QueueStats {
                connector: row.get("connector"),
                pending: row.get("pending"),
                oldest_pending_at: row.get("oldest"),
                dead: row.get("dead"),
                delivered: row.get("delivered"),
            })
            .collect())
    }

    /// Deliveries with their last attempt (one query, not one per row), most recent
    /// activity first: what an operator just re-queued, or what just failed, is at the top
    /// (docs/operations.md §8).
    pub async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRow>> {
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, e.type, d.connector, d.status, d.attempts, d.next_attempt_at, d.last_error,
                    d.created_at, d.updated_at, d.delivered_at,
                    a.attempt, a.started_at, a.duration_ms, a.status_code, a.outcome, a.reason, a.response
             FROM deliveries d JOIN events e ON e.id = d.event_id
             LEFT JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE delivery_id = d.id)
             WHERE (? = 0 OR d.status = 'dead') AND (? IS NULL OR d.connector = ?)
             ORDER BY d.updated_at DESC, d.id DESC LIMIT ?",
        )
        .bind(filter.dead_only)
        .bind(&filter.connector)
        .bind(&filter.connector)
        .bind(if filter.limit > 0 { filter.limit } else { i64::MAX })
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
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
                    .map(|_| attempt_from_row(row)),
            })
            .collect())
    }

    /// Re-queues deliveries (attempts reset, the event and its id unchanged). `ids` empty
    /// with `all_dead` re-queues every dead delivery. Returns how many were re-queued.
    pub async fn retry_deliveries(&self, ids: &[i64], all_dead: bool) -> Result<u64> {
        let now = now_ms();
        let affected = if all_dead {
            sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, lease_owner = NULL,
                        lease_until = NULL, updated_at = ? WHERE status = 'dead'",
            )
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected()
        } else {
            sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, lease_owner = NULL,
                        lease_until = NULL, updated_at = ?
                 WHERE id IN (SELECT value FROM json_each(?)) AND status <> 'pending'",
            )
            .bind(now)
            .bind(now)
            .bind(serde_json::to_string(ids).expect("ids serialize"))
            .execute(&self.pool)
            .await?
            .rows_affected()
        };
        Ok(affected)
    }

    /// Connectors with pending deliveries (including ones no longer configured).
    pub async fn pending_connectors(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT connector FROM deliveries WHERE status = 'pending' ORDER BY connector",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- source runs ----

    pub async fn start_run(&self, source: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO source_runs (source, last_started_at, runs) VALUES (?, ?, 1)
             ON CONFLICT (source) DO UPDATE SET last_started_at = excluded.last_started_at, runs = runs + 1",
        )
        .bind(source)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish_run(&self, source: &str, error: Option<&str>) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE source_runs SET last_finished_at = ?, last_outcome = ?, last_error = ?,
                    last_success_at = CASE WHEN ? IS NULL THEN ? ELSE last_success_at END
             WHERE source = ?",
        )
        .bind(now)
        .bind(if error.is_none() {
            "success"
        } else {
            "failure"
        })
        .bind(error)
        .bind(error)
        .bind(now)
        .bind(source)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn source_runs(&self) -> Result<Vec<SourceRun>> {
        let rows = sqlx::query(
            "SELECT source, last_started_at, last_finished_at, last_outcome, last_error, last_success_at, runs
             FROM source_runs ORDER BY source",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| SourceRun {
                source: row.get("source"),
                last_started_at: row.get("last_started_at"),
                last_finished_at: row.get("last_finished_at"),
                last_outcome: row.get("last_outcome"),
                last_error: row.get("last_error"),
                last_success_at: row.get("last_success_at"),
                runs: row.get("runs"),
            })
            .collect())
    }
}

/// Inserts a brief unless it is recorded already; whether it was new.
async fn insert_brief(
    tx: &mut Transaction<'static, Sqlite>,
    brief: &BriefRecord<'_>,
    seen_at: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO briefs (id, agent_id, conversation_id, created_at, raw, seen_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&brief.id)
    .bind(&brief.agent_id)
    .bind(&brief.conversation_id)
    .bind(&brief.created_at)
    .bind(brief.raw.as_ref())
    .bind(seen_at)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

/// An exclusive advisory lock on the state file, held while migrations run.
async fn open_lock(path: &Path) -> Result<std::fs::File> {
    let shown = path.display().to_string();
    let path = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|error| std::io::Error::other(error.to_string()))
    .and_then(|result| result);
    opened.map_err(|error| StoreError::Open {
        path: shown,
        source: sqlx::Error::Io(error),
    })
}

/// Inserts an event and its deliveries; whether it was new (an id recorded already is
/// the same event, whose deliveries exist).
async fn insert_event(tx: &mut Transaction<'static, Sqlite>, event: &NewEvent) -> Result<bool> {
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO events (id, type, agent_id, created_at, envelope) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.event.id)
    .bind(event.event.kind.as_str())
    .bind(&event.agent_id)
    .bind(now)
    .bind(event.event.to_json())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // The same event (same stable id) was recorded before: its deliveries exist.
        return Ok(false);
    }
    for connector in &event.connectors {
        sqlx::query(
            "INSERT INTO deliveries (event_id, connector, status, next_attempt_at, created_at, updated_at)
             VALUES (?, ?, 'pending', ?, ?, ?) ON CONFLICT (event_id, connector) DO NOTHING",
        )
        .bind(&event.event.id)
        .bind(connector)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

fn conversation_from_row(row: &sqlx::sqlite::SqliteRow) -> ConversationState {
    ConversationState {
        id: row.get("id"),
        agent_id: row.get("agent_id"),
        status: row.get("status"),
        message_count: row.get("message_count"),
        updated_at: row.get("updated_at"),
        last_checked_at: row.get("last_checked_at"),
    }
}

fn attempt_from_row(row: &sqlx::sqlite::SqliteRow) -> AttemptRow {
    AttemptRow {
        attempt: row.get("attempt"),
        started_at: row.get("started_at"),
        duration_ms: row.get("duration_ms"),
        status_code: row.get("status_code"),
        outcome: row.get("outcome"),
        reason: row.get("reason"),
        response: row.get("response"),
    }
}
