//! Conversations: list per configured agent (or all at once); decide what changed from
//! the list's own fields when it has them (`messageCount`, `updatedAt`); fetch details
//! only for new conversations, changed ones, and ACTIVE ones whose refresh interval is
//! due; emit `conversation.updated` carrying only the new messages.

use std::collections::HashSet;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clairo::{ClairoError, Conversation, ConversationSummary};
use crate::config::ConversationsSync;
use crate::store::{ConversationState, now_ms};
use clairo_connectors::EventType;

use super::{PollError, PollReport, SourceContext};

pub const SOURCE: &str = "conversations";

pub async fn poll(
    context: &SourceContext,
    section: &ConversationsSync,
) -> Result<PollReport, PollError> {
    let mut report = PollReport::default();
    let baseline = context.baseline_only(SOURCE).await?;
    // No agents configured: one unfiltered list covers them all.
    let filters: Vec<Option<&str>> = if section.agents.is_empty() {
        vec![None]
    } else {
        section
            .agents
            .iter()
            .map(|agent| Some(agent.as_str()))
            .collect()
    };
    let mut listed_ids = HashSet::new();
    let mut warned_full = false;
    for agent in filters {
        let listing = context
            .client
            .conversations(agent, Some(section.limit))
            .await?;
        context.report_skipped(SOURCE, &listing);
        report.skipped += listing.skipped.len();
        report.listed += listing.items.len();
        let ids: Vec<String> = listing.items.iter().map(|item| item.id.clone()).collect();
        let states = context.store.conversation_states(&ids).await?;
        // A full list that overlaps what was seen before missed nothing.
        if listing.returned == section.limit as usize && states.is_empty() && !warned_full {
            warned_full = true;
            tracing::warn!(
                source = SOURCE,
                agent = agent.unwrap_or("all"),
                limit = section.limit,
                "The conversations list came back exactly `limit` long, all of it new, so some conversations may be missing from it; raise sync.conversations.limit."
            );
        }
        let refresh_before = now_ms() - section.refresh_interval.as_millis() as i64;
        for item in &listing.items {
            if !listed_ids.insert(item.id.clone()) {
                continue;
            }
            let known = states.get(&item.id);
            if !needs_detail(item, known, refresh_before) {
                if let Some(known) = known
                    && item.status.is_some()
                    && item.status != known.status
                {
                    // A status change alone (ACTIVE → CLOSED) is recorded quietly.
                    let mut state = known.clone();
                    state.status = item.status.clone();
                    state.updated_at = item.updated_at.clone().or(state.updated_at);
                    context
                        .store
                        .record_conversation(&state, None, Some(known.message_count), None)
                        .await?;
                }
                continue;
            }
            if known.is_none() {
                report.new_items += 1;
                if baseline && let Some(count) = item.message_count {
                    // Recording what exists needs no detail when the list gives the count.
                    let state = ConversationState {
                        id: item.id.clone(),
                        agent_id: item.agent_id.clone(),
                        status: item.status.clone(),
                        message_count: count as i64,
                        updated_at: item.updated_at.clone(),
                        last_checked_at: now_ms(),
                    };
                    context
                        .store
                        .record_conversation(&state, Some(item.raw.get()), None, None)
                        .await?;
                    continue;
                }
            }
            refresh(
                context,
                &item.id,
                item.updated_at.clone(),
                known,
                baseline,
                &mut report,
            )
            .await?;
        }
    }
    // ACTIVE conversations that fell out of the list window are re-read by id when due.
    let due_before = now_ms() - section.refresh_interval.as_millis() as i64;
    for state in context
        .store
        .active_conversations_due(due_before, &section.agents)
        .await?
    {
        if listed_ids.contains(&state.id) {
            continue;
        }
        refresh(
            context,
            &state.id,
            state.updated_at.clone(),
            Some(&state),
            baseline,
            &mut report,
        )
        .await?;
    }
    if baseline {
        context.mark_baseline_done(SOURCE).await?;
    }
    Ok(report)
}

/// Whether the list item says (or cannot rule out) that the conversation changed.
fn needs_detail(
    item: &ConversationSummary,
    known: Option<&ConversationState>,
    refresh_before: i64,
) -> bool {
    let Some(known) = known else { return true };
    if let Some(count) = item.message_count {
        return count as i64 != known.message_count;
    }
    if let Some(updated_at) = &item.updated_at {
        return Some(updated_at) != known.updated_at.as_ref();
    }
    // The list cannot tell: ACTIVE ones are re-read at their refresh interval.
    item.status.as_deref().or(known.status.as_deref()) == Some("ACTIVE")
        && known.last_checked_at < refresh_before
}

async fn refresh(
    context: &SourceContext,
    id: &str,
    updated_at: Option<String>,
    known: Option<&ConversationState>,
    baseline: bool,
    report: &mut PollReport,
) -> Result<(), PollError> {
    report.detail_calls += 1;
    let conversation = match context.client.conversation(id).await {
        Ok(conversation) => conversation,
        Err(ClairoError::NotFound { .. }) => {
            tracing::warn!(
                source = SOURCE,
                id,
                "A conversation was gone when its detail was fetched; it is no longer refreshed."
            );
            if let Some(known) = known {
                let mut state = known.clone();
                state.status = Some("GONE".to_owned());
                state.last_checked_at = now_ms();
                context
                    .store
                    .record_conversation(&state, None, Some(known.message_count), None)
                    .await?;
            }
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let previous = known.map_or(0, |state| state.message_count);
    let total = conversation.messages.len() as i64;
    let state = ConversationState {
        id: conversation.id.clone(),
        agent_id: conversation
            .agent_id
            .clone()
            .or_else(|| known.and_then(|k| k.agent_id.clone())),
        status: conversation.status.clone(),
        message_count: total,
        updated_at,
        last_checked_at: now_ms(),
    };
    if total < previous {
        tracing::warn!(
            source = SOURCE,
            id,
            before = previous,
            now = total,
            "A conversation has fewer messages than before; recorded as it is now, no event."
        );
    }
    let event = (!baseline && total > previous).then(|| {
        let data = event_data(&conversation, previous as usize);
        context.event(
            EventType::ConversationUpdated,
            &event_key(&conversation),
            state.agent_id.as_deref(),
            data,
        )
    });
    let written = context
        .store
        .record_conversation(
            &state,
            Some(&conversation.raw.to_string()),
            known.map(|k| k.message_count),
            event.as_ref(),
        )
        .await?;
    // Counted only when written: an event whose id is recorded already is no new event.
    if written && let Some(event) = &event {
        report.events += 1;
        context.emitted(event);
    }
    Ok(())
}

/// What a `conversation.updated` event's id is derived from: the conversation id, the
/// message count and a digest of every message as sent. New content always makes a new
/// id, even at a count seen before (history that went back, A,B → A → A,C, brings C under
/// a new id rather than B's), while the same state polled again makes the same id.
pub(crate) fn event_key(conversation: &Conversation) -> String {
    let mut digest = Sha256::new();
    for message in &conversation.messages {
        // `Value`'s text is canonical (object keys sorted), so the same message always
        // hashes the same; the newline keeps message boundaries apart.
        digest.update(message.raw.to_string().as_bytes());
        digest.update(b"\n");
    }
    let hex: String = digest.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{}:{}:{hex}", conversation.id, conversation.messages.len())
}

/// `{"conversation": {id, agentId, status, messages}, "newMessages": [...]}`.
pub(crate) fn event_data(conversation: &Conversation, previous: usize) -> Value {
    let messages: Vec<Value> = conversation
        .messages
        .iter()
        .map(|message| message.raw.clone())
        .collect();
    let new_messages = messages
        .get(previous..)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    json!({
        "conversation": {
            "id": conversation.id,
            "agentId": conversation.agent_id,
            "status": conversation.status,
            "messages": messages,
        },
        "newMessages": new_messages,
    })
}
