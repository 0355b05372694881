//! Recordings taken from drop folders (or `clairo-sync upload`), keyed by the sha256 of
//! their content: the dedupe record, the crash-recovery record and Clairo's answer.
//!
//! A row's life: `uploading` (claimed before the request is sent, so a crash mid-upload
//! is noticed at the next start) → `done` (Clairo answered; written with the
//! `meeting.processed` event in one transaction) or `failed` (Clairo or the checks
//! refused the file; a later copy of the same content may claim the row again).

use serde::Serialize;
use sqlx::Row;

use super::{NewEvent, Result, Store, insert_event, now_ms};

/// What a caller wants to upload.
#[derive(Debug, Clone)]
pub struct MeetingClaim {
    pub sha256: String,
    /// The original file's name (not a transcoded copy's).
    pub file_name: String,
    pub source_path: String,
    pub agent_id: String,
    pub title: String,
    pub size: u64,
}

/// The instance that claims an upload, when several may share the database: its name,
/// and how fresh another claimer's heartbeat must be for its claim to stand
/// (`state.lease`).
#[derive(Debug, Clone)]
pub struct Claimant {
    pub name: String,
    pub live_within_ms: i64,
}

/// What the store knows of one recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeetingRow {
    pub sha256: String,
    pub file_name: String,
    pub source_path: String,
    pub agent_id: String,
    pub title: String,
    pub size: i64,
    pub status: MeetingStatus,
    /// Requests sent for this content so far.
    pub attempts: i64,
    pub meeting_id: Option<String>,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub duration_sec: Option<f64>,
    pub uploaded_as: Option<String>,
    pub moved_to: Option<String>,
    /// The last failure: why the row is `failed`, or why the last attempt of an
    /// `uploading` row did not finish.
    pub error: Option<String>,
    pub raw: Option<serde_json::Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeetingStatus {
    Uploading,
    Done,
    Failed,
}

impl MeetingStatus {
    fn parse(text: &str) -> Self {
        match text {
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => Self::Uploading,
        }
    }
}

/// The answer to [`Store::claim_meeting`].
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller owns the upload now. `interrupted`: an earlier request for this same
    /// file was sent and never answered (the process stopped mid-upload), so Clairo may
    /// already have the recording.
    Upload { interrupted: bool },
    /// This content was uploaded already.
    Done(MeetingRow),
    /// Another file with this content is being uploaded (and was not taken over).
    InProgress(MeetingRow),
}

/// Clairo's answer to an upload, as recorded.
#[derive(Debug, Clone)]
pub struct MeetingResult {
    pub meeting_id: String,
    pub title: String,
    pub transcript: Option<String>,
    pub summary: Option<String>,
    pub duration_sec: Option<f64>,
    pub uploaded_as: String,
    pub raw: serde_json::Value,
}

/// Whether `row` (the same content) is this file's own earlier claim: the same path, and
/// made by no other instance whose heartbeat is fresh. Without a claimant (one instance
/// alone) the path decides.
async fn row_is_ours(
    tx: &mut super::Tx,
    row: &MeetingRow,
    claim: &MeetingClaim,
    claimant: Option<&Claimant>,
) -> Result<bool> {
    if row.source_path != claim.source_path {
        return Ok(false);
    }
    let Some(claimant) = claimant else {
        return Ok(true);
    };
    // Claimed by another instance that is still alive: it is uploading this very file.
    let other_alive = on_tx!(
        tx,
        (
            "SELECT COUNT(*) FROM meetings m JOIN instances i ON i.name = m.claimed_by
             WHERE m.sha256 = ? AND m.claimed_by <> ?
               AND i.last_heartbeat_at > CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) - ?",
            "SELECT COUNT(*) FROM meetings m JOIN instances i ON i.name = m.claimed_by
             WHERE m.sha256 = $1 AND m.claimed_by <> $2
               AND i.last_heartbeat_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) - $3"
        ),
        |sql, ex| sqlx::query_scalar::<_, i64>(sql)
            .bind(&claim.sha256)
            .bind(&claimant.name)
            .bind(claimant.live_within_ms)
            .fetch_one(ex)
            .await?
    );
    Ok(other_alive == 0)
}

/// `SELECT <every column> FROM meetings <rest>`, as one literal (sqlx takes only static SQL).
macro_rules! select_meetings {
    ($rest:literal) => {
        concat!(
            "SELECT sha256, file_name, source_path, agent_id, title, size, status, attempts, meeting_id, transcript, summary,
                    duration_sec, uploaded_as, moved_to, error, raw, created_at, updated_at FROM meetings ",
            $rest
        )
    };
}

/// A meeting from a row with every column, on either backend.
macro_rules! meeting_from_row {
    ($row:expr) => {{
        let row = $row;
        let raw: Option<String> = row.get("raw");
        let status: String = row.get("status");
        MeetingRow {
            sha256: row.get("sha256"),
            file_name: row.get("file_name"),
            source_path: row.get("source_path"),
            agent_id: row.get("agent_id"),
            title: row.get("title"),
            size: row.get("size"),
            status: MeetingStatus::parse(&status),
            attempts: row.get("attempts"),
            meeting_id: row.get("meeting_id"),
            transcript: row.get("transcript"),
            summary: row.get("summary"),
            duration_sec: row.get("duration_sec"),
            uploaded_as: row.get("uploaded_as"),
            moved_to: row.get("moved_to"),
            error: row.get("error"),
            raw: raw.and_then(|text| serde_json::from_str(&text).ok()),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }};
}

impl Store {
    /// Claims the upload of `claim.sha256` for `claim.source_path`, in one transaction:
    /// a new content is recorded as `uploading`; a `failed` one is claimed again (the
    /// file was dropped anew); an `uploading` one is resumed when it is this same file,
    /// taken over when `take_over` says its file is gone, and reported otherwise.
    pub async fn claim_meeting(&self, claim: &MeetingClaim, take_over: bool) -> Result<Claim> {
        self.claim_meeting_as(claim, take_over, None).await
    }

    /// [`Store::claim_meeting`] by one of several instances: the same file (same path,
    /// on shared storage) claimed by another instance that is alive is reported in
    /// progress rather than resumed, since to this instance it looks like its own
    /// interrupted upload.
    pub async fn claim_meeting_as(
        &self,
        claim: &MeetingClaim,
        take_over: bool,
        claimant: Option<&Claimant>,
    ) -> Result<Claim> {
        let claimed_by = claimant.map(|claimant| claimant.name.as_str());
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let size = i64::try_from(claim.size).unwrap_or(i64::MAX);
        // Insert first, read only on a conflict: two instances claiming one content at
        // once both get an answer (one the upload, the other "in progress"), where a read
        // then an insert would give the slower one a unique violation. On PostgreSQL the
        // insert waits for the other's uncommitted row, then yields to it.
        let inserted = on_tx!(
            &mut tx,
            (
                "INSERT INTO meetings (sha256, file_name, source_path, agent_id, title, size, status, attempts, created_at, updated_at, claimed_by)
                 VALUES (?, ?, ?, ?, ?, ?, 'uploading', 0, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                "INSERT INTO meetings (sha256, file_name, source_path, agent_id, title, size, status, attempts, created_at, updated_at, claimed_by)
                 VALUES ($1, $2, $3, $4, $5, $6, 'uploading', 0, $7, $8, $9) ON CONFLICT (sha256) DO NOTHING"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&claim.sha256)
                .bind(&claim.file_name)
                .bind(&claim.source_path)
                .bind(&claim.agent_id)
                .bind(&claim.title)
                .bind(size)
                .bind(now)
                .bind(now)
                .bind(claimed_by)
                .execute(ex)
                .await?
                .rows_affected()
        ) == 1;
        if inserted {
            tx.commit().await?;
            return Ok(Claim::Upload { interrupted: false });
        }
        // The row is locked until the commit (PostgreSQL), so two re-claims of a failed
        // content take turns and the second sees the first's claim; SQLite's writers
        // take turns already.
        let existing = on_tx!(
            &mut tx,
            (
                select_meetings!("WHERE sha256 = ?"),
                select_meetings!("WHERE sha256 = $1 FOR UPDATE")
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&claim.sha256)
                .fetch_one(ex)
                .await
                .map(|row| meeting_from_row!(row))?
        );
        // The same path is this instance's own earlier claim only if no other live
        // instance made it.
        let same_file = row_is_ours(&mut tx, &existing, claim, claimant).await?;
        let claimed = match existing {
            row if row.status == MeetingStatus::Done => Claim::Done(row),
            row if row.status == MeetingStatus::Failed || same_file || take_over => {
                // Never answered: sent (attempts > 0) with no failure recorded since.
                let interrupted = row.status == MeetingStatus::Uploading
                    && row.attempts > 0
                    && row.error.is_none();
                on_tx!(
                    &mut tx,
                    (
                        "UPDATE meetings SET status = 'uploading', file_name = ?, source_path = ?, agent_id = ?, title = ?, size = ?,
                                error = CASE WHEN status = 'failed' THEN NULL ELSE error END, updated_at = ?, claimed_by = ?
                         WHERE sha256 = ?",
                        "UPDATE meetings SET status = 'uploading', file_name = $1, source_path = $2, agent_id = $3, title = $4, size = $5,
                                error = CASE WHEN status = 'failed' THEN NULL ELSE error END, updated_at = $6, claimed_by = $7
                         WHERE sha256 = $8"
                    ),
                    |sql, ex| sqlx::query(sql)
                        .bind(&claim.file_name)
                        .bind(&claim.source_path)
                        .bind(&claim.agent_id)
                        .bind(&claim.title)
                        .bind(size)
                        .bind(now)
                        .bind(claimed_by)
                        .bind(&claim.sha256)
                        .execute(ex)
                        .await?
                        .rows_affected()
                );
                Claim::Upload { interrupted }
            }
            row => Claim::InProgress(row),
        };
        tx.commit().await?;
        Ok(claimed)
    }

    /// Notes that a request is about to be sent: from now until an answer is recorded,
    /// a crash leaves the row looking interrupted.
    pub async fn meeting_attempt(&self, sha256: &str) -> Result<()> {
        on_pool!(
            self,
            (
                "UPDATE meetings SET attempts = attempts + 1, error = NULL, updated_at = ? WHERE sha256 = ? AND status = 'uploading'",
                "UPDATE meetings SET attempts = attempts + 1, error = NULL, updated_at = $1 WHERE sha256 = $2 AND status = 'uploading'"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(now_ms())
                .bind(sha256)
                .execute(ex)
                .await?
                .rows_affected()
        );
        Ok(())
    }

    /// Records Clairo's answer and, in the same transaction, the `meeting.processed`
    /// event and its deliveries. False when the row was not `uploading` (already done).
    pub async fn record_meeting(
        &self,
        sha256: &str,
        result: &MeetingResult,
        event: Option<&NewEvent>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let updated = on_tx!(
            &mut tx,
            (
                "UPDATE meetings SET status = 'done', meeting_id = ?, title = ?, transcript = ?, summary = ?, duration_sec = ?,
                        uploaded_as = ?, raw = ?, error = NULL, updated_at = ?
                 WHERE sha256 = ? AND status = 'uploading'",
                "UPDATE meetings SET status = 'done', meeting_id = $1, title = $2, transcript = $3, summary = $4, duration_sec = $5,
                        uploaded_as = $6, raw = $7, error = NULL, updated_at = $8
                 WHERE sha256 = $9 AND status = 'uploading'"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&result.meeting_id)
                .bind(&result.title)
                .bind(&result.transcript)
                .bind(&result.summary)
                .bind(result.duration_sec)
                .bind(&result.uploaded_as)
                .bind(result.raw.to_string())
                .bind(now_ms())
                .bind(sha256)
                .execute(ex)
                .await?
                .rows_affected()
        ) == 1;
        if updated && let Some(event) = event {
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    /// An attempt failed in a way worth retrying (5xx, transport, credentials): the row
    /// stays `uploading`, with the reason.
    pub async fn meeting_will_retry(&self, sha256: &str, error: &str) -> Result<()> {
        self.set_meeting_error(sha256, "uploading", error).await
    }

    /// The recording was refused (by Clairo or by a check after the claim): a new copy
    /// of the same content may claim it again.
    pub async fn meeting_failed(&self, sha256: &str, error: &str) -> Result<()> {
        self.set_meeting_error(sha256, "failed", error).await
    }

    async fn set_meeting_error(&self, sha256: &str, status: &str, error: &str) -> Result<()> {
        on_pool!(
            self,
            (
                "UPDATE meetings SET status = ?, error = ?, updated_at = ? WHERE sha256 = ? AND status <> 'done'",
                "UPDATE meetings SET status = $1, error = $2, updated_at = $3 WHERE sha256 = $4 AND status <> 'done'"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(status)
                .bind(error)
                .bind(now_ms())
                .bind(sha256)
                .execute(ex)
                .await?
                .rows_affected()
        );
        Ok(())
    }

    /// Where the file went after the upload.
    pub async fn meeting_moved(&self, sha256: &str, moved_to: &str) -> Result<()> {
        on_pool!(
            self,
            (
                "UPDATE meetings SET moved_to = ?, updated_at = ? WHERE sha256 = ?",
                "UPDATE meetings SET moved_to = $1, updated_at = $2 WHERE sha256 = $3"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(moved_to)
                .bind(now_ms())
                .bind(sha256)
                .execute(ex)
                .await?
                .rows_affected()
        );
        Ok(())
    }

    pub async fn meeting(&self, sha256: &str) -> Result<Option<MeetingRow>> {
        Ok(on_pool!(
            self,
            (
                select_meetings!("WHERE sha256 = ?"),
                select_meetings!("WHERE sha256 = $1")
            ),
            |sql, ex| sqlx::query(sql)
                .bind(sha256)
                .fetch_optional(ex)
                .await?
                .map(|row| meeting_from_row!(row))
        ))
    }

    /// Recordings Clairo answered (each announced by a `meeting.processed` event), oldest
    /// first: what a replay rebuilds pruned events from.
    pub async fn done_meetings(&self) -> Result<Vec<MeetingRow>> {
        // PostgreSQL compares text by the database's collation; `COLLATE "C"` orders the
        // hashes bytewise, as SQLite does.
        Ok(on_pool!(
            self,
            (
                select_meetings!("WHERE status = 'done' ORDER BY updated_at, sha256"),
                select_meetings!("WHERE status = 'done' ORDER BY updated_at, sha256 COLLATE \"C\"")
            ),
            |sql, ex| sqlx::query(sql)
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| meeting_from_row!(row))
                .collect()
        ))
    }

    /// Uploads whose request was sent and never answered (the process stopped mid-upload).
    pub async fn interrupted_meetings(&self) -> Result<Vec<MeetingRow>> {
        let portable = select_meetings!(
            "WHERE status = 'uploading' AND attempts > 0 AND error IS NULL ORDER BY updated_at"
        );
        Ok(on_pool!(self, (portable, portable), |sql, ex| sqlx::query(
            sql
        )
        .fetch_all(ex)
        .await?
        .into_iter()
        .map(|row| meeting_from_row!(row))
        .collect()))
    }
}
