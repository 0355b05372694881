//! The pollers: each turns what the Clairo API lists into recorded items and events,
//! writing item, event and deliveries in one transaction (the outbox), and waking the
//! dispatcher. A source never calls a connector.

pub mod briefs;
pub mod conversations;
pub mod meetings;
pub mod rebuild;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use clairo_connectors::{Event, EventType, event_id};
use tokio::sync::mpsc;

use crate::auth::AuthGate;
use crate::clairo::{ClairoClient, ClairoError, Listing};
use crate::config::{Config, FilterContext, Route, StartFrom};
use crate::metrics::{Metrics, SourceLabels};
use crate::store::{FailedRoute, NewEvent, Store, StoreError, Wakers};

/// The longest an item waits for others to be recorded with it (see [`next_group`]).
const GROUP_WINDOW: Duration = Duration::from_millis(20);

/// The most items recorded in one transaction.
pub(crate) const GROUP_MAX: usize = 64;

/// The next group of items to record together, as a poll that fetches one detail after
/// another produces them: the first of a group waits at most [`GROUP_WINDOW`] for others
/// (at most [`GROUP_MAX`]), so a backlog costs one transaction per group instead of one
/// per item, and an item is recorded at most 20 ms after it was fetched however long the
/// next fetch waits (a rate-limit pause). `None` once the sender is dropped and all is
/// handed out.
pub(crate) async fn next_group<T>(items: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = items.recv().await?;
    let deadline = tokio::time::Instant::now() + GROUP_WINDOW;
    let mut group = vec![first];
    while group.len() < GROUP_MAX {
        match tokio::time::timeout_at(deadline, items.recv()).await {
            Ok(Some(item)) => group.push(item),
            Ok(None) | Err(_) => break,
        }
    }
    Some(group)
}

/// Decides which connectors an event goes to, from the config's `[[routes]]`.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// What the routes make of one event: the connectors it goes to, and those whose route
/// filter failed on it (each becomes a dead delivery with the reason, never a drop).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    pub connectors: Vec<String>,
    pub failed: Vec<FailedRoute>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Self {
        Self {
            routes: routes.to_vec(),
        }
    }

    /// The connectors (each once, in name order) whose routes take this kind of event
    /// from this agent, before any route's `when` (which needs the event itself).
    pub fn connectors_for(&self, kind: EventType, agent_id: Option<&str>) -> Vec<String> {
        let names: BTreeSet<&str> = self
            .routes
            .iter()
            .filter(|route| route.matches(kind, agent_id))
            .flat_map(|route| route.to.iter().map(String::as_str))
            .collect();
        names.into_iter().map(str::to_owned).collect()
    }

    /// Routes one event: its type and agent, then each route's `when`. A connector that
    /// one route takes and another's filter failed on goes out normally.
    pub fn route(&self, event: &Event, agent_id: Option<&str>) -> Routed {
        let mut context = None;
        let mut taken = BTreeSet::new();
        let mut failed = BTreeMap::new();
        for (index, route) in self.routes.iter().enumerate() {
            if !route.matches(event.kind, agent_id) {
                continue;
            }
            let verdict = match &route.when {
                None => Ok(true),
                Some(when) => {
                    when.matches(context.get_or_insert_with(|| FilterContext::new(event)))
                }
            };
            match verdict {
                Ok(true) => taken.extend(route.to.iter().map(String::as_str)),
                Ok(false) => {}
                Err(error) => {
                    for connector in &route.to {
                        failed.entry(connector.as_str()).or_insert_with(|| {
                            format!(
                                "route filter failed: routes[{index}].when: {error}; fix the \
                                 expression (or the data it expects), reload, then `clairo-sync \
                                 deliveries retry` this delivery"
                            )
                        });
                    }
                }
            }
        }
        Routed {
            connectors: taken.iter().map(|name| (*name).to_owned()).collect(),
            failed: failed
                .into_iter()
                .filter(|(connector, _)| !taken.contains(connector))
                .map(|(connector, reason)| FailedRoute {
                    connector: connector.to_owned(),
                    reason,
                })
                .collect(),
        }
    }

    /// Whether route `index` takes the event (`check`'s preview of a filter on stored
    /// events); `Err` when its filter fails on it.
    pub fn route_takes(
        &self,
        index: usize,
        event: &Event,
        agent_id: Option<&str>,
        context: &FilterContext,
    ) -> Result<bool, String> {
        let Some(route) = self.routes.get(index) else {
            return Ok(false);
        };
        if !route.matches(event.kind, agent_id) {
            return Ok(false);
        }
        route
            .when
            .as_ref()
            .map_or(Ok(true), |when| when.matches(context))
    }
}

/// The event about `key` (a brief id, a conversation's state, a recording's sha256), its
/// id derived from the key, so the same thing always makes the same id.
pub fn make_event(
    kind: EventType,
    key: &str,
    timestamp: chrono::DateTime<chrono::Utc>,
    data: serde_json::Value,
) -> Event {
    Event {
        id: event_id(kind, key),
        kind,
        timestamp,
        data,
    }
}

/// What every source needs.
#[derive(Clone)]
pub struct SourceContext {
    pub client: ClairoClient,
    pub store: Store,
    pub router: Router,
    pub metrics: Metrics,
    pub wakers: Wakers,
    /// Shared by every source of the process and `/readyz`: a refusal pauses them all.
    pub auth: Arc<AuthGate>,
    pub start_from: StartFrom,
    /// Briefs of the last listing known to be recorded (see [`briefs::poll`]).
    pub recorded_briefs: Arc<std::sync::Mutex<HashSet<String>>>,
    /// This instance, when several may share the state database (PostgreSQL): recordings
    /// are claimed in its name.
    pub claimant: Option<crate::store::meetings::Claimant>,
}

impl SourceContext {
    pub fn new(
        config: &Config,
        client: ClairoClient,
        store: Store,
        metrics: Metrics,
        wakers: Wakers,
        auth: Arc<AuthGate>,
    ) -> Self {
        Self {
            client,
            store,
            router: Router::new(&config.routes),
            metrics,
            wakers,
            auth,
            start_from: config.sync.start_from,
            recorded_briefs: Arc::default(),
            claimant: match config.state.backend() {
                crate::config::StateBackend::Sqlite(_) => None,
                crate::config::StateBackend::Postgres(_) => {
                    Some(crate::store::meetings::Claimant {
                        name: config.state.instance_name(),
                        live_within_ms: i64::try_from(config.state.lease.as_millis())
                            .unwrap_or(i64::MAX),
                    })
                }
            },
        }
    }

    /// An event about `key`, routed; `None` when no route takes it (the item is still recorded).
    pub fn event(
        &self,
        kind: EventType,
        key: &str,
        agent_id: Option<&str>,
        data: serde_json::Value,
    ) -> NewEvent {
        let event = make_event(kind, key, chrono::Utc::now(), data);
        let routed = self.router.route(&event, agent_id);
        NewEvent {
            event,
            agent_id: agent_id.map(str::to_owned),
            connectors: routed.connectors,
            failed: routed.failed,
        }
    }

    /// Counts the event (and each delivery its route filters failed on, as dead) and
    /// wakes its connectors' workers (after the commit).
    pub fn emitted(&self, event: &NewEvent) {
        self.metrics
            .events
            .get_or_create(&crate::metrics::TypeLabel {
                r#type: event.event.kind.as_str().to_owned(),
            })
            .inc();
        for failed in &event.failed {
            tracing::warn!(
                connector = %failed.connector,
                event_id = %event.event.id,
                reason = %failed.reason,
                "A route filter failed on an event; its delivery is dead (kept, and replayable with `clairo-sync deliveries retry`)."
            );
            self.metrics
                .deliveries
                .get_or_create(&crate::metrics::DeliveryLabels {
                    connector: failed.connector.clone(),
                    outcome: "dead".to_owned(),
                })
                .inc();
        }
        self.wakers.wake(&event.connectors);
    }

    /// Whether this source's first successful run is still to come and `start_from = "now"`
    /// says to record what exists without emitting events for it.
    pub async fn baseline_only(&self, source: &str) -> Result<bool, StoreError> {
        if self.start_from == StartFrom::All {
            return Ok(false);
        }
        Ok(self.store.meta(&baseline_key(source)).await?.is_none())
    }

    pub async fn mark_baseline_done(&self, source: &str) -> Result<(), StoreError> {
        self.store
            .set_meta(&baseline_key(source), &crate::store::now_ms().to_string())
            .await
    }

    /// Logs and counts the items a list could not parse; the rest of the poll goes on.
    pub fn report_skipped<T>(&self, source: &str, listing: &Listing<T>) {
        for skipped in &listing.skipped {
            tracing::warn!(
                source,
                index = skipped.index,
                id = skipped.id.as_deref().unwrap_or("-"),
                reason = %skipped.reason,
                "Skipped an item the API returned that could not be parsed."
            );
            self.metrics
                .items_skipped
                .get_or_create(&SourceLabels {
                    source: source.to_owned(),
                })
                .inc();
        }
    }
}

fn baseline_key(source: &str) -> String {
    format!("baseline_done.{source}")
}

/// Why a poll run failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] ClairoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PollError {
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Self::Api(error) if error.is_auth_failure())
    }
}

/// What one run did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub listed: usize,
    pub new_items: usize,
    pub events: usize,
    pub detail_calls: usize,
    pub skipped: usize,
}

/// The sources a config turns on, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Briefs,
    Conversations,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Briefs => "briefs",
            Self::Conversations => "conversations",
        }
    }

    pub fn enabled(config: &Config) -> Vec<SourceKind> {
        let mut kinds = Vec::new();
        if config.sync.briefs.is_some() {
            kinds.push(Self::Briefs);
        }
        if config.sync.conversations.is_some() {
            kinds.push(Self::Conversations);
        }
        kinds
    }
}

/// Runs one poll of `kind`. The config section exists (checked by the caller).
pub async fn poll(
    kind: SourceKind,
    context: &SourceContext,
    config: &Config,
) -> Result<PollReport, PollError> {
    match kind {
        SourceKind::Briefs => {
            let section = config.sync.briefs.as_ref().expect("briefs enabled");
            briefs::poll(context, section).await
        }
        SourceKind::Conversations => {
            let section = config
                .sync
                .conversations
                .as_ref()
                .expect("conversations enabled");
            conversations::poll(context, section).await
        }
    }
}

#[cfg(test)]
mod grouping {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn items_that_come_together_are_one_group_and_a_lone_item_waits_the_window_at_most() {
        let (sender, mut receiver) = mpsc::channel(GROUP_MAX);
        for n in 0..3 {
            sender.send(n).await.unwrap();
        }
        assert_eq!(next_group(&mut receiver).await, Some(vec![0, 1, 2]));
        // One item and then a long pause (a fetch waiting on the rate limit): the item is
        // handed out after the window, not after the pause.
        sender.send(3).await.unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            sender.send(4).await.unwrap();
        });
        let started = Instant::now();
        assert_eq!(next_group(&mut receiver).await, Some(vec![3]));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        late.abort();
        let _ = late.await;
        assert_eq!(next_group(&mut receiver).await, None, "the sender is gone");
    }

    #[tokio::test]
    async fn a_group_holds_at_most_group_max_items() {
        let (sender, mut receiver) = mpsc::channel(GROUP_MAX * 2);
        for n in 0..GROUP_MAX + 1 {
            sender.send(n).await.unwrap();
        }
        drop(sender);
        assert_eq!(next_group(&mut receiver).await.unwrap().len(), GROUP_MAX);
        assert_eq!(next_group(&mut receiver).await, Some(vec![GROUP_MAX]));
        assert_eq!(next_group(&mut receiver).await, None);
    }
}
