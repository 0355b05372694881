//! The configuration (README "Configuration", config/clairo-sync.toml): TOML through
//! figment, `CLAIRO_SYNC_<SECTION>__<KEY>` environment overrides, secrets resolved from
//! files, systemd credentials or env, and validation that names the key path of every
//! problem.
//!
//! This file holds the keys (one struct per section, with their defaults) and the problem
//! type; `load.rs` reads them (figment, env, secrets), `validate.rs` judges them,
//! `report.rs` words parser errors, `secrets.rs`, `schedule.rs`, `byte_size.rs` and
//! `unit.rs` the values that need more than serde.

mod byte_size;
mod load;
mod pace;
mod report;
mod schedule;
mod secrets;
mod unit;
mod validate;
mod when;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clairo_connectors::{ConnectorConfig, EventType, Secret};
use serde::Deserialize;
use tracing_subscriber::filter::{LevelFilter, Targets};

pub use byte_size::ByteSize;
pub use load::{LoadedConfig, Need, load, load_str};
pub use pace::RateLimit;
pub use schedule::Schedule;
pub use secrets::SecretSources;
pub use unit::Unit;
pub use when::{FilterContext, When};

/// Where `run` and friends look for the config when neither `-c` nor `CLAIRO_SYNC_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/clairo-sync/clairo-sync.toml";
/// The public API; the sandbox or a test points `clairo.base_url` elsewhere.
pub const DEFAULT_BASE_URL: &str = "https://clairo.tech/api/v1";
/// The least `clairo.max_response_size` accepted: below it even an ordinary answer
/// would be refused.
const MIN_RESPONSE_SIZE: u64 = 64 * 1024;
/// Env prefix of every override (`CLAIRO_SYNC_CLAIRO__BASE_URL`).
pub const ENV_PREFIX: &str = "CLAIRO_SYNC_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub clairo: ClairoConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub meetings: MeetingsConfig,
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorTable>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// `text` (readable; no timestamps when journald adds its own) or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// A level, or per-target levels such as `info,clairo_sync=debug`; `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClairoConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Discouraged (it sits in a readable file): prefer `api_key_file`, the credential
    /// `clairo-api-key` or `CLAIRO_API_KEY`.
    pub api_key: Option<Secret>,
    pub api_key_file: Option<PathBuf>,
    #[serde(default = "default_max_requests_per_minute")]
    pub max_requests_per_minute: u32,
    #[serde(default = "default_api_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per request on 5xx, timeouts and connection errors.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The largest answer body read from Clairo; a larger one fails that request.
    #[serde(default = "default_max_response_size")]
    pub max_response_size: ByteSize,
}

impl Default for ClairoConfig {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            api_key: None,
            api_key_file: None,
            max_requests_per_minute: default_max_requests_per_minute(),
            timeout: default_api_timeout(),
            max_attempts: default_max_attempts(),
            max_response_size: default_max_response_size(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The SQLite file. With `url` set the state is in PostgreSQL and this path only
    /// names the daemon's local directory (its parent holds transcoded copies).
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
    /// `postgres://user@host/db`: the state in PostgreSQL instead of SQLite. Never holds
    /// a password (see `password_file`).
    pub url: Option<String>,
    /// The PostgreSQL password; else the credential `state-password`, else none (trust,
    /// peer, or `~/.pgpass`).
    pub password_file: Option<PathBuf>,
    /// This instance's name in `status` and the leases (PostgreSQL); default the host name.
    pub instance: Option<String>,
    /// With several instances on one PostgreSQL database: how long a source's poller may
    /// go without renewing its lease before another instance takes the source over.
    #[serde(default = "default_source_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// How long an event every delivery of which went out is kept (with its deliveries
    /// and attempts) before it is pruned; `forever` keeps them all.
    #[serde(default)]
    pub delivered_retention: Retention,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            path: default_state_path(),
            url: None,
            password_file: None,
            instance: None,
            lease: default_source_lease(),
            delivered_retention: Retention::default(),
        }
    }
}

/// Where the state lives, as `[state]` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend<'a> {
    Sqlite(&'a std::path::Path),
    /// A URL with no password in it (validation refuses one that has).
    Postgres(&'a str),
}

impl StateConfig {
    /// `url` wins over `path`: `path` has a default, so an operator moving to PostgreSQL
    /// who leaves it in place (or never wrote it) means the database, not the file.
    pub fn backend(&self) -> StateBackend<'_> {
        match &self.url {
            Some(url) => StateBackend::Postgres(url),
            None => StateBackend::Sqlite(&self.path),
        }
    }

    /// `state.instance`, else the host name (else `clairo-sync`).
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|name| name.trim().to_owned())
                    .filter(|name| !name.is_empty())
            })
            .unwrap_or_else(|| "clairo-sync".to_owned())
    }

    /// What logs and `status` show of where the state is: the file, or the URL (which
    /// holds no password).
    pub fn location(&self) -> String {
        match self.backend() {
            StateBackend::Sqlite(path) => path.display().to_string(),
            StateBackend::Postgres(url) => url.to_owned(),
        }
    }
}

/// `state.delivered_retention`: a duration such as `"30d"`, or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Forever,
    For(Duration),
}

impl Default for Retention {
    fn default() -> Self {
        Self::For(Duration::from_secs(30 * 24 * 60 * 60))
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim() == "forever" {
            return Ok(Self::Forever);
        }
        match humantime::parse_duration(text.trim()) {
            Ok(duration) if !duration.is_zero() => Ok(Self::For(duration)),
            Ok(_) => Err(serde::de::Error::custom(
                "a retention of zero would delete what was just delivered; write e.g. \"30d\", or \"forever\"",
            )),
            Err(error) => Err(serde::de::Error::custom(format!(
                "{error}; write a duration such as \"30d\" or \"12h\", or \"forever\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where /metrics, /healthz and /readyz are served; `enabled = false` turns them off.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            enabled: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// A new state database delivers everything the API lists (a backfill).
    #[default]
    All,
    /// A new state database records what exists as seen and emits only what comes after.
    Now,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default)]
    pub start_from: StartFrom,
    /// Absent: briefs are not polled.
    pub briefs: Option<BriefsSync>,
    /// Absent: conversations are not polled.
    pub conversations: Option<ConversationsSync>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BriefsSync {
    #[serde(default = "default_briefs_schedule")]
    pub schedule: Schedule,
    #[serde(default = "default_list_limit")]
    pub limit: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationsSync {
    #[serde(default = "default_conversations_schedule")]
    pub schedule: Schedule,
    /// Empty: every agent the account has.
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default = "default_list_limit")]
    pub limit: u32,
    /// How often an ACTIVE conversation is re-read by id when the list cannot say
    /// whether it changed (no `updatedAt`/`messageCount`), or has dropped out of the list.
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingsConfig {
    #[serde(default)]
    pub folders: Vec<FolderConfig>,
    /// `auto`: transcode oversize or unsupported recordings with ffmpeg when it is on PATH.
    #[serde(default)]
    pub transcode: Transcode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transcode {
    #[default]
    Off,
    Auto,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// inotify: close-after-write and rename events.
    #[default]
    Notify,
    /// Rescan every `poll_interval`: for network mounts, where inotify reports nothing.
    Poll,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    pub path: PathBuf,
    pub agent: String,
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    pub processed: Option<PathBuf>,
    pub failed: Option<PathBuf>,
    #[serde(default)]
    pub watch: WatchMode,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl FolderConfig {
    pub fn processed_dir(&self) -> PathBuf {
        self.processed
            .clone()
            .unwrap_or_else(|| self.path.join("processed"))
    }

    pub fn failed_dir(&self) -> PathBuf {
        self.failed
            .clone()
            .unwrap_or_else(|| self.path.join("failed"))
    }
}

/// `[connectors.NAME]`: the keys of its kind (chosen by `type`, each kind's own struct
/// refusing keys it does not know) and the keys every kind takes, read here, in the
/// daemon's config, because the dispatcher applies them whatever the kind.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectorTable {
    #[serde(flatten)]
    pub kind: ConnectorConfig,
    /// `"N/s"` or `"N/m"`: at most N deliveries start in any second or minute, evenly
    /// spaced. Kept as written and judged by validation, so a wrong one is reported
    /// under its own key (`connectors.NAME.rate_limit`).
    #[serde(default, deserialize_with = "any_as_text")]
    pub rate_limit: Option<String>,
}

/// Any value as text (a string as it is, `5` as `5`), for validation to judge and word.
fn any_as_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(text) => Some(text),
        other => Some(other.to_string()),
    })
}

impl ConnectorTable {
    /// The pace, once validation has accepted it.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
            .as_deref()
            .and_then(|text| text.parse().ok())
    }
}

impl std::ops::Deref for ConnectorTable {
    type Target = ConnectorConfig;
    fn deref(&self) -> &ConnectorConfig {
        &self.kind
    }
}

impl std::ops::DerefMut for ConnectorTable {
    fn deref_mut(&mut self) -> &mut ConnectorConfig {
        &mut self.kind
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Event type names (`brief.created`, …); checked against the known types.
    pub events: Vec<String>,
    /// Only events about these agents; empty = every agent.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Connector names.
    pub to: Vec<String>,
    /// Only events this minijinja expression is true for (`src/config/when.rs`).
    #[serde(default)]
    pub when: Option<When>,
}

impl Route {
    pub fn matches(&self, kind: EventType, agent_id: Option<&str>) -> bool {
        self.events.iter().any(|name| name == kind.as_str())
            && (self.agents.is_empty()
                || agent_id.is_some_and(|agent| self.agents.iter().any(|a| a == agent)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default = "default_retry_schedule", deserialize_with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a claimed delivery stays leased to this process; a crash leaves it
    /// reclaimable after this long.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retry_schedule: default_retry_schedule(),
            concurrency: default_concurrency(),
            shutdown_timeout: default_shutdown_timeout(),
            lease: default_lease(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `["5s", "5m"]` → durations, naming the entry that does not parse.
fn duration_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Duration>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            humantime::parse_duration(text).map_err(|error| {
                serde::de::Error::custom(format!("entry {index} ({text:?}) is not a duration: {error}; write e.g. \"30s\", \"5m\", \"2h\""))
            })
        })
        .collect()
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}
fn default_max_requests_per_minute() -> u32 {
    // 90% of Clairo's 1,000/minute per business: the rest is left to the business's
    // other integrations, which share the same budget.
    900
}
fn default_api_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    5
}

/// 64 MiB: a list of `limit` items is far smaller (100,000 briefs are about 28 MB of
/// JSON), and the daemon's memory stays within the unit's `MemoryMax=` while one is read.
fn default_max_response_size() -> ByteSize {
    ByteSize(64 * 1024 * 1024)
}
fn default_state_path() -> PathBuf {
    PathBuf::from("/var/lib/clairo-sync/state.db")
}
/// 30 s: a failover takes at most this plus one renewal (a sixth of it) before the next
/// instance polls, and a database that stalls for a few seconds costs no failover.
fn default_source_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_true() -> bool {
    true
}
fn default_briefs_schedule() -> Schedule {
    Schedule::parse("*/2 * * * *").expect("the default schedule parses")
}
fn default_conversations_schedule() -> Schedule {
    Schedule::parse("*/5 * * * *").expect("the default schedule parses")
}
fn default_list_limit() -> u32 {
    100
}
fn default_refresh_interval() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_settle() -> Duration {
    Duration::from_secs(5)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_schedule() -> Vec<Duration> {
    // Standard Webhooks' schedule: about three days in all.
    ["5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"]
        .iter()
        .map(|text| humantime::parse_duration(text).expect("the default schedule parses"))
        .collect()
}
fn default_concurrency() -> usize {
    4
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_lease() -> Duration {
    Duration::from_secs(5 * 60)
}
/// Parses `log_level`: a level, and/or `module=level` pairs, comma-separated; modules not
/// named log at the bare level, `info` when there is none. Stricter than `RUST_LOG`: a bare
/// word that is not a level (a typo such as `inf`) is an error here, where `RUST_LOG` would
/// read it as a module name and silence everything else.
pub fn log_filter(text: &str) -> Result<Targets, String> {
    let mut filter = Targets::new().with_default(LevelFilter::INFO);
    let mut any = false;
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let level = |word: &str| {
            word.trim()
                .parse::<LevelFilter>()
                .map_err(|_| format!("{word:?} is not a level"))
        };
        filter = match part.split_once('=') {
            Some((target, word)) => {
                let target = target.trim();
                if target.is_empty() || target.contains(char::is_whitespace) {
                    return Err(format!("{part:?} does not name a module before `=`"));
                }
                filter.with_target(target.to_owned(), level(word)?)
            }
            None => filter.with_default(level(part)?),
        };
        any = true;
    }
    if !any {
        return Err("is empty".to_owned());
    }
    Ok(filter)
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// One thing wrong with a config: `<key.path>: <what is wrong>; <what to do>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in a config, for `check` to print one per line (exit 78).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
