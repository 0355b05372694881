//! Source runs: when each source last ran, how it ended and when it last succeeded
//! (`status`, `/readyz`, the staleness metric).

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, now_ms};

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

impl Store {
    pub async fn start_run(&self, source: &str) -> Result<()> {
        on_pool!(
            self,
            (
                "INSERT INTO source_runs (source, last_started_at, runs) VALUES (?, ?, 1)
                 ON CONFLICT (source) DO UPDATE SET last_started_at = excluded.last_started_at, runs = runs + 1",
                "INSERT INTO source_runs (source, last_started_at, runs) VALUES ($1, $2, 1)
                 ON CONFLICT (source) DO UPDATE SET last_started_at = excluded.last_started_at,
                     runs = source_runs.runs + 1"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(source)
                .bind(now_ms())
                .execute(ex)
                .await?
                .rows_affected()
        );
        Ok(())
    }

    pub async fn finish_run(&self, source: &str, error: Option<&str>) -> Result<()> {
        let now = now_ms();
        let outcome = if error.is_none() {
            "success"
        } else {
            "failure"
        };
        on_pool!(
            self,
            (
                "UPDATE source_runs SET last_finished_at = ?, last_outcome = ?, last_error = ?,
                        last_success_at = CASE WHEN ? IS NULL THEN ? ELSE last_success_at END
                 WHERE source = ?",
                "UPDATE source_runs SET last_finished_at = $1, last_outcome = $2, last_error = $3,
                        last_success_at = CASE WHEN $4::text IS NULL THEN $5 ELSE last_success_at END
                 WHERE source = $6"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(now)
                .bind(outcome)
                .bind(error)
                .bind(error)
                .bind(now)
                .bind(source)
                .execute(ex)
                .await?
                .rows_affected()
        );
        Ok(())
    }

    pub async fn source_runs(&self) -> Result<Vec<SourceRun>> {
        let portable = "SELECT source, last_started_at, last_finished_at, last_outcome, last_error, last_success_at, runs
             FROM source_runs ORDER BY source";
        Ok(on_pool!(self, (portable, portable), |sql, ex| sqlx::query(
            sql
        )
        .fetch_all(ex)
        .await?
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
        .collect()))
    }
}
