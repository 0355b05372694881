//! `run` (the daemon) and `sync --once`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LoadedConfig, LogFormat};
use crate::daemon::{self, Generation, Runtime};
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::sources::{SourceKind, Wakers};
use crate::store::Store;

use super::{CommandError, CommandResult, load_daemon_config};

/// Logs go to stderr: readable by default, JSON on request; under journald (which stamps
/// each line itself) the readable form carries no timestamp of its own.
pub fn init_logging(config: &Config) {
    // `RUST_LOG` wins (read as tracing reads it: a bare word is a module at every level);
    // one that does not parse is reported once logging is up, and the config's
    // `log_level` (checked when the config loaded) is used instead.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|text| !text.trim().is_empty())
        .map(|text| text.parse::<Targets>().map_err(|error| (text, error)));
    let (filter, bad_env) = match from_env {
        Some(Ok(filter)) => (filter, None),
        other => (
            crate::config::log_filter(&config.log_level)
                .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO)),
            other.and_then(Result::err),
        ),
    };
    // Colours only for a person at a terminal, never in files, pipes or the journal.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match (config.log_format, under_journald) {
        (LogFormat::Json, _) => Box::new(layer.json().flatten_event(true)),
        (LogFormat::Text, true) => Box::new(layer.without_time().with_ansi(false)),
        (LogFormat::Text, false) => Box::new(layer),
    };
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
    if let Some((text, error)) = bad_env {
        tracing::warn!(
            rust_log = %text,
            "RUST_LOG is not a log filter ({error}); using log_level from the config. Write a level (e.g. debug) or per-target levels (e.g. info,clairo_sync=debug)."
        );
    }
}

pub async fn run(path: Option<&Path>) -> CommandResult {
    let loaded = load_daemon_config(path)?;
    init_logging(&loaded.config);
    let runtime = Runtime::start(&loaded, None)
        .await
        .map_err(CommandError::Other)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let serving = serve(runtime, reload_rx, stop_rx);
    tokio::pin!(serving);
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            result = &mut serving => return result.map_err(CommandError::Other),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                // Type=notify-reload (systemd 253+) matches the reload by MONOTONIC_USEC=,
                // which must come in the same datagram as RELOADING=1; older systemd
                // ignores the time.
                match NotifyState::monotonic_usec_now() {
                    Ok(now) => notify_systemd(&[NotifyState::Reloading, now]),
                    Err(_) => notify_systemd(&[NotifyState::Reloading]),
                }
                match load_daemon_config(path) {
                    Ok(loaded) => {
                        tracing::info!("SIGHUP: the config is valid; switching to it.");
                        let _ = reload_tx.send(loaded).await;
                    }
                    Err(errors) => {
                        for problem in &errors.0 {
                            tracing::error!(%problem, "SIGHUP: the new config is invalid; still running on the previous one.");
                        }
                        notify_systemd(&[NotifyState::Ready]);
                    }
                }
            }
        }
    }
    tracing::info!("Stopping: no new polls; in-flight deliveries finish or are released.");
    notify_systemd(&[NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    serving.await.map_err(CommandError::Other)
}

/// Tells systemd (Type=notify) about the daemon's state; a no-op outside systemd.
fn notify_systemd(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(error) = sd_notify::notify(states)
    {
        tracing::warn!(%error, "Cannot notify systemd.");
    }
}

/// The daemon's work until `stop` turns true: sources on their schedules, the dispatcher,
/// the health endpoint; each config from `reloads` replaces the running one.
pub async fn serve(
    runtime: Runtime,
    mut reloads: mpsc::Receiver<LoadedConfig>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime);
    warn_orphans(&runtime).await;
    let (generation_tx, generations) = watch::channel(Arc::new(runtime.first_generation()));
    let mut tasks = tokio::task::JoinSet::new();
    if runtime.config.http.enabled {
        let listener = tokio::net::TcpListener::bind(runtime.config.http.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on http.listen = {}; pick a free address",
                    runtime.config.http.listen
                )
            })?;
        let address = listener.local_addr().context("the listener's address")?;
        tracing::info!(%address, "Serving /metrics, /healthz and /readyz on http://{address}");
        let state = crate::http::HealthState::new(&runtime, generations.clone());
        let stop = stop.clone();
        tasks.spawn(async move { crate::http::serve(listener, state, stop).await });
    }
    {
        let generations = generations.clone();
        let store = runtime.store.clone();
        let metrics = runtime.metrics.clone();
        let wakers = runtime.wakers.clone();
        let stop = stop.clone();
        tasks.spawn(async move { dispatch_loop(generations, store, metrics, wakers, stop).await });
    }
    for kind in [SourceKind::Briefs, SourceKind::Conversations] {
        let generations = generations.clone();
        let auth = runtime.auth.clone();
        let stop = stop.clone();
        tasks.spawn(async move { daemon::source_loop(kind, generations, auth, stop).await });
    }
    {
        let generations = generations.clone();
        let stop = stop.clone();
        tasks.spawn(async move { meetings_loop(generations, stop).await });
    }
    {
        let generations = generations.clone();
        let store = runtime.store.clone();
        let metrics = runtime.metrics.clone();
        let stop = stop.clone();
        tasks.spawn(async move { daemon::stale_loop(generations, store, metrics, stop).await });
    }
    if SourceKind::enabled(&runtime.config).is_empty() && runtime.config.meetings.folders.is_empty()
    {
        tracing::warn!(
            "No source is enabled ([sync.briefs], [sync.conversations], [[meetings.folders]]): only queued deliveries will be sent."
        );
    }
    {
        let generations = generations.clone();
        let store = runtime.store.clone();
        let stop = stop.clone();
        tasks.spawn(async move { prune_loop(generations, store, stop).await });
    }
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let store = runtime.store.clone();
        let stop = stop.clone();
        tasks.spawn(async move { watchdog(interval, store, stop).await });
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        state = %runtime.config.state.path.display(),
        connectors = runtime.connectors.len(),
        "clairo-sync is running."
    );
    notify_systemd(&[NotifyState::Ready, NotifyState::Status("running")]);
    let mut stop_wait = stop.clone();
    loop {
        tokio::select! {
            Some(loaded) = reloads.recv() => {
                match runtime.generation_for(&loaded) {
                    Ok(generation) => {
                        runtime.auth.clear();
                        let _ = generation_tx.send(Arc::new(generation));
                        tracing::info!("Reloaded: schedules, routes, connectors and secrets are the new config's.");
                    }
                    Err(error) => tracing::error!(%error, "Reload failed; still running on the previous config."),
                }
                notify_systemd(&[NotifyState::Ready]);
            }
            _ = stop_wait.wait_for(|stop| *stop) => break,
        }
    }
    while tasks.join_next().await.is_some() {}
    runtime.store.close().await;
    tracing::info!("Stopped.");
    Ok(())
}

/// Runs the dispatcher for the current generation's connectors; on a reload the old
/// workers stop claiming, finish what is in flight, and the new ones take over.
async fn dispatch_loop(
    mut generations: watch::Receiver<Arc<Generation>>,
    store: Store,
    metrics: Metrics,
    wakers: Wakers,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let generation = generations.borrow_and_update().clone();
        let dispatcher = Dispatcher::new(
            store.clone(),
            metrics.clone(),
            wakers.clone(),
            generation.config.delivery.clone(),
        );
        let (retire_tx, retire_rx) = watch::channel(false);
        let connectors = generation.connectors.clone();
        let mut running = tokio::spawn(async move { dispatcher.run(connectors, retire_rx).await });
        let shutting_down = tokio::select! {
            changed = generations.changed() => changed.is_err(),
            _ = stop.wait_for(|stop| *stop) => true,
            _ = &mut running => return,
        };
        let _ = retire_tx.send(true);
        let _ = running.await;
        if shutting_down {
            return;
        }
    }
}

/// How long a reload lets an upload in flight finish: Clairo transcribes before it
/// answers, so an upload can take minutes, and one cut short is sent again (the API has
/// no idempotency key). SIGTERM still cuts it at `delivery.shutdown_timeout`.
const RELOAD_UPLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Watches the current generation's drop folders. On a reload the watchers stop taking
/// files, an upload in flight finishes (up to [`RELOAD_UPLOAD_GRACE`]), and only then do
/// the new config's watchers start, so no two generations handle one file. On SIGTERM
/// an upload in flight gets `delivery.shutdown_timeout`, then resumes at the next start.
async fn meetings_loop(
    mut generations: watch::Receiver<Arc<Generation>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let generation = generations.borrow_and_update().clone();
        let shutdown_timeout = generation.config.delivery.shutdown_timeout;
        let mut config = (*generation.config).clone();
        config.delivery.shutdown_timeout = RELOAD_UPLOAD_GRACE;
        let (retire_tx, retire_rx) = watch::channel(false);
        let context = generation.context.clone();
        let mut running = tokio::spawn(crate::sources::meetings::run(
            context,
            Arc::new(config),
            retire_rx,
        ));
        let mut idle = false;
        let shutting_down = tokio::select! {
            changed = generations.changed() => changed.is_err(),
            _ = stop.wait_for(|stop| *stop) => true,
            _ = &mut running => { idle = true; false }
        };
        if idle {
            // No folders configured (now): wait for a reload or the end.
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|stop| *stop) => return,
            }
            continue;
        }
        let _ = retire_tx.send(true);
        if !shutting_down {
            tokio::select! {
                _ = &mut running => continue,
                _ = stop.wait_for(|stop| *stop) => {}
            }
        }
        if tokio::time::timeout(shutdown_timeout, &mut running)
            .await
            .is_err()
        {
            tracing::warn!(
                "An upload was still in flight at the shutdown timeout; it is sent again at the next start."
            );
            running.abort();
            let _ = running.await;
        }
        return;
    }
}

/// Pings systemd's watchdog at half its interval, only while the state database takes
/// writes: a daemon that cannot record anything is restarted rather than left stuck.
async fn watchdog(interval: std::time::Duration, store: Store, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval / 2);
    // Skip, not burst, after a stall: a late ping is still one ping.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match store.check_writable().await {
            Ok(()) => notify_systemd(&[NotifyState::Watchdog]),
            Err(error) => {
                tracing::error!(%error, "The state database does not take writes; withholding the watchdog ping.")
            }
        }
    }
}

/// How often delivered events past `state.delivered_retention` are pruned (and once at
/// start).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Prunes delivered events past the current config's `state.delivered_retention`.
async fn prune_loop(
    generations: watch::Receiver<Arc<Generation>>,
    store: Store,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(PRUNE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let retention = generations.borrow().config.state.delivered_retention;
        let crate::config::Retention::For(keep) = retention else {
            continue;
        };
        let before = crate::store::now_ms()
            .saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        match store.prune_delivered(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(
                pruned,
                retention = %humantime::format_duration(keep),
                "Pruned delivered events older than state.delivered_retention, with their delivery records."
            ),
            Err(error) if error.is_disk_full() => {
                tracing::warn!(%error, "Cannot prune delivered events now (disk full); the next prune tries again.")
            }
            Err(error) => {
                tracing::error!(%error, "Cannot prune delivered events; the next prune tries again.")
            }
        }
    }
}

/// Deliveries queued for a connector that is no longer configured wait, and say so.
async fn warn_orphans(runtime: &Runtime) {
    if let Ok(pending) = runtime.store.pending_connectors().await {
        for name in pending
            .iter()
            .filter(|name| !runtime.connectors.contains_key(*name))
        {
            tracing::warn!(connector = %name, "Deliveries are queued for a connector that is no longer configured; they wait until it is configured again.");
        }
    }
}

pub async fn sync_once(path: Option<&Path>) -> CommandResult {
    let loaded = load_daemon_config(path)?;
    init_logging(&loaded.config);
    let runtime = Runtime::start(&loaded, None)
        .await
        .map_err(CommandError::Other)?;
    let context = runtime.source_context();
    let mut failures = Vec::new();
    for kind in SourceKind::enabled(&runtime.config) {
        if let Err(error) = daemon::run_source(kind, &context, &runtime.config, &runtime.auth).await
        {
            failures.push(format!("{}: {error}", kind.name()));
        }
    }
    runtime
        .dispatcher()
        .drain_due(&runtime.connectors)
        .await
        .map_err(|error| CommandError::Other(error.into()))?;
    runtime.store.close().await;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Other(anyhow::anyhow!(
            "{}",
            failures.join("; ")
        )))
    }
}
