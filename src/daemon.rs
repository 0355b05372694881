//! `run` and `sync --once`: wiring the client, the store, the sources, the scheduler and
//! the dispatcher together, and the daemon's life (signals, shutdown).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clairo_connectors::Connector;
use tokio::sync::watch;

use crate::clairo::{ClairoClient, ClientOptions, RateLimiter};
use crate::config::{Config, LoadedConfig, Schedule};
use crate::dispatch::Dispatcher;
use crate::metrics::{Metrics, PollLabels, SourceLabels};
use crate::sources::{self, PollError, SourceContext, SourceKind, Wakers};
use crate::store::Store;

/// After Clairo rejects the key (401) or the plan (403), polling pauses this long: the
/// problem needs a person, and hammering the API with a bad key helps nobody. A reload
/// (SIGHUP) ends the pause at once.
pub const AUTH_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// The longest single sleep of the scheduler: after it, the wall clock is read again, so
/// a clock that jumped (NTP, suspend) is noticed within this long.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Shared between the sources and the health endpoint: whether Clairo accepts the key.
#[derive(Default)]
pub struct AuthGate {
    blocked: Mutex<Option<(Instant, String)>>,
}

impl AuthGate {
    pub fn block(&self, reason: String) {
        *self.blocked.lock().expect("auth gate") = Some((Instant::now() + AUTH_BACKOFF, reason));
    }

    pub fn clear(&self) {
        *self.blocked.lock().expect("auth gate") = None;
    }

    /// The reason polling is paused, while it is.
    pub fn blocked(&self) -> Option<String> {
        let guard = self.blocked.lock().expect("auth gate");
        guard
            .as_ref()
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, reason)| reason.clone())
    }

    /// Whether the last answer was a rejection (for readiness), even after the pause.
    pub fn rejected(&self) -> Option<String> {
        self.blocked
            .lock()
            .expect("auth gate")
            .as_ref()
            .map(|(_, reason)| reason.clone())
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

impl Runtime {
    pub async fn start(
        loaded: &LoadedConfig,
        limiter: Option<Arc<RateLimiter>>,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(loaded.config.clone());
        if let Some(parent) = config.state.path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("cannot create the state directory {}", parent.display())
            })?;
        }
        let store = Store::open(&config.state.path).await?;
        let metrics = Metrics::new();
        let limiter = limiter
            .unwrap_or_else(|| Arc::new(RateLimiter::new(config.clairo.max_requests_per_minute)));
        let client = build_client(loaded, Some(limiter.clone()), metrics.clone())?;
        let connectors = build_connectors(&config)?;
        let sources: Vec<&str> = SourceKind::enabled(&config)
            .iter()
            .map(|kind| kind.name())
            .collect();
        metrics.init_labels(&sources, connectors.keys());
        Ok(Self {
            config,
            store,
            metrics,
            client,
            wakers: Wakers::default(),
            auth: Arc::new(AuthGate::default()),
            connectors,
            limiter,
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

    /// Builds the generation of a reloaded config (secrets re-read by the loader). The
    /// state database and the listen address stay as they were: those need a restart.
    pub fn generation_for(&self, loaded: &LoadedConfig) -> anyhow::Result<Generation> {
        let config = Arc::new(loaded.config.clone());
        if config.state.path != self.config.state.path {
            tracing::warn!("state.path changed; the new path is used only after a restart.");
        }
        if config.http.listen != self.config.http.listen
            || config.http.enabled != self.config.http.enabled
        {
            tracing::warn!("[http] changed; it takes effect only after a restart.");
        }
        let client = build_client(loaded, Some(self.limiter.clone()), self.metrics.clone())?;
        let connectors = build_connectors(&config)?;
        let context = SourceContext::new(
            &config,
            client,
            self.store.clone(),
            self.metrics.clone(),
            self.wakers.clone(),
        );
        Ok(Generation {
            config,
            context,
            connectors,
        })
    }

    pub fn source_context(&self) -> SourceContext {
        SourceContext::new(
            &self.config,
            self.client.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.wakers.clone(),
        )
    }

    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(
            self.store.clone(),
            self.metrics.clone(),
            self.wakers.clone(),
            self.config.delivery.clone(),
        )
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

/// One run of one source: recorded in the store, counted, logged.
pub async fn run_source(
    kind: SourceKind,
    context: &SourceContext,
    config: &Config,
    auth: &AuthGate,
) -> Result<sources::PollReport, PollError> {
    let source = kind.name();
    if let Err(error) = context.store.start_run(source).await {
        if error.is_disk_full() {
            // Nothing polled now could be recorded: spend no API requests on it.
            tracing::error!(source, %error, "The state database cannot be written (disk full or read-only); this poll is skipped and the next scheduled one tries again. Free space under the state directory.");
            context
                .metrics
                .poll_runs
                .get_or_create(&PollLabels {
                    source: source.to_owned(),
                    outcome: "failure".to_owned(),
                })
                .inc();
            return Err(PollError::Store(error));
        }
        tracing::error!(source, %error, "Cannot record the start of a poll run.");
    }
    let started = Instant::now();
    let result = sources::poll(kind, context, config).await;
    let outcome = if result.is_ok() { "success" } else { "failure" };
    context
        .metrics
        .poll_runs
        .get_or_create(&PollLabels {
            source: source.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
    let error_text = result.as_ref().err().map(ToString::to_string);
    if let Err(error) = context
        .store
        .finish_run(source, error_text.as_deref())
        .await
    {
        tracing::error!(source, %error, "Cannot record the end of a poll run.");
    }
    match &result {
        Ok(report) => {
            auth.clear();
            context
                .metrics
                .last_success
                .get_or_create(&SourceLabels {
                    source: source.to_owned(),
                })
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            tracing::info!(
                source,
                listed = report.listed,
                new = report.new_items,
                events = report.events,
                detail_calls = report.detail_calls,
                skipped = report.skipped,
                elapsed_ms = (started.elapsed().as_micros() as f64 / 1000.0),
                "Poll run finished."
            );
        }
        Err(error) if error.is_auth_failure() => {
            auth.block(error.to_string());
            tracing::error!(
                source,
                %error,
                pause_s = AUTH_BACKOFF.as_secs(),
                "Clairo refused the credentials; polling pauses. Fix the key, then reload (systemctl reload clairo-sync)."
            );
        }
        Err(error) => {
            tracing::error!(source, %error, "Poll run failed; the next scheduled run tries again.")
        }
    }
    result
}

/// Schedule firings a source may let pass without completing a run before it counts as
/// stale: one run may be slow (the firings it overlaps coalesce into the next run) and the
/// next may fail and be retried, but three in a row means it is stuck.
pub const STALE_AFTER_FIRINGS: usize = 3;

/// Added to those firings: a sound run may wait out a whole rate window
/// ([`crate::clairo::MAX_RESET_WAIT`], 65 s) and then still has its requests to make.
pub const STALE_MARGIN: Duration = Duration::from_secs(90);

/// How often the `source_stale` gauge is brought up to date.
const STALE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why `kind` is stale at `now_ms`, or `None` while it keeps to its schedule: no run of it
/// completed (successfully or not) within [`STALE_AFTER_FIRINGS`] firings of its schedule
/// plus [`STALE_MARGIN`], counted from its last completed run or from the start of the
/// run still going, whichever is later (a restart starts a fresh run).
pub fn stale_reason(
    kind: SourceKind,
    schedule: &Schedule,
    run: Option<&crate::store::SourceRun>,
    now_ms: i64,
) -> Option<String> {
    // No run yet: readiness already says so, and the first starts at start-up.
    let run = run?;
    let finished = run.last_finished_at;
    let since_ms = finished.map_or(run.last_started_at, |at| at.max(run.last_started_at));
    let since = chrono::DateTime::from_timestamp_millis(since_ms)?;
    let mut deadline = since;
    for _ in 0..STALE_AFTER_FIRINGS {
        // A schedule that fires no more cannot be behind it.
        deadline = schedule.next_after(deadline)?;
    }
    let deadline = deadline + chrono::TimeDelta::from_std(STALE_MARGIN).ok()?;
    if deadline.timestamp_millis() >= now_ms {
        return None;
    }
    let show = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || "an unknown time".to_owned(),
            |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    };
    let completed = finished.map_or_else(|| "the daemon first started".to_owned(), show);
    let going = if finished.is_none_or(|at| run.last_started_at > at) {
        format!(
            "; the run that started at {} is still going",
            show(run.last_started_at)
        )
    } else {
        String::new()
    };
    Some(format!(
        "source {} has not completed a run since {completed}{going}, longer than {STALE_AFTER_FIRINGS} runs of its schedule (\"{}\") and {} s allow; see `clairo-sync status` and the daemon's log",
        kind.name(),
        schedule.as_str(),
        STALE_MARGIN.as_secs(),
    ))
}

/// Keeps `clairo_sync_source_stale{source}` current: 1 while [`stale_reason`] has one.
/// Its own task, so a source stuck in a run still shows as stale.
pub async fn stale_loop(
    generations: watch::Receiver<Arc<Generation>>,
    store: Store,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(STALE_CHECK_EVERY);
    // Skip, not burst: after a stall one check says as much as many.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let Ok(runs) = store.source_runs().await else {
            continue;
        };
        let generation = generations.borrow().clone();
        let now = crate::store::now_ms();
        for kind in SourceKind::enabled(&generation.config) {
            let Some(schedule) = generation.schedule(kind) else {
                continue;
            };
            let run = runs.iter().find(|run| run.source == kind.name());
            let stale = stale_reason(kind, &schedule, run, now).is_some();
            metrics
                .source_stale
                .get_or_create(&SourceLabels {
                    source: kind.name().to_owned(),
                })
                .set(i64::from(stale));
        }
    }
}

/// Sleeps until `schedule` next fires, re-reading the wall clock at least every
/// [`MAX_SLEEP`] so a clock jump neither loses a run nor causes a burst of them.
/// Returns false when `shutdown` turned true meanwhile.
pub async fn sleep_until_next(schedule: &Schedule, shutdown: &mut watch::Receiver<bool>) -> bool {
    let Some(mut target) = schedule.next_after(chrono::Utc::now()) else {
        // A schedule that never fires again (a date in the past): wait for shutdown.
        let _ = shutdown.wait_for(|stop| *stop).await;
        return false;
    };
    loop {
        let now = chrono::Utc::now();
        if now >= target {
            return true;
        }
        // The clock went backwards: a sooner firing exists now.
        if let Some(sooner) = schedule.next_after(now)
            && sooner < target
        {
            target = sooner;
        }
        let wait = (target - now).to_std().unwrap_or_default().min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            _ = shutdown.wait_for(|stop| *stop) => return false,
        }
    }
}

/// A source's life in the daemon: once at start-up (covering runs missed while down),
/// then on its schedule, never two runs at once (the loop is sequential), runs missed
/// while one was going coalesced into the next. A reload swaps the schedule at once; a run
/// in progress finishes on the config it started with. After a failed run, a reload runs
/// the source at once (the fix for a rejected key takes effect without waiting).
pub async fn source_loop(
    kind: SourceKind,
    mut generations: watch::Receiver<Arc<Generation>>,
    auth: Arc<AuthGate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut run_now = true;
    let mut last_failed = false;
    loop {
        let generation = generations.borrow_and_update().clone();
        let Some(schedule) = generation.schedule(kind) else {
            // Not configured (now): wait for a reload that turns it on.
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            run_now = true;
            continue;
        };
        if !run_now {
            tokio::select! {
                fired = sleep_until_next(&schedule, &mut shutdown) => if !fired { return },
                changed = generations.changed() => {
                    if changed.is_err() { return }
                    run_now = last_failed;
                    continue;
                }
            }
        }
        run_now = false;
        if *shutdown.borrow() {
            return;
        }
        if let Some(reason) = auth.blocked() {
            tracing::debug!(source = kind.name(), %reason, "Polling paused after Clairo refused the credentials.");
            continue;
        }
        let run = run_source(kind, &generation.context, &generation.config, &auth);
        tokio::select! {
            result = run => last_failed = result.is_err(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
