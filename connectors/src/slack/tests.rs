use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::fake::{FakeSlack, Fault};
use super::*;
use crate::chat::text::DEFUSE;
use crate::testkit::*;
use crate::{Connector, ConnectorConfig, Event, EventType};

fn connector(config: &SlackConfig) -> SlackConnector {
    SlackConnector::new("sales_slack", config).unwrap()
}

fn hostile_brief(summary: &str) -> Event {
    brief(
        json!({"name": "Eve <!here>", "email": "eve@example.com", "company": "*Evil* & Co"}),
        summary,
    )
}

#[tokio::test]
async fn every_built_in_message_is_accepted_by_slack() {
    let fake = FakeSlack::start().await;
    let connector = connector(&chat_config(&fake.url));
    let events = [
        john_brief(),
        anonymous_brief(),
        meeting(),
        conversation(),
        crate::email::sample_event(EventType::ConversationUpdated),
        event(EventType::MeetingProcessed, "empty", json!({})),
        event(EventType::BriefCreated, "empty", json!({})),
    ];
    for event in &events {
        let attempt = first_attempt(&connector, event).await;
        assert_eq!(
            attempt.verdict,
            Verdict::Delivered,
            "{}: {attempt:?}",
            event.kind
        );
        assert_eq!(attempt.status_code, Some(200));
        assert_eq!(attempt.response.as_deref(), Some("ok"));
    }
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    let messages = fake.messages();
    assert_eq!(messages.len(), events.len());
    assert_eq!(
        messages[0]["blocks"][0]["text"]["text"],
        "New lead: John Smith (TechStart)"
    );
    let meeting = all_text(&messages[2]);
    assert!(
        meeting.contains("Meeting processed: Weekly standup (45 min)"),
        "{meeting}"
    );
    assert!(meeting.contains("Decided to ship."), "{meeting}");
}

#[tokio::test]
async fn pings_markup_and_links_in_a_brief_are_escaped_so_nobody_is_notified() {
    let fake = FakeSlack::start().await;
    let summary = "<!channel> <!everyone> <@U024BE7LH> @everyone @here: visit <https://evil.example|your bank> \
                   or https://evil.example/login & *act now*";

    let attempt = first_attempt(&connector(&chat_config(&fake.url)), &hostile_brief(summary)).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let message = &fake.messages()[0];
    let text = all_text(message);
    for raw in [
        "<!channel>",
        "<!everyone>",
        "<!here>",
        "<@U024BE7LH>",
        "<https://",
        "@everyone",
        "@here",
        "https://evil",
        " & ",
    ] {
        assert!(!text.contains(raw), "{raw:?} reached Slack as is:\n{text}");
    }
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(text.contains(&format!("@{DEFUSE}everyone")), "{text}");
    assert!(text.contains("&amp; *act now*"), "{text}");
    assert_eq!(
        message["blocks"][0]["text"]["text"],
        "New lead: Eve &lt;!here&gt; (*Evil* &amp; Co)"
    );
    // Untrusted text is only ever in plain_text objects, which Slack does not format.
    for block in message["blocks"].as_array().unwrap() {
        for object in [&block["text"], &block["fields"], &block["elements"]] {
            let objects = object
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![object.clone()]);
            for object in objects.iter().filter(|object| !object.is_null()) {
                if object["type"] == "mrkdwn" {
                    assert_eq!(
                        object["text"],
                        "*Email*\n<mailto:eve@example.com|eve@example.com>"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn a_huge_summary_and_name_are_cut_to_slacks_limits_and_accepted() {
    let fake = FakeSlack::start().await;
    let event = brief(
        json!({"name": "N".repeat(400), "company": "&".repeat(3000)}),
        &"All work and no play. ".repeat(2000),
    );

    let attempt = first_attempt(&connector(&chat_config(&fake.url)), &event).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    let message = &fake.messages()[0];
    let header = message["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(header.chars().count() <= message::HEADER_CHARS, "{header}");
    assert!(header.ends_with('…'), "{header}");
    let summary = message["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(summary.starts_with("Summary\nAll work"), "{summary}");
    assert!(summary.chars().count() <= message::SECTION_CHARS);
    assert!(summary.ends_with('…'), "{summary}");
}

#[tokio::test]
async fn slacks_refusals_make_the_delivery_dead_with_slacks_reason() {
    let fake = FakeSlack::start().await;
    let connector = connector(&chat_config(&fake.url));
    let cases = [
        (
            Fault::ChannelNotFound,
            404,
            "channel_not_found",
            "create a new one",
        ),
        (Fault::NoService, 404, "no_service", "create a new one"),
        (
            Fault::ChannelIsArchived,
            410,
            "channel_is_archived",
            "unarchive it",
        ),
        (
            Fault::ActionProhibited,
            403,
            "action_prohibited",
            "ask a Slack admin",
        ),
        (Fault::InvalidToken, 403, "invalid_token", "revoked"),
    ];
    for (fault, status, word, advice) in cases {
        fake.inject(fault, 1);

        let attempt = first_attempt(&connector, &john_brief()).await;

        assert_eq!(attempt.status_code, Some(status), "{word}");
        assert_eq!(attempt.response.as_deref(), Some(word));
        let reason = permanent_of(&attempt);
        assert!(reason.contains(&format!("`{word}`")), "{reason}");
        assert!(reason.contains(advice), "{reason}");
        assert!(!reason.contains("XXXXXXXX"), "{reason}");
    }
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn a_message_slack_finds_invalid_is_dead_with_its_word() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Valid JSON, but a block type Slack does not know.
    template(
        dir.path(),
        "brief.created.slack.json",
        r#"{"blocks": [{"type": "banner", "text": {{ data.summary | slack_text }}}]}"#,
    );
    let mut config = chat_config(&fake.url);
    config.templates_dir = Some(dir.path().to_path_buf());

    let attempt = first_attempt(&connector(&config), &john_brief()).await;

    assert_eq!(attempt.status_code, Some(400));
    let reason = permanent_of(&attempt);
    assert!(reason.contains("`invalid_blocks`"), "{reason}");
    assert!(reason.contains("fix the template"), "{reason}");
    assert_eq!(fake.rejections(), [(400, "invalid_blocks".to_owned())]);
}

#[tokio::test]
async fn a_429_is_retried_after_slacks_retry_after_and_a_500_on_the_schedule() {
    let fake = FakeSlack::start().await;
    let connector = connector(&chat_config(&fake.url));
    fake.inject(
        Fault::RateLimited {
            retry_after_secs: 30,
        },
        1,
    );
    fake.inject(Fault::ServerError, 1);

    let limited = first_attempt(&connector, &john_brief()).await;
    let failed = first_attempt(&connector, &john_brief()).await;
    let delivered = first_attempt(&connector, &john_brief()).await;

    let (after, reason) = retry_of(&limited);
    assert_eq!(after, Some(Duration::from_secs(30)));
    assert!(
        reason.contains("rate-limiting") && reason.contains("wait 30s"),
        "{reason}"
    );
    let (after, reason) = retry_of(&failed);
    assert_eq!(after, None);
    assert!(
        reason.contains("500") && reason.contains("rollup_error"),
        "{reason}"
    );
    assert_eq!(delivered.verdict, Verdict::Delivered);
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn no_answer_in_time_or_no_connection_is_retried_and_never_names_the_url_path() {
    let fake = FakeSlack::start().await;
    fake.inject(Fault::Slow(Duration::from_secs(5)), 1);
    let mut slow = chat_config(&fake.url);
    slow.timeout = Duration::from_millis(300);

    let timed_out = first_attempt(&connector(&slow), &john_brief()).await;
    let address = unused_address();
    let refused = first_attempt(
        &connector(&chat_config(&format!(
            "http://{address}/services/T1/B2/tok_in_path"
        ))),
        &john_brief(),
    )
    .await;

    let (_, reason) = retry_of(&timed_out);
    assert!(reason.contains("no answer within 300ms"), "{reason}");
    assert!(!reason.contains("services"), "{reason}");
    let (_, reason) = retry_of(&refused);
    assert!(
        reason.contains("could not connect") && reason.contains(&address.to_string()),
        "{reason}"
    );
    assert!(
        !reason.contains("tok_in_path") && !reason.contains("services"),
        "{reason}"
    );
}

fn template(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn a_template_replaces_the_built_in_and_inserts_values_as_escaped_json() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    template(
        dir.path(),
        "brief.created.slack.json",
        r#"{
  "text": {{ ("Lead " ~ data.answers.name) | slack_text }},
  "blocks": [
    {"type": "header", "text": {"type": "plain_text", "text": {{ data.answers.name | slack_text(150) }}}},
    {"type": "section", "text": {"type": "mrkdwn", "text": {{ data.summary | slack_text }}}},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": {{ ("`" ~ type ~ "` " ~ (contact_email or "no email")) }}}]}
  ]
}"#,
    );
    let mut config = chat_config(&fake.url);
    config.templates_dir = Some(dir.path().to_path_buf());
    let connector = connector(&config);

    let brief = hostile_brief("Quote \"this\"\nand <!channel>");
    let attempt = first_attempt(&connector, &brief).await;
    let meeting = first_attempt(&connector, &meeting()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(meeting.verdict, Verdict::Delivered, "{meeting:?}");
    let messages = fake.messages();
    assert_eq!(messages[0]["text"], "Lead Eve &lt;!here&gt;");
    assert_eq!(
        messages[0]["blocks"][1]["text"]["text"],
        "Quote \"this\"\nand &lt;!channel&gt;"
    );
    assert_eq!(
        messages[0]["blocks"][2]["elements"][0]["text"],
        "`brief.created` eve@example.com"
    );
    // Only brief.created has a template; the meeting got the built-in.
    assert_eq!(messages[1]["blocks"][0]["type"], "header");
    assert!(all_text(&messages[1]).contains("Weekly standup"));
}

#[tokio::test]
async fn a_template_that_writes_too_much_is_cut_to_the_limits_not_refused() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    template(
        dir.path(),
        "brief.created.slack.json",
        r#"{"text": "lead", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": {{ data.summary | slack_text }}}}]}"#,
    );
    let mut config = chat_config(&fake.url);
    config.templates_dir = Some(dir.path().to_path_buf());

    let attempt = first_attempt(&connector(&config), &hostile_brief(&"a & b ".repeat(100))).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let header = fake.messages()[0]["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        header.chars().count() <= 150 && header.ends_with('…'),
        "{header}"
    );
    assert!(
        !header.contains("&am…") && !header.contains("&…"),
        "{header}"
    );
}

#[tokio::test]
async fn a_template_that_renders_invalid_json_for_one_event_makes_that_delivery_dead() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Fine on the sample event (check passes), broken when a brief has no summary.
    template(
        dir.path(),
        "brief.created.slack.json",
        r#"{"text": {% if data.summary %}{{ data.summary | slack_text }}{% endif %}}"#,
    );
    let mut config = chat_config(&fake.url);
    config.templates_dir = Some(dir.path().to_path_buf());
    assert_eq!(validate(&config), Vec::new());

    let attempt = first_attempt(
        &connector(&config),
        &event(EventType::BriefCreated, "b", json!({})),
    )
    .await;

    let reason = permanent_of(&attempt);
    assert!(
        reason.contains("templates_dir: `brief.created.slack.json` did not produce valid JSON"),
        "{reason}"
    );
    assert!(reason.contains("replay"), "{reason}");
    assert_eq!(fake.requests(), 0);
}

#[test]
fn a_template_that_renders_invalid_json_is_a_problem_of_templates_dir() {
    let dir = tempfile::tempdir().unwrap();
    template(
        dir.path(),
        "brief.created.slack.json",
        r#"{"text": "{{ data.summary }}"}"#,
    );
    template(
        dir.path(),
        "meeting.processed.slack.json",
        r#"{"text": {{ data.title | nope }}}"#,
    );
    template(
        dir.path(),
        "conversation.updated.slack.json",
        r#"["not", "an", "object"]"#,
    );
    let mut config = chat_config("https://hooks.slack.com/services/T1/B2/tok");
    config.templates_dir = Some(dir.path().to_path_buf());

    let problems = validate(&config);

    assert_eq!(
        keys(&problems),
        ["templates_dir", "templates_dir", "templates_dir"],
        "{problems:?}"
    );
    let all: Vec<&str> = problems
        .iter()
        .map(|problem| problem.message.as_str())
        .collect();
    assert!(
        all[0].contains("`brief.created.slack.json` did not produce valid JSON"),
        "{all:?}"
    );
    assert!(
        all[1].contains("`conversation.updated.slack.json` produced JSON that is not an object"),
        "{all:?}"
    );
    assert!(
        all[2].contains("`meeting.processed.slack.json`") && all[2].contains("nope"),
        "{all:?}"
    );
    assert!(SlackConnector::new("sales_slack", &config).is_err());
}

#[tokio::test]
async fn probing_a_live_webhook_posts_nothing_and_a_removed_one_fails() {
    let fake = FakeSlack::start().await;
    let live = connector(&chat_config(&fake.url));
    let removed = connector(&chat_config(&format!("{}/gone", fake.url)));

    let description = live.probe().await.unwrap();
    let error = removed.probe().await.unwrap_err();
    assert!(matches!(error, ProbeError::Lasting(_)), "{error:?}");
    let error = error.to_string();

    assert!(description.contains("nothing was posted"), "{description}");
    assert!(error.contains("`no_service`"), "{error}");
    assert!(!error.contains("XXXXXXXX"), "{error}");
    assert!(fake.messages().is_empty());
    assert_eq!(fake.rejections(), [(400, "no_text".to_owned())]);
}

#[test]
fn a_slack_table_parses_with_url_file_and_refuses_unknown_keys() {
    let Ok(ConnectorConfig::Slack(config)) = table(
        r#"
        type = "slack"
        url_file = "/etc/clairo-sync/slack-url"
        templates_dir = "/etc/clairo-sync/templates"
        timeout = "30s"
    "#,
    ) else {
        panic!("not a slack connector");
    };
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert!(config.url.is_none());
    let error = table("type = \"slack\"\nurl_file = \"/x\"\nheaders = {}\n").unwrap_err();
    assert!(error.contains("headers"), "{error}");
    let printed = format!(
        "{:?}",
        table("type = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/tok_secret\"\n")
            .unwrap()
    );
    assert!(!printed.contains("tok_secret"), "{printed}");
}

#[tokio::test]
async fn the_fake_refuses_what_slack_refuses_with_slacks_words() {
    let fake = FakeSlack::start().await;
    crate::install_crypto_provider();
    let client = reqwest::Client::new();
    let section =
        |text: String| json!({"type": "section", "text": {"type": "plain_text", "text": text}});
    let header =
        |text: String| json!({"type": "header", "text": {"type": "plain_text", "text": text}});
    let cases = [
        (json!({}), "no_text"),
        (
            json!({"blocks": [header("h".repeat(151))]}),
            "invalid_blocks",
        ),
        (
            json!({"blocks": [section("s".repeat(3001))]}),
            "invalid_blocks",
        ),
        (
            json!({"blocks": vec![section("s".to_owned()); 51]}),
            "invalid_blocks",
        ),
        (json!({"blocks": [{"type": "marquee"}]}), "invalid_blocks"),
        (
            json!({"text": "fine", "blocks": [header("h".repeat(150)), section("s".repeat(3000))]}),
            "ok",
        ),
    ];
    for (message, word) in cases {
        let response = client.post(&fake.url).json(&message).send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(response.text().await.unwrap(), word, "{message}");
        assert_eq!(status, if word == "ok" { 200 } else { 400 }, "{message}");
    }
    let plain = client
        .post(&fake.url)
        .header("content-type", "text/plain")
        .body(r#"{"text": "hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 400);
    assert_eq!(plain.text().await.unwrap(), "invalid_payload");
    let payload: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", r#"{"text": "hi"}"#)
        .finish();
    let form = client
        .post(&fake.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(form.text().await.unwrap(), "ok");
}
