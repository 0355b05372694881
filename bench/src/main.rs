//! `clairo-bench`: the benchmark suite of issue 7 §4.
//!
//! Runs the REAL release daemon (`target/release/clairo-sync`, or `CLAIRO_SYNC_BIN`) as a
//! child process against an in-process sandbox and webhook receiver over loopback, prints
//! one table to stdout (progress to stderr) and writes BENCHMARKS.md at the workspace root.
//!
//! ```sh
//! cargo build --release -p clairo-sync && cargo run --release -p clairo-bench
//! cargo run --release -p clairo-bench -- idle upload   # some phases only; BENCHMARKS.md untouched
//! ```
//!
//! Every wait is bounded, and everything started is stopped: daemons get SIGTERM (then
//! SIGKILL), sandboxes and receivers are shut down, temporary directories removed.

#![forbid(unsafe_code)]

mod report;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clairo_sandbox::{Sandbox, SandboxConfig};
use tempfile::TempDir;

use report::{Report, Row, Verdict};
use support::{
    ConfigSpec, Daemon, Receiver, clock_ticks_per_second, cpu_ticks, daemon_command, file_size,
    run_sampled, sleep_until_unix_ms, status_kib, timed_get, unix_ms, write_config,
};

/// The sandbox's budget and the daemon's `clairo.max_requests_per_minute` for the drains:
/// six times Clairo's real 1,000/min so the 10,000-brief drain takes ~100 s, not 10 min.
const BUDGET: u32 = 6_000;
const WINDOW: Duration = Duration::from_secs(60);
const DRAIN_SIZES: [usize; 2] = [1_000, 10_000];
/// Seeded with the 1,000-brief drain so the idle daemon has conversations to list.
const IDLE_CONVERSATIONS: usize = 10;
const IDLE_SCHEDULE: &str = "*/5 * * * * *";
const IDLE_CYCLE_MS: u64 = 5_000;
const IDLE_WINDOW_MS: u64 = 60_000;
const IDLE_RSS_AT_MS: u64 = 30_000;
/// A schedule that does not fire during a benchmark: only the start-up run polls.
const ONCE_A_YEAR: &str = "0 0 1 1 *";
/// "Unlimited": far above anything a loopback run can reach.
const UNLIMITED: u32 = 1_000_000_000;
const THROUGHPUT_EVENTS: usize = 5_000;
/// "24 MB", kept under the daemon's 25,000,000-byte limit.
const UPLOAD_BYTES: usize = 24_000_000;
const UPLOAD_BASELINE_BYTES: usize = 4_096;
const UPLOAD_RUNS: usize = 5;
/// Read this much more than at start-up, an upload is reading its file.
const UPLOAD_READ_THRESHOLD: u64 = 1 << 20;
const HISTORY_SIZES: [usize; 2] = [1_000, 100_000];
const HISTORY_WARMUP_CYCLES: usize = 2;
/// A cycle takes about a millisecond: a median of 25 (one a second) is steadier than the
/// 6 the idle schedule would give in half a minute.
const HISTORY_CYCLES: usize = 25;
const HISTORY_SCHEDULE: &str = "* * * * * *";
/// `sync.briefs.limit`'s default: the window an idle history cycle lists.
const BRIEFS_LIST_LIMIT: usize = 100;
/// A `limit` above any list's length: a backlog is listed whole.
const WHOLE_LIST: u32 = 1_000_000;

const BRIEFS_LIST: &str = "GET /briefs";
const BRIEF_DETAIL: &str = "GET /briefs/{id}";
const CONVERSATIONS_LIST: &str = "GET /conversations";

const PHASES: [&str; 6] = [
    "drain",
    "drain-1k",
    "idle",
    "throughput",
    "upload",
    "history",
];

struct Bench {
    bin: PathBuf,
    clk_tck: u64,
    report: Report,
}

fn main() -> anyhow::Result<()> {
    let mut phases: Vec<String> = Vec::new();
    let mut write = true;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--no-write" => write = false,
            "-h" | "--help" => {
                println!(
                    "clairo-bench [--no-write] [PHASE...]\n\nPhases: {} (default: all but drain-1k, which is the first half of drain; \
                     idle runs drain-1k first; a partial run does not write BENCHMARKS.md).\n\
                     The daemon binary: CLAIRO_SYNC_BIN, else clairo-sync next to this executable.",
                    PHASES.join(", ")
                );
                return Ok(());
            }
            phase if PHASES.contains(&phase) => phases.push(arg),
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    let all = phases.is_empty();
    if all {
        phases = PHASES
            .iter()
            .filter(|p| **p != "drain-1k")
            .map(|p| (*p).to_owned())
            .collect();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bin = support::daemon_binary()?;
    if bin.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "warning: {} looks like a debug build; the figures are meant for a release build",
            bin.display()
        );
    }
    let mut bench = Bench {
        bin,
        clk_tck: clock_ticks_per_second(),
        report: Report::default(),
    };
    eprintln!("clairo-bench: daemon {}", bench.bin.display());
    let started = Instant::now();
    runtime.block_on(bench.run(&phases));
    let elapsed = started.elapsed();
    eprintln!("clairo-bench: done in {:.0} s", elapsed.as_secs_f64());
    println!("{}", bench.report.table());
    if all && write {
        let path = report::benchmarks_path();
        bench.report.write_markdown(&path, elapsed)?;
        eprintln!("clairo-bench: wrote {}", path.display());
    }
    Ok(())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn sandbox(
    rate_limit: u32,
    seed_briefs: usize,
    seed_conversations: usize,
) -> anyhow::Result<Sandbox> {
    let started = Instant::now();
    let sandbox = clairo_sandbox::start(
        SandboxConfig {
            rate_limit,
            window: WINDOW,
            seed_briefs,
            seed_conversations,
            ..SandboxConfig::default()
        },
        loopback(),
    )
    .await
    .context("starting the sandbox")?;
    if seed_briefs >= 10_000 {
        eprintln!(
            "  sandbox seeded with {seed_briefs} briefs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(sandbox)
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    if values.is_empty() {
        0
    } else {
        values[values.len() / 2]
    }
}

impl Bench {
    async fn run(&mut self, phases: &[String]) {
        let wants = |name: &str| phases.iter().any(|p| p == name);
        if wants("drain") || wants("drain-1k") || wants("idle") {
            let sizes: &[usize] = if wants("drain") {
                &DRAIN_SIZES
            } else {
                &DRAIN_SIZES[..1]
            };
            // The 1,000-brief drain's sandbox and state are kept for the idle phase, which
            // runs after the drains so the table keeps the drains together.
            let mut kept = None;
            for &n in sizes {
                eprintln!(
                    "== backlog drain of {n} briefs (budget {BUDGET} per {} s)",
                    WINDOW.as_secs()
                );
                match self.drain(n).await {
                    Ok((sandbox, dir)) if n == DRAIN_SIZES[0] && wants("idle") => {
                        kept = Some((sandbox, dir));
                    }
                    Ok((sandbox, _dir)) => sandbox.stop(),
                    Err(error) => self.failed(&format!("Backlog drain {}", count(n)), &error),
                }
            }
            if let Some((sandbox, dir)) = kept {
                eprintln!(
                    "== idle (after the {}-brief backlog is drained)",
                    DRAIN_SIZES[0]
                );
                if let Err(error) = self.idle(&sandbox, &dir).await {
                    self.failed("Idle", &error);
                }
                sandbox.stop();
            }
        }
        if wants("throughput") {
            eprintln!("== throughput with an unlimited budget ({THROUGHPUT_EVENTS} briefs)");
            if let Err(error) = self.throughput().await {
                self.failed("Throughput", &error);
            }
        }
        if wants("upload") {
            eprintln!("== upload of a {} MB recording", UPLOAD_BYTES / 1_000_000);
            if let Err(error) = self.upload().await {
                self.failed("Upload", &error);
            }
        }
        if wants("history") {
            let mut cycles = Vec::new();
            for &n in &HISTORY_SIZES {
                eprintln!("== history: idle poll cycles with {n} briefs recorded");
                match self.history(n).await {
                    Ok(cycle_ms) => cycles.push((n, cycle_ms)),
                    Err(error) => self.failed(&format!("History {n}"), &error),
                }
            }
            if let [(small_n, small), (large_n, large)] = cycles[..] {
                let ratio = large / small.max(0.001);
                self.report.row(Row::new(
                    format!(
                        "History: cycle-time ratio {} / {}",
                        count(large_n),
                        count(small_n)
                    ),
                    format!("{ratio:.2} ({large:.0} ms / {small:.0} ms)"),
                    "≤ 1.2",
                    Verdict::goal(ratio <= 1.2),
                ));
            }
        }
    }

    fn failed(&mut self, what: &str, error: &anyhow::Error) {
        eprintln!("  FAILED: {what}: {error:#}");
        let first_line = format!("{error:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        self.report.row(Row::new(
            what.to_owned(),
            format!("failed: {first_line}"),
            "—",
            Verdict::Failed,
        ));
    }

    /// N briefs waiting; the daemon fetches each one's detail under a budget of B per
    /// window. Measured at the sandbox, from the daemon's start to the last detail request.
    async fn drain(&mut self, n: usize) -> anyhow::Result<(Sandbox, TempDir)> {
        let sandbox = sandbox(BUDGET, n, IDLE_CONVERSATIONS).await?;
        let receiver = Receiver::start().await?;
        let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
        let base_url = sandbox.base_url();
        let state = dir.path().join("state.db");
        let config = write_config(
            dir.path(),
            "drain.toml",
            &ConfigSpec {
                base_url: &base_url,
                state: &state,
                max_requests_per_minute: BUDGET,
                start_from: "all",
                briefs_schedule: Some(ONCE_A_YEAR),
                conversations_schedule: None,
                hook: Some(&receiver.url),
                list_limit: WHOLE_LIST,
            },
        )?;
        sandbox.reset_stats();
        let window_ms = WINDOW.as_millis() as f64;
        let floor_ms = (n as f64 + 1.0) / f64::from(BUDGET) * window_ms;
        let start_ms = unix_ms();
        let start = Instant::now();
        let mut daemon = Daemon::start(&self.bin, &config, &format!("drain {n}"))?;
        let deadline = start + Duration::from_secs_f64(floor_ms / 1000.0 * 2.0 + 60.0);
        let mut next_progress = start + Duration::from_secs(10);
        loop {
            let stats = sandbox.stats();
            let done = stats
                .log
                .iter()
                .filter(|r| r.endpoint == BRIEF_DETAIL && r.status == 200)
                .count();
            if done >= n {
                break;
            }
            daemon.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "timed out with {done} of {n} details fetched; the daemon's last log lines:\n{}",
                    daemon.tail()
                );
            }
            if Instant::now() >= next_progress {
                eprintln!(
                    "  {:>4.0} s: {done}/{n} details fetched, {} throttled, {} delivered",
                    start.elapsed().as_secs_f64(),
                    stats.by_status.get(&429).copied().unwrap_or_default(),
                    receiver.distinct()
                );
                next_progress += Duration::from_secs(10);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        receiver
            .wait_for(n, Duration::from_secs(120), &mut daemon)
            .await?;
        let delivered_s = receiver
            .last_new_at()
            .map(|at| at.duration_since(start).as_secs_f64())
            .unwrap_or_default();
        daemon.stop();
        drop(receiver);

        let log = sandbox.stats().log;
        let first_ms = log
            .first()
            .context("no request reached the sandbox")?
            .unix_ms;
        let details: Vec<u64> = log
            .iter()
            .filter(|r| r.endpoint == BRIEF_DETAIL && r.status == 200)
            .map(|r| r.unix_ms)
            .collect();
        let (first_detail, last_detail) = (details[0], details[details.len() - 1]);
        let wall_ms = (last_detail - start_ms) as f64;
        // The steady part: from the first detail request to the last, every request the
        // server admitted (a 429 consumes no budget).
        let admitted = log
            .iter()
            .filter(|r| r.status != 429 && (first_detail..=last_detail).contains(&r.unix_ms))
            .count();
        let span_ms = (last_detail - first_detail).max(1) as f64;
        let rate_per_window = (admitted.saturating_sub(1)) as f64 / span_ms * window_ms;
        let rate_ratio = rate_per_window / f64::from(BUDGET);
        let throttled_total = log.iter().filter(|r| r.status == 429).count();
        let throttled_late = log
            .iter()
            .filter(|r| r.status == 429 && r.unix_ms >= first_ms + WINDOW.as_millis() as u64)
            .count();
        let startup_ms = first_ms.saturating_sub(start_ms);
        let mut gaps: Vec<u64> = details.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        let gap = |q: f64| {
            gaps.get(((gaps.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        let spacing_ms = WINDOW.as_millis() as f64 / f64::from(BUDGET);
        eprintln!(
            "  rate {rate_per_window:.0}/window = {rate_ratio:.3} of budget; wall {:.1} s (floor {:.1} s); 429s {throttled_total} ({throttled_late} after the first window); all delivered at {delivered_s:.1} s",
            wall_ms / 1000.0,
            floor_ms / 1000.0
        );
        let label = format!("Backlog drain {}", count(n));
        self.report.row(Row::new(
            format!("{label}: request rate / budget (steady part)"),
            format!(
                "{rate_ratio:.3} ({rate_per_window:.0} of {BUDGET} per {} s)",
                WINDOW.as_secs()
            ),
            "≥ 0.95",
            Verdict::goal(rate_ratio >= 0.95),
        ));
        let fits = wall_ms < window_ms;
        self.report.row(Row::new(
            format!("{label}: 429s after the first window"),
            format!(
                "{throttled_late} (total {throttled_total}{})",
                if fits {
                    "; the run fits in one window"
                } else {
                    ""
                }
            ),
            "0",
            Verdict::goal(throttled_late == 0),
        ));
        self.report.row(Row::new(
            format!("{label}: wall time / floor (N+1)/B"),
            format!(
                "{:.3} ({:.1} s / {:.1} s)",
                wall_ms / floor_ms,
                wall_ms / 1000.0,
                floor_ms / 1000.0
            ),
            "— (≈ 1/0.95 at most when the rate goal holds)",
            Verdict::Info,
        ));
        self.report.note(format!(
            "Backlog drain {}: daemon start to first request {startup_ms} ms; gaps between detail requests at the sandbox (ms resolution): p10 {} ms, median {} ms, p90 {} ms, p99 {} ms, max {} ms (the budget's even spacing is {spacing_ms:.1} ms); all {n} events reached the webhook {delivered_s:.1} s after start.",
            count(n),
            gap(0.1),
            gap(0.5),
            gap(0.9),
            gap(0.99),
            gaps.last().copied().unwrap_or_default()
        ));
        Ok((sandbox, dir))
    }

    /// The daemon after the backlog: both sources every 5 s, nothing new. Requests per
    /// cycle at the sandbox, RSS after 30 s, CPU over 60 s.
    async fn idle(&mut self, sandbox: &Sandbox, dir: &TempDir) -> anyhow::Result<()> {
        // Idle means lists of the configured window (`limit`, 100), as a real account's:
        // the sandbox's /briefs honours `limit` from here on.
        sandbox.set_faults(clairo_sandbox::Faults {
            briefs_honour_limit: true,
            ..clairo_sandbox::Faults::default()
        });
        let receiver = Receiver::start().await?;
        let base_url = sandbox.base_url();
        let state = dir.path().join("state.db");
        let config = write_config(
            dir.path(),
            "idle.toml",
            &ConfigSpec {
                base_url: &base_url,
                state: &state,
                max_requests_per_minute: BUDGET,
                start_from: "all",
                briefs_schedule: Some(IDLE_SCHEDULE),
                conversations_schedule: Some(IDLE_SCHEDULE),
                hook: Some(&receiver.url),
                list_limit: BRIEFS_LIST_LIMIT as u32,
            },
        )?;
        let mut daemon = Daemon::start(&self.bin, &config, "idle")?;
        let pid = daemon.pid();
        // Warm-up: the start-up run of each source (the conversations backfill: every
        // conversation is new to this state), until both have had an idle run and every
        // event made so far has been delivered.
        let polls = daemon
            .wait_for_polls(
                Duration::from_secs(120),
                "an idle run of each source",
                |polls| {
                    ["briefs", "conversations"].iter().all(|source| {
                        polls
                            .iter()
                            .filter(|p| p.source == *source)
                            .skip(1)
                            .any(|p| p.new == 0)
                    })
                },
            )
            .await?;
        let events: u64 = polls.iter().map(|p| p.events).sum();
        receiver
            .wait_for(events as usize, Duration::from_secs(60), &mut daemon)
            .await?;
        let backfill = polls
            .iter()
            .find(|p| p.source == "conversations")
            .map(|p| (p.listed, p.events))
            .unwrap_or_default();
        // Measure over whole cycles: start half a cycle after a firing.
        let now = unix_ms() + 500;
        let t0 = now.div_ceil(IDLE_CYCLE_MS) * IDLE_CYCLE_MS + IDLE_CYCLE_MS / 2;
        sleep_until_unix_ms(t0).await;
        let cpu0 = cpu_ticks(pid).context("reading /proc/PID/stat")?;
        eprintln!("  measuring for {} s", IDLE_WINDOW_MS / 1000);
        sleep_until_unix_ms(t0 + IDLE_RSS_AT_MS).await;
        daemon.check_alive()?;
        let rss = status_kib(pid, "VmRSS").context("reading VmRSS")?;
        let hwm = status_kib(pid, "VmHWM").context("reading VmHWM")?;
        let anon = status_kib(pid, "RssAnon").unwrap_or_default();
        let file = status_kib(pid, "RssFile").unwrap_or_default();
        sleep_until_unix_ms(t0 + IDLE_WINDOW_MS).await;
        let cpu1 = cpu_ticks(pid).context("reading /proc/PID/stat")?;
        daemon.check_alive()?;
        let log = sandbox.stats().log;
        daemon.stop();

        let cycles = (IDLE_WINDOW_MS / IDLE_CYCLE_MS) as usize;
        let mut per_cycle: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); cycles];
        for record in log
            .iter()
            .filter(|r| (t0..t0 + IDLE_WINDOW_MS).contains(&r.unix_ms))
        {
            let index = ((record.unix_ms - t0) / IDLE_CYCLE_MS) as usize;
            *per_cycle[index].entry(record.endpoint.clone()).or_default() += 1;
        }
        let total: u64 = per_cycle.iter().flat_map(|c| c.values()).sum();
        let needed = (cycles * 2) as u64;
        let exact = per_cycle.iter().all(|cycle| {
            cycle.len() == 2
                && cycle.get(BRIEFS_LIST) == Some(&1)
                && cycle.get(CONVERSATIONS_LIST) == Some(&1)
        });
        let odd: Vec<String> = per_cycle
            .iter()
            .enumerate()
            .filter(|(_, cycle)| {
                !(cycle.len() == 2
                    && cycle.get(BRIEFS_LIST) == Some(&1)
                    && cycle.get(CONVERSATIONS_LIST) == Some(&1))
            })
            .map(|(index, cycle)| format!("cycle {index}: {cycle:?}"))
            .collect();
        let cpu_s = (cpu1 - cpu0) as f64 / self.clk_tck as f64;
        eprintln!(
            "  {total} requests in {cycles} cycles (needed {needed}); RSS {:.1} MiB (HWM {:.1} MiB); CPU {cpu_s:.2} s",
            mib(rss),
            mib(hwm)
        );
        self.report.row(Row::new(
            "Idle: requests per cycle / list calls needed",
            format!(
                "{:.2} ({total} requests in {cycles} cycles of 2 sources{})",
                total as f64 / needed as f64,
                if exact {
                    "; each cycle exactly 1 per source"
                } else {
                    ""
                }
            ),
            "1.00, exactly 1 list per source per cycle",
            Verdict::goal(exact),
        ));
        if !odd.is_empty() {
            self.report.note(format!(
                "Idle cycles that were not exactly one list per source: {}",
                odd.join("; ")
            ));
        }
        self.report.row(Row::new(
            "Idle: RSS after 30 s idle",
            format!(
                "{:.1} MiB (RssAnon {:.1} + RssFile {:.1}; VmHWM {:.1} MiB)",
                mib(rss),
                mib(anon),
                mib(file),
                mib(hwm)
            ),
            "≤ 10 MiB",
            Verdict::goal(mib(rss) <= 10.0),
        ));
        self.report.row(Row::new(
            "Idle: CPU over 60 s idle",
            format!(
                "{cpu_s:.2} s ({:.2} % of one core)",
                percent(cpu_s, IDLE_WINDOW_MS as f64 / 1000.0)
            ),
            "—",
            Verdict::Info,
        ));
        self.report.note(format!(
            "Idle: on the state of the {}-brief drain; both sources on `{IDLE_SCHEDULE}`; the start-up run backfilled {} conversations ({} support + one Discovery conversation per brief; {} events) before the measurement; each idle cycle lists the newest {BRIEFS_LIST_LIMIT} briefs and conversations (`limit`'s default; the sandbox is told to honour it on /briefs for this phase, as it does on /conversations).",
            count(DRAIN_SIZES[0]),
            backfill.0,
            IDLE_CONVERSATIONS,
            backfill.1,
        ));
        Ok(())
    }

    /// No budget to wait for: how fast briefs become delivered webhooks, and at what CPU.
    async fn throughput(&mut self) -> anyhow::Result<()> {
        let n = THROUGHPUT_EVENTS;
        let sandbox = sandbox(UNLIMITED, n, 0).await?;
        let result = self.throughput_on(&sandbox, n).await;
        sandbox.stop();
        result
    }

    async fn throughput_on(&mut self, sandbox: &Sandbox, n: usize) -> anyhow::Result<()> {
        let receiver = Receiver::start().await?;
        let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
        let base_url = sandbox.base_url();
        let state = dir.path().join("state.db");
        let config = write_config(
            dir.path(),
            "throughput.toml",
            &ConfigSpec {
                base_url: &base_url,
                state: &state,
                max_requests_per_minute: UNLIMITED,
                start_from: "all",
                briefs_schedule: Some(ONCE_A_YEAR),
                conversations_schedule: None,
                hook: Some(&receiver.url),
                list_limit: WHOLE_LIST,
            },
        )?;
        sandbox.reset_stats();
        let start_ms = unix_ms();
        let start = Instant::now();
        let mut daemon = Daemon::start(&self.bin, &config, "throughput")?;
        receiver
            .wait_for(n, Duration::from_secs(300), &mut daemon)
            .await?;
        let ticks = cpu_ticks(daemon.pid()).context("reading /proc/PID/stat")?;
        let rss = status_kib(daemon.pid(), "VmHWM").unwrap_or_default();
        let last = receiver.last_new_at().context("no event arrived")?;
        let requests = receiver.requests();
        daemon.stop();
        let elapsed = last.duration_since(start).as_secs_f64();
        let log = sandbox.stats().log;
        let last_detail_s = log
            .iter()
            .filter(|r| r.endpoint == BRIEF_DETAIL)
            .map(|r| r.unix_ms)
            .max()
            .map(|ms| (ms - start_ms) as f64 / 1000.0)
            .unwrap_or_default();
        let per_second = n as f64 / elapsed;
        let cpu_s = ticks as f64 / self.clk_tck as f64;
        let per_thousand = cpu_s / (n as f64 / 1000.0);
        eprintln!(
            "  {n} events in {elapsed:.1} s = {per_second:.0}/s; CPU {cpu_s:.2} s = {per_thousand:.3} s per 1,000"
        );
        self.report.row(Row::new(
            "Throughput (unlimited budget): events delivered per second",
            format!("{per_second:.0}/s ({} events in {elapsed:.1} s)", count(n)),
            "—",
            Verdict::Info,
        ));
        self.report.row(Row::new(
            "Throughput: CPU seconds per 1,000 events",
            format!("{per_thousand:.3} s ({cpu_s:.2} s for {})", count(n)),
            "—",
            Verdict::Info,
        ));
        self.report.note(format!(
            "Throughput: daemon start to the last event at the webhook; the last detail request reached the sandbox at {last_detail_s:.1} s; {requests} webhook requests for {n} events; the daemon's VmHWM was {:.1} MiB. CPU is the daemon's whole life (start-up, polling, SQLite, delivery).",
            mib(rss)
        ));
        Ok(())
    }

    /// `clairo-sync upload FILE --agent ID`, its memory sampled every 2 ms; the growth is
    /// the peak (VmHWM) uploading 24 MB less the peak uploading 4 KiB the same way (the
    /// median of five runs each); beside it, peak less the RSS when reading began.
    async fn upload(&mut self) -> anyhow::Result<()> {
        let sandbox = sandbox(1_000, 0, 0).await?;
        let result = self.upload_on(&sandbox).await;
        sandbox.stop();
        result
    }

    async fn upload_on(&mut self, sandbox: &Sandbox) -> anyhow::Result<()> {
        let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
        let agent = sandbox.agent_id("MEETING");
        let base_url = sandbox.base_url();
        // Three runs per size, each with its own file and state (so nothing is deduplicated
        // by content); the run with the median peak counts.
        let mut medians = Vec::new();
        for (size, name) in [
            (UPLOAD_BASELINE_BYTES, "baseline"),
            (UPLOAD_BYTES, "meeting"),
        ] {
            let mut runs = Vec::new();
            for attempt in 0..UPLOAD_RUNS {
                let state = dir.path().join(format!("{name}-{attempt}.db"));
                let config = write_config(
                    dir.path(),
                    &format!("{name}-{attempt}.toml"),
                    &ConfigSpec {
                        base_url: &base_url,
                        state: &state,
                        max_requests_per_minute: 1_000,
                        start_from: "all",
                        briefs_schedule: None,
                        conversations_schedule: None,
                        hook: None,
                        list_limit: WHOLE_LIST,
                    },
                )?;
                let file = dir.path().join(format!("{name}-{attempt}.webm"));
                write_webm(&file, size, attempt as u32)?;
                let mut command = daemon_command(&self.bin);
                command
                    .arg("-c")
                    .arg(&config)
                    .arg("upload")
                    .arg(&file)
                    .arg("--agent")
                    .arg(&agent)
                    .arg("--json");
                let run = tokio::task::spawn_blocking(move || {
                    run_sampled(command, Duration::from_secs(180))
                })
                .await??;
                if !run.status.success() {
                    let stderr = run.stderr.trim().to_owned();
                    if stderr.contains("not available") {
                        eprintln!("  the upload command is not wired in this build: {stderr}");
                        self.report.row(Row::new(
                            "Upload: RSS growth uploading a 24 MB recording",
                            "pending",
                            "≤ 2 MiB",
                            Verdict::Pending,
                        ));
                        self.report.note(format!(
                            "Upload: pending — `clairo-sync upload` answered \"{stderr}\" in this build (src/commands/upload.rs is being written); re-run `cargo run --release -p clairo-bench -- upload` once it is wired."
                        ));
                        return Ok(());
                    }
                    bail!("`clairo-sync upload` exited with {}: {stderr}", run.status);
                }
                eprintln!(
                    "  {size} bytes: {:.2} s, {} samples, peak VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                    run.elapsed.as_secs_f64(),
                    run.samples.len(),
                    mib(run.peak_rss_kib()),
                    mib(run.peak_hwm_kib())
                );
                runs.push(run);
            }
            runs.sort_by_key(support::Sampled::peak_hwm_kib);
            medians.push(runs.swap_remove(UPLOAD_RUNS / 2));
        }
        let uploads = sandbox.stats().uploads;
        if !uploads.iter().any(|u| u.size == UPLOAD_BYTES as u64) {
            bail!("the sandbox recorded no upload of {UPLOAD_BYTES} bytes (uploads: {uploads:?})");
        }
        let (base, big) = (&medians[0], &medians[1]);
        let growth_kib = big.peak_hwm_kib() as f64 - base.peak_hwm_kib() as f64;
        let start = big
            .before_reading(UPLOAD_READ_THRESHOLD)
            .context("the upload began reading the file before the first sample")?;
        let in_run_kib = big.peak_hwm_kib().saturating_sub(start.rss_kib);
        let anon_kib = big.peak_anon_kib().saturating_sub(start.anon_kib);
        self.report.row(Row::new(
            "Upload: RSS growth uploading a 24 MB recording",
            format!(
                "{:.1} MiB (VmHWM {:.1} MiB vs {:.1} MiB uploading 4 KiB)",
                growth_kib / 1024.0,
                mib(big.peak_hwm_kib()),
                mib(base.peak_hwm_kib())
            ),
            "≤ 2 MiB",
            Verdict::goal(growth_kib / 1024.0 <= 2.0),
        ));
        self.report.row(Row::new(
            "Upload: peak − RSS as the file's reading began (same run)",
            format!(
                "{:.1} MiB ({:.1} → {:.1} MiB), of which anonymous {:+.1} MiB, the rest code paged in",
                mib(in_run_kib),
                mib(start.rss_kib),
                mib(big.peak_hwm_kib()),
                mib(anon_kib)
            ),
            "— (includes first-use page-ins a 4 KiB upload pays too)",
            Verdict::Info,
        ));
        self.report.note(format!(
            "Upload: `clairo-sync upload FILE --agent ID --json`, VmRSS, RssAnon, VmHWM and `rchar` (/proc/PID/io) sampled every 2 ms ({} samples over {:.2} s; the run with the median peak of {UPLOAD_RUNS} per size); the upload's start is the last sample before the process had read 1 MiB; the sandbox received all {UPLOAD_BYTES} bytes.",
            big.samples.len(),
            big.elapsed.as_secs_f64(),
        ));
        Ok(())
    }

    /// Idle poll cycles with `n` briefs already recorded (`start_from = "now"`: recorded
    /// without detail calls); returns the median cycle time in ms.
    async fn history(&mut self, n: usize) -> anyhow::Result<f64> {
        let sandbox = sandbox(UNLIMITED, n, 0).await?;
        let result = self.history_on(&sandbox, n).await;
        sandbox.stop();
        result
    }

    async fn history_on(&mut self, sandbox: &Sandbox, n: usize) -> anyhow::Result<f64> {
        let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
        let base_url = sandbox.base_url();
        let state = dir.path().join("state.db");
        let config = write_config(
            dir.path(),
            "history.toml",
            &ConfigSpec {
                base_url: &base_url,
                state: &state,
                max_requests_per_minute: UNLIMITED,
                start_from: "now",
                briefs_schedule: Some(HISTORY_SCHEDULE),
                conversations_schedule: None,
                hook: None,
                list_limit: BRIEFS_LIST_LIMIT as u32,
            },
        )?;
        let mut daemon = Daemon::start(&self.bin, &config, &format!("history {n}"))?;
        let polls = daemon
            .wait_for_polls(Duration::from_secs(300), "the baseline run", |polls| {
                polls.iter().any(|p| p.source == "briefs")
            })
            .await?;
        let baseline = polls
            .iter()
            .find(|p| p.source == "briefs")
            .cloned()
            .context("a briefs poll")?;
        eprintln!(
            "  baseline run: listed {}, recorded {} in {:.1} s",
            baseline.listed,
            baseline.new,
            baseline.elapsed_ms / 1000.0
        );
        if baseline.new as usize != n {
            bail!("the baseline run recorded {} briefs, not {n}", baseline.new);
        }
        // From here the list is the usual window (the newest `limit` briefs), as a real
        // account's would be: the history is what the state file holds, not what the API
        // sends on every poll.
        sandbox.set_faults(clairo_sandbox::Faults {
            briefs_honour_limit: true,
            ..clairo_sandbox::Faults::default()
        });
        let wanted = 1 + HISTORY_WARMUP_CYCLES + HISTORY_CYCLES;
        let polls = daemon
            .wait_for_polls(
                Duration::from_secs(30 * wanted as u64),
                "idle poll cycles",
                |polls| polls.iter().filter(|p| p.source == "briefs").count() >= wanted,
            )
            .await?;
        let pid = daemon.pid();
        let rss = status_kib(pid, "VmRSS").unwrap_or_default();
        let hwm = status_kib(pid, "VmHWM").unwrap_or_default();
        daemon.stop();
        let cycles: Vec<&support::PollLine> = polls
            .iter()
            .filter(|p| p.source == "briefs")
            .skip(1 + HISTORY_WARMUP_CYCLES)
            .collect();
        if let Some(odd) = cycles
            .iter()
            .find(|p| p.new != 0 || p.listed as usize != n.min(BRIEFS_LIST_LIMIT))
        {
            bail!(
                "an idle cycle was not idle: listed {}, new {}",
                odd.listed,
                odd.new
            );
        }
        let mut times: Vec<u64> = cycles
            .iter()
            .map(|p| (p.elapsed_ms * 1000.0) as u64)
            .collect();
        let all_times: Vec<f64> = times.iter().map(|us| *us as f64 / 1000.0).collect();
        let cycle_ms = median(&mut times) as f64 / 1000.0;
        // Where the time goes, part one: the list's round trip alone, from a bare client.
        let mut fetches = Vec::new();
        let mut body_bytes = 0;
        for _ in 0..3 {
            let (status, bytes, elapsed) = timed_get(&base_url, "/briefs?limit=1000000").await?;
            if !status.contains(" 200") {
                bail!("GET /briefs answered {status}");
            }
            body_bytes = bytes;
            fetches.push(elapsed.as_micros() as u64);
        }
        let fetch_ms = median(&mut fetches) as f64 / 1000.0;
        let db = file_size(&state);
        let wal = file_size(&dir.path().join("state.db-wal"));
        eprintln!(
            "  idle cycles {all_times:?} ms (median {cycle_ms:.2}); list round trip {fetch_ms:.1} ms for {:.1} MB; state {:.1} MiB (+ WAL {:.1} MiB); RSS {:.1} MiB (HWM {:.1} MiB)",
            body_bytes as f64 / 1e6,
            mib(db / 1024),
            mib(wal / 1024),
            mib(rss),
            mib(hwm)
        );
        self.report.row(Row::new(
            format!(
                "History: idle poll-cycle time, {} briefs recorded",
                count(n)
            ),
            format!(
                "{cycle_ms:.2} ms (median of {}; list round trip alone {fetch_ms:.1} ms)",
                all_times.len()
            ),
            "—",
            Verdict::Info,
        ));
        self.report.row(Row::new(
            format!("History: state file, {} briefs recorded", count(n)),
            format!(
                "{:.2} MiB{}",
                mib(db / 1024),
                if wal > 0 {
                    format!(" (+ WAL {:.2} MiB)", mib(wal / 1024))
                } else {
                    String::new()
                }
            ),
            "—",
            Verdict::Info,
        ));
        self.report.note(format!(
            "History {}: the baseline run (list + recording {n} briefs, no detail calls) took {:.1} s; idle cycles {all_times:?} ms, each listing the newest {BRIEFS_LIST_LIMIT}; the whole list of {n} briefs (what the baseline run parsed) is {:.1} MB of JSON, and a bare GET of it takes {fetch_ms:.1} ms; daemon VmRSS {:.1} MiB, VmHWM {:.1} MiB after the cycles.",
            count(n),
            baseline.elapsed_ms / 1000.0,
            body_bytes as f64 / 1e6,
            mib(rss),
            mib(hwm)
        ));
        Ok(cycle_ms)
    }
}

/// A file the sandbox accepts as webm (EBML magic), `size` bytes long.
fn write_webm(path: &std::path::Path, size: usize, seed: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    // Varied bytes (xorshift), so nothing on the way could shrink them.
    let mut chunk = vec![0u8; 1 << 20];
    let mut x: u32 = 0x9E37_79B9 ^ seed.wrapping_mul(0x85EB_CA6B);
    for byte in &mut chunk {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    let magic = [0x1A, 0x45, 0xDF, 0xA3];
    file.write_all(&magic[..size.min(4)])?;
    let mut left = size.saturating_sub(4);
    while left > 0 {
        let take = left.min(chunk.len());
        file.write_all(&chunk[..take])?;
        left -= take;
    }
    file.flush()?;
    Ok(())
}

/// 1000 → "1k", 100000 → "100k", 5000 → "5k".
fn count(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}
