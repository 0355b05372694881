//! The `clairo-sync` binary's edge: parses the command line, runs the chosen command on a
//! one-thread runtime, and turns its outcome into the exit code (0, 78 for an invalid
//! config with one line per problem, 1 otherwise; a closed pipe exits as a shell would).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use clairo_sync::cli::Cli;
use clairo_sync::commands::{self, CommandError};

/// EX_CONFIG from sysexits.h: the config is invalid. systemd and packagers know it.
const EX_CONFIG: u8 = 78;

/// What a shell reports for a command killed by SIGPIPE (128 + 13): the status of
/// `seq 1000000 | head` under `set -o pipefail`, which a reader of our output closed early
/// gets from us too.
const EXIT_BROKEN_PIPE: u8 = 141;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
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
        Err(CommandError::Other(error)) if is_broken_pipe(&error) => {
            ExitCode::from(EXIT_BROKEN_PIPE)
        }
        Err(CommandError::Other(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `clairo-sync deliveries list | head`: once `head` has what it wants and closes the pipe,
/// we end quietly, as every Unix tool does. Rust ignores SIGPIPE, so the next `println!`
/// panics instead ("failed printing to stdout: Broken pipe"); restoring SIGPIPE's default
/// would take `unsafe`, which this crate forbids. So the panic hook recognises that one
/// panic (std's message, stable for years) and exits with SIGPIPE's status instead of a
/// backtrace; every other panic keeps the default hook.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(EXIT_BROKEN_PIPE));
        }
        default(info);
    }));
}

/// A write to a closed pipe, from commands that write to stdout themselves (`manpage`).
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
