//! One attempt and its record: an attempt returns what came of it ([`Finished`]) to its
//! worker, which records the attempts that finished together in one transaction, with the
//! claim of the slots they freed when it is busy (docs/architecture.md, "Groups and
//! turns"), and then logs and counts each.

use std::time::{Duration, Instant};

use clairo_connectors::{Attempt, Connector, Delivery, Verdict};
use tokio::task::JoinSet;

use super::{Dispatcher, StoreCheckpoints, jitter_factor, next_state};
use crate::metrics::{ConnectorLabels, DeliveryLabels};
use crate::store::{AttemptRow, Claim, ClaimedDelivery, Finish, NextState, StoreError, now_ms};

/// One attempt made, not yet recorded.
pub(super) struct Finished {
    delivery: ClaimedDelivery,
    row: AttemptRow,
    next: NextState,
}

impl Finished {
    fn finish(&self) -> Finish<'_> {
        Finish {
            lease: &self.delivery.lease,
            attempt: &self.row,
            next: &self.next,
        }
    }
}

/// Says that attempts could not be recorded (the state database failed).
fn not_recorded(finished: &[Finished], error: &StoreError) {
    for finished in finished {
        let delivery = &finished.delivery;
        tracing::error!(connector = %delivery.connector, event_id = %delivery.event.id, %error, "Cannot record a delivery attempt; it will be repeated when its lease ends.");
    }
}

/// How long the first attempt to finish waits for the others in flight, to be recorded
/// with them in one turn (see [`gather`]).
const GATHER: Duration = Duration::from_millis(GATHER_MS);
const GATHER_MS: u64 = 2;

/// Waits up to [`GATHER`] for the attempts still in flight to finish too, moving each
/// into `finished` as it does: attempts that end within a few milliseconds of each other
/// (a burst to a fast receiver) cost one transaction instead of one each, for at most that
/// much more latency.
pub(super) async fn gather(in_flight: &mut JoinSet<Finished>, finished: &mut Vec<Finished>) {
    let deadline = tokio::time::Instant::now() + GATHER;
    while !in_flight.is_empty() {
        match tokio::time::timeout_at(deadline, in_flight.join_next()).await {
            Ok(Some(attempt)) => finished.extend(attempt.ok()),
            Ok(None) | Err(_) => break,
        }
    }
}

/// Moves every attempt of `in_flight` that has finished into `finished`.
pub(super) fn reap(in_flight: &mut JoinSet<Finished>, finished: &mut Vec<Finished>) {
    while let Some(attempt) = in_flight.try_join_next() {
        finished.extend(attempt.ok());
    }
}

impl Dispatcher {
    /// One attempt at one claimed delivery: what came of it, for [`Dispatcher::record`].
    pub(super) async fn attempt(
        &self,
        connector: &dyn Connector,
        delivery: ClaimedDelivery,
    ) -> Finished {
        let started_at = now_ms();
        let started = Instant::now();
        let checkpoints = StoreCheckpoints {
            store: self.store.clone(),
            lease: delivery.lease.clone(),
        };
        let attempt_number = delivery.attempts + 1;
        // The lease must outlive the attempt, or another worker could take it meanwhile.
        let limit = self
            .settings
            .lease
            .saturating_sub(Duration::from_secs(2))
            .max(Duration::from_secs(1));
        let attempt = match tokio::time::timeout(
            limit,
            connector.deliver(Delivery {
                event: &delivery.event,
                envelope: Some(&delivery.envelope),
                attempt: attempt_number as u32,
                checkpoint: delivery.checkpoint.clone(),
                checkpoints: &checkpoints,
            }),
        )
        .await
        {
            Ok(attempt) => attempt,
            Err(_) => Attempt::retry(
                format!("the attempt took longer than {}s", limit.as_secs()),
                None,
            ),
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let next = next_state(
            &attempt.verdict,
            delivery.attempts,
            &self.settings.retry_schedule,
            now_ms(),
            jitter_factor(),
        );
        let (outcome, reason) = match (&attempt.verdict, &next) {
            (Verdict::Delivered, _) => ("delivered", None),
            (Verdict::Retry { reason, .. }, NextState::Retry { .. }) => {
                ("retry", Some(reason.clone()))
            }
            (Verdict::Retry { reason, .. }, _) => {
                ("dead", Some(format!("{reason} (retries exhausted)")))
            }
            (Verdict::Permanent { reason }, _) => ("dead", Some(reason.clone())),
        };
        Finished {
            row: AttemptRow {
                attempt: attempt_number,
                started_at,
                duration_ms,
                status_code: attempt.status_code.map(i64::from),
                outcome: outcome.to_owned(),
                reason,
                response: attempt.response,
            },
            next,
            delivery,
        }
    }

    /// Records attempts that finished, in one transaction, then says what came of each
    /// (log line, metrics). An attempt whose record cannot be written is attempted again
    /// when its lease ends: at least once, never lost.
    pub(super) async fn record(&self, finished: Vec<Finished>) {
        if finished.is_empty() {
            return;
        }
        let finishes: Vec<Finish<'_>> = finished.iter().map(Finished::finish).collect();
        let recorded = match self.store.finish_attempts(&finishes).await {
            Ok(recorded) => recorded,
            Err(error) => return not_recorded(&finished, &error),
        };
        self.said_all(&finished, &recorded);
    }

    /// [`Dispatcher::record`] and a claim of up to `limit` due deliveries, in one
    /// transaction. When it fails, nothing of either is written: the attempts are said
    /// to be repeated after their leases, as `record` says.
    pub(super) async fn record_and_claim(
        &self,
        connector: &str,
        finished: Vec<Finished>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, crate::store::StoreError> {
        let finishes: Vec<Finish<'_>> = finished.iter().map(Finished::finish).collect();
        let now = now_ms();
        let claim = Claim {
            connector,
            owner: &self.owner,
            now,
            lease_until: now + self.settings.lease.as_millis() as i64,
            limit: limit as i64,
        };
        match self.store.finish_and_claim(&finishes, &claim).await {
            Ok((recorded, claimed)) => {
                self.said_all(&finished, &recorded);
                Ok(claimed)
            }
            Err(error) => {
                not_recorded(&finished, &error);
                Err(error)
            }
        }
    }

    /// The log lines and the metrics of a turn's attempts, once their records are
    /// written. The deliveries share one line (one per turn rather than one per event: a
    /// backlog of thousands would otherwise flood the journal, whose rate limit would then
    /// drop the warnings too, and each line costs CPU per event, BENCHMARKS.md).
    fn said_all(&self, finished: &[Finished], recorded: &[bool]) {
        let mut delivered = Vec::new();
        for (finished, recorded) in finished.iter().zip(recorded) {
            if *recorded && finished.next == NextState::Delivered {
                delivered.push(finished);
            }
            self.said(finished, *recorded);
        }
        match delivered.as_slice() {
            [] => {}
            [one] => tracing::info!(
                connector = one.delivery.connector.as_str(),
                event_id = %one.delivery.event.id,
                event_type = %one.delivery.event.kind,
                attempt = one.row.attempt,
                "Delivered."
            ),
            several => {
                let ids: Vec<&str> = several
                    .iter()
                    .map(|f| f.delivery.event.id.as_str())
                    .collect();
                tracing::info!(
                    connector = several[0].delivery.connector.as_str(),
                    event_ids = %ids.join(","),
                    "Delivered {} events.",
                    several.len()
                );
            }
        }
    }

    /// The metrics of one attempt, and its log line unless it was delivered (those are
    /// [`Dispatcher::said_all`]'s), once its record is written (or known to be another
    /// worker's to write).
    fn said(&self, finished: &Finished, recorded: bool) {
        let Finished {
            delivery,
            row,
            next,
        } = finished;
        let connector_name = delivery.connector.as_str();
        if !recorded {
            // Another worker claimed the delivery after this lease ran out; its record is
            // the one that counts.
            let text = StoreError::LeaseLost {
                delivery_id: delivery.lease.delivery_id,
            }
            .to_string();
            let text = text.strip_prefix("the ").unwrap_or(&text);
            tracing::warn!(connector = connector_name, event_id = %delivery.event.id, "The {text}");
            return;
        }
        let reason = row.reason.as_deref().unwrap_or("");
        match next {
            NextState::Delivered => {}
            NextState::Retry { at_ms } => tracing::warn!(
                connector = connector_name,
                event_id = %delivery.event.id,
                attempt = row.attempt,
                retry_in_s = (at_ms - now_ms()) / 1000,
                reason,
                "Delivery failed; will retry."
            ),
            NextState::Dead => tracing::error!(
                connector = connector_name,
                event_id = %delivery.event.id,
                attempt = row.attempt,
                reason,
                "Delivery is dead; `clairo-sync deliveries list --dead` shows it, `deliveries retry` replays it."
            ),
        }
        self.metrics
            .deliveries
            .get_or_create(&DeliveryLabels {
                connector: connector_name.to_owned(),
                outcome: row.outcome.clone(),
            })
            .inc();
        if *next == NextState::Delivered {
            let latency = (now_ms() - delivery.event_created_at).max(0) as f64 / 1000.0;
            self.metrics
                .delivery_latency
                .get_or_create(&ConnectorLabels {
                    connector: connector_name.to_owned(),
                })
                .observe(latency);
        }
    }
}
