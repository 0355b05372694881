//! What every measurement uses: the daemon as a child process (with its log parsed),
//! a webhook receiver, config files, and readings from /proc.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// The API key every sandbox accepts.
pub const API_KEY: &str = "clr_sandbox_key";
/// Any valid Standard Webhooks secret: the receiver does not check signatures.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// The daemon binary

/// `CLAIRO_SYNC_BIN`, else `clairo-sync` next to this executable (both live in
/// `target/release` after `cargo build --release -p clairo-sync`).
pub fn daemon_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("CLAIRO_SYNC_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .context("this executable has no directory")?
            .join("clairo-sync"),
    };
    if !path.is_file() {
        bail!(
            "{} not found: run `cargo build --release -p clairo-sync` first, or set CLAIRO_SYNC_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// A daemon binary built with PostgreSQL (`--features postgres`) for the `*-pg` and
/// `failover` phases: `CLAIRO_SYNC_PG_BIN`, else `clairo-sync-pg` next to this executable,
/// else the daemon binary itself if it was built with it. An error says how to build one.
pub fn pg_daemon_binary(daemon: &Path) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("CLAIRO_SYNC_PG_BIN") {
        Some(path) => vec![PathBuf::from(path)],
        None => {
            let beside = std::env::current_exe()
                .context("locating this executable")?
                .parent()
                .context("this executable has no directory")?
                .join("clairo-sync-pg");
            vec![beside, daemon.to_path_buf()]
        }
    };
    for candidate in &candidates {
        if candidate.is_file() && has_postgres(candidate)? {
            return Ok(candidate.clone());
        }
    }
    bail!(
        "no clairo-sync built with PostgreSQL among {}: build one with `cargo build --release \
         -p clairo-sync --features postgres && cp target/release/clairo-sync \
         target/release/clairo-sync-pg` (then `cargo build --release -p clairo-sync` again for \
         the other phases), or set CLAIRO_SYNC_PG_BIN",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whether `bin` accepts `state.url` (a build without PostgreSQL refuses it at `check`).
fn has_postgres(bin: &Path) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
    let config = dir.path().join("probe.toml");
    std::fs::write(
        &config,
        format!(
            "[clairo]\napi_key = \"{API_KEY}\"\n\n[state]\nurl = \"postgres://probe@127.0.0.1:9/probe\"\n"
        ),
    )?;
    let output = daemon_command(bin)
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(!String::from_utf8_lossy(&output.stderr).contains("no PostgreSQL support"))
}

/// Points a config written by [`write_config`] at PostgreSQL: `url` with the password
/// in a file beside the config, this instance's name, and `lease` if given.
pub fn use_postgres(
    config: &Path,
    url: &str,
    password: &str,
    instance: &str,
    lease: Option<Duration>,
) -> anyhow::Result<()> {
    let dir = config.parent().context("the config's directory")?;
    let password_file = dir.join(format!("{instance}.password"));
    std::fs::write(&password_file, password)?;
    let text = std::fs::read_to_string(config)?;
    let start = text.find("[state]\n").context("a [state] section")?;
    let end = start + text[start..].find("\n\n").context("the end of [state]")?;
    let mut state = format!(
        "[state]\nurl = \"{url}\"\npassword_file = \"{}\"\ninstance = \"{instance}\"",
        password_file.display()
    );
    if let Some(lease) = lease {
        state.push_str(&format!("\nlease = \"{}ms\"", lease.as_millis()));
    }
    let text = format!("{}{state}{}", &text[..start], &text[end..]);
    std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))
}

/// A command for the daemon binary with a clean environment: no `CLAIRO_*` override
/// from the caller's shell, no journald detection, info logs.
pub fn daemon_command(bin: &Path) -> Command {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CLAIRO_") {
            command.env_remove(&key);
        }
    }
    command
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info");
    // The daemon as the shipped unit runs it: with the unit's `Environment=`.
    command.envs(unit_environment(SHIPPED_UNIT));
    command
}

/// The unit the .deb installs (systemd/clairo-sync.service).
const SHIPPED_UNIT: &str = include_str!("../../systemd/clairo-sync.service");

/// The `KEY=value` pairs of a unit's `Environment=` lines (space-separated assignments,
/// each optionally in double quotes, as systemd reads them; an empty assignment clears
/// what came before).
pub fn unit_environment(unit: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for line in unit.lines().map(str::trim) {
        let Some(assignments) = line.strip_prefix("Environment=") else {
            continue;
        };
        if assignments.is_empty() {
            pairs.clear();
            continue;
        }
        for assignment in assignments.split_whitespace() {
            let assignment = assignment.trim_matches('"');
            if let Some((key, value)) = assignment.split_once('=') {
                pairs.retain(|(k, _)| k != key);
                pairs.push((key.to_owned(), value.to_owned()));
            }
        }
    }
    pairs
}

/// One `Poll run finished.` line of the daemon's log.
#[derive(Clone, Debug)]
pub struct PollLine {
    pub source: String,
    pub listed: u64,
    pub new: u64,
    pub events: u64,
    /// Milliseconds, with the microseconds the daemon logs.
    pub elapsed_ms: f64,
}

/// The value of ` name=value` in a tracing text line, quotes stripped.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=");
    let start = line.find(&needle)? + needle.len();
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"'))
}

fn parse_poll_line(line: &str) -> Option<PollLine> {
    if !line.contains("Poll run finished") {
        return None;
    }
    let number = |name: &str| field(line, name).and_then(|v| v.parse::<u64>().ok());
    Some(PollLine {
        source: field(line, "source")?.to_owned(),
        listed: number("listed")?,
        new: number("new")?,
        events: number("events")?,
        elapsed_ms: field(line, "elapsed_ms").and_then(|v| v.parse::<f64>().ok())?,
    })
}

#[derive(Default)]
struct DaemonLog {
    polls: Vec<PollLine>,
    /// The last lines, for error messages.
    tail: std::collections::VecDeque<String>,
    lines: u64,
}

/// The real daemon (`clairo-sync run -c CONFIG`); killed on drop if still running.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<DaemonLog>>,
    label: String,
}

impl Daemon {
    pub fn start(bin: &Path, config: &Path, label: &str) -> anyhow::Result<Self> {
        let mut child = daemon_command(bin)
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("the daemon's stderr")?;
        let log = Arc::new(Mutex::new(DaemonLog::default()));
        let sink = log.clone();
        let prefix = format!("[{label}]");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Warnings and errors are worth seeing as they happen; the rest is kept.
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    eprintln!("  {prefix} {line}");
                }
                let mut log = lock(&sink);
                if let Some(poll) = parse_poll_line(&line) {
                    log.polls.push(poll);
                }
                log.lines += 1;
                if log.tail.len() == 20 {
                    log.tail.pop_front();
                }
                log.tail.push_back(line);
            }
        });
        Ok(Self {
            child,
            log,
            label: label.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn polls(&self) -> Vec<PollLine> {
        lock(&self.log).polls.clone()
    }

    pub fn tail(&self) -> String {
        lock(&self.log)
            .tail
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An error if the daemon has exited (it should run until stopped).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the daemon ({}) exited early with {status}; its last log lines:\n{}",
                self.label,
                self.tail()
            );
        }
        Ok(())
    }

    /// Waits until `done` holds for the parsed poll lines, up to `within`.
    pub async fn wait_for_polls(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&[PollLine]) -> bool,
    ) -> anyhow::Result<Vec<PollLine>> {
        let deadline = Instant::now() + within;
        loop {
            let polls = self.polls();
            if done(&polls) {
                return Ok(polls);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "timed out after {within:?} waiting for {what}; the daemon's last log lines:\n{}",
                    self.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash or a lost host would end it; waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if it has not exited within 15 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "  [{}] did not stop within 15 s of SIGTERM; killing it",
            self.label
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One reading of a running process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub rss_kib: u64,
    /// RssAnon: heap and stacks, as opposed to file-backed pages (the binary's code).
    pub anon_kib: u64,
    pub hwm_kib: u64,
    /// Bytes the process has read so far (`rchar` of /proc/PID/io).
    pub read_bytes: u64,
}

/// How often [`run_sampled`] reads /proc: an upload of a small file lasts ~15 ms.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// What a one-shot command did, with its memory sampled every [`SAMPLE_EVERY`] while it ran.
pub struct Sampled {
    pub status: ExitStatus,
    pub stderr: String,
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

impl Sampled {
    pub fn peak_hwm_kib(&self) -> u64 {
        self.samples
            .iter()
            .map(|s| s.hwm_kib)
            .max()
            .unwrap_or_default()
    }
    pub fn peak_rss_kib(&self) -> u64 {
        self.samples
            .iter()
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or_default()
    }

    pub fn peak_anon_kib(&self) -> u64 {
        self.samples
            .iter()
            .map(|s| s.anon_kib)
            .max()
            .unwrap_or_default()
    }

    /// The last sample before the process had read `threshold` more bytes than at its
    /// first sample (for an upload: when it began reading the file), if the process was
    /// seen before that.
    pub fn before_reading(&self, threshold: u64) -> Option<Sample> {
        let first = self.samples.first()?.read_bytes;
        let index = self
            .samples
            .iter()
            .position(|s| s.read_bytes >= first + threshold)?;
        index.checked_sub(1).map(|before| self.samples[before])
    }
}

/// `rchar` of /proc/PID/io: bytes read through read(2) and friends.
fn read_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("rchar:"))
        .and_then(|rest| rest.trim().parse().ok())
}

/// Runs `command` to completion (at most `within`), sampling its VmRSS, VmHWM and bytes
/// read every [`SAMPLE_EVERY`].
pub fn run_sampled(mut command: Command, within: Duration) -> anyhow::Result<Sampled> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the command")?;
    let pid = child.id();
    let mut err = child.stderr.take().context("stderr")?;
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let mut samples = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let (Some(rss_kib), Some(anon_kib), Some(hwm_kib), Some(read_bytes)) = (
            status_kib(pid, "VmRSS"),
            status_kib(pid, "RssAnon"),
            status_kib(pid, "VmHWM"),
            read_bytes(pid),
        ) {
            samples.push(Sample {
                rss_kib,
                anon_kib,
                hwm_kib,
                read_bytes,
            });
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the command did not finish within {within:?}");
        }
        std::thread::sleep(SAMPLE_EVERY);
    };
    let elapsed = started.elapsed();
    Ok(Sampled {
        status,
        stderr: err_thread.join().unwrap_or_default(),
        samples,
        elapsed,
    })
}

// ---------------------------------------------------------------------------------------
// /proc

/// A `Vm*:` line of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// utime + stime of /proc/PID/stat, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `getconf CLK_TCK` (100 on every Linux we know of, the fallback).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Webhook receiver

#[derive(Default)]
struct ReceiverState {
    requests: AtomicU64,
    ids: Mutex<HashSet<String>>,
    /// When the most recent new event id arrived.
    last_new: Mutex<Option<Instant>>,
}

/// A local webhook endpoint answering 200 to everything and counting distinct event ids.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(ReceiverState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
        Ok(Self {
            url: format!("http://{addr}/hook"),
            state,
            stop: Some(stop_tx),
        })
    }

    pub fn distinct(&self) -> usize {
        lock(&self.state.ids).len()
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    pub fn last_new_at(&self) -> Option<Instant> {
        *lock(&self.state.last_new)
    }

    /// Waits until `count` distinct events have arrived (at most `within`).
    pub async fn wait_for(
        &self,
        count: usize,
        within: Duration,
        daemon: &mut Daemon,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while self.distinct() < count {
            daemon.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "timed out after {within:?} with {} of {count} events delivered; the daemon's last log lines:\n{}",
                    self.distinct(),
                    daemon.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    _body: Bytes,
) -> StatusCode {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if lock(&state.ids).insert(id) {
        *lock(&state.last_new) = Some(Instant::now());
    }
    StatusCode::OK
}

// ---------------------------------------------------------------------------------------
// Config files

/// What a benchmark's daemon config says; everything else is the daemon's default.
pub struct ConfigSpec<'a> {
    pub base_url: &'a str,
    pub state: &'a Path,
    pub max_requests_per_minute: u32,
    pub start_from: &'a str,
    pub briefs_schedule: Option<&'a str>,
    pub conversations_schedule: Option<&'a str>,
    /// A webhook connector to this URL, routed every event type.
    pub hook: Option<&'a str>,
    /// `limit` of both lists: the whole list for a backlog, the usual window when idle.
    pub list_limit: u32,
}

pub fn write_config(dir: &Path, name: &str, spec: &ConfigSpec<'_>) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        r#"log_level = "info"

[clairo]
base_url = "{base}"
api_key = "{API_KEY}"
max_requests_per_minute = {budget}
timeout = "120s"

[state]
path = "{state}"

[http]
enabled = false

[sync]
start_from = "{start_from}"
"#,
        base = spec.base_url,
        budget = spec.max_requests_per_minute,
        state = spec.state.display(),
        start_from = spec.start_from,
    );
    if let Some(schedule) = spec.briefs_schedule {
        // The sandbox lists every brief whatever the limit; a limit above the list's
        // length keeps the daemon's "list came back exactly `limit` long" warning quiet.
        text.push_str(&format!(
            "\n[sync.briefs]\nschedule = \"{schedule}\"\nlimit = {}\n",
            spec.list_limit
        ));
    }
    if let Some(schedule) = spec.conversations_schedule {
        text.push_str(&format!(
            "\n[sync.conversations]\nschedule = \"{schedule}\"\nlimit = {}\n",
            spec.list_limit
        ));
    }
    if let Some(url) = spec.hook {
        text.push_str(&format!(
            r#"
[connectors.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"

[[routes]]
events = ["brief.created", "conversation.updated"]
to = ["hook"]
"#
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Sleeps until the wall clock reaches `unix_ms`.
pub async fn sleep_until_unix_ms(target: u64) {
    let now = unix_ms();
    if target > now {
        tokio::time::sleep(Duration::from_millis(target - now)).await;
    }
}

/// A plain HTTP/1.1 GET over loopback, timed from connect to the last byte; returns
/// (status line, body bytes, elapsed).
pub async fn timed_get(base_url: &str, path: &str) -> anyhow::Result<(String, usize, Duration)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = base_url.strip_prefix("http://").context("an http:// URL")?;
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let request = format!(
        "GET /{prefix}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let elapsed = started.elapsed();
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("an HTTP response")?;
    let status = String::from_utf8_lossy(&response[..head_end])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((status, response.len() - head_end - 4, elapsed))
}

#[cfg(test)]
mod unit_environment_tests {
    use super::*;

    #[test]
    fn the_shipped_units_environment_is_what_the_daemon_runs_with() {
        // None at present (the unit's malloc setting was removed, BENCHMARKS.md); a
        // setting added to the unit must be added here, and the bench then applies it.
        let environment = unit_environment(SHIPPED_UNIT);
        assert!(environment.is_empty(), "{environment:?}");
    }

    #[test]
    fn assignments_are_read_as_systemd_reads_them() {
        let unit = "[Service]\nEnvironment=A=1 \"B=two\"\n# Environment=C=3\nEnvironment=A=3\n";
        assert_eq!(
            unit_environment(unit),
            [("B".into(), "two".into()), ("A".into(), "3".into())]
        );
        assert!(unit_environment("Environment=A=1\nEnvironment=\n").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_lines_parse() {
        let line = "2026-01-01T00:00:00.000000Z  INFO clairo_sync::daemon: Poll run finished. source=\"briefs\" listed=1000 new=0 events=0 detail_calls=0 skipped=0 elapsed_ms=42";
        let poll = parse_poll_line(line).unwrap();
        assert_eq!(poll.source, "briefs");
        assert_eq!(poll.listed, 1000);
        assert_eq!(poll.new, 0);
        assert_eq!(poll.events, 0);
        assert_eq!(poll.elapsed_ms, 42.0);
        let unquoted = line.replace("\"briefs\"", "briefs");
        assert_eq!(parse_poll_line(&unquoted).unwrap().source, "briefs");
        assert!(parse_poll_line("INFO something else").is_none());
    }

    #[test]
    fn proc_of_this_process_reads() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(cpu_ticks(pid).is_some());
    }
}
