//! Failover: two instances of the PostgreSQL build on one database; the one polling the
//! briefs is killed with SIGKILL, and the seconds until the other's first poll are read
//! from the sandbox's log (each instance has its own API key, whose last four characters
//! the log keeps).

use super::*;
use clairo_pgtest::PgCluster;

/// `state.lease` of the failover phase: a third of the default, so three trials take a
/// minute; the failover scales with it (lease plus at most a sixth of it).
const FAILOVER_LEASE: Duration = Duration::from_secs(10);
const FAILOVER_SCHEDULE: &str = "*/5 * * * * *";
const FAILOVER_PERIOD: Duration = Duration::from_secs(5);
const FAILOVER_TRIALS: usize = 3;
const FAILOVER_INSTANCES: [&str; 2] = ["a", "b"];

fn failover_key(instance: &str) -> String {
    format!("clr_bench_failover_{instance}")
}

/// The instance whose key ends the way `suffix` does.
fn instance_of(suffix: &str) -> Option<&'static str> {
    FAILOVER_INSTANCES
        .into_iter()
        .find(|instance| failover_key(instance).ends_with(suffix) && !suffix.is_empty())
}

impl Bench {
    /// Kills the instance polling the briefs FAILOVER_TRIALS times (restarting it after
    /// each takeover) and measures SIGKILL → the other instance's first `GET /briefs`.
    pub(crate) async fn failover(&mut self, pg_bin: &Path) -> anyhow::Result<()> {
        let sandbox = clairo_sandbox::start(
            SandboxConfig {
                rate_limit: UNLIMITED,
                window: WINDOW,
                api_keys: FAILOVER_INSTANCES.iter().map(|i| failover_key(i)).collect(),
                seed_briefs: 10,
                seed_conversations: 0,
                ..SandboxConfig::default()
            },
            loopback(),
        )
        .await
        .context("starting the sandbox")?;
        let result = self.failover_on(&sandbox, pg_bin).await;
        sandbox.stop();
        result
    }

    async fn failover_on(&mut self, sandbox: &Sandbox, pg_bin: &Path) -> anyhow::Result<()> {
        let cluster = PgCluster::try_start().map_err(anyhow::Error::msg)?;
        let dir = tempfile::Builder::new().prefix("clairo-bench-").tempdir()?;
        let base_url = sandbox.base_url();
        let state = dir.path().join("state.db");
        let mut configs = BTreeMap::new();
        for instance in FAILOVER_INSTANCES {
            let config = write_config(
                dir.path(),
                &format!("failover-{instance}.toml"),
                &ConfigSpec {
                    base_url: &base_url,
                    state: &state,
                    max_requests_per_minute: UNLIMITED,
                    start_from: "all",
                    briefs_schedule: Some(FAILOVER_SCHEDULE),
                    conversations_schedule: None,
                    hook: None,
                    list_limit: BRIEFS_LIST_LIMIT as u32,
                },
            )?;
            let text = std::fs::read_to_string(&config)?.replace(
                &format!("api_key = \"{}\"", support::API_KEY),
                &format!("api_key = \"{}\"", failover_key(instance)),
            );
            std::fs::write(&config, text)?;
            use_postgres(
                &config,
                &cluster.url(),
                clairo_pgtest::PASSWORD,
                instance,
                Some(FAILOVER_LEASE),
            )?;
            configs.insert(instance, config);
        }
        let mut daemons = BTreeMap::new();
        for (instance, config) in &configs {
            daemons.insert(
                *instance,
                Daemon::start(pg_bin, config, &format!("failover {instance}"))?,
            );
        }
        // The last instance to poll the briefs, by the sandbox's log, and when.
        let last_poll = |after_ms: u64| {
            sandbox
                .stats()
                .log
                .iter()
                .rev()
                .take_while(|r| r.unix_ms > after_ms)
                .find(|r| r.endpoint == BRIEFS_LIST && r.status == 200)
                .and_then(|r| Some((instance_of(&r.key_suffix)?, r.unix_ms)))
        };
        let first_poll_of_other = |killed: &str, after_ms: u64| {
            sandbox
                .stats()
                .log
                .iter()
                .filter(|r| r.unix_ms >= after_ms && r.endpoint == BRIEFS_LIST)
                .find_map(|r| {
                    let instance = instance_of(&r.key_suffix)?;
                    (instance != killed).then_some(r.unix_ms)
                })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while last_poll(0).is_none() {
            for daemon in daemons.values_mut() {
                daemon.check_alive()?;
            }
            if Instant::now() > deadline {
                bail!("no instance polled the briefs within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut seconds = Vec::new();
        for trial in 0..FAILOVER_TRIALS {
            // Let the poller renew a few times; a different point of its renewal period
            // each trial.
            tokio::time::sleep(FAILOVER_PERIOD + Duration::from_millis(1_300 * trial as u64)).await;
            let since = unix_ms().saturating_sub(2 * FAILOVER_PERIOD.as_millis() as u64);
            let (leader, _) = last_poll(since).context("no instance polled lately")?;
            let daemon = daemons.get_mut(leader).context("the poller runs")?;
            let kill_ms = unix_ms();
            daemon.kill();
            let deadline = Instant::now() + FAILOVER_LEASE * 3 + FAILOVER_PERIOD;
            let taken_ms = loop {
                if let Some(at) = first_poll_of_other(leader, kill_ms) {
                    break at;
                }
                if Instant::now() > deadline {
                    bail!("no other instance polled within {deadline:?} of killing {leader}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let failover_s = (taken_ms - kill_ms) as f64 / 1000.0;
            eprintln!(
                "  trial {}: killed {leader}; another instance polled {failover_s:.2} s later",
                trial + 1
            );
            seconds.push(failover_s);
            let config = &configs[leader];
            daemons.insert(
                leader,
                Daemon::start(pg_bin, config, &format!("failover {leader}"))?,
            );
        }
        for daemon in daemons.values_mut() {
            daemon.stop();
        }
        drop(cluster);
        let goal_s = (FAILOVER_LEASE + FAILOVER_PERIOD).as_secs_f64();
        let max = seconds.iter().copied().fold(0.0, f64::max);
        let mut sorted = seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        self.report.row(Row::new(
            "Failover on PostgreSQL: SIGKILL of the poller to the first poll by another instance",
            format!(
                "median {median:.1} s, max {max:.1} s of {FAILOVER_TRIALS} (lease {} s, schedule every {} s)",
                FAILOVER_LEASE.as_secs(),
                FAILOVER_PERIOD.as_secs()
            ),
            format!("≤ lease + one schedule period ({goal_s:.0} s)"),
            Verdict::goal(max <= goal_s),
        ));
        self.report.note(format!(
            "Failover: two instances on one PostgreSQL, each with its own API key; the instance that last listed the briefs was killed with SIGKILL and started again once the other had taken over; seconds from the signal to the other's first `GET /briefs` at the sandbox: {}.",
            seconds
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }
}
