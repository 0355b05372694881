//! The state database through its public API, on both backends: a real SQLite file and a
//! real PostgreSQL (a throwaway cluster, clairo-pgtest). Each test written with
//! [`store_tests!`] runs as `<name>::on_sqlite` and `<name>::on_postgres`.

use clairo_connectors::{Event, EventType, event_id};
use std::collections::HashSet;

use clairo_sync::store::{
    AttemptRow, BriefRecord, Claim, FailedRoute, Finish, NewEvent, NextState, RecordedItem,
    ReplayCount, Store, StoredEvent, now_ms,
};

use crate::pg::{PASSWORD, PgCluster};

/// Where a test's store lives; dropped (file removed, cluster stopped) with the test.
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(PgCluster),
}

impl Backend {
    pub fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn postgres() -> Self {
        Self::Postgres(PgCluster::start())
    }

    /// Opens (the first time: creates and migrates) the store, as the daemon does.
    pub async fn open(&self) -> Store {
        match self {
            Self::Sqlite(dir) => Store::open(&dir.path().join("state.db")).await.unwrap(),
            Self::Postgres(cluster) => Store::connect(&cluster.url(), Some(PASSWORD))
                .await
                .unwrap(),
        }
    }
}

/// Each test body once per backend; `$new` names a `fn() -> Backend` for the body to make
/// its stores with (a body that needs two fresh stores calls it twice).
macro_rules! store_tests {
    ($(async fn $name:ident($new:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn on_sqlite() {
                let $new: fn() -> Backend = Backend::sqlite;
                $body
            }

            #[tokio::test]
            async fn on_postgres() {
                let $new: fn() -> Backend = Backend::postgres;
                $body
            }
        }
    )*};
}

fn brief_event(id: &str) -> NewEvent {
    NewEvent {
        event: Event {
            id: event_id(EventType::BriefCreated, id),
            kind: EventType::BriefCreated,
            timestamp: chrono::Utc::now(),
            data: serde_json::json!({"id": id}),
        },
        agent_id: Some("cm1def".into()),
        connectors: vec!["hook".into(), "archive".into()],
        failed: Vec::new(),
    }
}

fn brief(id: &str) -> BriefRecord<'static> {
    BriefRecord {
        id: id.into(),
        agent_id: Some("cm1def".into()),
        conversation_id: None,
        created_at: None,
        raw: serde_json::json!({"id": id}).to_string().into(),
    }
}

#[tokio::test]
async fn migrations_apply_to_a_fresh_file_and_rerun_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.expect("fresh file");
    store.close().await;
    let store = Store::open(&path)
        .await
        .expect("re-open runs migrations again without error");
    assert_eq!(store.brief_count().await.unwrap(), 0);
    assert!(path.exists());
}

store_tests! {
    async fn rows_survive_closing_and_reopening_the_store(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    assert!(
        store
            .record_brief(&brief("b1"), Some(&brief_event("b1")))
            .await
            .unwrap()
    );
    store.close().await;
    let store = backend.open().await;
    assert_eq!(store.brief_count().await.unwrap(), 1);
    assert_eq!(store.event_count().await.unwrap(), 1);
    let unknown = store
        .unknown_briefs(&["b1".into(), "b2".into()])
        .await
        .unwrap();
    assert!(!unknown.contains("b1") && unknown.contains("b2"));
    let queue = store.queue_stats().await.unwrap();
    assert_eq!(
        queue.iter().map(|q| q.pending).sum::<i64>(),
        2,
        "one delivery per routed connector"
    );
    }
}

store_tests! {
    async fn a_brief_recorded_twice_makes_one_event_and_one_delivery_per_connector(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    assert!(
        store
            .record_brief(&brief("b1"), Some(&brief_event("b1")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_brief(&brief("b1"), Some(&brief_event("b1")))
            .await
            .unwrap()
    );
    assert_eq!(store.event_count().await.unwrap(), 1);
    let rows = store.list_deliveries(&Default::default()).await.unwrap();
    assert_eq!(rows.len(), 2);
    }
}

store_tests! {
    async fn a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    store
        .record_brief(&brief("b1"), Some(&brief_event("b1")))
        .await
        .unwrap();
    let now = now_ms();
    let first = store
        .claim_due("hook", "a", now, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        store
            .claim_due("hook", "b", now, now + 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // After the lease (a crashed owner), another worker may take it.
    let later = now + 61_000;
    let again = store
        .claim_due("hook", "b", later, later + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.id, first[0].event.id);
    }
}

fn attempt_row(outcome: &str, reason: &str) -> AttemptRow {
    AttemptRow {
        attempt: 1,
        started_at: now_ms(),
        duration_ms: 5,
        status_code: Some(503),
        outcome: outcome.into(),
        reason: Some(reason.into()),
        response: None,
    }
}

// Worker A's lease runs out mid-attempt and worker B claims the delivery: whatever A
// learns afterwards is stale and must not overwrite B's record. Run for two owners and
// for one owner claiming twice (two workers of one process).
store_tests! {
    async fn a_worker_whose_lease_ran_out_cannot_overwrite_the_newer_claims_outcome_or_checkpoint(new_backend) {
    for (owner_a, owner_b) in [("a", "b"), ("same", "same")] {
        let backend = new_backend();
        let store = backend.open().await;
        store
            .record_brief(&brief("b1"), Some(&brief_event("b1")))
            .await
            .unwrap();
        let now = now_ms();
        let a = store
            .claim_due("hook", owner_a, now, now + 1_000, 10)
            .await
            .unwrap()
            .remove(0);
        let later = now + 2_000;
        let b = store
            .claim_due("hook", owner_b, later, later + 60_000, 10)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(a.id, b.id);

        // B saves progress, then A (stale) tries to save its own and to finish.
        store
            .save_checkpoint(&b.lease, &serde_json::json!({"contact": "from-b"}))
            .await
            .unwrap();
        let stale_checkpoint = store
            .save_checkpoint(&a.lease, &serde_json::json!({"contact": "from-a"}))
            .await;
        assert!(
            stale_checkpoint.as_ref().is_err_and(|e| e.is_lease_lost()),
            "{owner_a}/{owner_b}: {stale_checkpoint:?}"
        );
        let stale_finish = store
            .finish_attempt(&a.lease, &attempt_row("dead", "from A"), &NextState::Dead)
            .await;
        let error = stale_finish.expect_err("A no longer holds the lease");
        assert!(error.is_lease_lost(), "{error}");
        assert!(
            error.to_string().contains(&format!(
                "lease on delivery {} was lost to another worker; its outcome was not recorded",
                a.id
            )),
            "{error}"
        );
        let row = &store.list_deliveries(&Default::default()).await.unwrap();
        let row = row.iter().find(|row| row.id == a.id).unwrap();
        assert_eq!(row.status, "pending", "A's outcome did not land");
        assert_eq!(row.attempts, 0);
        assert!(row.last_attempt.is_none(), "no attempt recorded for A");

        // B's own outcome is recorded, with B's checkpoint kept for the retry.
        let retry_at = later + 5_000;
        store
            .finish_attempt(
                &b.lease,
                &attempt_row("retry", "from B"),
                &NextState::Retry { at_ms: retry_at },
            )
            .await
            .unwrap();
        let row = &store.list_deliveries(&Default::default()).await.unwrap();
        let row = row.iter().find(|row| row.id == b.id).unwrap();
        assert_eq!(row.attempts, 1);
        assert_eq!(row.last_error.as_deref(), Some("from B"));
        let next = store
            .claim_due("hook", "c", retry_at, retry_at + 60_000, 10)
            .await
            .unwrap();
        assert_eq!(
            next[0].checkpoint,
            Some(serde_json::json!({"contact": "from-b"})),
            "{owner_a}/{owner_b}: B's checkpoint, not A's"
        );
        // And B, its own lease ended by its finish, cannot write again.
        assert!(
            store
                .save_checkpoint(&b.lease, &serde_json::json!({"late": true}))
                .await
                .is_err_and(|e| e.is_lease_lost())
        );
    }
    }
}

store_tests! {
    async fn a_dead_delivery_keeps_its_attempts_and_can_be_requeued(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    store
        .record_brief(&brief("b1"), Some(&brief_event("b1")))
        .await
        .unwrap();
    let now = now_ms();
    let claimed = store
        .claim_due("hook", "a", now, now + 60_000, 10)
        .await
        .unwrap();
    let attempt = AttemptRow {
        attempt: 1,
        started_at: now,
        duration_ms: 12,
        status_code: Some(400),
        outcome: "dead".into(),
        reason: Some("400 Bad Request".into()),
        response: Some("{\"error\":\"bad\"}".into()),
    };
    store
        .finish_attempt(&claimed[0].lease, &attempt, &NextState::Dead)
        .await
        .unwrap();
    let dead = store
        .list_deliveries(&clairo_sync::store::DeliveryFilter {
            dead_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].last_attempt.as_ref().unwrap().status_code,
        Some(400)
    );
    assert_eq!(store.retry_deliveries(&[], true).await.unwrap(), 1);
    let again = store
        .claim_due("hook", "a", now_ms(), now_ms() + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0, "attempts reset");
    assert_eq!(again[0].event.id, claimed[0].event.id, "event id kept");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_opening_a_new_file_at_once_take_turns_migrating_it() {
    // The daemon's first start and an operator's `status` can race to create the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move {
                Store::open(&path)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for open in opens {
        assert_eq!(open.await.unwrap(), Ok(()));
    }
}

/// Claims `connector`'s due deliveries and finishes each with `next`.
async fn finish_all(store: &Store, connector: &str, next: &NextState) {
    let now = now_ms();
    for delivery in store
        .claim_due(connector, "test", now, now + 60_000, 100)
        .await
        .unwrap()
    {
        let attempt = AttemptRow {
            attempt: 1,
            started_at: now,
            duration_ms: 1,
            status_code: Some(200),
            outcome: "test".into(),
            reason: None,
            response: None,
        };
        store
            .finish_attempt(&delivery.lease, &attempt, next)
            .await
            .unwrap();
    }
}

store_tests! {
    async fn only_events_delivered_everywhere_and_older_than_the_cutoff_are_pruned(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    // Each brief's event goes to "hook" and "archive".
    for id in ["done", "half-dead", "pending"] {
        store
            .record_brief(&brief(id), Some(&brief_event(id)))
            .await
            .unwrap();
    }
    finish_all(&store, "archive", &NextState::Delivered).await;
    // "done": delivered to both; "half-dead": dead at the hook; "pending": never sent there.
    let now = now_ms();
    for delivery in store
        .claim_due("hook", "test", now, now + 60_000, 100)
        .await
        .unwrap()
    {
        let next = match delivery.event.data["id"].as_str() {
            Some("done") => NextState::Delivered,
            Some("half-dead") => NextState::Dead,
            _ => NextState::Retry {
                at_ms: now + 3_600_000,
            },
        };
        let attempt = AttemptRow {
            attempt: 1,
            started_at: now,
            duration_ms: 1,
            status_code: None,
            outcome: "test".into(),
            reason: None,
            response: None,
        };
        store
            .finish_attempt(&delivery.lease, &attempt, &next)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .record_brief(&brief("recent"), Some(&brief_event("recent")))
        .await
        .unwrap();
    finish_all(&store, "archive", &NextState::Delivered).await;
    finish_all(&store, "hook", &NextState::Delivered).await;

    assert_eq!(store.prune_delivered(cutoff).await.unwrap(), 1);
    assert_eq!(
        store.prune_delivered(cutoff).await.unwrap(),
        0,
        "idempotent"
    );

    let left = store
        .list_deliveries(&clairo_sync::store::DeliveryFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events: Vec<String> = left.iter().map(|d| d.event_id.clone()).collect();
    events.sort();
    events.dedup();
    let expected: Vec<String> = {
        let mut ids: Vec<String> = ["half-dead", "pending", "recent"]
            .iter()
            .map(|id| event_id(EventType::BriefCreated, id))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(events, expected, "the delivered-everywhere old event went");
    assert_eq!(left.len(), 6, "the other events keep both deliveries");
    assert_eq!(store.event_count().await.unwrap(), 3);
    // The briefs themselves stay recorded: none of them is new again.
    let unknown = store
        .unknown_briefs(&["done".into(), "half-dead".into(), "recent".into()])
        .await
        .unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_starting_at_once_on_a_new_postgres_database_take_turns_migrating_it() {
    // Two hosts' daemons started together against one empty database.
    let cluster = PgCluster::start();
    let url = cluster.url();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                Store::connect(&url, Some(PASSWORD))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for open in opens {
        assert_eq!(open.await.unwrap(), Ok(()));
    }
}

#[tokio::test]
async fn a_wrong_postgres_password_is_an_open_error_that_does_not_show_it() {
    let cluster = PgCluster::start();
    let error = Store::connect(&cluster.url(), Some("not-the-password-9c1"))
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(!text.contains("not-the-password-9c1"), "{text}");
    assert!(text.contains("127.0.0.1"), "names the server: {text}");
}

fn deliveries_of(
    rows: &[clairo_sync::store::DeliveryRow],
    connector: &str,
) -> Vec<(String, String)> {
    rows.iter()
        .filter(|row| row.connector == connector)
        .map(|row| (row.event_id.clone(), row.status.clone()))
        .collect()
}

async fn all_deliveries(store: &Store) -> Vec<clairo_sync::store::DeliveryRow> {
    store
        .list_deliveries(&clairo_sync::store::DeliveryFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

store_tests! {
    async fn a_route_filter_that_failed_writes_a_dead_delivery_with_its_reason(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    let reason = "route filter failed: routes[1].when: `data.lead.score > 3`: no field score; fix the filter, then `clairo-sync deliveries retry --all-dead`";
    let mut event = brief_event("b1");
    event.connectors = vec!["hook".into()];
    event.failed = vec![FailedRoute {
        connector: "archive".into(),
        reason: reason.into(),
    }];
    assert!(store.record_brief(&brief("b1"), Some(&event)).await.unwrap());

    let dead = store
        .list_deliveries(&clairo_sync::store::DeliveryFilter {
            dead_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].connector, "archive");
    assert_eq!(dead[0].event_id, event.event.id);
    assert_eq!(dead[0].last_error.as_deref(), Some(reason));
    assert_eq!(dead[0].attempts, 0, "never attempted");
    assert!(dead[0].last_attempt.is_none());
    let now = now_ms();
    assert!(
        store.claim_due("archive", "a", now, now + 60_000, 10).await.unwrap().is_empty(),
        "a dead delivery is not claimed"
    );
    assert_eq!(store.claim_due("hook", "a", now, now + 60_000, 10).await.unwrap().len(), 1);
    let stats = store.queue_stats().await.unwrap();
    let archive = stats.iter().find(|q| q.connector == "archive").unwrap();
    assert_eq!((archive.pending, archive.dead), (0, 1));

    // The same event written again (a repeated poll) adds nothing.
    assert!(!store.record_brief(&brief("b1"), Some(&event)).await.unwrap());
    assert_eq!(all_deliveries(&store).await.len(), 2);

    // After the fix, `deliveries retry --all-dead` sends it.
    assert_eq!(store.retry_deliveries(&[], true).await.unwrap(), 1);
    let retried = store
        .claim_due("archive", "a", now_ms(), now_ms() + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].event.id, event.event.id);
    }
}

store_tests! {
    async fn a_replay_queued_twice_makes_one_pending_delivery_per_connector(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    for id in ["b1", "b2"] {
        store.record_brief(&brief(id), Some(&brief_event(id))).await.unwrap();
    }
    // b1 and b2 delivered to the hook; "archive" still has both pending.
    finish_all(&store, "hook", &NextState::Delivered).await;
    let mut events = Vec::new();
    store.each_event(|stored| events.push(stored)).await.unwrap();
    assert_eq!(events.len(), 2);

    // A dry run counts and writes nothing.
    let counts = store.queue_replay("hook", &events, true).await.unwrap();
    assert_eq!(
        counts["brief.created"],
        ReplayCount { queued: 2, rebuilt: 0, already_pending: 0 }
    );
    assert_eq!(store.pending_count("hook").await.unwrap(), 0, "dry run wrote nothing");

    let counts = store.queue_replay("hook", &events, false).await.unwrap();
    assert_eq!(
        counts["brief.created"],
        ReplayCount { queued: 2, rebuilt: 0, already_pending: 0 }
    );
    let counts = store.queue_replay("hook", &events, false).await.unwrap();
    assert_eq!(
        counts["brief.created"],
        ReplayCount { queued: 0, rebuilt: 0, already_pending: 2 },
        "the second replay leaves the pending ones alone"
    );
    assert_eq!(store.pending_count("hook").await.unwrap(), 2);
    let rows = all_deliveries(&store).await;
    let hook = deliveries_of(&rows, "hook");
    assert_eq!(hook.len(), 2, "one delivery per event, not a second one: {hook:?}");
    assert!(hook.iter().all(|(_, status)| status == "pending"), "{hook:?}");
    assert!(
        rows.iter().filter(|row| row.connector == "hook").all(|row| row.attempts == 0 && row.delivered_at.is_none()),
        "attempts reset, delivered_at cleared"
    );

    // Already pending for "archive": left as they are. A new connector gets one each.
    let counts = store.queue_replay("archive", &events, false).await.unwrap();
    assert_eq!(counts["brief.created"].already_pending, 2);
    for _ in 0..2 {
        store.queue_replay("new", &events, false).await.unwrap();
    }
    assert_eq!(store.pending_count("archive").await.unwrap(), 2);
    assert_eq!(store.pending_count("new").await.unwrap(), 2);
    assert_eq!(all_deliveries(&store).await.len(), 6);
    assert_eq!(store.event_count().await.unwrap(), 2, "the events are the same ones");

    // A dead delivery is queued again too.
    finish_all(&store, "new", &NextState::Dead).await;
    let counts = store.queue_replay("new", &events, false).await.unwrap();
    assert_eq!(counts["brief.created"].queued, 2);
    assert_eq!(store.pending_count("new").await.unwrap(), 2);
    }
}

store_tests! {
    async fn a_replayed_event_missing_from_the_outbox_is_recorded_with_its_id(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    store.record_brief(&brief("kept"), Some(&brief_event("kept"))).await.unwrap();
    let kept = brief_event("kept");
    let pruned = brief_event("pruned");
    let events: Vec<StoredEvent> = [&kept, &pruned]
        .iter()
        .map(|new| StoredEvent { event: new.event.clone(), agent_id: new.agent_id.clone() })
        .collect();
    let ids = vec![kept.event.id.clone(), pruned.event.id.clone()];
    assert_eq!(
        store.stored_event_ids(&ids).await.unwrap(),
        HashSet::from([kept.event.id.clone()])
    );

    let dry = store.queue_replay("hook", &events, true).await.unwrap();
    assert_eq!(dry["brief.created"], ReplayCount { queued: 1, rebuilt: 1, already_pending: 1 });
    assert_eq!(store.event_count().await.unwrap(), 1, "a dry run records no event");

    let done = store.queue_replay("hook", &events, false).await.unwrap();
    assert_eq!(done["brief.created"], ReplayCount { queued: 1, rebuilt: 1, already_pending: 1 });
    assert_eq!(
        store.stored_event_ids(&ids).await.unwrap(),
        HashSet::from_iter(ids.iter().cloned())
    );
    let now = now_ms();
    let claimed = store.claim_due("hook", "a", now, now + 60_000, 10).await.unwrap();
    let claimed_ids: HashSet<String> = claimed.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(claimed_ids, HashSet::from_iter(ids.iter().cloned()));
    let rebuilt = claimed.iter().find(|d| d.event.id == pruned.event.id).unwrap();
    assert_eq!(rebuilt.event.data, pruned.event.data, "the envelope as it was made");
    }
}

fn replay_event(
    index: usize,
    kind: EventType,
    timestamp: chrono::DateTime<chrono::Utc>,
) -> StoredEvent {
    // Mixed case and punctuation first, so an order that is not bytewise (a locale's
    // collation, where `_` is ignored and `a` < `B`) shows.
    let case = ["a", "B", "c", "D", "_"][index % 5];
    StoredEvent {
        event: Event {
            id: format!("evt_{case}{index:04}"),
            kind,
            timestamp,
            data: serde_json::json!({"n": index}),
        },
        agent_id: Some(format!("agent-{}", index % 3)),
    }
}

store_tests! {
    async fn stored_events_are_read_oldest_first_across_pages_and_by_type_and_time(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    // More than one page (500) of events, many written in the same millisecond (one
    // replay transaction), so the pages' boundary falls between equal times.
    // Whole seconds: the envelope keeps milliseconds.
    let start =
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 30 * 86_400, 0).unwrap();
    let written: Vec<StoredEvent> = (0..1_203)
        .map(|index| {
            let kind = if index % 4 == 0 { EventType::ConversationUpdated } else { EventType::BriefCreated };
            replay_event(index, kind, start + chrono::Duration::hours(index as i64))
        })
        .collect();
    // Queued in bytewise id order, so each transaction's ids (one `created_at` each) come
    // after the previous one's, whether or not the clock moved between them.
    let mut written = written;
    written.sort_by(|a, b| a.event.id.cmp(&b.event.id));
    store.queue_replay("hook", &written, false).await.unwrap();

    let mut read = Vec::new();
    store.each_event(|stored| read.push(stored)).await.unwrap();
    let read_ids: Vec<&str> = read.iter().map(|s| s.event.id.as_str()).collect();
    let mut expected: Vec<&str> = written.iter().map(|s| s.event.id.as_str()).collect();
    expected.sort();
    assert_eq!(read_ids.len(), written.len(), "every event once");
    assert_eq!(read_ids, expected, "oldest first, then by id bytewise");
    for (stored, original) in read.iter().zip(&written) {
        assert_eq!(stored.event.kind, original.event.kind);
        assert_eq!(stored.event.timestamp, original.event.timestamp);
        assert_eq!(stored.agent_id, original.agent_id);
    }

    // The replay command's selection: a type and a time window over what was read.
    let since = start + chrono::Duration::hours(100);
    let until = start + chrono::Duration::hours(200);
    let mut chosen: Vec<usize> = read
        .iter()
        .filter(|s| s.event.kind == EventType::ConversationUpdated)
        .filter(|s| s.event.timestamp >= since && s.event.timestamp < until)
        .map(|s| s.event.data["n"].as_u64().unwrap() as usize)
        .collect();
    chosen.sort_unstable();
    assert_eq!(chosen, (100..200).step_by(4).collect::<Vec<_>>());

    // The newest first (`check`'s preview).
    let recent = store.recent_events(3).await.unwrap();
    let recent_ids: Vec<&str> = recent.iter().map(|s| s.event.id.as_str()).collect();
    let newest: Vec<&str> = expected.iter().rev().take(3).copied().collect();
    assert_eq!(recent_ids, newest);

    // An empty outbox calls nothing.
    let empty = new_backend();
    let empty = empty.open().await;
    let mut calls = 0;
    empty.each_event(|_| calls += 1).await.unwrap();
    assert_eq!(calls, 0);
    assert!(empty.recent_events(10).await.unwrap().is_empty());
    }
}

store_tests! {
    async fn the_announced_items_are_those_after_the_baseline_and_the_done_meetings(new_backend) {
    use clairo_sync::store::meetings::{Claim, MeetingClaim, MeetingResult};

    let backend = new_backend();
    let store = backend.open().await;
    // `start_from = "now"`: the first poll records briefs without events.
    store.record_briefs_seen(&[brief("old")]).await.unwrap();
    store.set_meta("baseline_done.briefs", &now_ms().to_string()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    for id in ["new-2", "new-1"] {
        store.record_brief(&brief(id), Some(&brief_event(id))).await.unwrap();
    }
    // One recording answered, one still uploading.
    for (sha256, done) in [("bb", true), ("aa", false)] {
        let claim = MeetingClaim {
            sha256: sha256.into(),
            file_name: format!("{sha256}.m4a"),
            source_path: format!("/srv/drop/{sha256}.m4a"),
            agent_id: "cm1def".into(),
            title: "Weekly".into(),
            size: 42,
        };
        assert_eq!(
            store.claim_meeting(&claim, false).await.unwrap(),
            Claim::Upload { interrupted: false }
        );
        if done {
            let result = MeetingResult {
                meeting_id: format!("mtg-{sha256}"),
                title: "Weekly".into(),
                transcript: Some("hello".into()),
                summary: None,
                duration_sec: Some(61.5),
                uploaded_as: format!("{sha256}.m4a"),
                raw: serde_json::json!({"id": format!("mtg-{sha256}")}),
            };
            assert!(store.record_meeting(sha256, &result, None).await.unwrap());
        }
    }

    let done = store.done_meetings().await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].sha256, "bb");
    assert_eq!(done[0].meeting_id.as_deref(), Some("mtg-bb"));
    assert_eq!(done[0].duration_sec, Some(61.5));

    let items = store.announced_items().await.unwrap();
    let briefs: Vec<&str> = items
        .iter()
        .filter_map(|item| match item {
            RecordedItem::Brief { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(briefs.len(), 2, "the baseline's brief had no event: {briefs:?}");
    assert!(briefs.contains(&"new-1") && briefs.contains(&"new-2"), "{briefs:?}");
    let meetings: Vec<&str> = items
        .iter()
        .filter_map(|item| match item {
            RecordedItem::Meeting(row) => Some(row.sha256.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(meetings, ["bb"]);
    }
}

fn brief_event_to(id: &str, connectors: &[&str], failed: &[&str]) -> NewEvent {
    NewEvent {
        connectors: connectors.iter().map(|c| (*c).into()).collect(),
        failed: failed
            .iter()
            .map(|c| FailedRoute {
                connector: (*c).into(),
                reason: format!("route filter failed: {c}"),
            })
            .collect(),
        ..brief_event(id)
    }
}

fn delivered_row(attempt: i64) -> AttemptRow {
    AttemptRow {
        attempt,
        started_at: now_ms(),
        duration_ms: 3,
        status_code: Some(200),
        outcome: "delivered".into(),
        reason: None,
        response: None,
    }
}

// A backlog's briefs are recorded in groups: each new brief gets its event and one
// delivery per routed connector, in the order given; a brief already recorded gets none.
store_tests! {
    async fn briefs_recorded_together_each_get_their_event_in_order_and_a_known_one_gets_none(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    assert!(store.record_brief(&brief("b2"), Some(&brief_event_to("b2", &["hook"], &[]))).await.unwrap());
    let group = vec![
        (brief("b3"), brief_event_to("b3", &["hook"], &["archive"])),
        (brief("b2"), brief_event_to("b2", &["hook"], &[])),
        (brief("b1"), brief_event_to("b1", &["hook"], &[])),
    ];
    assert_eq!(store.record_briefs(&group).await.unwrap(), [true, false, true]);
    assert_eq!(store.brief_count().await.unwrap(), 3);
    assert_eq!(store.event_count().await.unwrap(), 3);
    let now = now_ms();
    let claimed = store.claim_due("hook", "a", now, now + 60_000, 10).await.unwrap();
    let order: Vec<&str> = claimed.iter().map(|d| d.event.data["id"].as_str().unwrap()).collect();
    assert_eq!(order, ["b2", "b3", "b1"], "deliveries go out in the order their events came");
    let dead = store
        .list_deliveries(&clairo_sync::store::DeliveryFilter { dead_only: true, limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].connector, "archive");
    assert_eq!(dead[0].last_error.as_deref(), Some("route filter failed: archive"));
    }
}

// Attempts that finished together are recorded in one call; one whose lease ran out and
// was taken by another worker is not written (the other worker's record counts).
store_tests! {
    async fn attempts_recorded_together_skip_only_the_one_whose_lease_was_lost(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    let group: Vec<_> = ["b1", "b2", "b3"]
        .iter()
        .map(|id| (brief(id), brief_event_to(id, &["hook"], &[])))
        .collect();
    store.record_briefs(&group).await.unwrap();
    let now = now_ms();
    let mine = store.claim_due("hook", "a", now, now + 1_000, 10).await.unwrap();
    assert_eq!(mine.len(), 3);
    // A's leases run out; B claims (only) the last delivery.
    let later = now + 2_000;
    let theirs = store.claim_due("hook", "b", later, later + 60_000, 1).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].id, mine[0].id, "the oldest due is taken first");
    let rows: Vec<AttemptRow> = mine.iter().map(|_| delivered_row(1)).collect();
    let finishes: Vec<Finish<'_>> = mine
        .iter()
        .zip(&rows)
        .map(|(delivery, row)| Finish { lease: &delivery.lease, attempt: row, next: &NextState::Delivered })
        .collect();
    assert_eq!(store.finish_attempts(&finishes).await.unwrap(), [false, true, true]);
    let all = store
        .list_deliveries(&clairo_sync::store::DeliveryFilter { limit: 10, ..Default::default() })
        .await
        .unwrap();
    let status = |id: i64| all.iter().find(|d| d.id == id).unwrap();
    assert_eq!(status(mine[0].id).status, "pending", "B still holds it");
    assert!(status(mine[0].id).last_attempt.is_none(), "A's attempt was not written");
    for delivery in &mine[1..] {
        assert_eq!(status(delivery.id).status, "delivered");
        assert_eq!(status(delivery.id).last_attempt.as_ref().unwrap().status_code, Some(200));
    }
    }
}

// A worker's turn: what finished is recorded and the slots it freed are claimed, in one
// transaction; the claim takes the next due deliveries, never the ones just recorded.
store_tests! {
    async fn a_turn_records_what_finished_and_claims_the_next_due(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    let group: Vec<_> = (1..=5)
        .map(|n| format!("b{n}"))
        .map(|id| (brief(&id), brief_event_to(&id, &["hook"], &[])))
        .collect();
    store.record_briefs(&group).await.unwrap();
    let now = now_ms();
    let first = store.claim_due("hook", "a", now, now + 60_000, 2).await.unwrap();
    let rows = [delivered_row(1), delivered_row(1)];
    let finishes: Vec<Finish<'_>> = first
        .iter()
        .zip(&rows)
        .map(|(delivery, row)| Finish { lease: &delivery.lease, attempt: row, next: &NextState::Delivered })
        .collect();
    let now = now_ms();
    let claim = Claim { connector: "hook", owner: "a", now, lease_until: now + 60_000, limit: 2 };
    let (recorded, next) = store.finish_and_claim(&finishes, &claim).await.unwrap();
    assert_eq!(recorded, [true, true]);
    let ids = |claimed: &[clairo_sync::store::ClaimedDelivery]| -> Vec<String> {
        claimed.iter().map(|d| d.event.data["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&first), ["b1", "b2"]);
    assert_eq!(ids(&next), ["b3", "b4"]);
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats[0].delivered, stats[0].pending), (2, 3));
    }
}

/// On SQLite a worker's turn is one statement list sent at once: one that fails part-way
/// (here a trigger refuses the attempt's row) must write nothing, and leave no
/// transaction open on the pooled connection (which would refuse every later write).
#[tokio::test]
async fn a_turn_that_fails_part_way_writes_nothing_and_the_store_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.unwrap();
    let group: Vec<_> = (1..=8)
        .map(|n| format!("b{n}"))
        .map(|id| (brief(&id), brief_event_to(&id, &["hook"], &[])))
        .collect();
    store.record_briefs(&group).await.unwrap();
    let other = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON attempts WHEN NEW.outcome = 'refused'
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&other)
    .await
    .unwrap();
    let now = now_ms();
    let claimed = store
        .claim_due("hook", "a", now, now + 60_000, 2)
        .await
        .unwrap();
    let refused = AttemptRow {
        outcome: "refused".into(),
        ..delivered_row(1)
    };
    let rows = [delivered_row(1), refused];
    let finishes: Vec<Finish<'_>> = claimed
        .iter()
        .zip(&rows)
        .map(|(delivery, row)| Finish {
            lease: &delivery.lease,
            attempt: row,
            next: &NextState::Delivered,
        })
        .collect();
    let claim = Claim {
        connector: "hook",
        owner: "a",
        now,
        lease_until: now + 60_000,
        limit: 2,
    };
    let error = store.finish_and_claim(&finishes, &claim).await.unwrap_err();
    assert!(error.to_string().contains("refused by the test"), "{error}");
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(
        (stats[0].delivered, stats[0].pending),
        (0, 8),
        "nothing of the turn was written"
    );
    let leased = store
        .claim_due("hook", "b", now, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(
        leased.len(),
        6,
        "the turn's claims were rolled back with it; the first two are still A's"
    );
    sqlx::raw_sql("DROP TRIGGER refuse")
        .execute(&other)
        .await
        .unwrap();
    // Every pooled connection takes writes again (more turns than connections).
    for delivery in &leased {
        store
            .finish_attempt(&delivery.lease, &delivered_row(1), &NextState::Delivered)
            .await
            .unwrap();
    }
    assert_eq!(store.queue_stats().await.unwrap()[0].delivered, 6);
}
