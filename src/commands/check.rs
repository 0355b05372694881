//! `clairo-sync check [--online] [--send-test]`.

use std::path::Path;

use crate::cli::CheckArgs;

use super::{CommandResult, load_daemon_config};

pub async fn check(path: Option<&Path>, args: &CheckArgs) -> CommandResult {
    let loaded = load_daemon_config(path)?;
    if args.online {
        super::api::check_online(&loaded, args.send_test).await?;
    }
    println!("ok");
    Ok(())
}
