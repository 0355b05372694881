//! Beyond one server: three instances on one PostgreSQL database (a throwaway cluster,
//! clairo-pgtest), briefs appearing in the sandbox while the instance polling them is
//! killed with SIGKILL every 10 s and restarted, every brief delivered to a webhook and to
//! the HubSpot stand-in. What must hold: no event lost, no CRM contact or note made twice,
//! no more webhook duplicates than deliveries the killed instances had in flight, and never
//! two instances polling the briefs at once, by the sandbox's own request log.
//!
//! Each instance calls the sandbox with its own API key, and the sandbox logs the last four
//! characters of the key of every request: so its log says which instance made each poll.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clairo_connectors::hubspot::fake::FakeHubspot;
use clairo_sandbox::{RequestRecord, Sandbox, SandboxConfig};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::pg::{PASSWORD, PgCluster};
use crate::support::{Daemon, Receiver, SECRET, run_cli, write};

/// `state.lease`: how long a killed poller's source waits before another instance takes it.
const LEASE: Duration = Duration::from_secs(3);
/// The briefs' schedule: every second.
const SCHEDULE: &str = "* * * * * *";
/// `delivery.lease`, its minimum: a killed instance's deliveries are retried this long
/// after their claim.
const DELIVERY_LEASE: Duration = Duration::from_secs(5);
const BRIEFS: usize = 500;
/// Briefs appear one every 100 ms for 50 s, so that the polling goes on across the kills.
const BRIEF_EVERY: Duration = Duration::from_millis(100);
const KILL_EVERY: Duration = Duration::from_secs(10);
/// Each kill comes this much later in the second than the one before, so that the kills
/// meet the instances at different points of the once-a-second polls and deliveries.
const KILL_DRIFT: Duration = Duration::from_millis(170);
const KILLS: usize = 6;
/// A killed instance is started again this long after its kill: longer than the lease,
/// so the source goes to one of the two others and the handover shows in the log.
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// The webhook receiver answers this long after it has a request, and HubSpot waits
/// this long before each call, so that deliveries are in flight at the kills.
const RECEIVER_DELAY: Duration = Duration::from_millis(300);
const HUBSPOT_LATENCY: Duration = Duration::from_millis(100);
const HUBSPOT_TOKEN: &str = "pat-na1-failover-test";
const INSTANCES: [&str; 3] = ["a", "b", "c"];

/// Each instance's API key; the sandbox's log keeps its last four characters.
fn api_key(instance: &str) -> String {
    format!("clr_failover_key_{instance}{instance}{instance}{instance}")
}

fn key_suffix(instance: &str) -> String {
    instance.repeat(4)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn instance_config(
    dir: &Path,
    name: &str,
    cluster: &PgCluster,
    sandbox: &Sandbox,
    receiver: &Receiver,
    hubspot: &FakeHubspot,
) -> PathBuf {
    let password_file = write(dir, "state-password", PASSWORD);
    let text = format!(
        r#"
[clairo]
base_url = "{base}"
api_key = "{key}"
max_requests_per_minute = 60000

[state]
url = "{url}"
password_file = "{password_file}"
instance = "{name}"
lease = "{lease}s"

[http]
enabled = false

[sync.briefs]
schedule = "{SCHEDULE}"

[delivery]
lease = "{delivery_lease}s"

[connectors.hook]
type = "webhook"
url = "{hook}"
secret = "{SECRET}"
timeout = "3s"

[connectors.crm]
type = "hubspot"
token = "{HUBSPOT_TOKEN}"
base_url = "{hubspot}"
timeout = "3s"

[[routes]]
events = ["brief.created"]
to = ["hook", "crm"]
"#,
        base = sandbox.base_url(),
        key = api_key(name),
        url = cluster.url(),
        password_file = password_file.display(),
        lease = LEASE.as_secs(),
        delivery_lease = DELIVERY_LEASE.as_secs(),
        hook = receiver.url,
        hubspot = hubspot.base_url,
    );
    write(dir, "clairo-sync.toml", &text)
}

/// Who holds the briefs' lease now, if anyone: (instance, pid), from its token
/// `name/host/pid/started_at`.
async fn briefs_holder(db: &PgPool) -> Option<(String, u32)> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT instance, token FROM source_leases WHERE source = 'briefs'
         AND expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    )
    .fetch_optional(db)
    .await
    .expect("read the briefs' lease");
    let (instance, token) = row?;
    let pid = token.rsplit('/').nth(1)?.parse().ok()?;
    Some((instance, pid))
}

/// Deliveries of `connector` that the process `pid` of `instance` had claimed and not
/// finished, whose lease has not run out: in flight in it when it was killed.
async fn in_flight(db: &PgPool, connector: &str, instance: &str, pid: u32) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries WHERE connector = $1 AND status = 'pending'
         AND lease_owner LIKE $2 AND lease_until > $3",
    )
    .bind(connector)
    .bind(format!("{instance}/{pid}-%"))
    .bind(unix_ms() as i64)
    .fetch_one(db)
    .await
    .expect("count deliveries in flight")
}

/// One kill: of which instance, whether it held the briefs' lease, and the wall-clock
/// instants just before the signal and once the process was gone.
struct Kill {
    instance: String,
    leader: bool,
    before_ms: u64,
    after_ms: u64,
}

/// A run of consecutive briefs requests by one instance.
#[derive(Debug)]
struct Block {
    instance: String,
    first_ms: u64,
    last_ms: u64,
    requests: usize,
}

/// The briefs requests (list and details) of `log`, in arrival order, cut into runs by
/// the instance whose key they carried.
fn poll_blocks(log: &[RequestRecord], instances: &HashMap<String, String>) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for request in log
        .iter()
        .filter(|r| r.endpoint == "GET /briefs" || r.endpoint == "GET /briefs/{id}")
    {
        let instance = instances
            .get(&request.key_suffix)
            .unwrap_or_else(|| panic!("a briefs request with an unknown key: {request:?}"));
        match blocks.last_mut() {
            Some(block) if block.instance == *instance => {
                block.last_ms = request.unix_ms;
                block.requests += 1;
            }
            _ => blocks.push(Block {
                instance: instance.clone(),
                first_ms: request.unix_ms,
                last_ms: request.unix_ms,
                requests: 1,
            }),
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_killed_in_turn_lose_no_event_duplicate_no_crm_record_and_never_poll_at_once()
 {
    let cluster = PgCluster::start();
    let sandbox = clairo_sandbox::start(
        SandboxConfig {
            rate_limit: 1_000_000,
            api_keys: INSTANCES.iter().map(|name| api_key(name)).collect(),
            seed_briefs: 0,
            seed_conversations: 0,
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the sandbox starts");
    let receiver = Receiver::start().await;
    receiver.answer_late(RECEIVER_DELAY);
    let hubspot = FakeHubspot::start(HUBSPOT_TOKEN).await;
    hubspot.set_latency(HUBSPOT_LATENCY);
    let dirs: Vec<tempfile::TempDir> = INSTANCES
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let configs: Vec<PathBuf> = INSTANCES
        .iter()
        .zip(&dirs)
        .map(|(name, dir)| {
            instance_config(dir.path(), name, &cluster, &sandbox, &receiver, &hubspot)
        })
        .collect();
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            PgConnectOptions::from_str(&cluster.url())
                .unwrap()
                .password(PASSWORD),
        )
        .await
        .expect("the test's own connection");

    let mut daemons: BTreeMap<String, Daemon> = INSTANCES
        .iter()
        .zip(&configs)
        .map(|(name, config)| ((*name).to_owned(), Daemon::start(config)))
        .collect();

    // Briefs appear one by one for the first 50 s; an instance is killed every 10 s and
    // started again RESTART_AFTER later.
    let start = Instant::now();
    let mut added = 0;
    let mut kills: Vec<Kill> = Vec::new();
    let mut restarts: Vec<(Instant, String)> = Vec::new();
    let mut webhook_in_flight = 0;
    let mut crm_in_flight = 0;
    let mut gone_checks = 0;
    while kills.len() < KILLS || !restarts.is_empty() || added < BRIEFS {
        let elapsed = start.elapsed();
        let due = (elapsed.as_millis() / BRIEF_EVERY.as_millis()) as usize + 1;
        if added < BRIEFS && added < due {
            let count = (due - added).min(BRIEFS - added);
            sandbox.add_briefs(count);
            added += count;
        }
        if let Some(at) = restarts.first().map(|(at, _)| *at)
            && Instant::now() >= at
        {
            let (_, name) = restarts.remove(0);
            let index = INSTANCES.iter().position(|n| *n == name).unwrap();
            daemons.insert(name, Daemon::start(&configs[index]));
        }
        let next_kill = kills.len() as u32 + 1;
        if kills.len() < KILLS && elapsed >= KILL_EVERY * next_kill + KILL_DRIFT * next_kill {
            // The instance polling the briefs, or (while the lease is changing hands)
            // the next one in turn that is running.
            let holder = briefs_holder(&db).await;
            let (name, leader) = match &holder {
                Some((name, pid)) if daemons.get(name).is_some_and(|d| d.child.id() == *pid) => {
                    (name.clone(), true)
                }
                _ => {
                    let name = INSTANCES
                        .iter()
                        .cycle()
                        .skip(kills.len())
                        .find(|name| daemons.contains_key(**name))
                        .unwrap();
                    ((*name).to_owned(), false)
                }
            };
            let mut daemon = daemons.remove(&name).unwrap();
            let pid = daemon.child.id();
            let before_ms = unix_ms();
            daemon.kill9();
            let after_ms = unix_ms();
            let hook = in_flight(&db, "hook", &name, pid).await;
            let crm = in_flight(&db, "crm", &name, pid).await;
            eprintln!(
                "kill {} at {:.1} s: instance {name} (pid {pid}, {}), in flight: webhook {hook}, crm {crm}",
                kills.len() + 1,
                elapsed.as_secs_f64(),
                if leader {
                    "polling the briefs"
                } else {
                    "not polling"
                }
            );
            webhook_in_flight += hook;
            crm_in_flight += crm;
            kills.push(Kill {
                instance: name.clone(),
                leader,
                before_ms,
                after_ms,
            });
            // Once its heartbeat is older than the lease, `status` shows it gone, with
            // the deliveries it still holds (their lease is longer).
            if gone_checks < 2 {
                tokio::time::sleep(LEASE + Duration::from_millis(600)).await;
                let held_before = in_flight(&db, "hook", &name, pid).await
                    + in_flight(&db, "crm", &name, pid).await;
                let (code, stdout, stderr) =
                    run_cli(&["status", "--json", "-c", configs[0].to_str().unwrap()]);
                let held_after = in_flight(&db, "hook", &name, pid).await
                    + in_flight(&db, "crm", &name, pid).await;
                assert_eq!(code, 0, "{stderr}");
                let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                let row = status["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|row| row["name"] == name.as_str())
                    .unwrap_or_else(|| panic!("{name} listed: {stdout}"));
                assert_eq!(row["live"], false, "{name} is gone: {stdout}");
                let (_, text, _) = run_cli(&["status", "-c", configs[0].to_str().unwrap()]);
                let line = text
                    .lines()
                    .find(|line| line.trim_start().starts_with(&format!("{name} ")))
                    .unwrap_or_else(|| panic!("{name} in the text: {text}"));
                assert!(
                    line.contains("(gone)") && line.contains("deliveries in flight"),
                    "{line}"
                );
                // Its leases can only run out meanwhile, never appear.
                let shown = row["deliveries_in_flight"].as_i64().unwrap();
                assert!(
                    (held_after..=held_before).contains(&shown),
                    "{name}'s deliveries still leased: {held_before} then {held_after} by the database, {shown} by status: {stdout}"
                );
                for other in status["instances"].as_array().unwrap() {
                    if other["name"] != name.as_str() {
                        assert_eq!(other["live"], true, "{stdout}");
                    }
                }
                gone_checks += 1;
            }
            restarts.push((Instant::now() + RESTART_AFTER, name));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Everything delivered, to both connectors.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let hook_ids: HashSet<String> = receiver.delivered().into_iter().map(|r| r.id).collect();
        let notes = hubspot.notes().len();
        if (hook_ids.len() >= BRIEFS && notes >= BRIEFS) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Room for a late duplicate: a delivery whose lease runs out is retried after it.
    tokio::time::sleep(DELIVERY_LEASE + Duration::from_secs(1)).await;
    let log = sandbox.stats().log;
    let states: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT connector, status, COUNT(*) FROM deliveries GROUP BY connector, status ORDER BY 1, 2",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        states,
        [
            ("crm".to_owned(), "delivered".to_owned(), BRIEFS as i64),
            ("hook".to_owned(), "delivered".to_owned(), BRIEFS as i64)
        ],
        "one delivery per brief and connector, every one delivered (none dead or pending)"
    );
    for daemon in daemons.values_mut() {
        assert_eq!(daemon.terminate(Duration::from_secs(20)), Some(0));
    }

    // 0 events lost.
    let delivered = receiver.delivered();
    let hook_ids: HashSet<&str> = delivered.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        hook_ids.len(),
        BRIEFS,
        "every brief reached the webhook once at least"
    );
    let duplicates = delivered.len() - hook_ids.len();
    eprintln!(
        "webhook: {} requests for {BRIEFS} events, {duplicates} duplicates; in flight at the kills: webhook {webhook_in_flight}, crm {crm_in_flight}",
        delivered.len()
    );
    assert!(
        duplicates as i64 <= webhook_in_flight,
        "{duplicates} webhook duplicates, more than the {webhook_in_flight} deliveries in flight at the kills"
    );

    // 0 duplicate CRM contacts or notes.
    let contacts = hubspot.contacts();
    let emails: HashSet<String> = contacts
        .iter()
        .map(|c| c.properties["email"].to_lowercase())
        .collect();
    assert_eq!(contacts.len(), BRIEFS, "one contact per brief");
    assert_eq!(emails.len(), BRIEFS, "no contact made twice");
    let notes = hubspot.notes();
    assert_eq!(notes.len(), BRIEFS, "one note per brief, none made twice");
    let mut notes_per_contact: HashMap<&str, usize> = HashMap::new();
    for note in &notes {
        assert_eq!(note.contact_ids.len(), 1, "{note:?}");
        *notes_per_contact.entry(&note.contact_ids[0]).or_default() += 1;
    }
    assert!(
        notes_per_contact.values().all(|count| *count == 1),
        "each contact has its one note"
    );
    assert!(
        hubspot.rejections().is_empty(),
        "{:?}",
        hubspot.rejections()
    );

    // Never two instances polling at once: every change of the instance that polls the
    // briefs happens across a kill of the one that polled before (it was dead when the
    // next began), or after a gap of at least the tenth of the lease a holder gives up
    // (it stopped before the next could take the lease).
    let by_key: HashMap<String, String> = INSTANCES
        .iter()
        .map(|name| (key_suffix(name), (*name).to_owned()))
        .collect();
    let blocks = poll_blocks(&log, &by_key);
    assert!(
        blocks.iter().map(|b| b.requests).sum::<usize>() > 60,
        "the briefs were polled throughout: {blocks:?}"
    );
    let mut across_kills = 0;
    for pair in blocks.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let killed_between = kills.iter().any(|kill| {
            kill.instance == before.instance
                && before.last_ms <= kill.after_ms
                && after.first_ms >= kill.before_ms
        });
        if killed_between {
            across_kills += 1;
            let kill_ms = kills
                .iter()
                .filter(|kill| kill.instance == before.instance && kill.before_ms <= after.first_ms)
                .map(|kill| kill.before_ms)
                .max()
                .unwrap();
            eprintln!(
                "handover {} → {}: {}'s last request {} ms before its SIGKILL, {}'s first {} ms after it",
                before.instance,
                after.instance,
                before.instance,
                kill_ms.saturating_sub(before.last_ms),
                after.instance,
                after.first_ms - kill_ms
            );
        } else {
            let gap = after.first_ms - before.last_ms;
            eprintln!(
                "handover {} → {} without a kill, after a gap of {gap} ms",
                before.instance, after.instance
            );
            assert!(
                gap >= (LEASE / 10).as_millis() as u64,
                "{} polled {gap} ms after {}, which was not killed: {blocks:#?}",
                after.instance,
                before.instance
            );
        }
    }
    let leader_kills = kills.iter().filter(|kill| kill.leader).count();
    assert!(
        leader_kills >= KILLS / 2,
        "most kills hit the instance polling the briefs ({leader_kills} of {KILLS})"
    );
    assert!(
        across_kills >= leader_kills,
        "each kill of the poller handed the briefs to another instance: {across_kills} handovers for {leader_kills} kills of the poller; {blocks:#?}"
    );
}
