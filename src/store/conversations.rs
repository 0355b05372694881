//! Conversations: what is known of each (status, message count) to tell a change, each
//! change recorded with its `conversation.updated` event in one transaction.

use std::collections::HashMap;

use sqlx::Row;

use super::{NewEvent, Result, Store, insert_event};

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

impl Store {
    pub async fn conversation_states(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, ConversationState>> {
        let ids = serde_json::to_string(ids).expect("strings serialize");
        Ok(on_pool!(
            self,
            (
                "SELECT id, agent_id, status, message_count, updated_at, last_checked_at FROM conversations WHERE id IN (SELECT value FROM json_each(?))",
                "SELECT id, agent_id, status, message_count, updated_at, last_checked_at FROM conversations
                 WHERE id IN (SELECT value FROM jsonb_array_elements_text($1::text::jsonb) AS ids (value))"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(&ids)
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| {
                    let state = conversation_from_row!(row);
                    (state.id.clone(), state)
                })
                .collect()
        ))
    }

    /// ACTIVE conversations last checked before `checked_before` (ms), oldest first.
    pub async fn active_conversations_due(
        &self,
        checked_before: i64,
        agents: &[String],
    ) -> Result<Vec<ConversationState>> {
        let agents = serde_json::to_string(agents).expect("strings serialize");
        Ok(on_pool!(
            self,
            (
                "SELECT id, agent_id, status, message_count, updated_at, last_checked_at FROM conversations
                 WHERE status = 'ACTIVE' AND last_checked_at < ?
                   AND (json_array_length(?) = 0 OR agent_id IN (SELECT value FROM json_each(?)))
                 ORDER BY last_checked_at",
                "SELECT id, agent_id, status, message_count, updated_at, last_checked_at FROM conversations
                 WHERE status = 'ACTIVE' AND last_checked_at < $1
                   AND (jsonb_array_length($2::text::jsonb) = 0
                        OR agent_id IN (SELECT value FROM jsonb_array_elements_text($3::text::jsonb) AS ids (value)))
                 ORDER BY last_checked_at"
            ),
            |sql, ex| sqlx::query(sql)
                .bind(checked_before)
                .bind(&agents)
                .bind(&agents)
                .fetch_all(ex)
                .await?
                .into_iter()
                .map(|row| conversation_from_row!(row))
                .collect()
        ))
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
            None => on_tx!(
                &mut tx,
                (
                    "INSERT INTO conversations (id, agent_id, status, message_count, updated_at, last_checked_at, raw)
                     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    "INSERT INTO conversations (id, agent_id, status, message_count, updated_at, last_checked_at, raw)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING"
                ),
                |sql, ex| sqlx::query(sql)
                    .bind(&state.id)
                    .bind(&state.agent_id)
                    .bind(&state.status)
                    .bind(state.message_count)
                    .bind(&state.updated_at)
                    .bind(state.last_checked_at)
                    .bind(raw)
                    .execute(ex)
                    .await?
                    .rows_affected()
            ),
            Some(previous) => on_tx!(
                &mut tx,
                (
                    "UPDATE conversations SET agent_id = COALESCE(?, agent_id), status = ?, message_count = ?, updated_at = ?,
                            last_checked_at = ?, raw = COALESCE(?, raw)
                     WHERE id = ? AND message_count = ?",
                    "UPDATE conversations SET agent_id = COALESCE($1, agent_id), status = $2, message_count = $3, updated_at = $4,
                            last_checked_at = $5, raw = COALESCE($6, raw)
                     WHERE id = $7 AND message_count = $8"
                ),
                |sql, ex| sqlx::query(sql)
                    .bind(&state.agent_id)
                    .bind(&state.status)
                    .bind(state.message_count)
                    .bind(&state.updated_at)
                    .bind(state.last_checked_at)
                    .bind(raw)
                    .bind(&state.id)
                    .bind(previous)
                    .execute(ex)
                    .await?
                    .rows_affected()
            ),
        } == 1;
        let written = match event {
            Some(event) if changed => insert_event(&mut tx, event).await?,
            _ => false,
        };
        tx.commit().await?;
        Ok(written)
    }
}

/// A conversation from a row, on either backend.
macro_rules! conversation_from_row {
    ($row:expr) => {
        ConversationState {
            id: $row.get("id"),
            agent_id: $row.get("agent_id"),
            status: $row.get("status"),
            message_count: $row.get("message_count"),
            updated_at: $row.get("updated_at"),
            last_checked_at: $row.get("last_checked_at"),
        }
    };
}
use conversation_from_row;
