// Over 500 lines: its tests (the retry policy's, and its properties) are the last 180.
//! The dispatcher: one worker per connector takes due deliveries from the outbox under a
//! lease, runs up to `delivery.concurrency` of them at once, and records every attempt.
//! A slow or dead connector only ever holds up its own worker.
//!
//! A delivery's life: `pending` → claimed (leased) → attempt → `delivered`, back to
//! `pending` with a later due time (retry), or `dead` (kept, listed, replayable).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clairo_connectors::retry;
use clairo_connectors::{CheckpointError, CheckpointSink, Connector, Verdict};
use tokio::task::JoinSet;

use crate::config::{ConnectorTable, DeliveryConfig, RateLimit};
use crate::metrics::{ConnectorLabels, Metrics};
use crate::shutdown::{self, CancellationToken};
use crate::store::{ClaimedDelivery, Lease, NextState, Store, Wakers, now_ms};

mod outcome;
use outcome::{Finished, gather, reap};

/// ±20% around each wait of the retry schedule, so deliveries that failed together do
/// not all come back at the same instant.
const JITTER: f64 = 0.2;

/// Even with nothing due, a worker looks at the outbox this often: it picks up
/// `deliveries retry` from the CLI (another process) within seconds.
const IDLE_RECHECK: Duration = Duration::from_secs(2);

/// After a state-database error (disk full, locked), a worker waits this long before it
/// tries again, instead of spinning.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// How often a worker refreshes its connector's queue-depth gauge.
const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(1);

/// A connector's pace (`rate_limit`): one start per `window / N`.
type Pace = governor::DefaultDirectRateLimiter;

/// The limiter for `limit`. Its burst is one: governor's quota of N per second has a
/// burst of N, which would let N start at once and N - 1 more within the same second
/// (2N - 1 in one window). One cell every `window / N` keeps any window to N, evenly
/// spaced, from the first delivery on.
fn pace(limit: RateLimit) -> Pace {
    let quota = governor::Quota::with_period(limit.spacing())
        .expect("a rate limit's spacing is never zero")
        .allow_burst(NonZeroU32::MIN);
    governor::RateLimiter::direct(quota)
}

/// Where a delivery goes after an attempt with this verdict: pure, so the retry policy
/// can be tested on its own.
pub fn next_state(
    verdict: &Verdict,
    attempts_before: i64,
    schedule: &[Duration],
    now_ms: i64,
    jitter_factor: f64,
) -> NextState {
    match verdict {
        Verdict::Delivered => NextState::Delivered,
        Verdict::Permanent { .. } => NextState::Dead,
        Verdict::Retry { after, .. } => {
            let index = attempts_before as usize;
            let Some(wait) = schedule.get(index) else {
                return NextState::Dead;
            };
            let jittered = retry::scaled_within(*wait, jitter_factor, JITTER);
            let wait = match after {
                Some(after) if *after > jittered => *after,
                _ => jittered,
            };
            NextState::Retry {
                at_ms: now_ms + wait.as_millis() as i64,
            }
        }
    }
}

/// A random factor in [1 - JITTER, 1 + JITTER].
pub fn jitter_factor() -> f64 {
    retry::jitter_factor(JITTER)
}

struct StoreCheckpoints {
    store: Store,
    lease: Lease,
}

#[async_trait]
impl CheckpointSink for StoreCheckpoints {
    async fn save(&self, checkpoint: serde_json::Value) -> Result<(), CheckpointError> {
        self.store
            .save_checkpoint(&self.lease, &checkpoint)
            .await
            .map_err(CheckpointError::not_saved)
    }
}

/// Everything the workers share.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    metrics: Metrics,
    wakers: Wakers,
    settings: DeliveryConfig,
    /// Identifies this process's leases, so shutdown releases exactly its own, and names
    /// the instance they belong to (`status` counts each one's in flight).
    owner: String,
    /// The connectors with a `rate_limit`, by name.
    paces: BTreeMap<String, Arc<Pace>>,
}

impl Dispatcher {
    /// `instance` is `state.instance` (the host's name by default).
    pub fn new(
        store: Store,
        metrics: Metrics,
        wakers: Wakers,
        settings: DeliveryConfig,
        instance: &str,
    ) -> Self {
        let owner = crate::store::delivery_owner(instance);
        Self {
            store,
            metrics,
            wakers,
            settings,
            owner,
            paces: BTreeMap::new(),
        }
    }

    /// Paces the connectors that have a `rate_limit` in `connectors` (a generation's own:
    /// a reload starts each pace afresh, which with a burst of one sends nothing early).
    pub fn with_rate_limits(mut self, connectors: &BTreeMap<String, ConnectorTable>) -> Self {
        self.paces = connectors
            .iter()
            .filter_map(|(name, table)| Some((name.clone(), Arc::new(pace(table.rate_limit()?)))))
            .collect();
        self
    }

    /// Runs one worker per connector until `shutdown` is cancelled; then stops claiming,
    /// lets in-flight deliveries finish within `shutdown_timeout`, and releases the rest.
    pub async fn run(
        &self,
        connectors: BTreeMap<String, Arc<dyn Connector>>,
        shutdown: CancellationToken,
    ) {
        let mut workers = JoinSet::new();
        for (name, connector) in connectors {
            let this = self.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move { this.worker(name, connector, shutdown).await });
        }
        while workers.join_next().await.is_some() {}
        match self.store.release_leases(&self.owner).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(
                released,
                "Released the leases of deliveries still in flight at shutdown."
            ),
            Err(error) => {
                tracing::warn!(%error, "Could not release leases at shutdown; they expire on their own.")
            }
        }
    }

    /// Sends every due delivery of every connector until none is due (for `sync --once`).
    pub async fn drain_due(
        &self,
        connectors: &BTreeMap<String, Arc<dyn Connector>>,
    ) -> Result<(), crate::store::StoreError> {
        for (name, connector) in connectors {
            let pace = self.paces.get(name);
            loop {
                // A paced connector's deliveries start one at a time, each when its
                // pace allows.
                if let Some(pace) = pace {
                    pace.until_ready().await;
                }
                let batch = if pace.is_some() {
                    1
                } else {
                    self.settings.concurrency
                };
                let claimed = self.claim(name, batch).await?;
                if claimed.is_empty() {
                    break;
                }
                let mut in_flight = JoinSet::new();
                for delivery in claimed {
                    let this = self.clone();
                    let connector = connector.clone();
                    in_flight.spawn(async move { this.attempt(&*connector, delivery).await });
                }
                let mut finished = Vec::with_capacity(in_flight.len());
                while let Some(attempt) = in_flight.join_next().await {
                    finished.extend(attempt.ok());
                }
                self.record(finished).await;
            }
        }
        self.update_queue_depth().await;
        Ok(())
    }

    async fn claim(
        &self,
        connector: &str,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, crate::store::StoreError> {
        let now = now_ms();
        let lease_until = now + self.settings.lease.as_millis() as i64;
        self.store
            .claim_due(connector, &self.owner, now, lease_until, limit as i64)
            .await
    }

    /// Claims due deliveries only when one is due (a read), so an idle worker takes no
    /// write lock; returns them and when the next one not claimed is due.
    /// With a `pace`, it waits for the pace (or `shutdown`) once a delivery is due, and
    /// claims one: each delivery starts when the pace allows, and nothing is claimed (its
    /// lease running) while it waits.
    async fn claim_if_due(
        &self,
        connector: &str,
        limit: usize,
        pace: Option<&Pace>,
        shutdown: &CancellationToken,
    ) -> Result<(Vec<ClaimedDelivery>, Option<i64>), crate::store::StoreError> {
        let next = self.store.next_due_at(connector).await?;
        if next.is_none_or(|next| next > now_ms()) {
            return Ok((Vec::new(), next));
        }
        let limit = match pace {
            Some(pace) => {
                tokio::select! {
                    _ = pace.until_ready() => {}
                    _ = shutdown.cancelled() => return Ok((Vec::new(), next)),
                }
                1
            }
            None => limit,
        };
        let claimed = self.claim(connector, limit).await?;
        // Every free slot taken: the worker wakes when one frees, and the next due time
        // would go unused (one query fewer per claim in a backlog).
        if claimed.len() >= limit {
            return Ok((claimed, None));
        }
        let next = self.store.next_due_at(connector).await?;
        Ok((claimed, next))
    }

    async fn worker(
        &self,
        name: String,
        connector: Arc<dyn Connector>,
        shutdown: CancellationToken,
    ) {
        let wake = self.wakers.for_connector(&name);
        let pace = self.paces.get(&name).cloned();
        // Between two looks at a busy outbox; a paced worker waits on its pace instead,
        // which may be shorter (a rate above 20/s).
        let floor = if pace.is_some() {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        let mut in_flight: JoinSet<Finished> = JoinSet::new();
        // Attempts that have finished and are not recorded yet.
        let mut finished: Vec<Finished> = Vec::new();
        let mut depth_updated = Instant::now() - QUEUE_DEPTH_INTERVAL;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Reap every attempt that has finished and record them together (one
            // transaction); the slots they free are then claimed in one more, rather than
            // a transaction per finished attempt and a claim per freed slot.
            reap(&mut in_flight, &mut finished);
            let free = self.settings.concurrency.saturating_sub(in_flight.len());
            let mut wait = IDLE_RECHECK;
            if free > 0 && pace.is_none() && !finished.is_empty() {
                // Busy: record what finished and claim the slots it freed in one
                // transaction, without first asking whether anything is due.
                let done = std::mem::take(&mut finished);
                match self.record_and_claim(&name, done, free).await {
                    Ok(claimed) => {
                        for delivery in claimed {
                            let this = self.clone();
                            let connector = connector.clone();
                            in_flight
                                .spawn(async move { this.attempt(&*connector, delivery).await });
                        }
                        // Nothing due: the next due time is asked next turn.
                        wait = floor;
                    }
                    Err(error) => {
                        tracing::error!(connector = %name, %error, "Cannot claim deliveries from the state database; retrying shortly.");
                        wait = STORE_ERROR_BACKOFF;
                    }
                }
            } else if free > 0 {
                self.record(std::mem::take(&mut finished)).await;
                match self
                    .claim_if_due(&name, free, pace.as_deref(), &shutdown)
                    .await
                {
                    Ok((claimed, next)) => {
                        for delivery in claimed {
                            let this = self.clone();
                            let connector = connector.clone();
                            in_flight
                                .spawn(async move { this.attempt(&*connector, delivery).await });
                        }
                        if let Some(next) = next {
                            let until = Duration::from_millis((next - now_ms()).max(0) as u64);
                            wait = wait.min(until.max(floor));
                        }
                    }
                    Err(error) => {
                        tracing::error!(connector = %name, %error, "Cannot claim deliveries from the state database; retrying shortly.");
                        wait = STORE_ERROR_BACKOFF;
                    }
                }
            }
            // The gauge is for people and alerts: once a second is plenty, and a busy
            // worker must not count its queue after every single delivery.
            if depth_updated.elapsed() >= QUEUE_DEPTH_INTERVAL {
                self.update_queue_depth_for(&name).await;
                depth_updated = Instant::now();
            }
            tokio::select! {
                _ = wake.notified() => {}
                Some(attempt) = in_flight.join_next(), if !in_flight.is_empty() => {
                    finished.extend(attempt.ok());
                    gather(&mut in_flight, &mut finished).await;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        // Stopping: what is in flight finishes within the timeout and is recorded as it
        // finishes; the rest is stopped and attempted again after its lease.
        let deadline = tokio::time::Instant::now() + self.settings.shutdown_timeout;
        while !in_flight.is_empty() {
            reap(&mut in_flight, &mut finished);
            self.record(std::mem::take(&mut finished)).await;
            match tokio::time::timeout_at(deadline, in_flight.join_next()).await {
                Ok(Some(attempt)) => finished.extend(attempt.ok()),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        self.record(finished).await;
        let stopped = shutdown::drain(&mut in_flight, Duration::ZERO).await;
        if stopped > 0 {
            tracing::warn!(connector = %name, pending = stopped, "Deliveries still in flight at the shutdown timeout were stopped; they will be retried.");
        }
    }

    async fn update_queue_depth_for(&self, connector: &str) {
        if let Ok((pending, oldest)) = self.store.pending(connector).await {
            self.set_queue(connector, pending, oldest);
        }
    }

    pub async fn update_queue_depth(&self) {
        if let Ok(stats) = self.store.queue_stats().await {
            for stat in stats {
                self.set_queue(&stat.connector, stat.pending, stat.oldest_pending_at);
            }
        }
    }

    /// The queue gauges of one connector: how many wait, and for how long the oldest.
    fn set_queue(&self, connector: &str, pending: i64, oldest_ms: Option<i64>) {
        let labels = ConnectorLabels {
            connector: connector.to_owned(),
        };
        self.metrics
            .delivery_queue_depth
            .get_or_create(&labels)
            .set(pending);
        let age_s = oldest_ms.map_or(0, |oldest| (now_ms() - oldest).max(0) / 1000);
        self.metrics
            .delivery_oldest_pending
            .get_or_create(&labels)
            .set(age_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<Duration> {
        vec![Duration::from_secs(5), Duration::from_secs(300)]
    }

    #[test]
    fn a_retry_waits_the_scheduled_time_within_the_jitter() {
        for factor in [0.8, 1.0, 1.2] {
            let NextState::Retry { at_ms } = next_state(
                &Verdict::Retry {
                    after: None,
                    reason: "x".into(),
                },
                0,
                &schedule(),
                0,
                factor,
            ) else {
                panic!("expected a retry")
            };
            assert!((4_000..=6_000).contains(&at_ms), "{at_ms}");
        }
    }

    #[test]
    fn a_longer_retry_after_wins_over_the_schedule() {
        let verdict = Verdict::Retry {
            after: Some(Duration::from_secs(60)),
            reason: "429".into(),
        };
        assert_eq!(
            next_state(&verdict, 0, &schedule(), 0, 1.0),
            NextState::Retry { at_ms: 60_000 }
        );
        let short = Verdict::Retry {
            after: Some(Duration::from_secs(1)),
            reason: "429".into(),
        };
        assert_eq!(
            next_state(&short, 0, &schedule(), 0, 1.0),
            NextState::Retry { at_ms: 5_000 }
        );
    }

    #[test]
    fn after_the_last_scheduled_retry_the_delivery_is_dead() {
        let verdict = Verdict::Retry {
            after: None,
            reason: "503".into(),
        };
        assert!(matches!(
            next_state(&verdict, 1, &schedule(), 0, 1.0),
            NextState::Retry { .. }
        ));
        assert_eq!(
            next_state(&verdict, 2, &schedule(), 0, 1.0),
            NextState::Dead
        );
    }

    #[test]
    fn a_permanent_failure_is_dead_at_once() {
        assert_eq!(
            next_state(
                &Verdict::Permanent {
                    reason: "400".into()
                },
                0,
                &schedule(),
                0,
                1.0
            ),
            NextState::Dead
        );
    }
}

/// Properties of the retry schedule over arbitrary schedules, attempts and Retry-After.
#[cfg(test)]
mod retry_properties {
    use proptest::prelude::*;

    use super::*;

    const DAY_MS: u64 = 86_400_000;

    fn schedule() -> impl Strategy<Value = Vec<Duration>> {
        proptest::collection::vec((0..=3 * DAY_MS).prop_map(Duration::from_millis), 0..12)
    }

    fn retry_after() -> impl Strategy<Value = Option<Duration>> {
        proptest::option::of((0..=7 * DAY_MS).prop_map(Duration::from_millis))
    }

    /// The jitter factors `jitter_factor` can return, its ends included, and a few it
    /// cannot (which must be clamped).
    fn factor() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(1.0 - JITTER),
            Just(1.0 + JITTER),
            (1.0 - JITTER)..=(1.0 + JITTER),
            -10.0f64..10.0,
        ]
    }

    /// Unix milliseconds from 2001 to 2100.
    fn now() -> impl Strategy<Value = i64> {
        1_000_000_000_000i64..4_102_444_800_000
    }

    proptest! {
        #[test]
        fn delivered_stays_delivered(schedule in schedule(), attempts in 0i64..20, now in now(), factor in factor()) {
            prop_assert_eq!(next_state(&Verdict::Delivered, attempts, &schedule, now, factor), NextState::Delivered);
        }

        #[test]
        fn a_permanent_failure_is_dead(schedule in schedule(), attempts in 0i64..20, now in now(), factor in factor()) {
            let verdict = Verdict::Permanent { reason: "400".into() };
            prop_assert_eq!(next_state(&verdict, attempts, &schedule, now, factor), NextState::Dead);
        }

        #[test]
        fn a_retry_waits_its_step_within_the_jitter_unless_a_longer_retry_after_wins(
            schedule in schedule(),
            index in any::<proptest::sample::Index>(),
            after in retry_after(),
            now in now(),
            factor in factor(),
        ) {
            prop_assume!(!schedule.is_empty());
            let attempts = index.index(schedule.len());
            let verdict = Verdict::Retry { after, reason: "503".into() };
            let NextState::Retry { at_ms } = next_state(&verdict, attempts as i64, &schedule, now, factor) else {
                return Err(TestCaseError::fail("a retry within the schedule is retried"));
            };
            let wait_ms = (at_ms - now) as f64;
            let step_ms = schedule[attempts].as_secs_f64() * 1000.0;
            // Milliseconds are truncated, so allow one below the lower bound; the f64 product
            // can land a hair above the upper one (16658.405 s × 1.2), so one above it too.
            let jittered = wait_ms >= step_ms * (1.0 - JITTER) - 1.0 && wait_ms <= step_ms * (1.0 + JITTER) + 1.0;
            match after {
                Some(after) => {
                    let after_ms = after.as_millis() as f64;
                    prop_assert!(wait_ms >= after_ms, "waited {}ms, Retry-After asked {}ms", wait_ms, after_ms);
                    prop_assert!(jittered || wait_ms == after_ms, "waited {}ms for a {}ms step", wait_ms, step_ms);
                }
                None => prop_assert!(jittered, "waited {}ms for a {}ms step", wait_ms, step_ms),
            }
        }

        #[test]
        fn past_the_end_of_the_schedule_a_retry_is_dead(
            schedule in schedule(),
            beyond in 0i64..100,
            after in retry_after(),
            now in now(),
            factor in factor(),
        ) {
            let verdict = Verdict::Retry { after, reason: "503".into() };
            let attempts = schedule.len() as i64 + beyond;
            prop_assert_eq!(next_state(&verdict, attempts, &schedule, now, factor), NextState::Dead);
        }
    }

    #[test]
    fn the_jitter_factor_stays_within_twenty_percent() {
        for _ in 0..10_000 {
            let factor = jitter_factor();
            assert!(
                ((1.0 - JITTER)..=(1.0 + JITTER)).contains(&factor),
                "{factor}"
            );
        }
    }
}
