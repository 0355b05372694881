//! `clairo-sync check [--online] [--send-test]`.

use std::path::Path;

use crate::cli::CheckArgs;
use crate::config::{Config, FilterContext, LoadedConfig, StateBackend};
use crate::sources::Router;
use crate::store::{Schema, Store};

use super::{CommandResult, load_daemon_config};

/// How many of the newest stored events `check` tries each route filter on.
const PREVIEW_EVENTS: i64 = 100;

pub async fn check(path: Option<&Path>, args: &CheckArgs) -> CommandResult {
    let loaded = load_daemon_config(path)?;
    preview_filters(&loaded.config).await;
    if args.online {
        check_state(&loaded).await?;
        super::api::check_online(&loaded, args.send_test).await?;
    }
    println!("ok");
    Ok(())
}

/// For each route with `when`, how many of the last stored events it would have taken:
/// a filter that takes nothing (or everything) is seen before it goes live. Only when the
/// state database exists; opened read-only, as `status` does. A state that cannot be read
/// is said, not fatal: the config itself is what `check` judges.
async fn preview_filters(config: &Config) {
    // A PostgreSQL state is not read for this preview (check --online connects to it).
    if config.routes.iter().all(|route| route.when.is_none())
        || !matches!(config.state.backend(), StateBackend::Sqlite(_))
        || !config.state.path.exists()
    {
        return;
    }
    let read = async {
        let store = Store::open_existing(&config.state.path, false).await?;
        let events = store.recent_events(PREVIEW_EVENTS).await;
        store.close().await;
        events
    }
    .await;
    super::outbox::hand_side_files_back(&config.state.path);
    let events = match read {
        Ok(events) => events,
        Err(error) => {
            println!("routes: the filters were not tried on stored events ({error})");
            return;
        }
    };
    let router = Router::new(&config.routes);
    let contexts: Vec<FilterContext> = events
        .iter()
        .map(|stored| FilterContext::new(&stored.event))
        .collect();
    for (index, route) in config.routes.iter().enumerate() {
        if route.when.is_none() {
            continue;
        }
        let mut taken = 0;
        let mut failed = Vec::new();
        for (stored, context) in events.iter().zip(&contexts) {
            match router.route_takes(index, &stored.event, stored.agent_id.as_deref(), context) {
                Ok(true) => taken += 1,
                Ok(false) => {}
                Err(error) => failed.push((stored.event.id.as_str(), error)),
            }
        }
        let mut line = format!(
            "routes[{index}].when: would have taken {taken} of the last {} stored events",
            events.len()
        );
        if let Some((id, error)) = failed.first() {
            line.push_str(&format!(
                "; it fails on {} of them (event {id}: {error}), which would be dead deliveries",
                failed.len()
            ));
        }
        println!("{line}");
    }
}

/// Online, a PostgreSQL state database is connected to and its schema compared with this
/// binary's (a SQLite file is the daemon's to create, so there is nothing to reach).
async fn check_state(loaded: &LoadedConfig) -> CommandResult {
    let StateBackend::Postgres(url) = loaded.config.state.backend() else {
        return Ok(());
    };
    let password = loaded.state_password.as_ref().map(|secret| secret.expose());
    let store = Store::open_existing_state(loaded.config.state.backend(), password, false)
        .await
        .map_err(|error| anyhow::anyhow!("state.url: {error}"))?;
    let schema = store.schema().await;
    let read_only = store.read_only().await;
    store.close().await;
    let schema = schema.map_err(|error| anyhow::anyhow!("state.url: {error}"))?;
    if read_only.map_err(|error| anyhow::anyhow!("state.url: {error}"))? {
        return Err(anyhow::anyhow!(
            "state.url: the database at {url} takes no writes (transaction_read_only is on): state.url names a standby, or default_transaction_read_only is on for the server, the database or the user; point state.url at the primary, or make the database writable again. The daemon waits, not ready, until it takes writes"
        )
        .into());
    }
    match schema {
        Schema::Current => println!("state: PostgreSQL at {url} reached, schema current"),
        Schema::Older { pending } => println!(
            "state: PostgreSQL at {url} reached; the daemon applies {pending} migration(s) at its start"
        ),
        Schema::Newer { unknown } => {
            return Err(anyhow::anyhow!(
                "state.url: the database's schema is newer than this clairo-sync ({unknown} migration(s) unknown to it): a newer version has used it; upgrade clairo-sync (every instance sharing one database must run the same version or newer)"
            )
            .into());
        }
    }
    Ok(())
}
