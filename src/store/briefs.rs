//! Briefs: which have been seen, each recorded with its `brief.created` event in one
//! transaction.

use std::borrow::Cow;
use std::collections::HashSet;

use super::{NewEvent, Result, Store, Tx, insert_event, now_ms};

/// Rows written per transaction when recording many items at once.
const BATCH: usize = 500;

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

impl Store {
    /// Which of `ids` are not recorded yet. An idle poll returns no row, however long
    /// the history: the cost is one index lookup per listed id.
    pub async fn unknown_briefs(&self, ids: &[String]) -> Result<HashSet<String>> {
        let ids = serde_json::to_string(ids).expect("strings serialize");
        let rows: Vec<String> = on_pool!(
            self,
            (
                "SELECT value FROM json_each(?) WHERE value NOT IN (SELECT id FROM briefs)",
                "SELECT value FROM jsonb_array_elements_text($1::text::jsonb) AS ids (value)
                 WHERE value NOT IN (SELECT id FROM briefs)"
            ),
            |sql, ex| sqlx::query_scalar(sql).bind(&ids).fetch_all(ex).await?
        );
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
        let portable = "SELECT COUNT(*) FROM briefs";
        Ok(on_pool!(self, (portable, portable), |sql, ex| {
            sqlx::query_scalar(sql).fetch_one(ex).await?
        }))
    }
}

/// Inserts a brief unless it is recorded already; whether it was new.
async fn insert_brief(tx: &mut Tx, brief: &BriefRecord<'_>, seen_at: i64) -> Result<bool> {
    Ok(on_tx!(
        tx,
        (
            "INSERT INTO briefs (id, agent_id, conversation_id, created_at, raw, seen_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            "INSERT INTO briefs (id, agent_id, conversation_id, created_at, raw, seen_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING"
        ),
        |sql, ex| sqlx::query(sql)
            .bind(&brief.id)
            .bind(&brief.agent_id)
            .bind(&brief.conversation_id)
            .bind(&brief.created_at)
            .bind(brief.raw.as_ref())
            .bind(seen_at)
            .execute(ex)
            .await?
            .rows_affected()
    ) == 1)
}
