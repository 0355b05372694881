use std::time::Duration;

use serde_json::{Value, json};

use super::card::BODY_BUDGET_BYTES;
use super::fake::{FakeTeams, Fault};
use super::*;
use crate::chat::text::DEFUSE;
use crate::testkit::*;
use crate::{Connector, ConnectorConfig, EventType};

fn connector(config: &TeamsConfig) -> TeamsConnector {
    TeamsConnector::new("sales_teams", config).unwrap()
}

fn card(message: &Value) -> &Value {
    &message["attachments"][0]["content"]
}

#[tokio::test]
async fn every_built_in_card_is_accepted_by_teams() {
    let fake = FakeTeams::start().await;
    let connector = connector(&chat_config(&fake.url));
    let events = [
        john_brief(),
        anonymous_brief(),
        meeting(),
        conversation(),
        crate::email::sample_event(EventType::ConversationUpdated),
        event(EventType::MeetingProcessed, "empty", json!({})),
    ];
    for event in &events {
        let attempt = first_attempt(&connector, event).await;
        assert_eq!(
            attempt.verdict,
            Verdict::Delivered,
            "{}: {attempt:?}",
            event.kind
        );
        assert_eq!(attempt.status_code, Some(202));
    }
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    let messages = fake.messages();
    assert_eq!(messages.len(), events.len());
    assert_eq!(card(&messages[0])["version"], "1.4");
    let conversation = all_text(&messages[4]);
    assert!(conversation.contains("Agent · 14:30 UTC"), "{conversation}");
    assert!(
        conversation.contains("Hi! How can I help?"),
        "{conversation}"
    );
}

#[tokio::test]
async fn markdown_and_mentions_in_a_brief_show_as_typed() {
    let fake = FakeTeams::start().await;
    let event = brief(
        json!({"name": "<at>Everyone</at>", "company": "**ACME**", "need": "- [phish](https://evil.example)"}),
        "# Urgent\n1. _click_ `here`\n> quoted ~gone~ @everyone",
    );

    let attempt = first_attempt(&connector(&chat_config(&fake.url)), &event).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let text = all_text(card(&fake.messages()[0]));
    assert!(
        text.contains(r"New lead: \<at\>Everyone\</at\> \(\*\*ACME\*\*\)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r"\- \[phish\]\(https:{DEFUSE}//evil.{DEFUSE}example\)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\\# Urgent\n1\\. \\_click\\_ \\`here\\`\n\\> quoted \\~gone\\~ @{DEFUSE}everyone"
        )),
        "{text}"
    );
    assert!(!text.contains("<at>"), "{text}");
}

#[tokio::test]
async fn a_huge_summary_is_cut_so_the_card_stays_under_the_teams_limit() {
    let fake = FakeTeams::start().await;
    let messages: Vec<Value> = (0..40)
        .map(|index| json!({"role": "user", "content": format!("{index} {}", "*_[]".repeat(400))}))
        .collect();
    let events = [
        brief(json!({"name": "Ann"}), &"**Big** [deal] ".repeat(5000)),
        event(
            EventType::ConversationUpdated,
            "long\n40",
            json!({"conversation": {"id": "cm2", "messages": messages}, "newMessages": messages}),
        ),
    ];
    let connector = connector(&chat_config(&fake.url));
    for event in &events {
        let attempt = first_attempt(&connector, event).await;
        assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    }
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    for message in fake.messages() {
        let size = serde_json::to_vec(&message).unwrap().len();
        assert!(size <= BODY_BUDGET_BYTES, "{size}");
        assert!(all_text(&message).contains('…'));
    }
}

#[tokio::test]
async fn a_card_over_28_kb_is_refused_by_the_fake_as_teams_does() {
    let fake = FakeTeams::start().await;
    let body = json!({"type": "message", "attachments": [{"contentType": card::CARD_CONTENT_TYPE,
        "content": {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "x".repeat(30_000)}]}}]});

    crate::install_crypto_provider();
    let response = reqwest::Client::new()
        .post(&fake.url)
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("MessageSizeExceeded")
    );
}

#[tokio::test]
async fn a_429_from_teams_is_retried_after_its_retry_after() {
    let fake = FakeTeams::start().await;
    let connector = connector(&chat_config(&fake.url));
    fake.inject(
        Fault::Throttled {
            retry_after_secs: 45,
        },
        1,
    );
    fake.inject(Fault::Status(502), 1);

    let throttled = first_attempt(&connector, &john_brief()).await;
    let failed = first_attempt(&connector, &john_brief()).await;
    let delivered = first_attempt(&connector, &john_brief()).await;

    assert_eq!(throttled.status_code, Some(429));
    let (after, reason) = retry_of(&throttled);
    assert_eq!(after, Some(Duration::from_secs(45)));
    assert!(
        reason.contains("throttling") && reason.contains("wait 45s"),
        "{reason}"
    );
    assert!(reason.contains("WorkflowTriggerIsThrottled"), "{reason}");
    let (after, _) = retry_of(&failed);
    assert_eq!(after, None);
    assert_eq!(delivered.verdict, Verdict::Delivered);
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn a_400_401_403_or_404_from_teams_makes_the_delivery_dead() {
    let fake = FakeTeams::start().await;
    let connector = connector(&chat_config(&fake.url));
    for (status, advice) in [
        (400, "not accepted"),
        (401, "signature"),
        (403, "signature"),
        (404, "no longer exists"),
    ] {
        fake.inject(Fault::Status(status), 1);

        let attempt = first_attempt(&connector, &john_brief()).await;

        assert_eq!(attempt.status_code, Some(status));
        let reason = permanent_of(&attempt);
        assert!(reason.contains("Teams refused the message"), "{reason}");
        assert!(reason.contains(advice), "{reason}");
        assert!(
            !reason.contains("sig=") && !reason.contains("FAKEsig"),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried_without_the_urls_signature() {
    let address = unused_address();
    let connector = connector(&chat_config(&format!(
        "http://{address}/workflows/abc/triggers/manual/paths/invoke?sig=tok_signature"
    )));

    let attempt = first_attempt(&connector, &john_brief()).await;

    let (_, reason) = retry_of(&attempt);
    assert!(reason.contains("could not connect"), "{reason}");
    assert!(
        !reason.contains("tok_signature") && !reason.contains("workflows"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_teams_template_replaces_the_built_in_card() {
    let fake = FakeTeams::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("meeting.processed.teams.json"),
        r#"{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": {
  "type": "AdaptiveCard", "version": "1.4",
  "body": [{"type": "TextBlock", "text": {{ ("Meeting: " ~ data.title) | teams_text }}, "wrap": true},
           {"type": "TextBlock", "text": {{ data.transcript | teams_text(20) }}, "wrap": true}]}}]}"#,
    )
    .unwrap();
    let mut config = chat_config(&fake.url);
    config.templates_dir = Some(dir.path().to_path_buf());

    let attempt = first_attempt(&connector(&config), &meeting()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let messages = fake.messages();
    let body = &card(&messages[0])["body"];
    assert_eq!(body[0]["text"], "Meeting: Weekly standup");
    assert_eq!(body[1]["text"], "Alice: hello \\<ever…");
}

#[test]
fn a_teams_table_parses_and_an_http_url_to_another_host_is_refused() {
    let Ok(ConnectorConfig::Teams(config)) = table(
        "type = \"teams\"\nurl = \"http://prod-00.westeurope.logic.azure.com/workflows/x?sig=tok_sig\"\n",
    ) else {
        panic!("not a teams connector");
    };
    let problems = validate(&config);
    assert_eq!(keys(&problems), ["url"]);
    assert!(problems[0].message.contains("https://"), "{problems:?}");
    assert!(!problems[0].message.contains("tok_sig"), "{problems:?}");
}

#[tokio::test]
async fn probing_teams_starts_no_workflow() {
    let fake = FakeTeams::start().await;

    let description = connector(&chat_config(&fake.url)).probe().await.unwrap();

    assert!(description.contains("reachable"), "{description}");
    assert!(fake.messages().is_empty());
    assert!(fake.rejections().is_empty());
}
