//! What an operator installs beside the binary: the systemd unit (verified and hardened),
//! its sysusers user, the Prometheus alert rules (checked and unit-tested), the generated
//! completions and man pages, and the example config's way of getting the API key.
//!
//! These tests call systemd-analyze, systemd-sysusers and promtool. A missing tool fails the
//! test and names the Debian package to install (.ci/run installs them): a skipped check
//! would let a broken unit or rule file through unnoticed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::bin;

/// The highest `systemd-analyze security` exposure the unit may have. 0 is fully locked
/// down, 10 is unprotected; below 2 systemd calls it "OK", and what remains is what the
/// daemon needs (outbound network, its state directory, the host's root file system).
const MAX_EXPOSURE: f64 = 1.5;

/// Where the packaged files live in the source tree.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A command for `program`, or a failure naming the Debian package that provides it.
fn tool(program: &str, package: &str) -> Command {
    if let Err(error) = Command::new(program).arg("--version").output() {
        panic!(
            "`{program}` cannot be run ({error}); install the Debian package `{package}` \
             (scripts/test-prereqs.sh installs it as root, as the test command's setup does)"
        );
    }
    Command::new(program)
}

fn run(command: &mut Command) -> (Output, String) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    let text = format!(
        "{command:?} exited {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// The unit as shipped (`file` under systemd/), except that its commands run the binary
/// cargo built: `systemd-analyze verify` insists that every Exec*= program exists. Returns
/// the path to give systemd-analyze: for the template, the instance `acme` of it, which
/// systemd-analyze loads from the template beside it.
fn unit_with_built_binary(dir: &Path, file: &str) -> PathBuf {
    let shipped = read(&repo(&format!("systemd/{file}")));
    let config = if file.contains('@') {
        "/etc/clairo-sync/%i.toml"
    } else {
        "/etc/clairo-sync/clairo-sync.toml"
    };
    assert!(
        shipped.contains(&format!("ExecStart=/usr/bin/clairo-sync run -c {config}")),
        "the unit runs the packaged binary with the packaged config"
    );
    let built = bin();
    std::fs::write(
        dir.join(file),
        shipped.replace("/usr/bin/clairo-sync", &built.to_string_lossy()),
    )
    .expect("write the unit");
    dir.join(file.replace("@.", "@acme."))
}

/// `systemd-analyze verify` passes `file` with nothing to say about it.
fn assert_unit_verifies(file: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = unit_with_built_binary(dir.path(), file);
    // Documentation=man:clairo-sync(1) makes verify run `man`; give it the generated pages.
    let man = dir.path().join("man");
    let (output, text) = run(Command::new(bin())
        .args(["manpage", "--dir"])
        .arg(man.join("man1")));
    assert!(output.status.success(), "{text}");
    tool("man", "man-db");

    let (output, text) = run(tool("systemd-analyze", "systemd")
        .args(["verify", "--no-pager"])
        .arg(&unit)
        .env("MANPATH", &man));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Lines about other units (the host's own) are not this unit's business.
    let about_this_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("clairo-sync"))
        .collect();
    assert!(
        output.status.success() && about_this_unit.is_empty(),
        "{text}"
    );
}

/// `systemd-analyze security` scores `file` at most [`MAX_EXPOSURE`].
fn assert_unit_exposure_is_low(file: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = unit_with_built_binary(dir.path(), file);
    let (output, text) = run(tool("systemd-analyze", "systemd")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    assert!(output.status.success(), "{text}");
    // "→ Overall exposure level for clairo-sync.service: 1.1 OK 🙂"
    let stdout = String::from_utf8_lossy(&output.stdout);
    let name = unit.file_name().unwrap_or_default().to_string_lossy();
    let exposure: f64 = stdout
        .lines()
        .find_map(|line| line.split_once(&format!("Overall exposure level for {name}:")))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in the output\n{text}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}\n{text}"
    );
}

/// The unit's `Key=` values, in order, from uncommented lines.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    assert_unit_verifies("clairo-sync.service");
}

#[test]
fn the_unit_is_hardened_to_an_exposure_of_at_most_1_5() {
    assert_unit_exposure_is_low("clairo-sync.service");
}

#[test]
fn the_per_account_template_unit_passes_systemd_analyze_verify() {
    assert_unit_verifies("clairo-sync@.service");
}

#[test]
fn the_per_account_template_unit_is_hardened_to_an_exposure_of_at_most_1_5() {
    assert_unit_exposure_is_low("clairo-sync@.service");
}

/// The unit's `[Service]` and `[Install]` settings as `Key=value` lines, comments dropped.
fn settings(unit: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('['))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_per_account_template_differs_from_the_main_unit_only_in_its_account_paths() {
    let main = read(&repo("systemd/clairo-sync.service"));
    let template = read(&repo("systemd/clairo-sync@.service"));
    // Hardening, limits, restart policy and user are the same, line for line: a change to
    // one unit that the other lacks fails here.
    let per_account = [
        "Description",
        "ExecStart",
        "ExecReload",
        "StateDirectory",
        "LoadCredential",
    ];
    let shared = |unit: &str| -> Vec<String> {
        settings(unit)
            .into_iter()
            .filter(|line| {
                !per_account
                    .iter()
                    .any(|key| line.starts_with(&format!("{key}=")))
            })
            .collect()
    };
    assert_eq!(shared(&template), shared(&main));

    // Each account its own config, key, secrets and state.
    assert_eq!(
        unit_values(&template, "ExecStart"),
        ["/usr/bin/clairo-sync run -c /etc/clairo-sync/%i.toml"]
    );
    assert_eq!(
        unit_values(&template, "ExecReload"),
        [
            "/usr/bin/clairo-sync check -c /etc/clairo-sync/%i.toml",
            "/bin/kill -HUP $MAINPID"
        ]
    );
    assert_eq!(unit_values(&template, "StateDirectory"), ["clairo-sync/%i"]);
    // The daemon finds the key under the credential name it always uses.
    assert_eq!(
        unit_values(&template, "LoadCredential"),
        [
            "clairo-api-key:/etc/clairo-sync/%i-api-key",
            "credentials:/etc/clairo-sync/%i-credentials"
        ]
    );
}

#[test]
fn the_unit_keeps_what_the_daemon_needs() {
    let unit = read(&repo("systemd/clairo-sync.service"));
    let one = |key: &str| unit_values(&unit, key).join(" ");
    assert_eq!(one("Type"), "notify");
    assert_eq!(
        one("NotifyAccess"),
        "main",
        "READY/WATCHDOG come from the daemon, never a child"
    );
    assert_eq!(one("WatchdogSec"), "60s");
    assert_eq!(one("User"), "clairo-sync");
    assert_eq!(
        one("StateDirectory"),
        "clairo-sync",
        "the only place it writes by default"
    );
    assert_eq!(one("ConfigurationDirectory"), "clairo-sync");
    // The key where it always was (upgrades keep working), and every file of the
    // credentials directory, so a connector's secret needs no drop-in.
    assert_eq!(
        unit_values(&unit, "LoadCredential"),
        [
            "clairo-api-key:/etc/clairo-sync/api-key",
            "credentials:/etc/clairo-sync/credentials"
        ]
    );
    assert!(
        unit_values(&unit, "ExecReload")
            .last()
            .is_some_and(|reload| reload == "/bin/kill -HUP $MAINPID"),
        "reload is SIGHUP"
    );
    let families = one("RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(
            families.split(' ').any(|f| f == family),
            "{family} is needed (notify socket, HTTPS)"
        );
    }
    assert!(
        unit_values(&unit, "PrivateNetwork").is_empty(),
        "the daemon calls out"
    );
    assert!(
        unit_values(&unit, "DynamicUser").is_empty(),
        "drop folders are shared through a static user's group"
    );
}

#[test]
fn the_sysusers_file_creates_the_user_the_unit_runs_as() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join("etc")).expect("etc");
    let (output, text) = run(tool("systemd-sysusers", "systemd")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo("systemd/clairo-sync.sysusers")));
    assert!(output.status.success(), "{text}");
    let passwd = read(&root.path().join("etc/passwd"));
    let user = passwd
        .lines()
        .find(|line| line.starts_with("clairo-sync:"))
        .unwrap_or_else(|| panic!("no clairo-sync user in\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(
        fields[5], "/var/lib/clairo-sync",
        "home is the StateDirectory"
    );
    assert_eq!(fields[6], "/usr/sbin/nologin");
    let group = read(&root.path().join("etc/group"));
    assert!(
        group.lines().any(|line| line.starts_with("clairo-sync:")),
        "{group}"
    );
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (output, text) = run(tool("promtool", "prometheus")
        .args(["check", "rules"])
        .arg(repo("config/prometheus/clairo-sync.rules.yml")));
    assert!(output.status.success(), "{text}");
    let (output, text) = run(tool("promtool", "prometheus")
        .args(["test", "rules"])
        .arg(repo("config/prometheus/clairo-sync.rules.test.yml")));
    assert!(output.status.success(), "{text}");
}

#[test]
fn the_alert_rules_use_only_contract_metric_names() {
    let rules = read(&repo("config/prometheus/clairo-sync.rules.yml"));
    // The contract names (docs/architecture.md §7) dashboards and these rules rely on.
    let contract = [
        "clairo_sync_api_requests_total",
        "clairo_sync_api_rate_limit_remaining",
        "clairo_sync_api_throttled_total",
        "clairo_sync_poll_runs_total",
        "clairo_sync_last_success_timestamp_seconds",
        "clairo_sync_events_total",
        "clairo_sync_deliveries_total",
        "clairo_sync_delivery_queue_depth",
        "clairo_sync_delivery_latency_seconds",
        "clairo_sync_meeting_uploads_total",
        "clairo_sync_items_skipped_total",
        "clairo_sync_build_info",
        // Added with the boundary work: a source behind its own schedule (/readyz too).
        "clairo_sync_source_stale",
        // A PostgreSQL state that cannot be reached or written (/readyz too).
        "clairo_sync_state_up",
    ];
    let used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("clairo_sync_"))
        .collect();
    assert!(
        used.len() >= 8,
        "the rules watch the daemon's metrics: {used:?}"
    );
    for word in used {
        assert!(
            contract.contains(&word),
            "{word} is not a contract metric (docs/architecture.md §7)"
        );
    }
}

#[test]
fn the_example_config_leaves_the_api_key_to_the_credential() {
    // The unit hands the key over as the credential clairo-api-key; an api_key or
    // api_key_file set in the example would win over it and point elsewhere.
    let example = read(&repo("config/clairo-sync.toml"));
    for line in example.lines() {
        let setting = line.split('#').next().unwrap_or_default().trim();
        assert!(
            !setting.starts_with("api_key"),
            "the example config sets `{setting}`"
        );
    }
}

#[test]
fn completions_and_man_pages_come_from_the_binary() {
    for shell in ["bash", "zsh", "fish"] {
        let (output, text) = run(Command::new(bin()).args(["completions", shell]));
        assert!(
            output.status.success() && !output.stdout.is_empty(),
            "{text}"
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("deliveries"),
            "{text}"
        );
    }
    let (output, text) = run(Command::new(bin()).arg("manpage"));
    assert!(output.status.success(), "{text}");
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(page.contains(".TH clairo-sync 1"), "{text}");
    assert!(page.contains(r#".SH "EXIT STATUS""#), "{text}");
    assert!(
        !page.contains("manpage"),
        "the packagers' commands stay hidden\n{page}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let (output, text) = run(Command::new(bin())
        .args(["manpage", "--dir"])
        .arg(dir.path()));
    assert!(output.status.success(), "{text}");
    for page in [
        "clairo-sync.1",
        "clairo-sync-run.1",
        "clairo-sync-deliveries-retry.1",
    ] {
        assert!(dir.path().join(page).is_file(), "{page} was not written");
    }
}

/// A config for the operator commands: state at `dir/state.db`, nothing else that matters.
fn state_only_config(dir: &Path) -> PathBuf {
    crate::support::write(
        dir,
        "clairo-sync.toml",
        &format!(
            "[clairo]\napi_key = \"clr_test_key_123\"\n\n[state]\npath = {:?}\n",
            dir.join("state.db")
        ),
    )
}

#[tokio::test]
async fn a_closed_pipe_ends_every_printing_command_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = state_only_config(dir.path());
    // A state database, as the daemon leaves it.
    clairo_sync::store::Store::open(&dir.path().join("state.db"))
        .await
        .expect("open the state")
        .close()
        .await;
    let config = config.to_str().unwrap();
    for args in [
        vec!["deliveries", "list", "-c", config],
        vec!["status", "-c", config],
        vec!["status", "--json", "-c", config],
        vec!["manpage"],
        vec!["completions", "bash"],
        vec!["--help"],
    ] {
        // `… | head` that has read what it wanted: the read end is closed before the
        // command writes.
        let mut child = Command::new(bin())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("the command ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = output.status.code();
        assert!(
            matches!(code, Some(0) | Some(141)),
            "{args:?} exited {:?}\n{stderr}",
            output.status
        );
        assert!(stderr.is_empty(), "{args:?} wrote to stderr:\n{stderr}");
    }
}

#[test]
fn status_and_deliveries_before_the_first_start_say_so_once_and_create_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = state_only_config(dir.path());
    let config = config.to_str().unwrap();
    for args in [
        vec!["status", "-c", config],
        vec!["deliveries", "list", "-c", config],
        vec!["deliveries", "retry", "--all-dead", "-c", config],
    ] {
        let (code, stdout, stderr) = crate::support::run_cli(&args);
        assert_eq!(code, 1, "{args:?}\n{stdout}\n{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line\n{stderr}");
        assert!(
            lines[0].contains("no state yet") && lines[0].contains("first start"),
            "{args:?}: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name != "clairo-sync.toml")
            .collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_list_shows_errors_only_and_puts_recent_activity_first() {
    use crate::support::{Receiver, daemon_config, run_cli, sandbox};
    let sandbox = sandbox(2, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let config = config.to_str().unwrap();
    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run_cli(&["deliveries", "list", "-c", config]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("delivered") && !stdout.contains("[200]"),
        "a delivered row has no error to show:\n{stdout}"
    );
    let ids: Vec<String> = stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .filter(|id| id.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 4, "two briefs, two connectors:\n{stdout}");
    let oldest = ids.last().unwrap().clone();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (code, _, stderr) = run_cli(&["deliveries", "retry", &oldest, "-c", config]);
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = run_cli(&["deliveries", "list", "-c", config]);
    let first = stdout
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next());
    assert_eq!(
        first,
        Some(oldest.as_str()),
        "the re-queued delivery comes first:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_tells_systemd_reloading_and_its_time_in_one_message() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use crate::support::{LoggedDaemon, Receiver, daemon_config, sandbox};
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    let daemon = LoggedDaemon::start(&config, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buffer = [0u8; 4096];
    let mut next = || {
        socket
            .recv(&mut buffer)
            .map(|size| String::from_utf8_lossy(&buffer[..size]).into_owned())
    };
    while let Ok(message) = next() {
        if message.contains("READY=1") {
            break;
        }
    }
    daemon.signal("HUP");
    let reloading = loop {
        match next() {
            Ok(message) if message.contains("RELOADING=1") => break message,
            Ok(_) => continue,
            Err(error) => panic!("no RELOADING=1 after SIGHUP: {error}"),
        }
    };
    assert!(
        reloading.contains("MONOTONIC_USEC="),
        "systemd wants the time in the same message: {reloading:?}"
    );
}

#[test]
fn the_man_page_lists_every_config_key_with_its_default() {
    let (output, text) = run(Command::new(bin()).arg("manpage"));
    assert!(output.status.success(), "{text}");
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(page.contains(".SH CONFIGURATION"), "{page}");
    let configuration = page
        .split(".SH CONFIGURATION")
        .nth(1)
        .and_then(|rest| rest.split("\n.SH ").next())
        .unwrap_or_default()
        // roff escapes dashes and backslashes
        .replace("\\-", "-");
    for (key, default) in [
        ("[clairo]", ""),
        ("base_url", "https://clairo.tech/api/v1"),
        ("max_requests_per_minute", "900"),
        ("[state]", ""),
        ("delivered_retention", "30d"),
        ("[delivery]", ""),
        ("retry_schedule", "5s"),
        ("shutdown_timeout", "10s"),
        ("[[meetings.folders]]", ""),
        ("settle", "5s"),
        ("[connectors.sales_hook]", ""),
        ("secret_file", ""),
        ("smtp_url", ""),
        ("without_email", ""),
    ] {
        assert!(
            configuration.contains(key) && configuration.contains(default),
            "CONFIGURATION lacks {key} = {default}:\n{configuration}"
        );
    }
}

#[test]
fn the_docs_name_the_paths_the_package_installs() {
    // cargo-deb installs the unit under /usr/lib (merged /usr), not /lib.
    for file in [
        "README.md",
        "docs/operations.md",
        "systemd/clairo-sync.service",
        "systemd/clairo-sync@.service",
    ] {
        let text = read(&repo(file));
        for (number, line) in text.lines().enumerate() {
            assert!(
                !line.contains(" /lib/systemd/") && !line.contains("`/lib/systemd/"),
                "{file}:{}: {line}",
                number + 1
            );
        }
    }
    let operations = read(&repo("docs/operations.md"));
    for needle in [
        "/usr/lib/systemd/system/clairo-sync.service",
        "/usr/lib/systemd/system/clairo-sync@.service",
        "/etc/clairo-sync/credentials/",
        "/usr/share/clairo-sync/clairo-sync.rules.test.yml",
        "/usr/lib/tmpfiles.d/clairo-sync.conf",
    ] {
        assert!(operations.contains(needle), "operations.md lacks {needle}");
    }
    // Purge keeps the secrets on purpose, and says so.
    let remove = operations
        .split("\n## ")
        .find(|section| {
            section
                .lines()
                .next()
                .is_some_and(|title| title.ends_with("Remove"))
        })
        .unwrap_or_default();
    assert!(
        remove.contains("/etc/clairo-sync/api-key") && remove.contains("on purpose"),
        "{remove}"
    );
}

#[test]
fn the_readme_in_short_block_gives_the_example_webhook_its_secret() {
    let readme = read(&repo("README.md"));
    let block = readme
        .split("In short")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the In short block");
    for needle in [
        "/etc/clairo-sync/api-key",
        "/etc/clairo-sync/credentials/sales_hook-secret",
        "sudo clairo-sync check",
        "systemctl enable --now clairo-sync",
        "deliveries list",
    ] {
        assert!(block.contains(needle), "the block lacks {needle}:\n{block}");
    }
}
