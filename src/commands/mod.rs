//! What each subcommand does; `main` only maps the result to an exit code.

mod api;
mod check;
mod daemon;
mod demo;
mod generate;
mod outbox;
mod replay;
mod sandbox;
mod shown;
mod upload;

use std::path::{Path, PathBuf};

use crate::cli::{Cli, Command};
use crate::config::{self, ConfigErrors, LoadedConfig, Need, SecretSources};

#[derive(Debug)]
pub enum CommandError {
    /// Exit 78, one line per problem.
    Config(ConfigErrors),
    /// Exit 1.
    Other(anyhow::Error),
}

impl From<ConfigErrors> for CommandError {
    fn from(errors: ConfigErrors) -> Self {
        Self::Config(errors)
    }
}

impl From<anyhow::Error> for CommandError {
    fn from(error: anyhow::Error) -> Self {
        Self::Other(error)
    }
}

pub type CommandResult = Result<(), CommandError>;

pub async fn run(cli: Cli) -> CommandResult {
    let config_path = cli.config.clone();
    match cli.command {
        Command::Check(args) => check::check(config_path.as_deref(), &args).await,
        Command::Sandbox(args) => sandbox::sandbox(&args).await,
        Command::Agents(args) => api::agents(config_path.as_deref(), args.json).await,
        Command::Conversations(command) => {
            api::conversations(config_path.as_deref(), command).await
        }
        Command::Briefs(command) => api::briefs(config_path.as_deref(), command).await,
        Command::Chat(args) => api::chat(config_path.as_deref(), &args, false).await,
        Command::Discover(args) => api::chat(config_path.as_deref(), &args, true).await,
        Command::Run => daemon::run(config_path.as_deref()).await,
        Command::Sync(_) => daemon::sync_once(config_path.as_deref()).await,
        Command::Status(args) => outbox::status(config_path.as_deref(), args.json).await,
        Command::Deliveries(command) => outbox::deliveries(config_path.as_deref(), command).await,
        Command::Demo(args) => demo::demo(&args).await,
        Command::Upload(args) => upload::upload(config_path.as_deref(), &args).await,
        Command::Completions { shell } => generate::completions(shell),
        Command::Manpage { dir } => generate::manpage(dir.as_deref()),
    }
}

/// The daemon's config: `-c`/`CLAIRO_SYNC_CONFIG`, else the default path; it must exist.
pub(crate) fn load_daemon_config(path: Option<&Path>) -> Result<LoadedConfig, ConfigErrors> {
    let path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_PATH));
    config::load(
        Some(&path),
        Need::Daemon,
        &SecretSources::from_env(Some(&path)),
    )
}

/// Operator commands: a named file must exist; with none named, the default file is used
/// if present, else env alone (`CLAIRO_API_KEY`, `CLAIRO_SYNC_CLAIRO__BASE_URL`).
pub(crate) fn load_api_config(path: Option<&Path>) -> Result<LoadedConfig, ConfigErrors> {
    let sources = SecretSources::from_env(path);
    match path {
        Some(path) => config::load(Some(path), Need::Daemon, &sources),
        None => {
            let default = PathBuf::from(config::DEFAULT_CONFIG_PATH);
            let path = default.exists().then_some(default.as_path());
            config::load(path, Need::ApiOnly, &sources)
        }
    }
}
