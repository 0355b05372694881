//! The store's items besides briefs and the outbox — meetings, conversations, source runs
//! and `meta` — through its public API, on both backends ([`store_tests!`]).

use clairo_connectors::{Event, EventType, event_id};
use clairo_sync::store::meetings::{Claim, MeetingClaim, MeetingResult, MeetingStatus};
use clairo_sync::store::{ConversationState, Holder, NewEvent, Schema, Store, now_ms};

use crate::store::Backend;

fn event(kind: EventType, id: &str, agent: &str) -> NewEvent {
    NewEvent {
        event: Event {
            id: event_id(kind, id),
            kind,
            timestamp: chrono::Utc::now(),
            data: serde_json::json!({"id": id}),
        },
        agent_id: Some(agent.into()),
        connectors: vec!["hook".into()],
        failed: Vec::new(),
    }
}

fn claim(sha256: &str, path: &str) -> MeetingClaim {
    MeetingClaim {
        sha256: sha256.into(),
        file_name: path.rsplit('/').next().unwrap().into(),
        source_path: path.into(),
        agent_id: "cm1meet".into(),
        title: "Call".into(),
        size: 1024,
    }
}

fn result(meeting_id: &str) -> MeetingResult {
    MeetingResult {
        meeting_id: meeting_id.into(),
        title: "Call".into(),
        transcript: Some("hello".into()),
        summary: Some("a call".into()),
        duration_sec: Some(61.5),
        uploaded_as: "call.webm".into(),
        raw: serde_json::json!({"id": meeting_id}),
    }
}

fn conversation(id: &str, agent: &str, count: i64, checked: i64) -> ConversationState {
    ConversationState {
        id: id.into(),
        agent_id: Some(agent.into()),
        status: Some("ACTIVE".into()),
        message_count: count,
        updated_at: None,
        last_checked_at: checked,
    }
}

store_tests! {
    async fn a_meeting_is_claimed_once_resumed_by_its_own_file_and_then_done(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    let first = claim("aa11", "/drop/a.mp3");
    assert_eq!(store.claim_meeting(&first, false).await.unwrap(), Claim::Upload { interrupted: false });
    let copy = claim("aa11", "/drop/copy-of-a.mp3");
    let Claim::InProgress(row) = store.claim_meeting(&copy, false).await.unwrap() else {
        panic!("another file with the same content waits")
    };
    assert_eq!(row.source_path, "/drop/a.mp3");
    // Sent and never answered: the same file resumes, told the request may have landed.
    store.meeting_attempt("aa11").await.unwrap();
    assert_eq!(store.claim_meeting(&first, false).await.unwrap(), Claim::Upload { interrupted: true });
    let interrupted = store.interrupted_meetings().await.unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].attempts, 1);

    let processed = event(EventType::MeetingProcessed, "m1", "cm1meet");
    assert!(store.record_meeting("aa11", &result("m1"), Some(&processed)).await.unwrap());
    assert!(
        !store.record_meeting("aa11", &result("m1"), Some(&processed)).await.unwrap(),
        "a row already done is not recorded again"
    );
    assert_eq!(store.event_count().await.unwrap(), 1);
    store.meeting_moved("aa11", "/drop/processed/a.mp3").await.unwrap();
    let Claim::Done(row) = store.claim_meeting(&copy, true).await.unwrap() else {
        panic!("uploaded content is never uploaded again, even when taking over")
    };
    assert_eq!(row.status, MeetingStatus::Done);
    assert_eq!(row.meeting_id.as_deref(), Some("m1"));
    assert_eq!(row.duration_sec, Some(61.5));
    assert_eq!(row.moved_to.as_deref(), Some("/drop/processed/a.mp3"));
    assert_eq!(row.raw, Some(serde_json::json!({"id": "m1"})));
    assert!(store.interrupted_meetings().await.unwrap().is_empty());
    }
}

store_tests! {
    async fn a_failed_meeting_is_claimed_again_by_a_new_copy_and_its_error_cleared(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    store.claim_meeting(&claim("bb22", "/drop/b.mp3"), false).await.unwrap();
    store.meeting_will_retry("bb22", "502 from Clairo").await.unwrap();
    let row = store.meeting("bb22").await.unwrap().unwrap();
    assert_eq!((row.status, row.error.as_deref()), (MeetingStatus::Uploading, Some("502 from Clairo")));
    store.meeting_failed("bb22", "not audio").await.unwrap();
    assert_eq!(store.meeting("bb22").await.unwrap().unwrap().status, MeetingStatus::Failed);
    assert_eq!(
        store.claim_meeting(&claim("bb22", "/drop/b-again.mp3"), false).await.unwrap(),
        Claim::Upload { interrupted: false }
    );
    let row = store.meeting("bb22").await.unwrap().unwrap();
    assert_eq!(row.status, MeetingStatus::Uploading);
    assert_eq!(row.source_path, "/drop/b-again.mp3");
    assert_eq!(row.error, None);
    // Taken over when the caller knows the first file is gone.
    assert_eq!(
        store.claim_meeting(&claim("bb22", "/drop/b-third.mp3"), true).await.unwrap(),
        Claim::Upload { interrupted: false }
    );
    assert!(store.meeting("nothing").await.unwrap().is_none());
    }
}

store_tests! {
    async fn two_stores_claiming_one_content_at_once_get_one_upload_and_one_in_progress(new_backend) {
    let backend = new_backend();
    let (one, two) = (backend.open().await, backend.open().await);
    for round in 0..20 {
        let sha = format!("cc{round}");
        let (first, second) = (claim(&sha, "/shared/one/c.mp3"), claim(&sha, "/shared/two/c.mp3"));
        let (a, b) = tokio::join!(one.claim_meeting(&first, false), two.claim_meeting(&second, false));
        let (a, b) = (a.expect("no error for the first"), b.expect("no error for the second"));
        let uploads = [&a, &b].iter().filter(|c| matches!(c, Claim::Upload { .. })).count();
        let waits = [&a, &b].iter().filter(|c| matches!(c, Claim::InProgress(_))).count();
        assert_eq!((uploads, waits), (1, 1), "round {round}: {a:?} / {b:?}");
    }
    }
}

store_tests! {
    async fn a_conversation_is_recorded_once_and_updated_only_from_the_count_it_was_diffed_against(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    let now = now_ms();
    let created = event(EventType::ConversationUpdated, "c1:2", "cm1chat");
    assert!(store.record_conversation(&conversation("c1", "cm1chat", 2, now - 60_000), Some("{\"id\":\"c1\"}"), None, Some(&created)).await.unwrap());
    assert!(
        !store.record_conversation(&conversation("c1", "cm1chat", 2, now), None, None, Some(&created)).await.unwrap(),
        "a second insert of one conversation writes nothing"
    );
    store.record_conversation(&conversation("c2", "cm1other", 1, now - 60_000), None, None, None).await.unwrap();

    let states = store.conversation_states(&["c1".into(), "c9".into()]).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states["c1"].message_count, 2);

    let updated = event(EventType::ConversationUpdated, "c1:5", "cm1chat");
    assert!(
        !store.record_conversation(&conversation("c1", "cm1chat", 5, now), None, Some(3), Some(&updated)).await.unwrap(),
        "a writer that diffed against a stale count writes nothing"
    );
    assert!(store.record_conversation(&conversation("c1", "cm1chat", 5, now), None, Some(2), Some(&updated)).await.unwrap());
    assert_eq!(store.conversation_states(&["c1".into()]).await.unwrap()["c1"].message_count, 5);
    assert_eq!(store.event_count().await.unwrap(), 2);

    let due = store.active_conversations_due(now - 1_000, &[]).await.unwrap();
    assert_eq!(due.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c2"], "c1 was just checked");
    let due = store.active_conversations_due(now + 1_000, &["cm1chat".into()]).await.unwrap();
    assert_eq!(due.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c1"], "only the agents asked for");
    }
}

store_tests! {
    async fn a_source_run_counts_runs_and_keeps_the_last_success_across_a_failure(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    assert!(store.source_runs().await.unwrap().is_empty());
    store.start_run("briefs").await.unwrap();
    let running = store.source_runs().await.unwrap();
    assert_eq!((running[0].runs, running[0].last_outcome.as_deref()), (1, None));
    store.finish_run("briefs", None).await.unwrap();
    let succeeded = store.source_runs().await.unwrap()[0].last_success_at.expect("a success");
    store.start_run("briefs").await.unwrap();
    store.finish_run("briefs", Some("Clairo answered 502")).await.unwrap();
    store.start_run("conversations").await.unwrap();
    let runs = store.source_runs().await.unwrap();
    let briefs = runs.iter().find(|run| run.source == "briefs").unwrap();
    assert_eq!(briefs.runs, 2);
    assert_eq!(briefs.last_outcome.as_deref(), Some("failure"));
    assert_eq!(briefs.last_error.as_deref(), Some("Clairo answered 502"));
    assert_eq!(briefs.last_success_at, Some(succeeded), "a failure keeps the last success");
    assert!(runs.iter().any(|run| run.source == "conversations"));
    }
}

store_tests! {
    async fn meta_keeps_the_last_value_and_a_fresh_store_is_writable_with_a_current_schema(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    assert_eq!(store.meta("cursor").await.unwrap(), None);
    store.set_meta("cursor", "one").await.unwrap();
    store.set_meta("cursor", "two").await.unwrap();
    assert_eq!(store.meta("cursor").await.unwrap().as_deref(), Some("two"));
    store.check_writable().await.unwrap();
    assert_eq!(store.schema().await.unwrap(), Schema::Current);
    store.close().await;
    let store: Store = backend.open().await;
    assert_eq!(store.meta("cursor").await.unwrap().as_deref(), Some("two"));
    }
}

fn holder(name: &str, process: u32) -> Holder {
    Holder {
        name: name.into(),
        host: "host-1".into(),
        token: format!("{name}/host-1/{process}/1"),
        started_at: now_ms(),
    }
}

store_tests! {
    async fn a_source_lease_is_held_by_one_process_until_it_runs_out_or_is_released(new_backend) {
    let backend = new_backend();
    let store = backend.open().await;
    let (a, b) = (holder("a", 1), holder("b", 2));
    store.heartbeat(&a).await.unwrap();
    store.heartbeat(&b).await.unwrap();
    assert!(store.hold_lease("briefs", &a, 60_000).await.unwrap());
    assert!(!store.hold_lease("briefs", &b, 60_000).await.unwrap(), "held by a");
    assert!(store.hold_lease("briefs", &a, 60_000).await.unwrap(), "a renews");
    assert!(
        !store.hold_lease("briefs", &holder("a", 3), 60_000).await.unwrap(),
        "a restarted process of the same name waits for the old lease too"
    );
    assert!(store.hold_lease("conversations", &b, 300).await.unwrap());
    let instances = store.instances(60_000).await.unwrap();
    assert_eq!(instances.len(), 2);
    assert_eq!(instances[0].sources, ["briefs"]);
    assert_eq!(instances[1].sources, ["conversations"]);
    assert!(instances.iter().all(|i| i.live && i.deliveries_in_flight == 0), "{instances:?}");
    assert_eq!(store.live_instances(60_000).await.unwrap(), 2);

    // b's short lease runs out: a takes it over.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        store.instances(100).await.unwrap().iter().all(|i| !i.live),
        "no heartbeat for 400 ms: gone, by a lease of 100 ms"
    );
    assert!(store.hold_lease("conversations", &a, 60_000).await.unwrap());
    assert!(!store.hold_lease("conversations", &b, 60_000).await.unwrap());

    store.release_source_leases(&a).await.unwrap();
    assert!(store.hold_lease("briefs", &b, 60_000).await.unwrap(), "released at once");
    let names: Vec<String> = store.instances(60_000).await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["b"], "a clean stop removes the instance");
    }
}

store_tests! {
    async fn the_same_file_claimed_by_another_live_instance_waits_and_is_taken_once_it_is_dead(new_backend) {
    use clairo_sync::store::meetings::Claimant;
    let backend = new_backend();
    let store = backend.open().await;
    let claimant = |name: &str, live_within_ms| Claimant { name: name.into(), live_within_ms };
    store.heartbeat(&holder("a", 1)).await.unwrap();
    store.heartbeat(&holder("b", 2)).await.unwrap();
    let shared = claim("dd44", "/shared/drop/d.mp3");
    assert_eq!(
        store.claim_meeting_as(&shared, false, Some(&claimant("a", 60_000))).await.unwrap(),
        Claim::Upload { interrupted: false }
    );
    store.meeting_attempt("dd44").await.unwrap();
    assert!(
        matches!(
            store.claim_meeting_as(&shared, false, Some(&claimant("b", 60_000))).await.unwrap(),
            Claim::InProgress(_)
        ),
        "b finds the same file a is uploading: it waits"
    );
    assert_eq!(
        store.claim_meeting_as(&shared, false, Some(&claimant("a", 60_000))).await.unwrap(),
        Claim::Upload { interrupted: true },
        "a resumes its own interrupted upload"
    );
    // a's heartbeat is older than b's lease now: a is dead, b takes the upload over.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        store.claim_meeting_as(&shared, false, Some(&claimant("b", 50))).await.unwrap(),
        Claim::Upload { interrupted: true }
    );
    }
}
