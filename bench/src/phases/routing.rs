//! Routing: what route filters (`when`) cost. The same backlog of briefs through five
//! routes into one file connector, once without filters and once with a filter on every
//! route; CPU seconds per 1,000 events for both, and their ratio.

use std::io::Write as _;

use super::*;

/// Five filters of the kinds people write: on the contact email, the summary's text, the
/// answers, the event's type and id. Each matches every sandbox brief, so both runs write
/// the same events and only the filters' evaluation differs.
const FILTERS: [&str; 5] = [
    "contact_email is not none and '@' in contact_email",
    "data.summary | length > 10",
    "type == 'brief.created' and data.answers is defined",
    "'e' in (data.summary | lower) or data.id is string",
    "data.id is string and id is startingwith('evt_')",
];

impl Bench {
    /// 10,000 briefs, with and without filters: the filters' share of the CPU per event.
    pub(crate) async fn routing(&mut self) -> anyhow::Result<()> {
        let n = ROUTING_EVENTS;
        let sandbox = sandbox(UNLIMITED, n, 0).await?;
        let mut cpu = Vec::new();
        for filtered in [false, true] {
            match self.routing_run(&sandbox, n, filtered).await {
                Ok(per_thousand) => cpu.push(per_thousand),
                Err(error) => {
                    sandbox.stop();
                    return Err(error);
                }
            }
        }
        sandbox.stop();
        let [plain, filtered] = cpu[..] else {
            bail!("both routing runs should have a figure");
        };
        let ratio = filtered / plain.max(f64::EPSILON);
        self.report.row(Row::new(
            format!(
                "Routing: CPU per 1,000 events, 5 routes without filters ({})",
                count(n)
            ),
            format!("{plain:.3} s"),
            "—",
            Verdict::Info,
        ));
        self.report.row(Row::new(
            format!(
                "Routing: CPU per 1,000 events, 5 routes with filters ({})",
                count(n)
            ),
            format!("{filtered:.3} s"),
            "—",
            Verdict::Info,
        ));
        self.report.row(Row::new(
            "Routing: CPU with filters / without",
            format!("{ratio:.2}"),
            "≤ 1.2",
            Verdict::goal(ratio <= 1.2),
        ));
        Ok(())
    }

    async fn routing_run(
        &mut self,
        sandbox: &Sandbox,
        n: usize,
        filtered: bool,
    ) -> anyhow::Result<f64> {
        let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
        let state = dir.path().join("state.db");
        let archive = dir.path().join("events.jsonl");
        let config = write_config(
            dir.path(),
            "routing.toml",
            &ConfigSpec {
                base_url: &sandbox.base_url(),
                state: &state,
                max_requests_per_minute: UNLIMITED,
                start_from: "all",
                briefs_schedule: Some(ONCE_A_YEAR),
                conversations_schedule: None,
                hook: None,
                list_limit: WHOLE_LIST,
            },
        )?;
        let mut extra = format!(
            "\n[connectors.archive]\ntype = \"file\"\npath = \"{}\"\n",
            archive.display()
        );
        for filter in FILTERS {
            extra.push_str("\n[[routes]]\nevents = [\"brief.created\"]\nto = [\"archive\"]\n");
            if filtered {
                // The filters hold single quotes only: a TOML basic string as written.
                extra.push_str(&format!("when = \"{filter}\"\n"));
            }
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&config)?
            .write_all(extra.as_bytes())?;
        let label = if filtered {
            "routing-filtered"
        } else {
            "routing"
        };
        let start = Instant::now();
        let mut daemon = Daemon::start(&self.bin, &config, label)?;
        let deadline = start + Duration::from_secs(300);
        while file_lines(&archive) < n {
            daemon.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "timed out: {} of {n} events in the archive",
                    file_lines(&archive)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ticks = cpu_ticks(daemon.pid()).context("reading /proc/PID/stat")?;
        let elapsed = start.elapsed().as_secs_f64();
        daemon.stop();
        let cpu_s = ticks as f64 / self.clk_tck as f64;
        let per_thousand = cpu_s / (n as f64 / 1000.0);
        eprintln!(
            "  {label}: {n} events in {elapsed:.1} s; CPU {cpu_s:.2} s = {per_thousand:.3} s per 1,000"
        );
        Ok(per_thousand)
    }
}

/// Lines in a file (0 while it does not exist): events the file connector has written.
fn file_lines(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|bytes| bytes.iter().filter(|&&byte| byte == b'\n').count())
        .unwrap_or(0)
}
