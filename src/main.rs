#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use clairo_sync::cli::Cli;
use clairo_sync::commands::{self, CommandError};

/// EX_CONFIG from sysexits.h: the config is invalid. systemd and packagers know it.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread runs every task: the daemon waits on the network, the clock and SQLite
    // (whose calls run on sqlx's own threads), and CPU work that takes long (hashing a
    // recording) goes to `spawn_blocking`. Each further runtime thread would cost its own
    // malloc arena and stack at idle for no throughput (BENCHMARKS.md).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CommandError::Config(errors)) => {
            for problem in &errors.0 {
                eprintln!("{problem}");
            }
            ExitCode::from(EX_CONFIG)
        }
        Err(CommandError::Other(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
