//! `clairo-bench`: the benchmark suite (BENCHMARKS.md holds its figures and goals).
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
//! The PostgreSQL phases (`drain-pg`, `throughput-pg`, `failover`) need PostgreSQL's server
//! programs (/usr/lib/postgresql/*/bin, for a throwaway cluster: `clairo-pgtest`) and a
//! daemon built with `--features postgres` (`CLAIRO_SYNC_PG_BIN`, else `clairo-sync-pg`
//! beside this executable); without either they are skipped with a note.
//!
//! Every wait is bounded, and everything started is stopped: daemons get SIGTERM (then
//! SIGKILL), sandboxes and receivers are shut down, temporary directories removed.

#![forbid(unsafe_code)]

mod phases;
mod report;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clairo_sandbox::{Sandbox, SandboxConfig};
use tempfile::TempDir;

use report::{Report, Row, Verdict};
use support::{
    ConfigSpec, Daemon, Receiver, clock_ticks_per_second, cpu_ticks, daemon_command, file_size,
    run_sampled, sleep_until_unix_ms, status_kib, timed_get, unix_ms, use_postgres, write_config,
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
/// Briefs through the routing phase's five routes, once without and once with filters.
const ROUTING_EVENTS: usize = 10_000;
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

const PHASES: [&str; 10] = [
    "drain",
    "drain-1k",
    "idle",
    "throughput",
    "routing",
    "upload",
    "history",
    "drain-pg",
    "throughput-pg",
    "failover",
];
/// The phases that run on PostgreSQL.
const PG_PHASES: [&str; 3] = ["drain-pg", "throughput-pg", "failover"];
/// The PostgreSQL drain: as long as the SQLite one's larger size, for the rate over
/// more than one window.
const PG_DRAIN_SIZE: usize = 10_000;

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
                     The daemon binary: CLAIRO_SYNC_BIN, else clairo-sync next to this executable.\n\
                     The PostgreSQL phases ({}) run a throwaway cluster (PostgreSQL's \
                     /usr/lib/postgresql/*/bin) and a daemon built with PostgreSQL: \
                     CLAIRO_SYNC_PG_BIN, else clairo-sync-pg next to this executable, made by\n  \
                     cargo build --release -p clairo-sync --features postgres && cp target/release/clairo-sync target/release/clairo-sync-pg\n\
                     (then `cargo build --release -p clairo-sync` again); without either they are skipped with a note.",
                    PHASES.join(", "),
                    PG_PHASES.join(", ")
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
        clk_tck: clock_ticks_per_second(),
        report: Report::default(),
        bin,
    };
    bench.report.cost.text_bytes = report::text_section_size(&bench.bin);
    eprintln!("clairo-bench: daemon {}", bench.bin.display());
    let started = Instant::now();
    runtime.block_on(bench.run(&phases));
    let elapsed = started.elapsed();
    eprintln!("clairo-bench: done in {:.0} s", elapsed.as_secs_f64());
    println!("{}", bench.report.table());
    print!("{}", bench.report.cost.table());
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
        if wants("routing") {
            eprintln!(
                "== routing: {ROUTING_EVENTS} briefs through 5 routes, without and with filters"
            );
            if let Err(error) = self.routing().await {
                self.failed("Routing", &error);
            }
        }
        if wants("upload") {
            eprintln!("== upload of a {} MB recording", UPLOAD_BYTES / 1_000_000);
            if let Err(error) = self.upload().await {
                self.failed("Upload", &error);
            }
        }
        if PG_PHASES.iter().any(|phase| wants(phase)) {
            match self.pg_binary() {
                Err(why) => {
                    eprintln!("== PostgreSQL phases skipped: {why:#}");
                    self.report.row(Row::new(
                        "PostgreSQL phases (drain-pg, throughput-pg, failover)",
                        format!("skipped: {why:#}"),
                        "—",
                        Verdict::Pending,
                    ));
                }
                Ok(pg_bin) => {
                    eprintln!("  PostgreSQL build: {}", pg_bin.display());
                    if wants("drain-pg") {
                        eprintln!(
                            "== backlog drain of {PG_DRAIN_SIZE} briefs on PostgreSQL, two instances sharing the budget"
                        );
                        if let Err(error) = self.drain_pg(PG_DRAIN_SIZE, &pg_bin).await {
                            self.failed(
                                &format!("Backlog drain {} on PostgreSQL", count(PG_DRAIN_SIZE)),
                                &error,
                            );
                        }
                    }
                    if wants("throughput-pg") {
                        for instances in [1, 2] {
                            eprintln!(
                                "== throughput on PostgreSQL, {instances} instance(s) ({THROUGHPUT_EVENTS} briefs)"
                            );
                            if let Err(error) = self.throughput_pg(&pg_bin, instances).await {
                                self.failed(
                                    &format!("Throughput on PostgreSQL, {instances} instance(s)"),
                                    &error,
                                );
                            }
                        }
                    }
                    if wants("failover") {
                        eprintln!(
                            "== failover: SIGKILL of the poller, two instances on PostgreSQL"
                        );
                        if let Err(error) = self.failover(&pg_bin).await {
                            self.failed("Failover on PostgreSQL", &error);
                        }
                    }
                }
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

    /// The PostgreSQL build to run, or why the PostgreSQL phases cannot run here.
    fn pg_binary(&self) -> anyhow::Result<PathBuf> {
        if !clairo_pgtest::installed() {
            bail!(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; Debian's package `postgresql`)"
            );
        }
        support::pg_daemon_binary(&self.bin)
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
}

/// 1000 → "1k", 100000 → "100k", 5000 → "5k".
fn count(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}
