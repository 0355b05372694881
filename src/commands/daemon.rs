//! `run` (the daemon) and `sync --once`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, LogFormat};
use crate::daemon::{self, Runtime};
use crate::sources::SourceKind;

use super::{CommandError, CommandResult, load_daemon_config};

/// Logs go to stderr: readable by default, JSON on request; under journald (which stamps
/// each line itself) the readable form carries no timestamp of its own.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = match (config.log_format, under_journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
}

pub async fn run(path: Option<&Path>) -> CommandResult {
    let loaded = load_daemon_config(path)?;
    init_logging(&loaded.config);
    let runtime = Runtime::start(&loaded, None).await.map_err(CommandError::Other)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let serving = serve(runtime, stop_rx);
    tokio::pin!(serving);
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            result = &mut serving => return result.map_err(CommandError::Other),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::warn!("SIGHUP received, but this build cannot reload its config in place; restart the service to apply changes.");
            }
        }
    }
    tracing::info!("Stopping: no new polls; in-flight deliveries finish or are released.");
    let _ = stop_tx.send(true);
    serving.await.map_err(CommandError::Other)
}

/// The daemon's work until `stop` turns true: sources on their schedules, the dispatcher.
pub async fn serve(runtime: Runtime, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime);
    warn_orphans(&runtime).await;
    let mut tasks = tokio::task::JoinSet::new();
    if runtime.config.http.enabled {
        let listener = tokio::net::TcpListener::bind(runtime.config.http.listen)
            .await
            .with_context(|| format!("cannot listen on http.listen = {}; pick a free address", runtime.config.http.listen))?;
        let state = crate::http::HealthState::new(&runtime);
        let stop = stop.clone();
        tasks.spawn(async move { crate::http::serve(listener, state, stop).await });
    }
    let dispatcher = runtime.dispatcher();
    let connectors = runtime.connectors.clone();
    let dispatch_stop = stop.clone();
    tasks.spawn(async move { dispatcher.run(connectors, dispatch_stop).await });
    let sources = SourceKind::enabled(&runtime.config);
    if sources.is_empty() {
        tracing::warn!("No source is enabled ([sync.briefs], [sync.conversations]): only queued deliveries will be sent.");
    }
    for kind in sources {
        let context = runtime.source_context();
        let config = runtime.config.clone();
        let auth = runtime.auth.clone();
        let stop = stop.clone();
        tasks.spawn(async move { daemon::source_loop(kind, context, config, auth, stop).await });
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        state = %runtime.config.state.path.display(),
        connectors = runtime.connectors.len(),
        "clairo-sync is running."
    );
    while tasks.join_next().await.is_some() {}
    runtime.store.close().await;
    tracing::info!("Stopped.");
    Ok(())
}

/// Deliveries queued for a connector that is no longer configured wait, and say so.
async fn warn_orphans(runtime: &Runtime) {
    if let Ok(pending) = runtime.store.pending_connectors().await {
        for name in pending.iter().filter(|name| !runtime.connectors.contains_key(*name)) {
            tracing::warn!(connector = %name, "Deliveries are queued for a connector that is no longer configured; they wait until it is configured again.");
        }
    }
}

pub async fn sync_once(path: Option<&Path>) -> CommandResult {
    let loaded = load_daemon_config(path)?;
    init_logging(&loaded.config);
    let runtime = Runtime::start(&loaded, None).await.map_err(CommandError::Other)?;
    let context = runtime.source_context();
    let mut failures = Vec::new();
    for kind in SourceKind::enabled(&runtime.config) {
        if let Err(error) = daemon::run_source(kind, &context, &runtime.config, &runtime.auth).await {
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
        Err(CommandError::Other(anyhow::anyhow!("{}", failures.join("; "))))
    }
}
