//! `clairo-sync check [--online] [--send-test]`.

use std::path::Path;

use crate::cli::CheckArgs;
use crate::config::{LoadedConfig, StateBackend};
use crate::store::{Schema, Store};

use super::{CommandResult, load_daemon_config};

pub async fn check(path: Option<&Path>, args: &CheckArgs) -> CommandResult {
    let loaded = load_daemon_config(path)?;
    if args.online {
        check_state(&loaded).await?;
        super::api::check_online(&loaded, args.send_test).await?;
    }
    println!("ok");
    Ok(())
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
    store.close().await;
    match schema.map_err(|error| anyhow::anyhow!("state.url: {error}"))? {
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
