//! History: an idle poll cycle with a small and a large recorded history; what the history
//! itself costs a cycle.

use super::*;

impl Bench {
    /// Idle poll cycles with `n` briefs already recorded (`start_from = "now"`: recorded
    /// without detail calls); returns the median cycle time in ms.
    pub(crate) async fn history(&mut self, n: usize) -> anyhow::Result<f64> {
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
