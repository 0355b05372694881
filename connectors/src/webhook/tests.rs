use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap as ReceivedHeaders, StatusCode as Status, header};
use axum::routing::post;
use chrono::Utc;

use super::*;
use crate::testkit::{first_attempt, keys, serve, table, unused_address};
use crate::{ConnectorConfig, Event, EventType};

/// The secret of the Standard Webhooks reference libraries' published test vector.
const TEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn signatures_reproduce_the_standard_webhooks_test_vector() {
    let signature = sign(
        &Secret::new(TEST_SECRET),
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        r#"{"test": 2432232314}"#,
    )
    .unwrap();
    assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[test]
fn signing_with_a_malformed_secret_fails_without_echoing_it() {
    let error = sign(&Secret::new("sk_live_hunter2"), "evt_1", 1, "{}").unwrap_err();
    assert_eq!(error, SecretError::NoPrefix);
    let error = error.to_string();
    assert!(error.contains("whsec_"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

fn event() -> Event {
    crate::testkit::event(
        EventType::BriefCreated,
        "cm3brief",
        serde_json::json!({"id": "cm3brief", "summary": "Wants a demo — ünïcode"}),
    )
}

fn config(url: String) -> WebhookConfig {
    WebhookConfig {
        url,
        secret: Some(Secret::new(TEST_SECRET)),
        secret_file: None,
        timeout: Duration::from_secs(5),
        headers: BTreeMap::new(),
        headers_file: None,
        body_template: None,
        body_template_file: None,
        content_type: None,
    }
}

async fn deliver(config: &WebhookConfig, event: &Event) -> Attempt {
    let connector = WebhookConnector::new("sales_hook", config).unwrap();
    first_attempt(&connector, event).await
}

/// Every request the receiver got: its headers and body.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(ReceivedHeaders, String)>>>);

impl Received {
    fn all(&self) -> Vec<(ReceivedHeaders, String)> {
        self.0.lock().unwrap().clone()
    }
}

async fn record(
    State(received): State<Received>,
    headers: ReceivedHeaders,
    body: String,
) -> Status {
    received.0.lock().unwrap().push((headers, body));
    Status::NO_CONTENT
}

/// A receiver on 127.0.0.1 with one route per behaviour; returns its base address.
async fn receiver(received: Received) -> String {
    let router = Router::new()
        .route("/ok", post(record))
        .route("/gone", post(|| async { Status::GONE }))
        .route(
            "/bad",
            post(|| async { (Status::BAD_REQUEST, "missing field `email`") }),
        )
        .route(
            "/unavailable",
            post(|| async { (Status::SERVICE_UNAVAILABLE, "maintenance") }),
        )
        .route(
            "/busy",
            post(|| async {
                (
                    Status::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "3")],
                    "slow down",
                )
            }),
        )
        .route(
            "/moved",
            post(|| async { (Status::FOUND, [(header::LOCATION, "/ok")]) }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Status::OK
            }),
        )
        .route(
            "/huge",
            post(|| async { (Status::INTERNAL_SERVER_ERROR, "x".repeat(20_000)) }),
        )
        .with_state(received);
    serve(router).await
}

fn header_text<'a>(headers: &'a ReceivedHeaders, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn a_delivered_event_carries_a_signature_an_independent_verifier_accepts() {
    let received = Received::default();
    let base = receiver(received.clone()).await;
    let event = event();

    let attempt = deliver(&config(format!("{base}/ok")), &event).await;

    assert_eq!(attempt.verdict, Verdict::Delivered);
    assert_eq!(attempt.status_code, Some(204));
    let requests = received.all();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert_eq!(body, &event.to_json());
    assert_eq!(header_text(headers, "content-type"), "application/json");
    assert!(header_text(headers, "user-agent").starts_with("clairo-sync/"));
    assert_eq!(header_text(headers, "webhook-id"), event.id);
    let timestamp: i64 = header_text(headers, "webhook-timestamp").parse().unwrap();
    assert!((Utc::now().timestamp() - timestamp).abs() < 60);

    // Verify as a receiver would, sharing nothing with the signing code.
    let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{timestamp}.{body}", event.id).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header_text(headers, "webhook-signature"), expected);
}

#[tokio::test]
async fn every_attempt_is_signed_with_a_fresh_timestamp() {
    let received = Received::default();
    let base = receiver(received.clone()).await;
    let config = config(format!("{base}/ok"));
    let event = event();

    deliver(&config, &event).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    deliver(&config, &event).await;

    let requests = received.all();
    let stamp = |index: usize| header_text(&requests[index].0, "webhook-timestamp").to_owned();
    let signature = |index: usize| header_text(&requests[index].0, "webhook-signature").to_owned();
    assert_eq!(header_text(&requests[0].0, "webhook-id"), event.id);
    assert_eq!(header_text(&requests[1].0, "webhook-id"), event.id);
    assert_ne!(stamp(0), stamp(1));
    assert_ne!(signature(0), signature(1));
}

#[tokio::test]
async fn custom_headers_are_sent_with_every_request() {
    let received = Received::default();
    let base = receiver(received.clone()).await;
    let mut config = config(format!("{base}/ok"));
    config
        .headers
        .insert("X-Gateway-Token".to_owned(), Secret::new("tok_abc123"));
    config
        .headers
        .insert("X-Team".to_owned(), Secret::new("sales"));

    let attempt = deliver(&config, &event()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered);
    let (headers, _) = &received.all()[0];
    assert_eq!(header_text(headers, "x-gateway-token"), "tok_abc123");
    assert_eq!(header_text(headers, "x-team"), "sales");
    assert!(header_text(headers, "webhook-signature").starts_with("v1,"));
}

#[test]
fn a_config_never_prints_header_values_or_the_secret() {
    let mut config = config("https://hooks.example.com/clairo".to_owned());
    config
        .headers
        .insert("Authorization".to_owned(), Secret::new("Bearer tok_abc123"));
    let printed = format!("{config:?}");
    assert!(printed.contains("Authorization"), "{printed}");
    assert!(!printed.contains("tok_abc123"), "{printed}");
    assert!(!printed.contains("MfKQ9r8"), "{printed}");
}

#[tokio::test]
async fn a_410_means_the_endpoint_is_gone_and_the_delivery_dead_at_once() {
    let base = receiver(Received::default()).await;

    let attempt = deliver(&config(format!("{base}/gone")), &event()).await;

    assert_eq!(attempt.status_code, Some(410));
    match attempt.verdict {
        Verdict::Permanent { reason } => assert!(reason.contains("endpoint gone"), "{reason}"),
        other => panic!("expected Permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn a_400_is_permanent_and_keeps_the_receivers_answer() {
    let base = receiver(Received::default()).await;

    let attempt = deliver(&config(format!("{base}/bad")), &event()).await;

    assert_eq!(attempt.status_code, Some(400));
    assert_eq!(attempt.response.as_deref(), Some("missing field `email`"));
    match attempt.verdict {
        Verdict::Permanent { reason } => {
            assert!(reason.contains("400 Bad Request"), "{reason}")
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn a_503_is_retried_on_the_dispatchers_schedule() {
    let base = receiver(Received::default()).await;

    let attempt = deliver(&config(format!("{base}/unavailable")), &event()).await;

    assert_eq!(attempt.status_code, Some(503));
    assert_eq!(attempt.response.as_deref(), Some("maintenance"));
    match attempt.verdict {
        Verdict::Retry { after, reason } => {
            assert_eq!(after, None);
            assert!(reason.contains("503 Service Unavailable"), "{reason}");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_the_wait_it_asked_for() {
    let base = receiver(Received::default()).await;

    let attempt = deliver(&config(format!("{base}/busy")), &event()).await;

    assert_eq!(attempt.status_code, Some(429));
    match attempt.verdict {
        Verdict::Retry { after, reason } => {
            assert_eq!(after, Some(Duration::from_secs(3)));
            assert!(reason.contains("rate-limiting"), "{reason}");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_permanent() {
    let received = Received::default();
    let base = receiver(received.clone()).await;

    let attempt = deliver(&config(format!("{base}/moved")), &event()).await;

    assert_eq!(attempt.status_code, Some(302));
    assert!(
        matches!(attempt.verdict, Verdict::Permanent { .. }),
        "{attempt:?}"
    );
    assert!(received.all().is_empty(), "the redirect target was called");
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_means_retry() {
    let base = receiver(Received::default()).await;
    let mut config = config(format!("{base}/slow"));
    config.timeout = Duration::from_millis(300);

    let started = std::time::Instant::now();
    let attempt = deliver(&config, &event()).await;

    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(attempt.status_code, None);
    match attempt.verdict {
        Verdict::Retry { after, reason } => {
            assert_eq!(after, None);
            assert!(reason.contains("no answer within 300ms"), "{reason}");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_connection_means_retry_and_the_reason_holds_no_header_value() {
    let address = unused_address();
    let mut config = config(format!("http://{address}/hook?token=tok_in_query"));
    config
        .headers
        .insert("Authorization".to_owned(), Secret::new("Bearer tok_abc123"));

    let attempt = deliver(&config, &event()).await;

    match attempt.verdict {
        Verdict::Retry { reason, .. } => {
            assert!(reason.contains("could not connect"), "{reason}");
            assert!(reason.contains(&address.to_string()), "{reason}");
            assert!(!reason.contains("tok_"), "{reason}");
            assert!(!reason.contains("MfKQ9r8"), "{reason}");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_long_response_is_truncated_on_the_attempt() {
    let base = receiver(Received::default()).await;

    let attempt = deliver(&config(format!("{base}/huge")), &event()).await;

    assert_eq!(attempt.status_code, Some(500));
    let response = attempt.response.unwrap();
    assert!(response.ends_with("(truncated)"), "{response}");
    assert_eq!(
        response.chars().filter(|c| *c == 'x').count(),
        MAX_RESPONSE_CHARS
    );
}

#[tokio::test]
async fn probing_a_listening_receiver_sends_no_event() {
    let received = Received::default();
    let base = receiver(received.clone()).await;
    let connector = WebhookConnector::new("sales_hook", &config(format!("{base}/ok"))).unwrap();

    let description = connector.probe().await.unwrap();

    assert!(description.contains("reachable"), "{description}");
    assert!(received.all().is_empty());
}

#[tokio::test]
async fn probing_where_nothing_listens_fails_in_plain_words() {
    let address = unused_address();
    let connector =
        WebhookConnector::new("sales_hook", &config(format!("http://{address}/hook"))).unwrap();

    let error = connector.probe().await.unwrap_err();

    assert!(matches!(error, ProbeError::Passing(_)), "{error:?}");
    assert!(error.to_string().contains("could not connect"), "{error}");
}

#[test]
fn statuses_map_to_verdicts_as_standard_webhooks_suggests() {
    let delivered = |code: u16| verdict_for(StatusCode::from_u16(code).unwrap(), None);
    assert_eq!(delivered(200), Verdict::Delivered);
    assert_eq!(delivered(202), Verdict::Delivered);
    for code in [301, 307, 400, 401, 403, 404, 410, 422] {
        assert!(
            matches!(delivered(code), Verdict::Permanent { .. }),
            "{code}"
        );
    }
    for code in [408, 429, 500, 502, 503, 504] {
        assert!(matches!(delivered(code), Verdict::Retry { .. }), "{code}");
    }
}

#[test]
fn a_webhook_table_parses_with_a_humantime_timeout_and_headers() {
    let text = r#"
        type = "webhook"
        url = "https://hooks.example.com/clairo"
        secret_file = "/etc/clairo-sync/webhook-secret"
        timeout = "30s"
        headers = { "X-Team" = "sales" }
    "#;
    let Ok(ConnectorConfig::Webhook(config)) = table(text) else {
        panic!("not a webhook");
    };
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(config.headers["X-Team"].expose(), "sales");
    assert!(config.secret.is_none());

    let minimal = "type = \"webhook\"\nurl = \"https://hooks.example.com/clairo\"\n";
    let Ok(ConnectorConfig::Webhook(config)) = table(minimal) else {
        panic!("not a webhook");
    };
    assert_eq!(config.timeout, Duration::from_secs(10));
}

#[test]
fn an_unknown_key_in_a_webhook_table_is_rejected() {
    let error = table(
        r#"
        type = "webhook"
        url = "https://hooks.example.com/clairo"
        secert_file = "/etc/clairo-sync/webhook-secret"
    "#,
    )
    .unwrap_err();
    assert!(error.contains("secert_file"), "{error}");
}

#[test]
fn a_valid_config_has_no_problems() {
    let mut config = config("https://hooks.example.com/clairo".to_owned());
    config
        .headers
        .insert("Authorization".to_owned(), Secret::new("Bearer tok_abc123"));
    assert_eq!(config.validate(), Vec::new());
}

#[test]
fn validation_names_each_key_and_never_echoes_the_secret() {
    let problems_with = |secret: &str| {
        let mut config = config("ftp://hooks.example.com/clairo".to_owned());
        config.secret = Some(Secret::new(secret));
        config.timeout = Duration::ZERO;
        config
            .headers
            .insert("webhook-signature".to_owned(), Secret::new("v1,forged"));
        config
            .headers
            .insert("X-Token".to_owned(), Secret::new("tok\nsecret_value"));
        config.validate()
    };
    for secret in ["sk_live_hunter2", "whsec_hunter2!!not*base64", "whsec_"] {
        let problems = problems_with(secret);
        assert_eq!(
            keys(&problems),
            [
                "url",
                "secret",
                "timeout",
                "headers.X-Token",
                "headers.webhook-signature"
            ],
            "{problems:?}"
        );
        for problem in &problems {
            assert!(problem.message.contains("; "), "{problem:?}");
            assert!(!problem.message.contains("hunter2"), "{problem:?}");
            assert!(!problem.message.contains("secret_value"), "{problem:?}");
        }
    }
}

#[test]
fn a_missing_secret_is_a_problem_that_says_where_to_put_it() {
    let mut config = config("https://hooks.example.com/clairo".to_owned());
    config.secret = None;
    let problems = config.validate();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "secret");
    assert!(problems[0].message.contains("secret_file"), "{problems:?}");
    assert!(WebhookConnector::new("sales_hook", &config).is_err());
}

#[tokio::test]
async fn a_text_template_is_sent_as_written_with_its_content_type_and_signed_as_sent() {
    let received = Received::default();
    let base = receiver(received.clone()).await;
    let mut config = config(format!("{base}/ok"));
    config.body_template = Some("lead {{ data.id }}: {{ data.summary }}".to_owned());
    config.content_type = Some("text/plain; charset=utf-8".to_owned());
    assert!(config.validate().is_empty(), "{:?}", config.validate());

    let attempt = deliver(&config, &event()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered);
    let (headers, body) = &received.all()[0];
    assert_eq!(body, "lead cm3brief: Wants a demo — ünïcode");
    assert_eq!(
        header_text(headers, "content-type"),
        "text/plain; charset=utf-8"
    );
    let timestamp: i64 = header_text(headers, "webhook-timestamp").parse().unwrap();
    let expected = sign(&Secret::new(TEST_SECRET), &event().id, timestamp, body).unwrap();
    assert_eq!(header_text(headers, "webhook-signature"), expected);
}

#[tokio::test]
async fn an_event_the_template_fails_on_is_dead_with_the_reason_and_nothing_is_sent() {
    let received = Received::default();
    let base = receiver(received.clone()).await;
    let mut config = config(format!("{base}/ok"));
    config.body_template = Some(r#"{"n": {{ data.summary + 1 }}}"#.to_owned());

    let attempt = deliver(&config, &event()).await;

    let Verdict::Permanent { reason } = &attempt.verdict else {
        panic!("expected a permanent failure, got {attempt:?}");
    };
    assert!(reason.starts_with("the body could not be made"), "{reason}");
    assert!(received.all().is_empty());
}

#[test]
fn a_rotation_file_is_checked_line_by_line_without_echoing_a_secret() {
    let mut config = config("https://hooks.example.com/x".to_owned());
    config.secret = Some(Secret::new(format!(
        "{TEST_SECRET}\nwhsec_not base64 hunter2\n"
    )));
    let problems = config.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.starts_with("line 2: "), "{problems:?}");
    assert!(!problems[0].message.contains("hunter2"), "{problems:?}");
    config.body_template = Some("x".to_owned());
    config.body_template_file = Some("/etc/clairo-sync/body.j2".into());
    assert!(
        config
            .validate()
            .iter()
            .any(|problem| problem.key == "body_template" && problem.message.contains("keep one")),
    );
}

#[tokio::test]
async fn the_stored_envelope_is_sent_as_it_is_and_signed_as_sent() {
    let received = Received::default();
    let base = receiver(received.clone()).await;
    let event = event();
    // The outbox hands over the envelope it stored; spacing the serializer would not
    // write shows that the text was sent rather than the event serialized again.
    let stored = event.to_json().replacen(',', ", ", 1);
    let connector = WebhookConnector::new("sales_hook", &config(format!("{base}/ok"))).unwrap();

    let attempt = connector
        .deliver(Delivery {
            event: &event,
            envelope: Some(&stored),
            attempt: 1,
            checkpoint: None,
            checkpoints: &crate::testkit::MemoryCheckpoints::default(),
        })
        .await;

    assert_eq!(attempt.verdict, Verdict::Delivered);
    let requests = received.all();
    let (headers, body) = &requests[0];
    assert_eq!(body, &stored);
    let timestamp = header_text(headers, "webhook-timestamp");
    let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{timestamp}.{stored}", event.id).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header_text(headers, "webhook-signature"), expected);
}
