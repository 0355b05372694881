//! Which instance polls each source. On PostgreSQL several instances share one database:
//! each source is polled under a lease row that its holder renews every sixth of
//! `state.lease`; a holder that cannot renew stops polling before its lease can run out,
//! and another instance takes the source over once it has (docs/architecture.md, section
//! 3). On SQLite one instance holds every lease without writing anything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Config;
use crate::metrics::{Metrics, SourceLabels};
use crate::shutdown::CancellationToken;
use crate::sources::SourceKind;
use crate::store::{Holder, Store};

use super::{Generation, StateHealth};

/// Renewals per lease: a holder tries five more times before its lease could run out, so
/// one slow statement or a database failover of a few seconds costs no failover.
const RENEWALS_PER_LEASE: u32 = 6;

/// The part of the lease a holder gives up at its end: it stops polling this much before
/// the database would let another instance in, which covers the time a run takes to
/// notice (its next await) and clocks that run at slightly different rates.
const SAFETY_FRACTION: u32 = 10;

const SOURCES: [SourceKind; 2] = [SourceKind::Briefs, SourceKind::Conversations];

/// Cheap to clone; every source loop holds one.
#[derive(Clone)]
pub struct Leadership {
    /// None: SQLite, where this instance is the only one and holds every lease.
    shared: Option<Arc<Shared>>,
}

struct Shared {
    store: Store,
    holder: Holder,
    lease: Duration,
    metrics: Metrics,
    /// Renewals wait while the state database does not record, and the terms end at once
    /// when it stops.
    state: StateHealth,
    /// Per source: until when this instance may poll it (by the local monotonic clock);
    /// None while another instance holds it.
    terms: BTreeMap<&'static str, watch::Sender<Option<Instant>>>,
}

impl Leadership {
    /// One instance alone (SQLite): every source is always its own.
    pub fn single(config: &Config, metrics: &Metrics) -> Self {
        for kind in SourceKind::enabled(config) {
            metrics
                .source_leader
                .get_or_create(&SourceLabels {
                    source: kind.name().to_owned(),
                })
                .set(1);
        }
        metrics.instances.set(1);
        Self { shared: None }
    }

    /// Several instances may share `store` (PostgreSQL): nothing is held until
    /// [`Leadership::run`] has taken it.
    pub fn shared(store: Store, config: &Config, metrics: Metrics, state: StateHealth) -> Self {
        let name = config.state.instance_name();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|host| host.trim().to_owned())
            .unwrap_or_default();
        let started_at = crate::store::now_ms();
        let holder = Holder {
            token: format!("{name}/{host}/{}/{started_at}", std::process::id()),
            name,
            host,
            started_at,
        };
        let terms = SOURCES
            .iter()
            .map(|kind| (kind.name(), watch::Sender::new(None)))
            .collect();
        Self {
            shared: Some(Arc::new(Shared {
                store,
                holder,
                lease: config.state.lease,
                metrics,
                state,
                terms,
            })),
        }
    }

    /// This instance's name, as `status` lists it (None on SQLite).
    pub fn instance(&self) -> Option<&str> {
        self.shared
            .as_ref()
            .map(|shared| shared.holder.name.as_str())
    }

    fn term(&self, kind: SourceKind) -> Option<watch::Receiver<Option<Instant>>> {
        let shared = self.shared.as_ref()?;
        shared.terms.get(kind.name()).map(watch::Sender::subscribe)
    }

    /// Whether this instance may poll `kind` now.
    pub fn holds(&self, kind: SourceKind) -> bool {
        match self.term(kind) {
            None => true,
            Some(term) => term.borrow().is_some_and(|until| until > Instant::now()),
        }
    }

    /// Completes once this instance holds `kind` (at once when it does).
    pub async fn taken(&self, kind: SourceKind) {
        let Some(mut term) = self.term(kind) else {
            return;
        };
        loop {
            if term
                .borrow_and_update()
                .is_some_and(|until| until > Instant::now())
            {
                return;
            }
            if term.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Completes when this instance may no longer poll `kind`: its lease went to another
    /// instance, or was not renewed in time. Never on SQLite.
    pub async fn lost(&self, kind: SourceKind) {
        let Some(mut term) = self.term(kind) else {
            return std::future::pending().await;
        };
        loop {
            let until = *term.borrow_and_update();
            match until {
                Some(until) if until > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        changed = term.changed() => if changed.is_err() { return },
                    }
                }
                _ => return,
            }
        }
    }

    /// Heartbeat and leases, every sixth of `state.lease`, until `stop`. Nothing to do on
    /// SQLite.
    pub async fn run(
        &self,
        generations: watch::Receiver<Arc<Generation>>,
        stop: CancellationToken,
    ) {
        let Some(shared) = &self.shared else {
            return;
        };
        let every = (shared.lease / RENEWALS_PER_LEASE).max(Duration::from_millis(500));
        let mut ticks = tokio::time::interval(every);
        // A late tick is not made up for: renewing twice in a row gains nothing.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut failing = false;
        loop {
            let up = shared.state.is_up();
            tokio::select! {
                _ = ticks.tick() => {}
                // The state database stopped recording: polling stops now, not when the
                // terms run out (nothing a poll finds could be recorded).
                () = shared.state.down(), if up => {}
                // Back: renew at once rather than at the next tick.
                () = shared.state.up(), if !up => {}
                _ = stop.cancelled() => break,
            }
            if !shared.state.is_up() {
                // Its own log line says why; the leases wait for it to come back, and the
                // rows run out in the database meanwhile (another instance that still
                // reaches it takes over).
                shared.end_terms();
                continue;
            }
            let config = generations.borrow().config.clone();
            let renewed = tokio::select! {
                renewed = tokio::time::timeout(every, shared.renew(&config)) => renewed,
                // Not left to time out: the terms end now (a renewal cut short extends
                // no term, whatever the database made of it).
                () = shared.state.down() => {
                    shared.end_terms();
                    continue;
                }
            };
            if !matches!(renewed, Ok(Ok(()))) {
                // Whether the database is away is the state watch's to find out (and say).
                shared.state.suspect();
            }
            match renewed {
                Ok(Ok(())) if failing => {
                    failing = false;
                    tracing::info!("The state database answers again; leases renewed.");
                }
                Ok(Ok(())) => {}
                Ok(Err(error)) if !failing => {
                    failing = true;
                    tracing::error!(%error, lease_s = shared.lease.as_secs(), "Cannot renew this instance's source leases; its polling stops before they can run out, and resumes (here or on another instance) once the database answers.");
                }
                Err(_) if !failing => {
                    failing = true;
                    tracing::error!(
                        timeout_ms = every.as_millis() as u64,
                        "Renewing this instance's source leases timed out; its polling stops before they can run out, and resumes (here or on another instance) once the database answers."
                    );
                }
                _ => {}
            }
        }
    }

    /// Gives the leases up (a clean stop, once the pollers have stopped), so another
    /// instance takes the sources over at its next renewal; a crash leaves them to run
    /// out.
    pub async fn release(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        for term in shared.terms.values() {
            term.send_replace(None);
        }
        if let Err(error) = shared.store.release_source_leases(&shared.holder).await {
            tracing::warn!(%error, "Could not give up the source leases; another instance takes the sources over when they run out.");
        }
    }
}

impl Shared {
    /// This instance polls nothing until its next renewal.
    fn end_terms(&self) {
        for (source, term) in &self.terms {
            if term.send_replace(None).is_some() {
                self.metrics
                    .source_leader
                    .get_or_create(&SourceLabels {
                        source: (*source).to_owned(),
                    })
                    .set(0);
            }
        }
    }

    async fn renew(&self, config: &Config) -> crate::store::Result<()> {
        self.store.heartbeat(&self.holder).await?;
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let enabled = SourceKind::enabled(config);
        for kind in SOURCES {
            let term = &self.terms[kind.name()];
            let held_before = term.borrow().is_some_and(|until| until > Instant::now());
            let held = if enabled.contains(&kind) {
                // Measured from before the statement: the database's expiry is later
                // than this, so the local term ends first.
                let asked = Instant::now();
                let held = self
                    .store
                    .hold_lease(kind.name(), &self.holder, lease_ms)
                    .await?;
                let until = asked + self.lease - self.lease / SAFETY_FRACTION;
                term.send_replace(held.then_some(until));
                held
            } else {
                term.send_replace(None);
                false
            };
            match (held_before, held) {
                (false, true) => {
                    tracing::info!(source = kind.name(), instance = %self.holder.name, "This instance polls the source now (it holds its lease).")
                }
                (true, false) => {
                    tracing::warn!(source = kind.name(), instance = %self.holder.name, "Another instance holds the source's lease now; this one stops polling it.")
                }
                _ => {}
            }
            self.metrics
                .source_leader
                .get_or_create(&SourceLabels {
                    source: kind.name().to_owned(),
                })
                .set(i64::from(held));
        }
        let live = self.store.live_instances(lease_ms).await?;
        self.metrics.instances.set(live);
        Ok(())
    }
}
