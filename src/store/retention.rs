//! Pruning the outbox (`state.delivered_retention`): an event every delivery of which went
//! out, once older than the retention, is deleted with its deliveries and their attempts.
//! Dead and pending deliveries, and their events, are kept whatever their age. Items seen
//! (briefs, conversations, meetings) are never pruned: those rows are what keeps an item
//! from being announced twice.

use super::{Result, Store};

/// Events deleted per transaction: each write lock is short, so pollers and delivery
/// workers hardly wait for a large first prune.
const BATCH: i64 = 500;

impl Store {
    /// Deletes the events created before `before_ms` (ms since the epoch) whose every
    /// delivery was delivered, with those deliveries and their attempts, in batches.
    /// Returns how many events went.
    pub async fn prune_delivered(&self, before_ms: i64) -> Result<u64> {
        let mut pruned = 0;
        loop {
            let mut tx = self.write_tx().await?;
            // Chosen inside the write transaction: a delivery requeued meanwhile (by
            // `deliveries retry`) keeps its event.
            let ids: Vec<String> = on_tx!(
                &mut tx,
                (
                    "SELECT id FROM events e
                     WHERE created_at < ?
                       AND NOT EXISTS (SELECT 1 FROM deliveries d
                                       WHERE d.event_id = e.id AND d.status != 'delivered')
                     ORDER BY created_at LIMIT ?",
                    "SELECT id FROM events e
                     WHERE created_at < $1
                       AND NOT EXISTS (SELECT 1 FROM deliveries d
                                       WHERE d.event_id = e.id AND d.status != 'delivered')
                     ORDER BY created_at LIMIT $2"
                ),
                |sql, ex| sqlx::query_scalar(sql)
                    .bind(before_ms)
                    .bind(BATCH)
                    .fetch_all(ex)
                    .await?
            );
            if ids.is_empty() {
                tx.rollback().await?;
                return Ok(pruned);
            }
            let ids_json = serde_json::to_string(&ids).expect("strings serialize");
            for (sqlite, postgres) in [
                (
                    "DELETE FROM attempts WHERE delivery_id IN
                         (SELECT id FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?)))",
                    "DELETE FROM attempts WHERE delivery_id IN
                         (SELECT id FROM deliveries WHERE event_id IN
                             (SELECT value FROM jsonb_array_elements_text($1::text::jsonb) AS ids (value)))",
                ),
                (
                    "DELETE FROM deliveries WHERE event_id IN (SELECT value FROM json_each(?))",
                    "DELETE FROM deliveries WHERE event_id IN
                         (SELECT value FROM jsonb_array_elements_text($1::text::jsonb) AS ids (value))",
                ),
                (
                    "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))",
                    "DELETE FROM events WHERE id IN
                         (SELECT value FROM jsonb_array_elements_text($1::text::jsonb) AS ids (value))",
                ),
            ] {
                on_tx!(&mut tx, (sqlite, postgres), |sql, ex| sqlx::query(sql)
                    .bind(&ids_json)
                    .execute(ex)
                    .await?
                    .rows_affected());
            }
            tx.commit().await?;
            pruned += ids.len() as u64;
            if (ids.len() as i64) < BATCH {
                return Ok(pruned);
            }
            tokio::task::yield_now().await;
        }
    }
}
