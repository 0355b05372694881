//! The backlog drain: N briefs waiting, drained under a request budget; how much of the
//! budget the daemon uses and how many 429s it gets. On SQLite with one daemon, and on
//! PostgreSQL with two instances sharing the database and the API key (so the budget).

use super::*;
use clairo_pgtest::PgCluster;

/// Instances of the PostgreSQL drain.
const PG_DRAIN_INSTANCES: [&str; 2] = ["a", "b"];

impl Bench {
    /// N briefs waiting; the daemon fetches each one's detail under a budget of B per
    /// window. Measured at the sandbox, from the daemon's start to the last detail request.
    pub(crate) async fn drain(&mut self, n: usize) -> anyhow::Result<(Sandbox, TempDir)> {
        self.drain_with(n, None).await
    }

    /// The same drain with two instances of the PostgreSQL build (`pg_bin`) on one
    /// throwaway cluster, both with the whole budget and the same API key: the one that
    /// holds the briefs' lease drains, the other stands by (and delivers its share).
    pub(crate) async fn drain_pg(&mut self, n: usize, pg_bin: &Path) -> anyhow::Result<()> {
        let (sandbox, _dir) = self.drain_with(n, Some(pg_bin)).await?;
        sandbox.stop();
        Ok(())
    }

    async fn drain_with(
        &mut self,
        n: usize,
        pg_bin: Option<&Path>,
    ) -> anyhow::Result<(Sandbox, TempDir)> {
        let sandbox = sandbox(BUDGET, n, IDLE_CONVERSATIONS).await?;
        let receiver = Receiver::start().await?;
        let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
        let cluster = match pg_bin {
            Some(_) => Some(PgCluster::try_start().map_err(anyhow::Error::msg)?),
            None => None,
        };
        let base_url = sandbox.base_url();
        let state = dir.path().join("state.db");
        let spec = |name: &'static str| {
            let spec = ConfigSpec {
                base_url: &base_url,
                state: &state,
                max_requests_per_minute: BUDGET,
                start_from: "all",
                briefs_schedule: Some(ONCE_A_YEAR),
                conversations_schedule: None,
                hook: Some(&receiver.url),
                list_limit: WHOLE_LIST,
            };
            write_config(dir.path(), name, &spec)
        };
        let mut configs = Vec::new();
        match &cluster {
            None => configs.push(("drain".to_owned(), spec("drain.toml")?)),
            Some(cluster) => {
                for instance in PG_DRAIN_INSTANCES {
                    let config = spec(if instance == "a" {
                        "drain-a.toml"
                    } else {
                        "drain-b.toml"
                    })?;
                    use_postgres(
                        &config,
                        &cluster.url(),
                        clairo_pgtest::PASSWORD,
                        instance,
                        None,
                    )?;
                    configs.push((format!("drain-pg {instance}"), config));
                }
            }
        }
        sandbox.reset_stats();
        let window_ms = WINDOW.as_millis() as f64;
        let floor_ms = (n as f64 + 1.0) / f64::from(BUDGET) * window_ms;
        let start_ms = unix_ms();
        let start = Instant::now();
        let bin = pg_bin.unwrap_or(&self.bin);
        let mut daemons = Vec::new();
        for (label, config) in &configs {
            daemons.push(Daemon::start(bin, config, &format!("{label} {n}"))?);
        }
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
            for daemon in &mut daemons {
                daemon.check_alive()?;
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out with {done} of {n} details fetched; the daemon's last log lines:\n{}",
                    daemons[0].tail()
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
            .wait_for(n, Duration::from_secs(120), &mut daemons[0])
            .await?;
        let delivered_s = receiver
            .last_new_at()
            .map(|at| at.duration_since(start).as_secs_f64())
            .unwrap_or_default();
        // Which instance drained: the briefs' runs each one logged.
        let pollers: Vec<String> = configs
            .iter()
            .zip(&daemons)
            .map(|((label, _), daemon)| {
                let runs = daemon
                    .polls()
                    .iter()
                    .filter(|p| p.source == "briefs")
                    .count();
                format!("{label}: {runs} briefs run(s)")
            })
            .collect();
        for daemon in &mut daemons {
            daemon.stop();
        }
        drop(receiver);
        drop(cluster);

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
        let label = match pg_bin {
            None => format!("Backlog drain {}", count(n)),
            Some(_) => format!(
                "Backlog drain {} on PostgreSQL, {} instances",
                count(n),
                PG_DRAIN_INSTANCES.len()
            ),
        };
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
        if pg_bin.is_some() {
            self.report.note(format!(
                "{label}: both instances with the whole budget and one API key; {}.",
                pollers.join(", ")
            ));
        }
        self.report.note(format!(
            "{label}: daemon start to first request {startup_ms} ms; gaps between detail requests at the sandbox (ms resolution): p10 {} ms, median {} ms, p90 {} ms, p99 {} ms, max {} ms (the budget's even spacing is {spacing_ms:.1} ms); all {n} events reached the webhook {delivered_s:.1} s after start.",
            gap(0.1),
            gap(0.5),
            gap(0.9),
            gap(0.99),
            gaps.last().copied().unwrap_or_default()
        ));
        Ok((sandbox, dir))
    }
}
