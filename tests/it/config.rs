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

/// An email connector (whose password may be any text) and a webhook, for the secret tests.
fn with_secrets(mail_password: &str, hook_extra: &str) -> String {
    format!(
        r#"{GOOD}
[connectors.mail]
type = "email"
smtp_url = "smtp://mail.example.com:587"
username = "clairo@example.com"
{mail_password}
from = "Clairo <clairo@example.com>"
to = ["sales@example.com"]

[connectors.hook]
type = "webhook"
url = "https://hooks.example.com/clairo"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
{hook_extra}
"#
    )
}

#[test]
fn a_numeric_secret_in_toml_or_env_is_taken_as_text_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write(
        dir.path(),
        "toml.toml",
        &with_secrets(
            "password = 98765432",
            "headers = { \"X-Gateway-Token\" = 4455667788 }",
        ),
    );
    let (code, stdout, stderr) = check(&toml, &[]);
    assert_eq!(code, 0, "a numeric password is a valid password:\n{stderr}");
    for value in ["98765432", "4455667788"] {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "{stdout}{stderr}"
        );
    }

    let env = write(dir.path(), "env.toml", &with_secrets("", ""));
    let (code, stdout, stderr) = check(
        &env,
        &[
            ("CLAIRO_SYNC_CONNECTORS__MAIL__PASSWORD", "12345678"),
            ("CLAIRO_SYNC_CONNECTORS__HOOK__HEADERS__X-TOKEN", "true"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("12345678") && !stderr.contains("12345678"));

    // A numeric API key (from env) is read as text: not a Clairo key (those start with
    // clr_), said without echoing it.
    let keyless = write(
        dir.path(),
        "key.toml",
        &with_secrets("password = \"x\"", "").replace("api_key = \"clr_test_key_123\"", ""),
    );
    let (code, _, stderr) = check(&keyless, &[("CLAIRO_SYNC_CLAIRO__API_KEY", "31415926")]);
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(
        stderr.starts_with("clairo.api_key: the key does not start with clr_"),
        "{stderr}"
    );
    assert!(!stderr.contains("31415926"), "{stderr}");
}

#[test]
fn a_list_table_or_fraction_at_a_secret_key_is_named_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    for (label, password, hook_extra, key) in [
        (
            "list",
            "password = [\"hunter2secret\", 1]",
            "",
            "connectors.mail.password: ",
        ),
        (
            "table",
            "password = { value = \"hunter2secret\" }",
            "",
            "connectors.mail.password: ",
        ),
        (
            "fraction",
            "password = 1.2345678",
            "",
            "connectors.mail.password: ",
        ),
        (
            "header list",
            "password = \"x\"",
            "headers = { \"X-Token\" = [\"hunter2secret\"] }",
            "connectors.hook.headers.X-Token: ",
        ),
    ] {
        let path = write(dir.path(), "c.toml", &with_secrets(password, hook_extra));
        let (code, _, stderr) = check(&path, &[]);
        assert_eq!(code, EX_CONFIG, "{label}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|line| line.starts_with(key) && line.contains("; ")),
            "{label}: no line names {key:?} with advice:\n{stderr}"
        );
        for leaked in ["hunter2secret", "1.2345678", "1.234"] {
            assert!(
                !stderr.contains(leaked),
                "{label}: leaked {leaked}:\n{stderr}"
            );
        }
    }
}

#[test]
fn plain_http_to_clairo_is_refused_unless_the_host_is_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let with_base =
        |base: &str| GOOD.replace("[clairo]\n", &format!("[clairo]\nbase_url = \"{base}\"\n"));
    for base in [
        "http://clairo.example.com/api/v1",
        "http://10.0.0.5:8080/api/v1",
        "http://0.0.0.0:8080/api/v1",
    ] {
        let path = write(dir.path(), "c.toml", &with_base(base));
        let (code, _, stderr) = check(&path, &[]);
        assert_eq!(code, EX_CONFIG, "{base}: {stderr}");
        assert!(
            stderr.starts_with("clairo.base_url: ") && stderr.contains("use https://"),
            "{base}: {stderr}"
        );
    }
    // The same from the environment, as the operator commands take it.
    let path = write(dir.path(), "c.toml", GOOD);
    let (code, _, stderr) = check(
        &path,
        &[(
            "CLAIRO_SYNC_CLAIRO__BASE_URL",
            "http://clairo.example.com/api/v1",
        )],
    );
    assert_eq!(code, EX_CONFIG, "{stderr}");
    for base in [
        "http://127.0.0.1:8080/api/v1",
        "http://127.1.2.3/api/v1",
        "http://localhost:8080/api/v1",
        "http://[::1]:8080/api/v1",
        "https://clairo.example.com/api/v1",
    ] {
        let path = write(dir.path(), "c.toml", &with_base(base));
        let (code, _, stderr) = check(&path, &[]);
        assert_eq!(code, 0, "{base}: {stderr}");
    }
}

/// A unit directory for `$SYSTEMD_UNIT_PATH` holding a `clairo-sync.service` whose
/// credential lines are `load_credentials`, and drop-ins `dropins` (name, text).
fn unit_dir(dir: &Path, load_credentials: &[String], dropins: &[(&str, &str)]) -> String {
    let units = dir.join("units");
    std::fs::create_dir_all(units.join("clairo-sync.service.d")).unwrap();
    let mut unit =
        String::from("[Service]\nExecStart=/usr/bin/clairo-sync run\nProtectSystem=strict\n");
    for line in load_credentials {
        unit.push_str(&format!("LoadCredential={line}\n"));
    }
    write(&units, "clairo-sync.service", &unit);
    for (name, text) in dropins {
        write(&units.join("clairo-sync.service.d"), name, text);
    }
    units.to_str().unwrap().to_owned()
}

/// GOOD without its inline key, with a webhook `hook` that needs a secret.
fn needs_secrets() -> String {
    GOOD.replace("api_key = \"clr_test_key_123\"", "")
        + "\n[connectors.hook]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\n"
}

#[test]
fn outside_the_service_check_reads_the_secrets_the_unit_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path();
    write(etc, "api-key", "clr_from_etc\n");
    std::fs::create_dir(etc.join("credentials")).unwrap();
    write(
        &etc.join("credentials"),
        "hook-secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    );
    let units = unit_dir(
        etc,
        &[
            format!("clairo-api-key:{}", etc.join("api-key").display()),
            format!("credentials:{}", etc.join("credentials").display()),
        ],
        &[],
    );
    let path = write(etc, "clairo-sync.toml", &needs_secrets());
    let (code, stdout, stderr) = check(&path, &[("SYSTEMD_UNIT_PATH", &units)]);
    assert_eq!((code, stdout.trim()), (0, "ok"), "{stderr}");

    // Inside the service the same secret arrives as `credentials_hook-secret`.
    let service = tempfile::tempdir().unwrap();
    write(service.path(), "clairo-api-key", "clr_from_service\n");
    write(
        service.path(),
        "credentials_hook-secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    );
    let (code, _, stderr) = check(
        &path,
        &[("CREDENTIALS_DIRECTORY", service.path().to_str().unwrap())],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn check_of_an_account_config_judges_secrets_as_that_accounts_template_instance_would() {
    // The per-account template as shipped, its paths moved into a temporary "/etc".
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path();
    let units = etc.join("units");
    std::fs::create_dir(&units).unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/clairo-sync@.service"),
    )
    .unwrap();
    write(
        &units,
        "clairo-sync@.service",
        &shipped.replace("/etc/clairo-sync/", &format!("{}/", etc.display())),
    );
    let units = units.to_str().unwrap();
    // The main unit's key is there, the account's is not: the instance would not start.
    std::fs::create_dir(etc.join("acme-credentials")).unwrap();
    write(etc, "api-key", "clr_main_account\n");
    let path = write(etc, "acme.toml", &needs_secrets());
    let (code, _, stderr) = check(&path, &[("SYSTEMD_UNIT_PATH", units)]);
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(
        stderr.contains(&etc.join("acme-api-key").display().to_string()),
        "{stderr}"
    );
    // The account's key and its webhook secret in its own credentials directory.
    write(etc, "acme-api-key", "clr_acme_account\n");
    write(
        &etc.join("acme-credentials"),
        "hook-secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    );
    let (code, stdout, stderr) = check(&path, &[("SYSTEMD_UNIT_PATH", units)]);
    assert_eq!((code, stdout.trim()), (0, "ok"), "{stderr}");

    // A config the template does not run is judged by the main unit, as before.
    let other = write(etc, "elsewhere.toml", &needs_secrets());
    std::fs::rename(&other, etc.join("units/elsewhere.toml")).unwrap();
    let (code, _, stderr) = check(
        &etc.join("units/elsewhere.toml"),
        &[("SYSTEMD_UNIT_PATH", units)],
    );
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(!stderr.contains("acme"), "{stderr}");
}

#[test]
fn a_secret_file_the_unit_does_not_load_is_named_with_the_line_to_add() {
    // The old advice put connector secrets beside the config; the unit never loaded them,
    // so root's check said ok and the service exited 78.
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path();
    write(etc, "api-key", "clr_from_etc\n");
    std::fs::create_dir(etc.join("credentials")).unwrap();
    write(
        etc,
        "hook-secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    );
    let api_key_line = format!("clairo-api-key:{}", etc.join("api-key").display());
    let units = unit_dir(
        etc,
        &[
            api_key_line.clone(),
            format!("credentials:{}", etc.join("credentials").display()),
        ],
        &[],
    );
    let path = write(etc, "clairo-sync.toml", &needs_secrets());
    let (code, _, stderr) = check(&path, &[("SYSTEMD_UNIT_PATH", &units)]);
    assert_eq!(code, EX_CONFIG, "{stderr}");
    let stray = etc.join("hook-secret");
    let line = stderr
        .lines()
        .find(|line| line.starts_with("connectors.hook.secret: "))
        .unwrap_or_else(|| panic!("no line for the secret:\n{stderr}"));
    assert!(
        line.contains(&format!("LoadCredential=hook-secret:{}", stray.display()))
            && line.contains(
                &etc.join("credentials")
                    .join("hook-secret")
                    .display()
                    .to_string()
            ),
        "{line}"
    );

    // With the drop-in line the message asked for, check agrees with the service.
    let units = unit_dir(
        etc,
        &[api_key_line],
        &[(
            "secrets.conf",
            &format!(
                "[Service]\nLoadCredential=hook-secret:{}\n",
                stray.display()
            ),
        )],
    );
    let (code, _, stderr) = check(&path, &[("SYSTEMD_UNIT_PATH", &units)]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn the_service_user_is_told_to_run_check_as_root() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path();
    std::fs::set_permissions(etc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = write(etc, "api-key", "clr_root_only\n");
    let units = unit_dir(etc, &[format!("clairo-api-key:{}", key.display())], &[]);
    let path = write(
        etc,
        "clairo-sync.toml",
        &GOOD.replace("api_key = \"clr_test_key_123\"", ""),
    );
    for entry in [etc.join("units"), etc.join("units/clairo-sync.service.d")] {
        std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let root = std::fs::metadata("/proc/self")
        .is_ok_and(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0);
    // Root-only, as the docs install it; a non-root test run cannot read a mode-0 file either.
    std::fs::set_permissions(
        &key,
        std::fs::Permissions::from_mode(if root { 0o600 } else { 0 }),
    )
    .unwrap();
    let mut command = if root {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(bin());
        command
    } else {
        Command::new(bin())
    };
    let output = command
        .args(["check", "-c"])
        .arg(&path)
        .env_remove("CLAIRO_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("SYSTEMD_UNIT_PATH", &units)
        .output()
        .expect("check runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(
        stderr.contains("sudo clairo-sync check") && !stderr.contains("may read it"),
        "{stderr}"
    );
}

#[test]
fn a_syntax_error_is_one_located_line_and_other_problems_still_show() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("[sync.briefs]\n", "[sync.briefs]\nlimit = 10 20\n")
        + "\n[delivery]\nconcurency = 4\n";
    let path = write(dir.path(), "c.toml", &text);
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, EX_CONFIG, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let line_of = |needle: &str| {
        text.lines()
            .position(|line| line.contains(needle))
            .map(|index| index + 1)
            .unwrap()
    };
    let at = format!("{}:{}:", path.display(), line_of("limit = 10 20"));
    assert!(
        lines[0].starts_with(&at) && lines[0].contains("; "),
        "the syntax error, located, with advice, on one line:\n{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("delivery.concurency: unknown key")
                && line.contains(&format!("{}:{}", path.display(), line_of("concurency")))),
        "the misspelt key further down is reported too:\n{stderr}"
    );
    assert_eq!(lines.len(), 2, "{stderr}");
}

#[test]
fn several_unknown_keys_in_a_section_get_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "[sync.briefs]\n",
        "[sync.briefs]\nshedule = \"* * * * *\"\nlimt = 5\n",
    );
    let path = write(dir.path(), "c.toml", &text);
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, EX_CONFIG);
    for key in [
        "sync.briefs.shedule: unknown key",
        "sync.briefs.limt: unknown key",
    ] {
        assert!(
            stderr.lines().filter(|line| line.starts_with(key)).count() == 1,
            "one line for {key}:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_online_judges_a_file_connector_as_the_unit_and_sends_tests_to_no_file() {
    use crate::support::{Receiver, daemon_config, sandbox};
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    // Not under /tmp or /var/tmp, which the unit's PrivateTmp= makes private (and
    // writable): the target directory itself may be there (a clone in /tmp), so as root (CI,
    // the project's machines) the directory goes under /var/lib, read-only to the unit.
    let dir = tempfile::Builder::new()
        .prefix("clairo-sync-test-")
        .tempdir_in("/var/lib")
        .or_else(|_| tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")))
        .unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    // ProtectSystem=strict: the archive's directory is read-only to the service unless
    // the unit says otherwise.
    let units = unit_dir(dir.path(), &[], &[]);
    let (code, stdout, stderr) =
        check_args(&config, &["--online"], &[("SYSTEMD_UNIT_PATH", &units)]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let advice = format!("ReadWritePaths={}", dir.path().display());
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with("connectors.archive: ") && line.contains(&advice)),
        "{stderr}"
    );

    let units = unit_dir(
        dir.path(),
        &[],
        &[("paths.conf", &format!("[Service]\n{advice}\n"))],
    );
    let (code, stdout, stderr) = check_args(
        &config,
        &["--online", "--send-test"],
        &[("SYSTEMD_UNIT_PATH", &units)],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "the webhook gets the test event");
    assert_eq!(received[0].json()["data"]["test"], true);
    assert!(
        !dir.path().join("events.jsonl").exists(),
        "no test event in the archive, and no file written as root"
    );
    assert!(stdout.contains("connectors.archive: "), "{stdout}");
}

fn check_args(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(bin())
        .arg("check")
        .args(args)
        .arg("-c")
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
