//! The config loader and `clairo-sync check`, through the real binary where exit codes
//! and env overrides are the point.

use std::path::Path;
use std::process::Command;

use clairo_sync::config::{self, Need, SecretSources};

use crate::support::{bin, write};

const EX_CONFIG: i32 = 78;

fn check(config: &Path, envs: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(bin())
        .args(["check", "-c"])
        .arg(config)
        .env_remove("CLAIRO_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .envs(envs.iter().copied())
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
[clairo]
api_key = "clr_test_key_123"

[state]
path = "/tmp/clairo-sync-test/state.db"

[sync.briefs]
schedule = "*/2 * * * *"

[connectors.archive]
type = "file"
path = "/tmp/clairo-sync-test/events.jsonl"

[[routes]]
events = ["brief.created"]
to = ["archive"]
"#;

#[test]
fn a_valid_config_checks_ok() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "clairo-sync.toml", GOOD);
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn each_validation_error_names_its_key_path_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "clairo-sync.toml",
        r#"
[clairo]
api_key = "sk_live_not_a_clairo_key"
base_url = "not a url"

[[meetings.folders]]
path = "relative/inbox"
agent = "cm1ghi"

[connectors.hook]
type = "webhook"
url = "https://hooks.example.com/clairo"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[[routes]]
events = ["brief.made"]
to = ["hook", "nowhere"]
"#,
    );
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, EX_CONFIG, "stderr: {stderr}");
    for key in [
        "clairo.api_key: ",
        "clairo.base_url: ",
        "meetings.folders[0].path: ",
        "routes[0].events: ",
        "routes[0].to: ",
    ] {
        assert!(
            stderr.lines().any(|line| line.starts_with(key)),
            "no line starts with {key:?} in:\n{stderr}"
        );
    }
    // Every line says what to do after a semicolon.
    for line in stderr.lines() {
        assert!(line.contains("; "), "line without advice: {line}");
    }
    assert!(
        !stderr.contains("sk_live_not_a_clairo_key"),
        "the key leaked: {stderr}"
    );
}

#[test]
fn a_misspelt_key_is_an_error_not_a_silent_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "clairo-sync.toml",
        &GOOD.replace(
            "[sync.briefs]\n",
            "[sync.briefs]\nshedule = \"* * * * *\"\n",
        ),
    );
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, EX_CONFIG);
    assert!(
        stderr.contains("sync.briefs.shedule: unknown key"),
        "{stderr}"
    );
}

#[test]
fn a_bad_schedule_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        &GOOD.replace("*/2 * * * *", "every two minutes"),
    );
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, EX_CONFIG);
    assert!(stderr.starts_with("sync.briefs.schedule: "), "{stderr}");
}

#[test]
fn an_env_override_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        &GOOD.replace("[clairo]\n", "[clairo]\nbase_url = \"nope\"\n"),
    );
    let (code, _, _) = check(&path, &[]);
    assert_eq!(code, EX_CONFIG, "the file alone is invalid");
    let (code, stdout, stderr) = check(
        &path,
        &[("CLAIRO_SYNC_CLAIRO__BASE_URL", "http://127.0.0.1:9/api/v1")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "ok");
    // And an override can break what the file had right.
    let (code, _, stderr) = check(
        &path,
        &[
            ("CLAIRO_SYNC_CLAIRO__BASE_URL", "http://127.0.0.1:9/api/v1"),
            ("CLAIRO_SYNC_DELIVERY__CONCURRENCY", "0"),
        ],
    );
    assert_eq!(code, EX_CONFIG);
    assert!(stderr.contains("delivery.concurrency: "), "{stderr}");
}

#[test]
fn the_api_key_comes_from_a_file_or_a_systemd_credential() {
    let dir = tempfile::tempdir().unwrap();
    let without_key = GOOD.replace("api_key = \"clr_test_key_123\"", "");
    let path = write(dir.path(), "c.toml", &without_key);
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, EX_CONFIG);
    assert!(
        stderr.contains("clairo.api_key: no API key found"),
        "{stderr}"
    );

    let credentials = dir.path().join("creds");
    std::fs::create_dir(&credentials).unwrap();
    write(&credentials, "clairo-api-key", "clr_from_credential\n");
    let (code, _, stderr) = check(
        &path,
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{stderr}");

    let key_file = write(dir.path(), "api-key", "clr_from_file\n");
    let with_file = without_key.replace(
        "[clairo]\n",
        &format!("[clairo]\napi_key_file = {:?}\n", key_file),
    );
    let path = write(dir.path(), "c2.toml", &with_file);
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_missing_config_file_says_how_to_make_one() {
    let (code, _, stderr) = check(Path::new("/nonexistent/clairo-sync.toml"), &[]);
    assert_eq!(code, EX_CONFIG);
    assert!(
        stderr.contains("/nonexistent/clairo-sync.toml does not exist"),
        "{stderr}"
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(
        dir.path(),
        "hook-secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    );
    let text = format!(
        "{GOOD}\n[connectors.hook]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsecret_file = {secret_file:?}\n"
    );
    let path = write(dir.path(), "c.toml", &text);
    let loaded = config::load(Some(&path), Need::Daemon, &SecretSources::default()).expect("valid");
    let debug = format!("{loaded:?}");
    assert!(!debug.contains("clr_test_key_123"), "{debug}");
    assert!(
        !debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "{debug}"
    );
    assert!(debug.contains("**REDACTED**"));
    assert_eq!(
        loaded.api_key.as_ref().unwrap().expose(),
        "clr_test_key_123"
    );
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/clairo-sync.toml");
    let dir = tempfile::tempdir().unwrap();
    for name in ["api-key", "sales_hook-secret"] {
        let value = if name == "api-key" {
            "clr_example"
        } else {
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        };
        write(dir.path(), name, value);
    }
    let (code, stdout, stderr) = check(
        &example,
        &[
            (
                "CLAIRO_SYNC_CLAIRO__API_KEY_FILE",
                dir.path().join("api-key").to_str().unwrap(),
            ),
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
        ],
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn the_example_configs_optional_connectors_are_valid_when_uncommented() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/clairo-sync.toml"),
    )
    .unwrap();
    let start = example
        .find("# BEGIN optional connectors")
        .expect("the block exists");
    let end = example
        .find("# END optional connectors")
        .expect("the block ends");
    let block: String = example[start..end]
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| {
            line.starts_with('[')
                || line
                    .split_once(" = ")
                    .is_some_and(|(key, _)| !key.contains(' '))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    for kind in [
        "type = \"email\"",
        "type = \"hubspot\"",
        "type = \"pipedrive\"",
        "type = \"slack\"",
        "type = \"teams\"",
    ] {
        assert!(block.contains(kind), "the example shows {kind}");
    }
    let text = format!("{}\n{block}", &example[..start]) + &example[end..];
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("api-key", "clr_example"),
        (
            "sales_hook-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
    ] {
        write(dir.path(), name, value);
    }
    let path = write(dir.path(), "c.toml", &text);
    let secret_files = ["smtp-password", "hubspot-token", "pipedrive-token"];
    let mut text = std::fs::read_to_string(&path).unwrap();
    for name in secret_files {
        let file = write(dir.path(), name, "secret-value");
        text = text.replace(&format!("/etc/clairo-sync/{name}"), file.to_str().unwrap());
    }
    for (name, url) in [
        (
            "slack-url",
            "https://hooks.slack.com/services/T1/B2/example",
        ),
        (
            "teams-url",
            "https://prod-00.westeurope.logic.azure.com/workflows/example",
        ),
    ] {
        let file = write(dir.path(), name, url);
        text = text.replace(&format!("/etc/clairo-sync/{name}"), file.to_str().unwrap());
    }
    text = text.replace("templates_dir = \"/etc/clairo-sync/templates\"", "");
    std::fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = check(
        &path,
        &[
            (
                "CLAIRO_SYNC_CLAIRO__API_KEY_FILE",
                dir.path().join("api-key").to_str().unwrap(),
            ),
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
        ],
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn outside_the_service_the_credentials_are_read_where_the_unit_loads_them_from() {
    // A root shell has no $CREDENTIALS_DIRECTORY: `clairo-sync check` reads the files the
    // unit's LoadCredential= lines name (/etc/clairo-sync/api-key, …/<connector>-<key>).
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "api-key", "clr_from_etc\n");
    write(
        dir.path(),
        "hook-secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    );
    let text = GOOD.replace("api_key = \"clr_test_key_123\"", "")
        + "\n[connectors.hook]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\n";
    let path = write(dir.path(), "c.toml", &text);
    let sources = SecretSources {
        credential_sources: Some(dir.path().to_path_buf()),
        ..SecretSources::default()
    };
    let loaded =
        config::load(Some(&path), Need::Daemon, &sources).expect("the credentials are found");
    assert_eq!(loaded.api_key.unwrap().expose(), "clr_from_etc");
    // Inside the service, $CREDENTIALS_DIRECTORY wins.
    let service = tempfile::tempdir().unwrap();
    write(service.path(), "clairo-api-key", "clr_from_service\n");
    let sources = SecretSources {
        credentials_dir: Some(service.path().to_path_buf()),
        credential_sources: Some(dir.path().to_path_buf()),
        ..SecretSources::default()
    };
    let loaded = config::load(Some(&path), Need::Daemon, &sources).unwrap();
    assert_eq!(loaded.api_key.unwrap().expose(), "clr_from_service");
}

/// `check` on `text`: "ok" when `ok`, else exit 78 with a line for `key` that holds
/// `advice`.
fn check_case(label: &str, text: &str, ok: bool, key: &str, advice: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "c.toml", text);
    let (code, stdout, stderr) = check(&path, &[]);
    if ok {
        assert_eq!((code, stdout.trim()), (0, "ok"), "{label:?}: {stderr}");
    } else {
        assert_eq!(code, EX_CONFIG, "{label:?} was accepted");
        assert!(
            stderr.starts_with(&format!("{key}: ")) && stderr.contains(advice),
            "{label:?}: {stderr}"
        );
    }
}

#[test]
fn a_log_level_that_is_not_a_filter_names_its_key() {
    for (level, ok) in [
        ("debug", true),
        ("info,clairo_sync=debug", true),
        ("warn, sqlx = error", true),
        // A typo would otherwise be read as a module name and silence every other line.
        ("inf", false),
        ("info,clairo_sync=loud", false),
        ("=debug", false),
        ("", false),
    ] {
        let text = format!("log_level = {level:?}\n{GOOD}");
        check_case(level, &text, ok, "log_level", "; write a level");
    }
}

#[test]
fn the_delivered_retention_is_a_duration_or_forever() {
    for (retention, ok) in [
        ("30d", true),
        ("12h", true),
        ("forever", true),
        ("0s", false),
        ("a month", false),
    ] {
        let text = GOOD.replace(
            "[state]\n",
            &format!("[state]\ndelivered_retention = {retention:?}\n"),
        );
        check_case(retention, &text, ok, "state.delivered_retention", "forever");
    }
}
