#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use clairo_sync::cli::Cli;
use clairo_sync::commands::{self, CommandError};

/// EX_CONFIG from sysexits.h: the config is invalid. systemd and packagers know it.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
