//! Webhook bodies and secret rotation through the real binary: a `body_template` shapes
//! what the receiver gets, every request carries one signature per secret, and the
//! Standard Webhooks reference verifier (Python, from PyPI) accepts it with either secret.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Received, Receiver, SECRET, run_cli, sandbox, write};

/// The secret rotated in beside [`SECRET`].
const NEW_SECRET: &str = "whsec_cm90YXRlZC1pbi1zZWNyZXQta2V5LTI0";
/// A secret the daemon does not have.
const OTHER_SECRET: &str = "whsec_YW4tdW5yZWxhdGVkLXNlY3JldC1oZXJl";

fn config(dir: &Path, base_url: &str, hook: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[clairo]
base_url = "{base_url}"
api_key = "clr_sandbox_key"

[state]
path = "{state}"

[http]
enabled = false

[sync.briefs]
schedule = "*/2 * * * * *"

[connectors.hook]
type = "webhook"
{hook}

[[routes]]
events = ["brief.created"]
to = ["hook"]
"#,
        state = dir.join("state.db").display(),
    );
    write(dir, "clairo-sync.toml", &text)
}

/// Whether the reference verifier accepts `request` with `secret`.
fn reference_verifies(request: &Received, secret: &str) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_webhook.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(secret)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test-prereqs.sh installs standardwebhooks)");
    let input = serde_json::json!({
        "headers": {
            "webhook-id": request.id,
            "webhook-timestamp": request.timestamp,
            "webhook-signature": request.signature,
        },
        "body": String::from_utf8(request.body.to_vec()).unwrap(),
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the reference verifier is not installed: run scripts/test-prereqs.sh ({stderr})"
    );
    output.status.success()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_templated_body_signed_with_two_secrets_verifies_with_each_in_the_reference_verifier() {
    let sandbox = sandbox(1, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = write(
        dir.path(),
        "webhook-secret",
        &format!("{SECRET}\n{NEW_SECRET}\n"),
    );
    let config = config(
        dir.path(),
        &sandbox.base_url(),
        &format!(
            r#"url = "{url}"
secret_file = "{secrets}"
body_template = '{{"lead": {{{{ data.id }}}}, "email": {{{{ contact_email }}}}, "text": {{{{ data.summary }}}}, "kind": {{{{ type }}}}}}'
"#,
            url = receiver.url,
            secrets = secrets.display(),
        ),
    );

    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config.to_str().unwrap()]);

    assert_eq!(code, 0, "{stderr}");
    let received = receiver.delivered();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    let body = request.json();
    assert_eq!(body["kind"], "brief.created");
    assert!(
        body["lead"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    assert!(
        body["email"]
            .as_str()
            .is_some_and(|email| email.contains('@')),
        "{body}"
    );
    assert!(
        body.get("data").is_none(),
        "the envelope was sent instead: {body}"
    );
    assert_eq!(
        request.signature.split(' ').count(),
        2,
        "{}",
        request.signature
    );
    assert!(
        request
            .signature
            .split(' ')
            .all(|part| part.starts_with("v1,"))
    );
    assert!(reference_verifies(request, SECRET), "the old secret");
    assert!(reference_verifies(request, NEW_SECRET), "the new secret");
    assert!(
        !reference_verifies(request, OTHER_SECRET),
        "a secret it does not have"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_template_that_does_not_make_json_is_refused_by_check() {
    let sandbox = sandbox(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sandbox.base_url(),
        &format!(
            r#"url = "http://127.0.0.1:9/hook"
secret = "{SECRET}"
# Quotes around a value that is already written as JSON: "text": ""…"".
body_template = '{{"text": "{{{{ data.summary }}}}"}}'
"#
        ),
    );

    let (code, _, stderr) = run_cli(&["check", "-c", config.to_str().unwrap()]);

    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr
            .contains("connectors.hook.body_template: `body_template` did not produce valid JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("on a sample brief.created event"),
        "{stderr}"
    );
    assert!(
        stderr.contains("{{ data.summary | slack_text }}"),
        "{stderr}"
    );
}
