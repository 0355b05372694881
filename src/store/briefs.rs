//! Briefs: which have been seen, each recorded with its `brief.created` event in one
//! transaction.

use std::borrow::Cow;
use std::collections::HashSet;

use super::packed::{Packed, Span, postgres_text, sqlite_text};
use super::{NewEvent, Result, Store, Tx, insert_events, now_ms};

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
        let written = insert_with_events(&mut tx, &[(brief, event)]).await?;
        tx.commit().await?;
        Ok(written[0])
    }

    /// [`Store::record_brief`] for many briefs, each with its event, in one transaction of
    /// three statements whatever their number (a backlog's briefs come in groups: see
    /// `sources::next_group`). Says, for each in order, whether its event was written.
    pub async fn record_briefs(&self, briefs: &[(BriefRecord<'_>, NewEvent)]) -> Result<Vec<bool>> {
        if briefs.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<(&BriefRecord<'_>, Option<&NewEvent>)> = briefs
            .iter()
            .map(|(brief, event)| (brief, Some(event)))
            .collect();
        let mut tx = self.write_tx().await?;
        let written = insert_with_events(&mut tx, &pairs).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Records briefs as seen, without events (`start_from = "now"`), in transactions of
    /// [`BATCH`] rows rather than one per brief.
    pub async fn record_briefs_seen(&self, briefs: &[BriefRecord<'_>]) -> Result<()> {
        let now = now_ms();
        for chunk in briefs.chunks(BATCH) {
            let chunk: Vec<&BriefRecord<'_>> = chunk.iter().collect();
            let mut tx = self.write_tx().await?;
            insert_briefs(&mut tx, &chunk, now).await?;
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

/// Inserts briefs, and the events (with their deliveries) of those that were new. Says,
/// for each in order, whether its event was written (without an event: whether the brief
/// was new).
async fn insert_with_events(
    tx: &mut Tx,
    briefs: &[(&BriefRecord<'_>, Option<&NewEvent>)],
) -> Result<Vec<bool>> {
    let records: Vec<&BriefRecord<'_>> = briefs.iter().map(|(brief, _)| *brief).collect();
    let inserted = insert_briefs(tx, &records, now_ms()).await?;
    let events: Vec<&NewEvent> = briefs
        .iter()
        .filter(|(brief, _)| inserted.contains(&brief.id))
        .filter_map(|(_, event)| *event)
        .collect();
    let written = insert_events(tx, &events).await?;
    let written: HashSet<&str> = events
        .iter()
        .zip(written)
        .filter(|(_, written)| *written)
        .map(|(event, _)| event.event.id.as_str())
        .collect();
    Ok(briefs
        .iter()
        .map(|(brief, event)| match event {
            Some(event) => written.contains(event.event.id.as_str()),
            None => inserted.contains(&brief.id),
        })
        .collect())
}

/// Inserts briefs (one statement whatever their number), leaving alone those recorded
/// already; the ids of those that were new.
async fn insert_briefs(
    tx: &mut Tx,
    briefs: &[&BriefRecord<'_>],
    seen_at: i64,
) -> Result<HashSet<String>> {
    /// One brief as a row of the array bound below; its JSON is in the blob.
    #[derive(serde::Serialize)]
    struct Row<'a> {
        id: &'a str,
        agent_id: Option<&'a str>,
        conversation_id: Option<&'a str>,
        created_at: Option<&'a str>,
        raw: Span,
    }
    let mut texts = Packed::default();
    let rows: Vec<Row<'_>> = briefs
        .iter()
        .map(|brief| Row {
            id: &brief.id,
            agent_id: brief.agent_id.as_deref(),
            conversation_id: brief.conversation_id.as_deref(),
            created_at: brief.created_at.as_deref(),
            raw: texts.push(&brief.raw),
        })
        .collect();
    let rows = serde_json::to_string(&rows).expect("rows of strings serialize");
    let inserted: Vec<String> = on_tx!(
        tx,
        (
            concat!(
                "INSERT INTO briefs (id, agent_id, conversation_id, created_at, raw, seen_at)
                 SELECT j.value ->> 'id', j.value ->> 'agent_id', j.value ->> 'conversation_id',
                        j.value ->> 'created_at', ",
                sqlite_text!("?3", "raw"),
                ", ?2
                 FROM json_each(?1) AS j WHERE true ORDER BY j.key
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            concat!(
                "INSERT INTO briefs (id, agent_id, conversation_id, created_at, raw, seen_at)
                 SELECT j.value ->> 'id', j.value ->> 'agent_id', j.value ->> 'conversation_id',
                        j.value ->> 'created_at', ",
                postgres_text!("$3", "raw"),
                ", $2
                 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS j (value, n) ORDER BY j.n
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            )
        ),
        |sql, ex| sqlx::query_scalar(sql)
            .bind(&rows)
            .bind(seen_at)
            .bind(texts.blob())
            .fetch_all(&mut *ex)
            .await?
    );
    Ok(inserted.into_iter().collect())
}
