//! Discovery briefs: list; fetch the detail only of ids never seen; record each with its
//! `brief.created` event.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::clairo::{BriefDetail, BriefSummary, ClairoError};
use crate::config::BriefsSync;
use crate::store::{BriefRecord, StoreError};
use clairo_connectors::EventType;
use tokio::sync::mpsc;

use super::{GROUP_MAX, PollError, PollReport, SourceContext, next_group};

pub const SOURCE: &str = "briefs";

/// How many ids of the last listing (newest first) are remembered as recorded.
const REMEMBERED: usize = 1_000;

pub async fn poll(context: &SourceContext, section: &BriefsSync) -> Result<PollReport, PollError> {
    let listing = context.client.briefs(Some(section.limit)).await?;
    context.report_skipped(SOURCE, &listing);
    let mut report = PollReport {
        listed: listing.items.len(),
        skipped: listing.skipped.len(),
        ..PollReport::default()
    };
    // An idle poll lists the briefs the last one did: those are known to be recorded
    // without asking the store, so its cost does not grow with the history (BENCHMARKS.md).
    // The store is still asked about every id not in the last listing.
    let to_check: Vec<String> = {
        let remembered = context
            .recorded_briefs
            .lock()
            .expect("recorded briefs lock");
        listing
            .items
            .iter()
            .filter(|brief| !remembered.contains(&brief.id))
            .map(|brief| brief.id.clone())
            .collect()
    };
    let unknown = if to_check.is_empty() {
        HashSet::new()
    } else {
        context.store.unknown_briefs(&to_check).await?
    };
    // A full list that overlaps what was seen before missed nothing; one made only of new
    // briefs may have left older new ones beyond its end.
    if listing.returned == section.limit as usize && unknown.len() == listing.items.len() {
        tracing::warn!(
            source = SOURCE,
            limit = section.limit,
            "The briefs list came back exactly `limit` long and all of it new, so older new briefs may be missing from it; raise sync.briefs.limit."
        );
    }
    let baseline = context.baseline_only(SOURCE).await?;
    // The list is newest first: record the oldest first, so receivers see leads in order.
    let mut new: Vec<&BriefSummary> = listing
        .items
        .iter()
        .filter(|brief| unknown.contains(&brief.id))
        .collect();
    new.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    if baseline {
        // Recording what exists: no detail calls, no events, one transaction per batch.
        report.new_items = new.len();
        let records: Vec<BriefRecord<'_>> =
            new.iter().map(|summary| record(summary, None)).collect();
        context.store.record_briefs_seen(&records).await?;
        context.mark_baseline_done(SOURCE).await?;
        remember(context, &listing.items, &HashSet::new());
        return Ok(report);
    }
    // Details are fetched one after another; what they bring is recorded in groups
    // meanwhile (one transaction per group, `next_group`). A fetch that fails stops the
    // poll after what was fetched before it is recorded; a write that fails stops the
    // fetching.
    let mut not_recorded = HashSet::new();
    let mut events = 0;
    let (sender, receiver) = mpsc::channel(GROUP_MAX);
    let fetch = async {
        for summary in new {
            report.new_items += 1;
            report.detail_calls += 1;
            let detail = match context.client.brief(&summary.id).await {
                Ok(detail) => detail,
                Err(ClairoError::NotFound { .. }) => {
                    tracing::warn!(source = SOURCE, id = %summary.id, "A listed brief was gone when its detail was fetched; skipped.");
                    not_recorded.insert(summary.id.as_str());
                    continue;
                }
                Err(error) => return Err(error),
            };
            let data = merge(summary, &detail);
            let agent_id = summary.agent_id.clone().or(detail.agent_id.clone());
            let event = context.event(
                EventType::BriefCreated,
                &summary.id,
                agent_id.as_deref(),
                data.clone(),
            );
            if sender
                .send((record(summary, Some(data)), event))
                .await
                .is_err()
            {
                break;
            }
        }
        drop(sender);
        Ok(())
    };
    let write = async {
        let mut receiver = receiver;
        while let Some(group) = next_group(&mut receiver).await {
            let written = context.store.record_briefs(&group).await?;
            for ((_, event), written) in group.iter().zip(written) {
                if written {
                    events += 1;
                    context.emitted(event);
                }
            }
        }
        Ok::<(), StoreError>(())
    };
    let (fetched, written) = tokio::join!(fetch, write);
    report.events += events;
    written?;
    fetched?;
    remember(context, &listing.items, &not_recorded);
    Ok(report)
}

/// After a poll that recorded every new brief it listed (but `not_recorded`), the
/// listing's newest [`REMEMBERED`] ids are all in the store. A poll that fails part-way
/// leaves the previous set, which is still true.
fn remember(context: &SourceContext, listed: &[BriefSummary], not_recorded: &HashSet<&str>) {
    let recorded = listed
        .iter()
        .take(REMEMBERED)
        .filter(|brief| !not_recorded.contains(brief.id.as_str()))
        .map(|brief| brief.id.clone())
        .collect();
    *context
        .recorded_briefs
        .lock()
        .expect("recorded briefs lock") = recorded;
}

/// The brief to store: the merged JSON when the detail was fetched, else the list item's
/// own text, borrowed as it is (recording a whole list as seen builds no JSON tree).
fn record(summary: &BriefSummary, merged: Option<Value>) -> BriefRecord<'_> {
    BriefRecord {
        id: summary.id.clone(),
        agent_id: summary.agent_id.clone(),
        conversation_id: summary.conversation_id.clone(),
        created_at: summary.created_at.clone(),
        raw: match merged {
            Some(merged) => Cow::Owned(merged.to_string()),
            None => Cow::Borrowed(summary.raw.get()),
        },
    }
}

/// The event's `data`: the list item and the detail merged, the detail winning where both
/// have a field (the docs' detail example lacks agentId, conversationId and createdAt).
pub fn merge(summary: &BriefSummary, detail: &BriefDetail) -> Value {
    // The list item's fields, read from its text (list items keep no JSON tree).
    let mut merged: Map<String, Value> =
        serde_json::from_str(summary.raw.get()).unwrap_or_default();
    if let Value::Object(detail) = &detail.raw {
        for (key, value) in detail {
            if !value.is_null() || !merged.contains_key(key) {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    for key in [
        "id",
        "agentId",
        "conversationId",
        "summary",
        "answers",
        "conversation",
        "createdAt",
    ] {
        merged.entry(key.to_owned()).or_insert(Value::Null);
    }
    Value::Object(merged)
}
