//! The supervisor: starts every task of the daemon on the current generation (the health
//! endpoint, the dispatcher, the pollers, the drop folders, staleness, pruning, the
//! watchdog), hands each reload's new generation to them, and at shutdown waits for all
//! of them to end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::LoadedConfig;
use crate::dispatch::Dispatcher;
use crate::shutdown::{self, CancellationToken};
use crate::sources::SourceKind;

use super::{Generation, Runtime, StateHealth, every, reload, schedule, stale, systemd};

/// The daemon's work until `stop` is cancelled: sources on their schedules, the
/// dispatcher, the health endpoint; each config from `reloads` replaces the running one.
pub async fn serve(
    runtime: Runtime,
    mut reloads: mpsc::Receiver<LoadedConfig>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime);
    let mut tasks = JoinSet::new();
    if runtime.state.is_watched() {
        // PostgreSQL: reached (and migrated) whenever it answers, watched while running.
        let (state, stopping) = (runtime.state.clone(), stop.clone());
        tasks.spawn(async move { state.run(stopping).await });
        let (runtime, stopping) = (runtime.clone(), stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                () = runtime.state.up() => warn_orphans(&runtime).await,
                _ = stopping.cancelled() => {}
            }
        });
    } else {
        warn_orphans(&runtime).await;
    }
    let (generation_tx, generations) = watch::channel(Arc::new(runtime.first_generation()));
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
        tasks.spawn(crate::http::serve(listener, state, stop.clone()));
    }
    tasks.spawn(dispatch_loop(
        runtime.clone(),
        generations.clone(),
        stop.clone(),
    ));
    for kind in [SourceKind::Briefs, SourceKind::Conversations] {
        tasks.spawn(schedule::source_loop(
            kind,
            generations.clone(),
            runtime.leadership.clone(),
            stop.clone(),
        ));
    }
    {
        let leadership = runtime.leadership.clone();
        let (generations, stop) = (generations.clone(), stop.clone());
        tasks.spawn(async move { leadership.run(generations, stop).await });
    }
    tasks.spawn(meetings_loop(
        generations.clone(),
        runtime.state.clone(),
        stop.clone(),
    ));
    tasks.spawn(stale::stale_loop(
        generations.clone(),
        runtime.store.clone(),
        runtime.metrics.clone(),
        runtime.state.clone(),
        stop.clone(),
    ));
    if SourceKind::enabled(&runtime.config).is_empty() && runtime.config.meetings.folders.is_empty()
    {
        tracing::warn!(
            "No source is enabled ([sync.briefs], [sync.conversations], [[meetings.folders]]): only queued deliveries will be sent."
        );
    }
    tasks.spawn(prune_loop(
        generations.clone(),
        runtime.clone(),
        stop.clone(),
    ));
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tasks.spawn(systemd::watchdog(
            interval,
            runtime.store.clone(),
            runtime.state.clone(),
            stop.clone(),
        ));
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        state = %runtime.config.state.location(),
        instance = runtime.leadership.instance().unwrap_or("(SQLite: the only one)"),
        connectors = runtime.connectors.len(),
        "clairo-sync is running."
    );
    systemd::notify(&[NotifyState::Ready, NotifyState::Status("running")]);
    loop {
        tokio::select! {
            Some(loaded) = reloads.recv() => reload::apply(&runtime, &loaded, &generation_tx),
            _ = stop.cancelled() => break,
        }
    }
    while tasks.join_next().await.is_some() {}
    // Every poller has stopped: the sources are handed over now, not when the leases
    // run out.
    runtime.leadership.release().await;
    runtime.store.close().await;
    tracing::info!("Stopped.");
    Ok(())
}

/// Runs the dispatcher for the current generation's connectors; on a reload the old
/// workers stop claiming, finish what is in flight, and the new ones take over. While the
/// state database does not record, no worker runs.
async fn dispatch_loop(
    runtime: Arc<Runtime>,
    mut generations: watch::Receiver<Arc<Generation>>,
    stop: CancellationToken,
) {
    loop {
        // Nothing is claimed while the state database does not record; attempts in
        // flight when it stops finish, and those whose outcome could not be recorded are
        // sent again once their lease runs out.
        tokio::select! {
            () = runtime.state.up() => {}
            _ = stop.cancelled() => return,
        }
        let generation = generations.borrow_and_update().clone();
        let dispatcher = Dispatcher::new(
            runtime.store.clone(),
            runtime.metrics.clone(),
            runtime.wakers.clone(),
            generation.config.delivery.clone(),
            &generation.config.state.instance_name(),
        )
        .with_rate_limits(&generation.config.connectors);
        // Cancelled on reload to retire this generation's workers, and with `stop`.
        let retire = stop.child_token();
        let connectors = generation.connectors.clone();
        let mut running = tokio::spawn({
            let retire = retire.clone();
            async move { dispatcher.run(connectors, retire).await }
        });
        let shutting_down = tokio::select! {
            changed = generations.changed() => changed.is_err(),
            () = runtime.state.down() => false,
            _ = stop.cancelled() => true,
            _ = &mut running => return,
        };
        retire.cancel();
        let _ = running.await;
        if shutting_down {
            return;
        }
    }
}

/// How long a reload lets an upload in flight finish: Clairo transcribes before it
/// answers, so an upload can take minutes, and one cut short is sent again (the API has
/// no idempotency key). SIGTERM still cuts it at `delivery.shutdown_timeout`.
const RELOAD_UPLOAD_GRACE: Duration = Duration::from_secs(60 * 60);

/// Watches the current generation's drop folders. On a reload the watchers stop taking
/// files, an upload in flight finishes (up to [`RELOAD_UPLOAD_GRACE`]), and only then do
/// the new config's watchers start, so no two generations handle one file. On SIGTERM
/// an upload in flight gets `delivery.shutdown_timeout`, then resumes at the next start.
/// Each file is claimed in the state database before its upload: while the database does
/// not record, the watchers are retired as on a reload, and start again once it does.
async fn meetings_loop(
    mut generations: watch::Receiver<Arc<Generation>>,
    state: StateHealth,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = state.up() => {}
            _ = stop.cancelled() => return,
        }
        let generation = generations.borrow_and_update().clone();
        let shutdown_timeout = generation.config.delivery.shutdown_timeout;
        let mut config = (*generation.config).clone();
        config.delivery.shutdown_timeout = RELOAD_UPLOAD_GRACE;
        let retire = stop.child_token();
        let mut running = JoinSet::new();
        running.spawn(crate::sources::meetings::run(
            generation.context.clone(),
            Arc::new(config),
            retire.clone(),
        ));
        let mut idle = false;
        let shutting_down = tokio::select! {
            changed = generations.changed() => changed.is_err(),
            () = state.down() => false,
            _ = stop.cancelled() => true,
            _ = running.join_next() => { idle = true; false }
        };
        if idle {
            // No folders configured (now): wait for a reload or the end.
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
            continue;
        }
        retire.cancel();
        if !shutting_down {
            tokio::select! {
                _ = running.join_next() => continue,
                _ = stop.cancelled() => {}
            }
        }
        if shutdown::drain(&mut running, shutdown_timeout).await > 0 {
            tracing::warn!(
                "An upload was still in flight at the shutdown timeout; it is sent again at the next start."
            );
        }
        return;
    }
}

/// How often delivered events past `state.delivered_retention` are pruned (and once at
/// start).
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Prunes delivered events past the current config's `state.delivered_retention`.
async fn prune_loop(
    generations: watch::Receiver<Arc<Generation>>,
    runtime: Arc<Runtime>,
    stop: CancellationToken,
) {
    every(PRUNE_EVERY, &stop, || async {
        // Not while the database is away: the next prune is soon enough.
        if !runtime.state.is_up() {
            return;
        }
        let retention = generations.borrow().config.state.delivered_retention;
        let crate::config::Retention::For(keep) = retention else {
            return;
        };
        let before = crate::store::now_ms()
            .saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        match runtime.store.prune_delivered(before).await {
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
    })
    .await;
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
