//! The one table, and BENCHMARKS.md around it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

/// The command that regenerates BENCHMARKS.md.
pub const COMMAND: &str =
    "cargo build --release -p clairo-sync && cargo run --release -p clairo-bench";

/// Everything from this line on in BENCHMARKS.md is written by people and kept when the
/// bench rewrites the file.
const KEEP_MARKER: &str =
    "<!-- Everything below this line is kept when clairo-bench rewrites this file. -->";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// A figure with no goal.
    Info,
    Pending,
    Failed,
}

impl Verdict {
    pub fn goal(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**MISSED**",
            Self::Info => "—",
            Self::Pending => "pending",
            Self::Failed => "**FAILED**",
        }
    }
}

pub struct Row {
    measurement: String,
    figure: String,
    goal: String,
    verdict: Verdict,
}

impl Row {
    pub fn new(
        measurement: impl Into<String>,
        figure: impl Into<String>,
        goal: impl Into<String>,
        verdict: Verdict,
    ) -> Self {
        Self {
            measurement: measurement.into(),
            figure: figure.into(),
            goal: goal.into(),
            verdict,
        }
    }
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: String) {
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    /// The table, as Markdown (readable as plain text too).
    pub fn table(&self) -> String {
        let cell = |text: &str| text.replace('|', "\\|");
        let mut out =
            String::from("| measurement | figure | goal | verdict |\n|---|---|---|---|\n");
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                cell(&row.measurement),
                cell(&row.figure),
                cell(&row.goal),
                row.verdict.text()
            ));
        }
        out
    }

    pub fn write_markdown(&self, path: &Path, elapsed: Duration) -> anyhow::Result<()> {
        let kept = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| {
                text.find(KEEP_MARKER)
                    .map(|at| text[at + KEEP_MARKER.len()..].to_owned())
            })
            .unwrap_or_else(|| {
                "\n\n## Analysis\n\n(Written by hand after a run: what misses a goal, and why.)\n"
                    .to_owned()
            });
        let misses: Vec<&Row> = self
            .rows
            .iter()
            .filter(|row| matches!(row.verdict, Verdict::Missed | Verdict::Failed))
            .collect();
        let mut text = String::new();
        text.push_str("# Benchmarks\n\n");
        text.push_str(
            "The real release daemon (`target/release/clairo-sync`) run as a child process against an \
             in-process sandbox (`clairo-sandbox`) and a local webhook receiver, over loopback. \
             The figures below are from one run; regenerate them with\n\n",
        );
        text.push_str(&format!("```sh\n{COMMAND}\n```\n\n"));
        text.push_str(&format!(
            "(about {:.0} minutes; `cargo run --release -p clairo-bench -- PHASE…` runs some of \
             `drain drain-1k idle throughput upload history` and leaves this file alone).\n\n",
            (elapsed.as_secs_f64() / 60.0).ceil()
        ));
        text.push_str("## Machine and run\n\n");
        for (name, value) in machine() {
            text.push_str(&format!("- {name}: {value}\n"));
        }
        text.push_str(&format!(
            "- date: {}\n- suite wall time: {:.0} s\n\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            elapsed.as_secs_f64()
        ));
        text.push_str("## Results\n\n");
        text.push_str(&self.table());
        text.push('\n');
        if misses.is_empty() {
            text.push_str("Every goal of issue 7 §4 was met in this run.\n\n");
        } else {
            let names: Vec<&str> = misses.iter().map(|row| row.measurement.as_str()).collect();
            text.push_str(&format!(
                "**Goals missed in this run:** {}. A missed goal is a bug to fix, not a figure to accept; see the analysis below.\n\n",
                names.join("; ")
            ));
        }
        text.push_str("## How each figure is measured\n\n");
        text.push_str(METHOD);
        text.push_str("\n### This run's details\n\n");
        for note in &self.notes {
            text.push_str(&format!("- {note}\n"));
        }
        text.push('\n');
        text.push_str(KEEP_MARKER);
        text.push_str(&kept);
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

const METHOD: &str = "\
- **Backlog drain** (N = 1,000 and 10,000): the sandbox holds N briefs and allows B = 6,000 \
requests per 60-second window (six times Clairo's real 1,000/min, so the suite stays short; \
the pacing arithmetic does not depend on the scale); the daemon runs `run` with \
`clairo.max_requests_per_minute = 6000`, briefs polled once at start-up, every event routed \
to a local webhook receiver. From the sandbox's request log: the *rate* counts the requests \
the sandbox admitted between the first and the last brief-detail request, per window, over \
B; *429s after the first window* are responses 429 later than one window after the first \
request; *wall time* runs from spawning the daemon to the last detail request, over the \
floor (N+1)/B windows (one list plus N details).
- **Idle**: after the 1,000-brief drain, the daemon restarts on the same state with both \
sources on `*/5 * * * * *`; once each source has had a run that found nothing new and every \
event of the start-up runs has been delivered, the sandbox's requests are counted over 60 s cut into 12 five-second cycles (each holding one firing). \
The goal is exactly one `GET /briefs` and one `GET /conversations` per cycle. VmRSS from \
`/proc/PID/status` 30 s into the window; CPU is utime+stime from `/proc/PID/stat` over the \
60 s, divided by `getconf CLK_TCK`.
- **Throughput**: sandbox and daemon budgets both 10⁹/min (no pacing); 5,000 briefs from \
spawning the daemon to the 5,000th distinct event at the webhook receiver (which answers \
200 at once); CPU is the daemon's utime+stime at that moment.
- **Upload**: `clairo-sync upload FILE --agent ID --json`; its VmRSS, RssAnon, VmHWM and \
bytes read (`rchar` of `/proc/PID/io`) are sampled every 2 ms. Growth is the peak VmHWM \
uploading a 24,000,000-byte webm less the peak VmHWM of the same command uploading 4 KiB \
(start-up, first use of the HTTP and multipart code and the response cost the same in \
both, so the difference is what the file's size costs); the run with the median peak of \
five per size. Beside it, from the 24 MB run alone: peak VmHWM less VmRSS at the last \
sample before the process had read 1 MiB (the upload's start), split into anonymous \
memory and code paged in on first use.
- **History**: the sandbox holds 1,000 or 100,000 briefs; the daemon starts with \
`start_from = \"now\"` (the first run records every brief without detail calls), then polls \
briefs every second. The cycle time is the daemon's own `Poll run finished. … elapsed_ms=` \
(median of 25 idle cycles after two warm-ups, to the microsecond); the state file is \
`state.db` after a clean stop. After the first run the sandbox honours `limit` on /briefs \
(100, the default), so every idle cycle lists the same window whatever the history: the \
ratio shows what the recorded history itself costs a cycle. (The daemon remembers which \
ids of its last listing are recorded and asks the state file only about the others, so an \
idle cycle does not look the history up at all; the first cycle after a start does.) The \
whole list's bare round trip (a raw HTTP GET from the bench) is shown beside it.
- The machine is shared; the sandbox and receiver share the bench's process and its two \
cores with the daemon, so absolute times include their work.
";

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|text| !text.is_empty())
}

fn machine() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let nproc = command_output("nproc", &[]).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "unknown".to_owned())
    });
    let kernel = command_output("uname", &["-sr"]).unwrap_or_else(|| "unknown".to_owned());
    let rustc = command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".to_owned());
    vec![
        ("CPU", model),
        ("`nproc`", nproc),
        ("memory", memory),
        ("kernel", kernel),
        ("toolchain", rustc),
    ]
}

/// BENCHMARKS.md at the workspace root (or `CLAIRO_BENCH_OUT`).
pub fn benchmarks_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CLAIRO_BENCH_OUT") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("BENCHMARKS.md"))
        .unwrap_or_else(|| PathBuf::from("BENCHMARKS.md"))
}
