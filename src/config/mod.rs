//! The configuration (README "Configuration", config/clairo-sync.toml): TOML through
//! figment, `CLAIRO_SYNC_<SECTION>__<KEY>` environment overrides, secrets resolved from
//! files, systemd credentials or env, and validation that names the key path of every
//! problem.

mod report;
mod schedule;
mod secrets;
mod unit;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clairo_connectors::{ConnectorConfig, EventType, Secret};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use tracing_subscriber::filter::{LevelFilter, Targets};

pub use schedule::Schedule;
pub use secrets::SecretSources;
pub use unit::Unit;

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
    pub connectors: BTreeMap<String, ConnectorConfig>,
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

/// A size in bytes: a whole number of bytes (`67108864`), or a number with a unit
/// (`"64MiB"`, `"512 KiB"`, `"1GB"`; KiB/MiB/GiB are powers of 1024, kB/MB/GB of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"64MiB"`, `"64 MiB"`, `"100kB"`, `"1024"`, `"1024B"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit = unit.trim();
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?}; write a number of bytes or e.g. \"64MiB\" (B, kB, MB, GB, KiB, MiB, GiB)"
                ));
            }
        };
        let not_a_size =
            || format!("{text:?} is not a size; write e.g. \"64MiB\" or a number of bytes");
        let bytes = if let Ok(whole) = number.parse::<u64>() {
            whole.checked_mul(multiplier)
        } else {
            let value = number.parse::<f64>().map_err(|_| not_a_size())?;
            let bytes = (value * multiplier as f64).round();
            // Checked before the conversion: nothing near u64::MAX is a sensible size.
            (0.0..1e18).contains(&bytes).then_some(bytes as u64)
        };
        bytes
            .map(Self)
            .ok_or_else(|| format!("{text:?} is too large; write at most a few GiB"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{} {unit}", self.0 / size);
            }
        }
        for (size, unit) in UNITS {
            if self.0 >= size {
                return write!(f, "{:.1} {unit}", self.0 as f64 / size as f64);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("write a number of bytes or a size such as \"64MiB\"")
        })? {
            Raw::Bytes(bytes) => Ok(Self(bytes)),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
    /// How long an event every delivery of which went out is kept (with its deliveries
    /// and attempts) before it is pruned; `forever` keeps them all.
    #[serde(default)]
    pub delivered_retention: Retention,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            path: default_state_path(),
            delivered_retention: Retention::default(),
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

/// A config that parsed and validated, with its secrets read.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The resolved Clairo API key (`None` only where the caller allowed it).
    pub api_key: Option<Secret>,
    pub path: Option<PathBuf>,
}

/// How strictly to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The daemon: a config file must exist, an API key must be found.
    Daemon,
    /// Operator commands: the file is optional; the key is still required.
    ApiOnly,
    /// Commands that only read the state database (`status`, `deliveries`): no secret is
    /// read, so they work from a shell where only the service has its credentials.
    StateOnly,
}

/// Loads the config file (if any) with env overrides, resolves secrets, validates.
pub fn load(
    path: Option<&Path>,
    need: Need,
    sources: &SecretSources,
) -> Result<LoadedConfig, ConfigErrors> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.exists() {
            if need != Need::ApiOnly {
                return Err(ConfigErrors(vec![Problem::new(
                    "config",
                    format!(
                        "{} does not exist; create it from the annotated example config/clairo-sync.toml, or pass -c FILE",
                        path.display()
                    ),
                )]));
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigErrors(vec![Problem::new(
                    "config",
                    format!(
                        "cannot read {}: {error}; run as root (sudo clairo-sync …) or as the clairo-sync user",
                        path.display()
                    ),
                )])
            })?;
            let source = report::Source { path, text: &text };
            let (mut problems, repaired) = report::syntax_problems(&source);
            if !problems.is_empty() {
                // What still parses may hold more mistakes: its unknown keys are reported
                // too (report.rs says why only those).
                let rest = Figment::new()
                    .merge(Toml::string(&repaired))
                    .merge(env_provider());
                let repaired = report::Source {
                    path,
                    text: &repaired,
                };
                problems.extend(
                    report::extract(&rest, Some(&repaired))
                        .1
                        .into_iter()
                        .filter(|problem| problem.message.starts_with("unknown key")),
                );
                return Err(ConfigErrors(problems));
            }
            figment = figment.merge(Toml::file_exact(path));
            figment = figment.merge(env_provider());
            return finish(&figment, Some(&source), need, sources);
        }
    }
    figment = figment.merge(env_provider());
    finish(&figment, None, need, sources)
}

/// Extracts, resolves secrets (unless only the state is needed) and validates.
fn finish(
    figment: &Figment,
    source: Option<&report::Source<'_>>,
    need: Need,
    sources: &SecretSources,
) -> Result<LoadedConfig, ConfigErrors> {
    let (config, extracted) = report::extract(figment, source);
    // A secret of the wrong shape, already named by its key, makes figment report its
    // whole connector table too: keep the line that names the key.
    let mut problems = secret_shape_problems(figment);
    for problem in extracted {
        let covered = problems.iter().any(|known| {
            known.key == problem.key || known.key.starts_with(&format!("{}.", problem.key))
        });
        if !covered {
            problems.push(problem);
        }
    }
    let Some(mut config) = config else {
        return Err(ConfigErrors(problems));
    };
    let path = source.map(|source| source.path.to_path_buf());
    if need == Need::StateOnly {
        return if problems.is_empty() {
            Ok(LoadedConfig {
                config,
                api_key: None,
                path,
            })
        } else {
            Err(ConfigErrors(problems))
        };
    }
    let api_key = secrets::resolve_api_key(&config.clairo, sources, &mut problems);
    let config_dir = path.as_deref().and_then(Path::parent);
    secrets::resolve_connector_secrets(&mut config.connectors, sources, config_dir, &mut problems);
    secrets::resolve_connector_headers(&mut config.connectors, sources, &mut problems);
    validate(&config, api_key.as_ref(), need, &mut problems);
    if problems.is_empty() {
        Ok(LoadedConfig {
            config,
            api_key,
            path,
        })
    } else {
        Err(ConfigErrors(problems))
    }
}

fn env_provider() -> EnvOverrides {
    // `CLAIRO_SYNC_CONFIG` names the file; it is not a key inside it.
    EnvOverrides(
        Env::prefixed(ENV_PREFIX)
            .filter(|key| !key.as_str().eq_ignore_ascii_case("config"))
            .split("__"),
    )
}

/// figment's `Env`, except that a value at a secret's key is taken exactly as written.
/// `Env` reads every value as a TOML-like literal, so a password `007` would become the
/// number 7, `1.50` the float 1.5, `[x]` a list, and `"x"` lose its quotes.
struct EnvOverrides(Env);

impl figment::Provider for EnvOverrides {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut merged = Figment::new();
        for (key, raw) in self.0.iter() {
            let value: figment::value::Value = if is_secret_key(key.as_str()) {
                raw.into()
            } else {
                raw.parse().expect("parsing an env value is infallible")
            };
            merged = merged.merge(figment::providers::Serialized::default(key.as_str(), value));
        }
        merged.data()
    }
}

/// Whether a dotted key path (`connectors.mail.password`) holds a secret: the API key,
/// a connector's secret keys, or anything under a connector's `headers`.
fn is_secret_key(path: &str) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    match segments.as_slice() {
        ["clairo", "api_key"] => true,
        ["connectors", _, key, ..] => clairo_connectors::SECRET_KEYS.contains(key),
        _ => false,
    }
}

/// Secrets that are not text (a list, a table, a fraction), named by their key. figment
/// would report these at the connector's table only (a connector's `type` tag makes serde
/// read the table whole first), and with the value in the message.
fn secret_shape_problems(figment: &Figment) -> Vec<Problem> {
    use figment::value::{Num, Value};
    fn shape(value: &Value) -> Option<&'static str> {
        match value {
            Value::Array(..) => Some("a list"),
            Value::Dict(..) => Some("a table"),
            Value::Num(_, Num::F32(_) | Num::F64(_)) => Some(
                "a number with a fraction or an exponent, which cannot be kept exactly as written",
            ),
            _ => None,
        }
    }
    let problem = |key: String, found: &str| {
        Problem::new(
            key,
            format!(
                "a secret must be text, found {found} (the value is not shown); write it in quotes, or put it in the `_file` key's file"
            ),
        )
    };
    let mut problems = Vec::new();
    if let Ok(value) = figment.find_value("clairo.api_key")
        && let Some(found) = shape(&value)
    {
        problems.push(problem("clairo.api_key".to_owned(), found));
    }
    let Ok(Value::Dict(_, connectors)) = figment.find_value("connectors") else {
        return problems;
    };
    for (name, table) in &connectors {
        let Value::Dict(_, table) = table else {
            continue;
        };
        for (key, value) in table {
            if !clairo_connectors::SECRET_KEYS.contains(&key.as_str()) {
                continue;
            }
            match (key.as_str(), value) {
                ("headers", Value::Dict(_, headers)) => {
                    for (header, value) in headers {
                        if let Some(found) = shape(value) {
                            problems.push(problem(format!("connectors.{name}.headers.{header}"), found));
                        }
                    }
                }
                ("headers", _) => problems.push(Problem::new(
                    format!("connectors.{name}.headers"),
                    "must be a table of header names and values, e.g. headers = { \"X-Gateway-Token\" = \"…\" } (the value is not shown); or use headers_file",
                )),
                (_, value) => {
                    if let Some(found) = shape(value) {
                        problems.push(problem(format!("connectors.{name}.{key}"), found));
                    }
                }
            }
        }
    }
    problems
}

/// Where a config error's value could be a secret: a connector's table (whose errors
/// may not name the key) and the API key.
fn may_hold_a_secret(key: &str) -> bool {
    key == "connectors"
        || key.starts_with("connectors.")
        || key == "clairo.api_key"
        || is_secret_key(key)
}

/// What figment found, by kind only (`an integer`), where the value itself could be a
/// secret.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number with a fraction",
        Actual::Char(_) | Actual::Str(_) => "text",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another kind",
    }
}

/// Turns figment's errors into `<key.path>: …; …` lines.
fn figment_problems(error: figment::Error) -> Vec<Problem> {
    error
        .into_iter()
        .map(|error| {
            let key = if error.path.is_empty() {
                "config".to_owned()
            } else {
                key_path(&error.path)
            };
            let source = error
                .metadata
                .as_ref()
                .map(|meta| meta.name.to_string())
                .unwrap_or_default();
            let what = match &error.kind {
                figment::error::Kind::UnknownField(field, expected) => {
                    return Problem::new(
                        field_key(&key, field),
                        format!(
                            "unknown key; remove it or fix its spelling (expected one of: {})",
                            expected.join(", ")
                        ),
                    );
                }
                figment::error::Kind::MissingField(field) => {
                    return Problem::new(field_key(&key, field), "is required; add it".to_owned());
                }
                figment::error::Kind::InvalidType(actual, expected) if may_hold_a_secret(&key) => {
                    format!(
                        "invalid type: found {}, expected {expected}",
                        kind_of(actual)
                    )
                }
                figment::error::Kind::InvalidValue(actual, expected) if may_hold_a_secret(&key) => {
                    format!(
                        "invalid value: found {}, expected {expected}",
                        kind_of(actual)
                    )
                }
                figment::error::Kind::Unsupported(actual) if may_hold_a_secret(&key) => {
                    format!("unsupported: {}", kind_of(actual))
                }
                kind => kind.to_string(),
            };
            let from = if source.is_empty() {
                String::new()
            } else {
                format!(" (from {source})")
            };
            Problem::new(key, format!("{what}{from}; fix the value"))
        })
        .collect()
}

/// `["routes", "0", "to"]` → `routes[0].to`, the form every problem line uses.
fn key_path(segments: &[String]) -> String {
    let mut out = String::new();
    for segment in segments {
        if segment.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// figment's path sometimes ends with the field already, sometimes not.
fn field_key(path: &str, field: &str) -> String {
    if path == "config" {
        field.to_owned()
    } else if path == field || path.ends_with(&format!(".{field}")) {
        path.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn validate(config: &Config, api_key: Option<&Secret>, need: Need, problems: &mut Vec<Problem>) {
    match url::Url::parse(&config.clairo.base_url) {
        Ok(url) if url.scheme() == "https" => {}
        // The API key travels in every request: in clear text only to this machine
        // (the sandbox, a local proxy).
        Ok(url) if url.scheme() == "http" && is_loopback(&url) => {}
        Ok(url) if url.scheme() == "http" => problems.push(Problem::new(
            "clairo.base_url",
            format!(
                "plain http:// to {} would send the API key unencrypted; use https://{}",
                url.host_str().unwrap_or("the host"),
                config.clairo.base_url.trim_start_matches("http://"),
            ),
        )),
        Ok(_) | Err(_) => problems.push(Problem::new(
            "clairo.base_url",
            format!(
                "{:?} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}",
                config.clairo.base_url
            ),
        )),
    }
    match api_key {
        Some(key) if !key.expose().starts_with("clr_") => problems.push(Problem::new(
            "clairo.api_key",
            "the key does not start with clr_, so it is not a Clairo API key; generate one in the Clairo dashboard under Settings → API Keys",
        )),
        Some(_) => {}
        None => {
            let _ = need;
            problems.push(Problem::new(
                "clairo.api_key",
                "no API key found; put it in the file named by clairo.api_key_file, the systemd credential clairo-api-key, or CLAIRO_API_KEY",
            ))
        }
    }
    if let Err(error) = log_filter(&config.log_level) {
        problems.push(Problem::new(
            "log_level",
            format!(
                "{error}; write a level (error, warn, info, debug, trace or off), optionally followed by per-module levels, e.g. \"info,clairo_sync=debug\""
            ),
        ));
    }
    if config.clairo.max_requests_per_minute == 0 {
        problems.push(Problem::new(
            "clairo.max_requests_per_minute",
            "must be at least 1; Clairo allows 1000 per business, 900 leaves room for other integrations",
        ));
    }
    if config.clairo.max_response_size.bytes() < MIN_RESPONSE_SIZE {
        problems.push(Problem::new(
            "clairo.max_response_size",
            "must be at least 64KiB (an error answer alone can be that long); the default is \"64MiB\"",
        ));
    }
    if config.clairo.max_attempts == 0 {
        problems.push(Problem::new(
            "clairo.max_attempts",
            "must be at least 1; the default is 5",
        ));
    }
    if config.state.path.as_os_str().is_empty() {
        problems.push(Problem::new(
            "state.path",
            "is empty; name the SQLite file, e.g. /var/lib/clairo-sync/state.db",
        ));
    }
    if let Some(briefs) = &config.sync.briefs {
        check_limit("sync.briefs.limit", briefs.limit, problems);
    }
    if let Some(conversations) = &config.sync.conversations {
        check_limit("sync.conversations.limit", conversations.limit, problems);
        if conversations.refresh_interval.is_zero() {
            problems.push(Problem::new(
                "sync.conversations.refresh_interval",
                "must be longer than zero; e.g. \"15m\"",
            ));
        }
    }
    for (index, folder) in config.meetings.folders.iter().enumerate() {
        let key = format!("meetings.folders[{index}]");
        if !folder.path.is_absolute() {
            problems.push(Problem::new(
                format!("{key}.path"),
                format!(
                    "{} is not an absolute path; write it from /",
                    folder.path.display()
                ),
            ));
        }
        for (name, dir) in [("processed", &folder.processed), ("failed", &folder.failed)] {
            if let Some(dir) = dir
                && !dir.is_absolute()
            {
                problems.push(Problem::new(
                    format!("{key}.{name}"),
                    format!("{} is not an absolute path; write it from /", dir.display()),
                ));
            }
        }
        if folder.agent.trim().is_empty() {
            problems.push(Problem::new(
                format!("{key}.agent"),
                "is empty; name the agent id recordings are uploaded to (see `clairo-sync agents`)",
            ));
        }
        if folder.settle.is_zero() {
            problems.push(Problem::new(
                format!("{key}.settle"),
                "must be longer than zero, or half-written files would be taken; e.g. \"5s\"",
            ));
        }
        if folder.poll_interval < Duration::from_millis(100) {
            problems.push(Problem::new(
                format!("{key}.poll_interval"),
                "is shorter than 100ms, which would rescan the folder in a busy loop; e.g. \"10s\"",
            ));
        }
        let (processed, failed) = (folder.processed_dir(), folder.failed_dir());
        for (name, dir) in [("processed", &processed), ("failed", &failed)] {
            if *dir == folder.path {
                problems.push(Problem::new(
                    format!("{key}.{name}"),
                    "is the drop folder itself, so finished files would be taken again; name a subfolder or another folder",
                ));
            }
        }
        if processed == failed {
            problems.push(Problem::new(
                format!("{key}.failed"),
                "is the same folder as processed; keep them apart so failures stand out",
            ));
        }
        if let Some(first) = config.meetings.folders[..index]
            .iter()
            .position(|other| other.path == folder.path)
        {
            problems.push(Problem::new(
                format!("{key}.path"),
                format!("is the same folder as meetings.folders[{first}]; list each folder once"),
            ));
        }
    }
    for (name, connector) in &config.connectors {
        if !valid_name(name) {
            problems.push(Problem::new(
                format!("connectors.{name}"),
                "names may hold only letters, digits, '_' and '-'; rename the table",
            ));
        }
        for problem in connector.validate() {
            let key = format!("connectors.{name}.{}", problem.key);
            // A missing secret was already reported, with where to put it.
            if !problems.iter().any(|known| known.key == key) {
                problems.push(Problem::new(key, problem.message));
            }
        }
    }
    for (index, route) in config.routes.iter().enumerate() {
        let key = format!("routes[{index}]");
        if route.events.is_empty() {
            problems.push(Problem::new(
                format!("{key}.events"),
                "is empty; list the event types to route (brief.created, conversation.updated, meeting.processed)",
            ));
        }
        for event in &route.events {
            if EventType::parse(event).is_none() {
                problems.push(Problem::new(
                    format!("{key}.events"),
                    format!(
                        "{event:?} is not an event type; use brief.created, conversation.updated or meeting.processed"
                    ),
                ));
            }
        }
        if route.to.is_empty() {
            problems.push(Problem::new(
                format!("{key}.to"),
                "is empty; name at least one connector",
            ));
        }
        for target in &route.to {
            if !config.connectors.contains_key(target) {
                let known: Vec<&str> = config.connectors.keys().map(String::as_str).collect();
                problems.push(Problem::new(
                    format!("{key}.to"),
                    format!(
                        "{target:?} is not a configured connector; add [connectors.{target}] or use one of: {}",
                        if known.is_empty() { "(none configured)".to_owned() } else { known.join(", ") }
                    ),
                ));
            }
        }
    }
    if config.delivery.retry_schedule.is_empty() {
        problems.push(Problem::new(
            "delivery.retry_schedule",
            "is empty, so a failed delivery would die at once; list the waits, e.g. [\"5s\", \"5m\", \"30m\"]",
        ));
    }
    if config.delivery.concurrency == 0 {
        problems.push(Problem::new(
            "delivery.concurrency",
            "must be at least 1; the default is 4",
        ));
    }
    if config.delivery.lease < Duration::from_secs(5) {
        problems.push(Problem::new(
            "delivery.lease",
            "is shorter than 5s, so a slow delivery could be claimed twice; use at least the connectors' timeout",
        ));
    }
}

/// 127.0.0.0/8, ::1 or `localhost`: where plain http stays on this machine.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn check_limit(key: &str, limit: u32, problems: &mut Vec<Problem>) {
    if limit == 0 {
        problems.push(Problem::new(
            key,
            "must be at least 1; the API's default is 50",
        ));
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// [`load`] for a config held in memory rather than in a file (the fuzz target
/// `config_load` drives it): the same env overrides, secrets and validation.
pub fn load_str(
    text: &str,
    need: Need,
    sources: &SecretSources,
) -> Result<LoadedConfig, ConfigErrors> {
    let figment = Figment::new()
        .merge(Toml::string(text))
        .merge(env_provider());
    finish(&figment, None, need, sources)
}

#[cfg(test)]
mod byte_size_tests {
    use super::ByteSize;

    #[test]
    fn a_size_is_a_number_of_bytes_or_a_number_with_a_unit() {
        for (text, bytes) in [
            ("67108864", 64 << 20),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("1.5GiB", 3 << 29),
            ("100kB", 100_000),
            ("2MB", 2_000_000),
            ("512B", 512),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        for text in [
            "",
            "MiB",
            "64 parsecs",
            "-1MiB",
            "99999999999999999999GiB",
            "1e400",
        ] {
            assert!(ByteSize::parse(text).is_err(), "{text}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64 MiB");
        assert_eq!(ByteSize(1_500_000).to_string(), "1.4 MiB");
        assert_eq!(ByteSize(100).to_string(), "100 bytes");
    }
}
