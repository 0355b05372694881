//! `clairo-sync sandbox`: the local Clairo stand-in, in the foreground.

use clairo_sandbox::{Faults, SandboxConfig};

use crate::cli::SandboxArgs;

use super::CommandResult;

pub async fn sandbox(args: &SandboxArgs) -> CommandResult {
    let mut config = SandboxConfig {
        rate_limit: args.rate_limit,
        window: args.window,
        seed_briefs: args.seed_briefs,
        seed_conversations: args.seed_conversations,
        faults: Faults {
            error_rate: args.error_rate,
            latency_ms: args.latency_ms,
            malformed_items: args.malformed_items,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    };
    config.api_keys.extend(args.api_key.iter().cloned());
    let sandbox = clairo_sandbox::start(config, args.listen)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {}: {error}; pick another address with --listen",
                args.listen
            )
        })?;
    println!("Clairo sandbox listening on {}", sandbox.base_url());
    println!("Try it:");
    println!(
        "  export CLAIRO_API_KEY=clr_sandbox_key CLAIRO_SYNC_CLAIRO__BASE_URL={}",
        sandbox.base_url()
    );
    println!("  clairo-sync agents");
    let stop = sandbox.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.stop();
    });
    sandbox.serve_forever().await;
    Ok(())
}
