//! Throughput: briefs to a webhook with no budget limit; events per second and CPU seconds
//! per 1,000 events. On SQLite, and on PostgreSQL with one and with two instances.

use super::*;
use crate::report::CPU_PER_1K_GOAL_S;
use clairo_pgtest::PgCluster;

impl Bench {
    /// No budget to wait for: how fast briefs become delivered webhooks, and at what CPU.
    pub(crate) async fn throughput(&mut self) -> anyhow::Result<()> {
        let n = THROUGHPUT_EVENTS;
        let sandbox = sandbox(UNLIMITED, n, 0).await?;
        let result = self.throughput_on(&sandbox, n, None).await;
        sandbox.stop();
        result
    }

    /// The same on PostgreSQL (a throwaway cluster each), with `instances` instances of
    /// the PostgreSQL build `pg_bin` sharing it: one polls, all deliver.
    pub(crate) async fn throughput_pg(
        &mut self,
        pg_bin: &Path,
        instances: usize,
    ) -> anyhow::Result<()> {
        let n = THROUGHPUT_EVENTS;
        let sandbox = sandbox(UNLIMITED, n, 0).await?;
        let result = self
            .throughput_on(&sandbox, n, Some((pg_bin, instances)))
            .await;
        sandbox.stop();
        result
    }

    async fn throughput_on(
        &mut self,
        sandbox: &Sandbox,
        n: usize,
        pg: Option<(&Path, usize)>,
    ) -> anyhow::Result<()> {
        let receiver = Receiver::start().await?;
        let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
        let cluster = match pg {
            Some(_) => Some(PgCluster::try_start().map_err(anyhow::Error::msg)?),
            None => None,
        };
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
        let mut configs = vec![config.clone()];
        if let (Some(cluster), Some((_, instances))) = (&cluster, pg) {
            configs.clear();
            for index in 0..instances {
                let instance = format!("i{index}");
                let copy = dir.path().join(format!("throughput-{instance}.toml"));
                std::fs::copy(&config, &copy)?;
                use_postgres(
                    &copy,
                    &cluster.url(),
                    clairo_pgtest::PASSWORD,
                    &instance,
                    None,
                )?;
                configs.push(copy);
            }
        }
        let bin = pg.map_or(self.bin.as_path(), |(bin, _)| bin);
        sandbox.reset_stats();
        let start_ms = unix_ms();
        let start = Instant::now();
        let mut daemons = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            daemons.push(Daemon::start(bin, config, &format!("throughput {index}"))?);
        }
        receiver
            .wait_for(n, Duration::from_secs(300), &mut daemons[0])
            .await?;
        let mut ticks = 0;
        let mut rss = 0;
        for daemon in &daemons {
            ticks += cpu_ticks(daemon.pid()).context("reading /proc/PID/stat")?;
            rss = rss.max(status_kib(daemon.pid(), "VmHWM").unwrap_or_default());
        }
        let last = receiver.last_new_at().context("no event arrived")?;
        let requests = receiver.requests();
        for daemon in &mut daemons {
            daemon.stop();
        }
        drop(cluster);
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
        if let Some((_, instances)) = pg {
            let label = format!(
                "Throughput on PostgreSQL, {instances} instance{}",
                if instances == 1 { "" } else { "s" }
            );
            self.report.row(Row::new(
                format!("{label}: events delivered per second"),
                format!("{per_second:.0}/s ({} events in {elapsed:.1} s)", count(n)),
                "—",
                Verdict::Info,
            ));
            self.report.row(Row::new(
                format!("{label}: daemon CPU seconds per 1,000 events"),
                format!("{per_thousand:.3} s ({cpu_s:.2} s for {})", count(n)),
                "— (the PostgreSQL server's own CPU not included)",
                Verdict::Info,
            ));
            self.report.note(format!(
                "{label}: daemon start to the last event at the webhook; the last detail request reached the sandbox at {last_detail_s:.1} s; {requests} webhook requests for {n} events; CPU is the daemons' (all {instances}) whole life, not the server's; the largest VmHWM was {:.1} MiB.",
                mib(rss)
            ));
            return Ok(());
        }
        self.report.row(Row::new(
            "Throughput (unlimited budget): events delivered per second",
            format!("{per_second:.0}/s ({} events in {elapsed:.1} s)", count(n)),
            "—",
            Verdict::Info,
        ));
        self.report.row(Row::new(
            "Throughput: CPU seconds per 1,000 events",
            format!("{per_thousand:.3} s ({cpu_s:.2} s for {})", count(n)),
            format!("≤ {CPU_PER_1K_GOAL_S} s"),
            Verdict::goal(per_thousand <= CPU_PER_1K_GOAL_S),
        ));
        self.report.cost.cpu_per_1k_s = Some(per_thousand);
        self.report.cost.events_per_s = Some(per_second);
        self.report.note(format!(
            "Throughput: daemon start to the last event at the webhook; the last detail request reached the sandbox at {last_detail_s:.1} s; {requests} webhook requests for {n} events; the daemon's VmHWM was {:.1} MiB. CPU is the daemon's whole life (start-up, polling, SQLite, delivery).",
            mib(rss)
        ));
        Ok(())
    }
}
