//! Slack and Teams through the real binary: a brief from the sandbox reaches a local Slack
//! webhook escaped, the webhook URL (a secret) stays out of the log and /metrics even when
//! a delivery fails, and `check` refuses a template that does not make JSON.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clairo_connectors::slack::fake::FakeSlack;
use clairo_sandbox::BriefSpec;

use crate::support::{LoggedDaemon, bin, get, sandbox, write};

/// In every webhook URL of these tests, so a leak is easy to find.
const TOKEN: &str = "tok_e2e_c0ffee_d00d";

fn config(dir: &Path, base_url: &str, connectors: &str, to: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[clairo]
base_url = "{base_url}"
api_key = "clr_sandbox_key"

[state]
path = "{state}"

[http]
listen = "127.0.0.1:0"

[sync.briefs]
schedule = "*/2 * * * * *"

{connectors}

[[routes]]
events = ["brief.created"]
to = {to}
"#,
        state = dir.join("state.db").display(),
    );
    write(dir, "clairo-sync.toml", &text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_brief_with_pings_and_markdown_reaches_slack_escaped_and_the_url_never_leaks() {
    let sandbox = sandbox(0, 0).await;
    sandbox.add_brief(BriefSpec {
        name: "Mallory".to_owned(),
        email: Some("mallory@example.com".to_owned()),
        company: "<!channel> @everyone *ACME* [win](https://evil.example)".to_owned(),
        budget: "$500+/month".to_owned(),
    });
    let slack = FakeSlack::start_at(&format!("/services/T0E2E/B0E2E/{TOKEN}")).await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = write(dir.path(), "sales-url", &format!("{}\n", slack.url));
    // The same workspace, but a webhook that was removed: Slack answers 404 no_service.
    let gone_file = write(dir.path(), "gone-url", &format!("{}-removed\n", slack.url));
    let config = config(
        dir.path(),
        &sandbox.base_url(),
        &format!(
            "[connectors.sales_slack]\ntype = \"slack\"\nurl_file = \"{}\"\n\n\
             [connectors.old_slack]\ntype = \"slack\"\nurl_file = \"{}\"\n",
            url_file.display(),
            gone_file.display()
        ),
        r#"["sales_slack", "old_slack"]"#,
    );

    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    let messages = slack.wait_for_messages(1, Duration::from_secs(30)).await;
    let dead = daemon
        .wait_for_line("Delivery is dead", Duration::from_secs(30))
        .await;

    assert_eq!(messages.len(), 1, "no message reached Slack");
    assert!(slack.rejections().is_empty(), "{:?}", slack.rejections());
    let message = serde_json::to_string(&messages[0]).unwrap();
    assert!(!message.contains("<!channel>"), "{message}");
    assert!(message.contains("&lt;!channel&gt;"), "{message}");
    assert!(!message.contains("@everyone"), "{message}");
    assert!(message.contains("@\u{200B}everyone"), "{message}");
    assert!(!message.contains("https://evil"), "{message}");
    let header = messages[0]["blocks"][0]["text"].clone();
    assert_eq!(header["type"], "plain_text", "Markdown would be formatted");
    assert!(
        header["text"]
            .as_str()
            .unwrap()
            .starts_with("New lead: Mallory (&lt;!channel&gt;"),
        "{header}"
    );
    assert!(message.contains("mailto:mallory@example.com"), "{message}");

    let dead = dead.expect("the removed webhook's delivery is dead");
    assert!(
        dead.contains("old_slack") && dead.contains("no_service"),
        "{dead}"
    );
    let response = get(format!("http://{address}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let metrics = response.text().await.unwrap();
    assert!(metrics.contains("connector=\"sales_slack\""), "{metrics}");
    assert!(
        !metrics.contains("c0ffee"),
        "the URL's token is in /metrics"
    );
    let log = daemon.log().join("\n");
    assert!(
        !log.contains("c0ffee"),
        "the URL's token is in the log:\n{log}"
    );
    assert!(
        !log.contains("/services/"),
        "the URL's path is in the log:\n{log}"
    );
}

fn check(config: &Path) -> (i32, String, String) {
    let output = Command::new(bin())
        .args(["check", "-c"])
        .arg(config)
        .env_remove("CLAIRO_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_refuses_a_template_that_renders_invalid_json_naming_templates_dir() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    // Quoted: the value brings its own quotes, so the output is `""…""`.
    write(
        &templates,
        "brief.created.slack.json",
        r#"{"text": "{{ data.summary | slack_text }}"}"#,
    );
    let url_file = write(
        dir.path(),
        "teams-url",
        &format!("https://prod-00.westeurope.logic.azure.com/workflows/{TOKEN}"),
    );
    let config = config(
        dir.path(),
        "https://clairo.tech/api/v1",
        &format!(
            "[connectors.sales_slack]\ntype = \"slack\"\nurl = \"https://hooks.slack.com/services/T1/B2/{TOKEN}\"\ntemplates_dir = \"{}\"\n\n\
             [connectors.sales_teams]\ntype = \"teams\"\nurl_file = \"{}\"\n",
            templates.display(),
            url_file.display()
        ),
        r#"["sales_slack", "sales_teams"]"#,
    );

    let (code, _, stderr) = check(&config);

    assert_eq!(code, 78, "stderr: {stderr}");
    assert!(
        stderr.contains("connectors.sales_slack.templates_dir: `brief.created.slack.json` did not produce valid JSON"),
        "{stderr}"
    );
    assert!(!stderr.contains("sales_teams"), "{stderr}");
    assert!(!stderr.contains("c0ffee"), "{stderr}");
}

#[test]
fn check_refuses_a_chat_url_over_plain_http_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = write(
        dir.path(),
        "slack-url",
        &format!("http://hooks.slack.com/services/T1/B2/{TOKEN}"),
    );
    let config = config(
        dir.path(),
        "https://clairo.tech/api/v1",
        &format!(
            "[connectors.sales_slack]\ntype = \"slack\"\nurl_file = \"{}\"\n",
            url_file.display()
        ),
        r#"["sales_slack"]"#,
    );

    let (code, _, stderr) = check(&config);

    assert_eq!(code, 78, "stderr: {stderr}");
    assert!(stderr.contains("connectors.sales_slack.url: "), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
    assert!(!stderr.contains("c0ffee"), "{stderr}");
}
