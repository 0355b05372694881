//! Idle: the daemon after the backlog is drained — requests per poll cycle, resident memory
//! and CPU while nothing happens.

use super::*;
use crate::report::IDLE_RSS_GOAL_MIB;

impl Bench {
    /// The daemon after the backlog: both sources every 5 s, nothing new. Requests per
    /// cycle at the sandbox, RSS after 30 s, CPU over 60 s.
    pub(crate) async fn idle(&mut self, sandbox: &Sandbox, dir: &TempDir) -> anyhow::Result<()> {
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
            format!("≤ {IDLE_RSS_GOAL_MIB:.0} MiB"),
            Verdict::goal(mib(rss) <= IDLE_RSS_GOAL_MIB),
        ));
        self.report.cost.idle_rss_mib = Some(mib(rss));
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
}
