//! `run` (the daemon) and `sync --once`: the command-line entries. The daemon's life
//! itself (tasks, signals, reloads, shutdown) is `crate::daemon`.

use std::path::Path;

use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat};
use crate::daemon::{self, Runtime};
use crate::sources::SourceKind;

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

/// Reads the config, starts logging and the runtime: what both commands begin with. The
/// daemon waits for a PostgreSQL state that does not answer yet; `sync --once` fails.
async fn start(path: Option<&Path>, daemon: bool) -> Result<Runtime, CommandError> {
    let loaded = load_daemon_config(path)?;
    init_logging(&loaded.config);
    let runtime = if daemon {
        Runtime::start_daemon(&loaded).await
    } else {
        Runtime::start(&loaded, None).await
    };
    runtime.map_err(CommandError::Other)
}

pub async fn run(path: Option<&Path>) -> CommandResult {
    let runtime = start(path, true).await?;
    daemon::run(runtime, || load_daemon_config(path))
        .await
        .map_err(CommandError::Other)
}

pub async fn sync_once(path: Option<&Path>) -> CommandResult {
    let runtime = start(path, false).await?;
    let context = runtime.source_context();
    let mut failures = Vec::new();
    for kind in SourceKind::enabled(&runtime.config) {
        if let Err(error) = daemon::run_source(kind, &context, &runtime.config).await {
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
