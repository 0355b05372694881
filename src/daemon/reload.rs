//! SIGHUP: the config is read again (every secret file too); a valid one becomes a new
//! [`Generation`] that every loop picks up at its next step, an invalid one is refused and
//! the old generation keeps running. `[state]`'s database and `[http]` need a restart (the
//! password in the same `state.password_file` is read again).

use std::sync::Arc;

use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};

use crate::config::{ConfigErrors, LoadedConfig};
use crate::sources::SourceContext;

use super::{Generation, Runtime, build_client, build_connectors, systemd};

/// In the signal loop: reads the config with `load` and hands a valid one to the
/// supervisor; an invalid one is logged, problem by problem, and the daemon says it is
/// ready again on the old one.
pub(super) async fn read_config(
    load: &impl Fn() -> Result<LoadedConfig, ConfigErrors>,
    reloads: &mpsc::Sender<LoadedConfig>,
) {
    // Type=notify-reload (systemd 253+) matches the reload by MONOTONIC_USEC=, which must
    // come in the same datagram as RELOADING=1; older systemd ignores the time.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => systemd::notify(&[NotifyState::Reloading, now]),
        Err(_) => systemd::notify(&[NotifyState::Reloading]),
    }
    match load() {
        Ok(loaded) => {
            tracing::info!("SIGHUP: the config is valid; switching to it.");
            let _ = reloads.send(loaded).await;
        }
        Err(errors) => {
            for problem in &errors.0 {
                tracing::error!(%problem, "SIGHUP: the new config is invalid; still running on the previous one.");
            }
            systemd::notify(&[NotifyState::Ready]);
        }
    }
}

/// In the supervisor: builds the new generation and publishes it. A reload also ends an
/// auth pause, for pollers and uploads alike: it is how an operator says the key is fixed.
pub(super) fn apply(
    runtime: &Runtime,
    loaded: &LoadedConfig,
    generations: &watch::Sender<Arc<Generation>>,
) {
    match runtime.generation_for(loaded) {
        Ok(generation) => {
            runtime.auth.accept();
            let _ = generations.send(Arc::new(generation));
            tracing::info!(
                "Reloaded: schedules, routes, connectors and secrets are the new config's."
            );
        }
        Err(error) => {
            tracing::error!(%error, "Reload failed; still running on the previous config.")
        }
    }
    systemd::notify(&[NotifyState::Ready]);
}

impl Runtime {
    /// Builds the generation of a reloaded config (secrets re-read by the loader). The
    /// state database and the listen address stay as they were: those need a restart.
    pub fn generation_for(&self, loaded: &LoadedConfig) -> anyhow::Result<Generation> {
        let config = Arc::new(loaded.config.clone());
        if config.state.path != self.config.state.path {
            tracing::warn!("state.path changed; the new path is used only after a restart.");
        }
        if config.state.url != self.config.state.url
            || config.state.password_file != self.config.state.password_file
        {
            tracing::warn!(
                "state.url or state.password_file changed; the state database stays as it was until a restart."
            );
        } else if let Some(password) = &loaded.state_password {
            // The same file, read again: a password fixed in it is used from the next
            // connection on, and a database waited for is tried again now.
            self.store.set_password(password.expose());
            self.state.suspect();
        }
        if config.state.instance != self.config.state.instance
            || config.state.lease != self.config.state.lease
        {
            tracing::warn!(
                "state.instance or state.lease changed; this instance keeps its name and lease until a restart."
            );
        }
        if config.http.listen != self.config.http.listen
            || config.http.enabled != self.config.http.enabled
        {
            tracing::warn!("[http] changed; it takes effect only after a restart.");
        }
        // The new clients read the system's CA roots afresh: a CA added since is trusted.
        clairo_connectors::reread_tls_roots();
        let client = build_client(loaded, Some(self.limiter.clone()), self.metrics.clone())?;
        let connectors = build_connectors(&config)?;
        let context = SourceContext::new(
            &config,
            client,
            self.store.clone(),
            self.metrics.clone(),
            self.wakers.clone(),
            self.auth.clone(),
        );
        Ok(Generation {
            config,
            context,
            connectors,
        })
    }
}
