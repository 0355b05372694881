//! The daemon's life: [`run`] holds it from start to exit. A [`Runtime`] (what lives as
//! long as the process) and a [`Generation`] (what one config produces, replaced on
//! reload) are built here; the supervisor runs every task on them, the signals stop or
//! reload it (docs/architecture.md, section 5).
//!
//! - `supervisor.rs`: spawns and joins the tasks, swaps generations on reload
//! - `signals.rs`: SIGTERM/SIGINT stop, SIGHUP reloads; `reload.rs`: what a reload does
//! - `schedule.rs`: the pollers on their schedules; `stale.rs`: readiness staleness
//! - `database.rs`: whether the state database records (PostgreSQL can go away and back)
//! - `systemd.rs`: readiness notifications and the watchdog

mod database;
mod leases;
mod reload;
mod schedule;
mod signals;
mod stale;
mod supervisor;
mod systemd;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clairo_connectors::Connector;
use tokio::sync::mpsc;

use crate::auth::AuthGate;
use crate::clairo::{ClairoClient, ClientOptions, RateLimiter};
use crate::config::{Config, ConfigErrors, LoadedConfig, Schedule, StateBackend};
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::shutdown::CancellationToken;
use crate::sources::{SourceContext, SourceKind};
use crate::store::{Store, Wakers};
pub use database::StateHealth;
pub use leases::Leadership;

pub use schedule::{run_source, sleep_until_next, source_loop};
pub use stale::{STALE_AFTER_FIRINGS, STALE_MARGIN, stale_loop, stale_reason};
pub use supervisor::serve;

/// Runs the daemon until SIGTERM or SIGINT (then stops as docs/architecture.md section 5
/// says and returns), reloading on SIGHUP with the config `load` reads then.
pub async fn run(
    runtime: Runtime,
    load: impl Fn() -> Result<LoadedConfig, ConfigErrors>,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let serving = supervisor::serve(runtime, reload_rx, stop.clone());
    tokio::pin!(serving);
    let mut signals = signals::Signals::install()?;
    loop {
        tokio::select! {
            result = &mut serving => return result,
            signal = signals.next() => match signal {
                signals::Signal::Stop => break,
                signals::Signal::Reload => reload::read_config(&load, &reload_tx).await,
            },
        }
    }
    tracing::info!("Stopping: no new polls; in-flight deliveries finish or are released.");
    systemd::notify(&[sd_notify::NotifyState::Stopping]);
    stop.cancel();
    serving.await
}

/// Runs `work` at once and then every `period` until `stop` is cancelled; a run in
/// progress is not interrupted. Ticks missed while `work` ran are skipped, not burst: after
/// a stall one run says as much as many.
pub(crate) async fn every<F, W>(period: Duration, stop: &CancellationToken, mut work: W)
where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        work().await;
    }
}

/// Everything a running daemon holds. The store, metrics, wakers, auth state and rate
/// limiter live as long as the process; the rest is a [`Generation`], replaced on reload.
pub struct Runtime {
    pub config: Arc<Config>,
    pub store: Store,
    pub metrics: Metrics,
    pub client: ClairoClient,
    pub wakers: Wakers,
    pub auth: Arc<AuthGate>,
    pub connectors: BTreeMap<String, Arc<dyn Connector>>,
    pub limiter: Arc<RateLimiter>,
    /// Which sources this instance polls (all of them on SQLite).
    pub leadership: Leadership,
    /// Whether the state database records now (PostgreSQL: watched while running).
    pub state: StateHealth,
}

/// What one config produces: replaced whole on SIGHUP, so every part sees one config.
pub struct Generation {
    pub config: Arc<Config>,
    pub context: SourceContext,
    pub connectors: BTreeMap<String, Arc<dyn Connector>>,
}

impl Generation {
    pub fn schedule(&self, kind: SourceKind) -> Option<Schedule> {
        match kind {
            SourceKind::Briefs => self.config.sync.briefs.as_ref().map(|s| s.schedule.clone()),
            SourceKind::Conversations => self
                .config
                .sync
                .conversations
                .as_ref()
                .map(|s| s.schedule.clone()),
        }
    }
}

/// When the runtime reaches a PostgreSQL state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// At start: a server that cannot be used is an error (one-shot commands).
    Now,
    /// Whenever it answers: the daemon starts without it and waits (PostgreSQL only; a
    /// SQLite file is still opened at start).
    Later,
}

impl Runtime {
    /// The runtime with the state opened (and migrated) now: an error when it cannot be
    /// (`sync --once`, `demo`, the tests' own runtimes).
    pub async fn start(
        loaded: &LoadedConfig,
        limiter: Option<Arc<RateLimiter>>,
    ) -> anyhow::Result<Self> {
        Self::build(loaded, limiter, Reach::Now).await
    }

    /// The daemon's runtime: a SQLite state is opened now as by [`Runtime::start`]; a
    /// PostgreSQL one is reached once it answers, and the daemon runs (not ready) meanwhile.
    pub async fn start_daemon(loaded: &LoadedConfig) -> anyhow::Result<Self> {
        Self::build(loaded, None, Reach::Later).await
    }

    async fn build(
        loaded: &LoadedConfig,
        limiter: Option<Arc<RateLimiter>>,
        reach: Reach,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(loaded.config.clone());
        match config.state.backend() {
            StateBackend::Sqlite(path) => {
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                    && !parent.exists()
                {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("cannot create the state directory {}", parent.display())
                    })?;
                }
            }
            StateBackend::Postgres(url) => {
                // Moving to PostgreSQL leaves the file behind: what it still queues is
                // not sent by this daemon, and an operator should hear so once.
                if config.state.path.is_file() {
                    tracing::warn!(
                        file = %config.state.path.display(),
                        database = %url,
                        "The state is in PostgreSQL (state.url); the SQLite file at state.path is no longer used, and deliveries still pending in it are not sent. Run `clairo-sync status` on it with state.url removed to see them, and move the file aside once it is empty."
                    );
                }
            }
        }
        let password = loaded.state_password.as_ref().map(|secret| secret.expose());
        let metrics = Metrics::new();
        let (store, state) = match (config.state.backend(), reach) {
            (StateBackend::Sqlite(_), _) => {
                let store = Store::open_state(config.state.backend(), password).await?;
                (store, StateHealth::local(&metrics))
            }
            #[cfg(feature = "postgres")]
            (StateBackend::Postgres(url), Reach::Later) => {
                let store = Store::connect_later(url, password)?;
                let state = StateHealth::watched(store.clone(), metrics.clone(), false);
                (store, state)
            }
            (StateBackend::Postgres(_), _) => {
                let store = Store::open_state(config.state.backend(), password).await?;
                let state = StateHealth::watched(store.clone(), metrics.clone(), true);
                (store, state)
            }
        };
        let limiter = limiter
            .unwrap_or_else(|| Arc::new(RateLimiter::new(config.clairo.max_requests_per_minute)));
        let client = build_client(loaded, Some(limiter.clone()), metrics.clone())?;
        let connectors = build_connectors(&config)?;
        let sources: Vec<&str> = SourceKind::enabled(&config)
            .iter()
            .map(|kind| kind.name())
            .collect();
        metrics.init_labels(&sources, connectors.keys());
        let leadership = match config.state.backend() {
            StateBackend::Sqlite(_) => Leadership::single(&config, &metrics),
            StateBackend::Postgres(_) => {
                Leadership::shared(store.clone(), &config, metrics.clone(), state.clone())
            }
        };
        Ok(Self {
            config,
            store,
            metrics,
            client,
            wakers: Wakers::default(),
            auth: Arc::default(),
            connectors,
            limiter,
            leadership,
            state,
        })
    }

    /// The generation of the config the daemon started with.
    pub fn first_generation(&self) -> Generation {
        Generation {
            config: self.config.clone(),
            context: self.source_context(),
            connectors: self.connectors.clone(),
        }
    }

    pub fn source_context(&self) -> SourceContext {
        SourceContext::new(
            &self.config,
            self.client.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.wakers.clone(),
            self.auth.clone(),
        )
    }

    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(
            self.store.clone(),
            self.metrics.clone(),
            self.wakers.clone(),
            self.config.delivery.clone(),
            &self.config.state.instance_name(),
        )
        .with_rate_limits(&self.config.connectors)
    }
}

pub fn build_client(
    loaded: &LoadedConfig,
    limiter: Option<Arc<RateLimiter>>,
    metrics: Metrics,
) -> anyhow::Result<ClairoClient> {
    let clairo = &loaded.config.clairo;
    let api_key = loaded.api_key.clone().context("no Clairo API key")?;
    let limiter =
        limiter.unwrap_or_else(|| Arc::new(RateLimiter::new(clairo.max_requests_per_minute)));
    limiter.set_budget(clairo.max_requests_per_minute);
    let options = ClientOptions {
        base_url: url::Url::parse(&clairo.base_url).context("clairo.base_url")?,
        api_key,
        max_requests_per_minute: clairo.max_requests_per_minute,
        timeout: clairo.timeout,
        max_attempts: clairo.max_attempts,
        backoff_base: Duration::from_millis(500),
        backoff_cap: Duration::from_secs(30),
        max_response_size: clairo.max_response_size.bytes(),
    };
    Ok(ClairoClient::new(options, limiter, metrics)?)
}

pub fn build_connectors(config: &Config) -> anyhow::Result<BTreeMap<String, Arc<dyn Connector>>> {
    let mut connectors = BTreeMap::new();
    for (name, connector) in &config.connectors {
        let built = connector
            .build(name)
            .map_err(|error| anyhow::anyhow!("connectors.{name}: {error}"))?;
        connectors.insert(name.clone(), built);
    }
    Ok(connectors)
}
