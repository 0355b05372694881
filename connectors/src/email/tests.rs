//! The email connector against a real SMTP server: aiosmtpd, started per test on
//! 127.0.0.1 by `tests/smtp/server.py`, which writes what it received to a folder.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;
use crate::testkit::{first_attempt, keys, table, unused_address};
use crate::{ConnectorConfig, EventType};

/// The aiosmtpd release scripts/test-prereqs.sh installs; named in the message when it is missing.
const AIOSMTPD: &str = "aiosmtpd==1.4.6";

/// How long the Python server may take to start. Generous: a loaded CI machine with a
/// cold Python is slow, and this is a readiness wait, not a performance claim.
const SERVER_START: Duration = Duration::from_secs(60);

const PASSWORD: &str = "hunter2-smtp-pass";

/// One aiosmtpd server; killed when dropped.
struct SmtpServer {
    child: Child,
    port: u16,
    mail: TempDir,
}

impl SmtpServer {
    fn start(extra: &[&str]) -> Self {
        let mail = TempDir::new().unwrap();
        let log_path = mail.path().join("server.log");
        let port = unused_address().port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/smtp/server.py");
        let mailbox = mail.path().join("mailbox");
        std::fs::create_dir(&mailbox).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(&mailbox)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start python3 ({error}); install Python 3 and run scripts/test-prereqs.sh as root (it installs `{AIOSMTPD}`)")
            });
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == "ready" {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut server = Self { child, port, mail };
        if ready_rx.recv_timeout(SERVER_START).is_err() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = server.child.kill();
            panic!(
                "the test SMTP server did not start; it needs `{AIOSMTPD}` (scripts/test-prereqs.sh \
                 installs it as root). Its output:\n{log}"
            );
        }
        server
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Everything the server accepted, in order.
    fn received(&self) -> Vec<Received> {
        let dir = self.mail.path().join("mailbox");
        let mut numbers: Vec<u32> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        numbers
            .into_iter()
            .map(|number| {
                let meta: Value = serde_json::from_str(
                    &std::fs::read_to_string(dir.join(format!("{number}.json"))).unwrap(),
                )
                .unwrap();
                let raw = std::fs::read(dir.join(format!("{number}.eml"))).unwrap();
                Received { meta, raw }
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One accepted message: the envelope and the decoded message (from server.py's
/// sidecar, decoded by Python's email package), and the raw bytes.
struct Received {
    meta: Value,
    raw: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> String {
        let values = self.meta["headers"][name.to_ascii_lowercase()]
            .as_array()
            .unwrap_or_else(|| panic!("no {name} header in {}", self.meta));
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values[0].as_str().unwrap().to_owned()
    }

    fn recipients(&self) -> Vec<&str> {
        self.meta["rcpt_tos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_str().unwrap())
            .collect()
    }

    fn part(&self, content_type: &str) -> String {
        let parts = self.meta["parts"].as_array().unwrap();
        let found: Vec<&Value> = parts
            .iter()
            .filter(|part| part["type"] == content_type)
            .collect();
        assert_eq!(found.len(), 1, "{content_type} parts: {parts:?}");
        assert_eq!(found[0]["charset"], "utf-8");
        found[0]["text"].as_str().unwrap().to_owned()
    }

    /// The header block as sent, before any decoding.
    fn raw_headers(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        text.split("\r\n\r\n").next().unwrap().to_owned()
    }
}

fn brief_event() -> Event {
    crate::testkit::event(
        EventType::BriefCreated,
        "cm3brief",
        json!({
            "id": "cm3brief",
            "agentId": "cm1agent",
            "conversationId": "cm2conv",
            "summary": "Jürgen runs a café & bakery; wants <b>online</b> bookings.",
            "answers": {
                "name": "Jürgen Müller",
                "email": "j.mueller@example.de",
                "company": "Müller & Söhne – Café",
                "budget": "<500 €/month",
                "useCase": "Table bookings & <script>alert(1)</script>",
            },
            "createdAt": "2026-04-01T14:30:00Z",
        }),
    )
}

/// A connector for a plain local relay (tls = "none"), as most tests use.
fn config(server: &SmtpServer) -> EmailConfig {
    config_for(server.url())
}

fn config_for(smtp_url: String) -> EmailConfig {
    EmailConfig {
        smtp_url,
        tls: Some(TlsMode::None),
        username: None,
        password: None,
        password_file: None,
        from: "Clairo Sync <clairo@example.com>".to_owned(),
        to: vec![
            "Sales <sales@example.com>".to_owned(),
            "boss@example.com".to_owned(),
        ],
        cc: vec!["Archive <archive@example.com>".to_owned()],
        templates_dir: None,
        timeout: Duration::from_secs(20),
    }
}

fn with_login(mut config: EmailConfig, user: &str, password: &str) -> EmailConfig {
    config.username = Some(user.to_owned());
    config.password = Some(Secret::new(password));
    config
}

async fn deliver(config: &EmailConfig, event: &Event) -> Attempt {
    let connector = EmailConnector::new("sales_mail", config).unwrap();
    first_attempt(&connector, event).await
}

fn reason(attempt: &Attempt) -> &str {
    match &attempt.verdict {
        Verdict::Retry { reason, .. } | Verdict::Permanent { reason } => reason,
        Verdict::Delivered => "",
    }
}

fn assert_no_password(attempt: &Attempt) {
    let printed = format!("{attempt:?}");
    assert!(!printed.contains(PASSWORD), "{printed}");
    assert!(!printed.contains("wrong-password"), "{printed}");
}

#[tokio::test]
async fn a_brief_email_arrives_with_its_addresses_utf8_subject_both_parts_and_the_event_id() {
    let server = SmtpServer::start(&[]);
    let event = brief_event();

    let attempt = deliver(&config(&server), &event).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_eq!(attempt.status_code, Some(250));
    assert!(
        attempt
            .response
            .as_deref()
            .unwrap()
            .contains("queued as test-1"),
        "{attempt:?}"
    );
    let received = server.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert_eq!(mail.meta["mail_from"], "clairo@example.com");
    assert_eq!(
        mail.recipients(),
        [
            "sales@example.com",
            "boss@example.com",
            "archive@example.com"
        ]
    );
    assert_eq!(mail.meta["login"], Value::Null);
    assert_eq!(mail.header("From"), "Clairo Sync <clairo@example.com>");
    assert_eq!(
        mail.header("To"),
        "Sales <sales@example.com>, boss@example.com"
    );
    assert_eq!(mail.header("Cc"), "Archive <archive@example.com>");
    assert_eq!(
        mail.header("Subject"),
        "New lead: Jürgen Müller (Müller & Söhne – Café)"
    );
    // Sent encoded (RFC 2047), not as raw UTF-8 bytes.
    assert!(mail.raw_headers().is_ascii(), "{}", mail.raw_headers());
    assert_eq!(
        mail.header("Message-ID"),
        format!("<{}@clairo-sync>", event.id)
    );
    assert_eq!(mail.header("X-Clairo-Event-Id"), event.id);
    assert_eq!(mail.header("Auto-Submitted"), "auto-generated");
    assert_eq!(mail.meta["content_type"], "multipart/alternative");

    let text = mail.part("text/plain");
    assert!(text.contains("Contact:  Jürgen Müller"), "{text}");
    assert!(text.contains("Email:    j.mueller@example.de"), "{text}");
    assert!(text.contains("Company:  Müller & Söhne – Café"), "{text}");
    assert!(text.contains("Budget:   <500 €/month"), "{text}");
    assert!(text.contains("wants <b>online</b> bookings"), "{text}");
    assert!(
        text.contains("Use case: Table bookings & <script>"),
        "{text}"
    );

    let html = mail.part("text/html");
    assert!(html.contains("Müller &amp; Söhne – Café"), "{html}");
    assert!(html.contains("&lt;500 €&#x2f;month"), "{html}");
    assert!(
        html.contains("wants &lt;b&gt;online&lt;&#x2f;b&gt; bookings"),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<b>online"), "{html}");
}

#[tokio::test]
async fn a_repeat_on_the_pooled_connection_carries_the_same_message_id() {
    let server = SmtpServer::start(&[]);
    let connector = EmailConnector::new("sales_mail", &config(&server)).unwrap();
    let event = brief_event();

    let first = first_attempt(&connector, &event).await;
    let second = first_attempt(&connector, &event).await;

    assert_eq!(first.verdict, Verdict::Delivered, "{first:?}");
    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].header("Message-ID"),
        received[1].header("Message-ID")
    );
}

#[tokio::test]
async fn meeting_and_conversation_emails_use_their_own_templates() {
    let server = SmtpServer::start(&[]);
    let connector = EmailConnector::new("sales_mail", &config(&server)).unwrap();
    let mut meeting = templates::sample_event(EventType::MeetingProcessed);
    meeting.data["durationSec"] = json!(3900);
    let conversation = templates::sample_event(EventType::ConversationUpdated);

    for event in [&meeting, &conversation] {
        let attempt = first_attempt(&connector, event).await;
        assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    }

    let received = server.received();
    assert_eq!(
        received[0].header("Subject"),
        "Meeting processed: Weekly standup (1 h 5 min)"
    );
    let text = received[0].part("text/plain");
    assert!(text.contains("- Bob sends the quote"), "{text}");
    assert!(text.contains("Ann: Good morning."), "{text}");
    assert_eq!(
        received[1].header("Subject"),
        "Conversation cm2sample: 1 new message"
    );
    let html = received[1].part("text/html");
    assert!(html.contains("Hi! How can I help?"), "{html}");
    assert!(html.contains("2026-04-01 14:30 UTC"), "{html}");
}

#[tokio::test]
async fn a_template_override_is_used_and_the_other_parts_stay_built_in() {
    let server = SmtpServer::start(&[]);
    let templates = TempDir::new().unwrap();
    std::fs::write(
        templates.path().join("brief.created.subject.txt"),
        "Lead for {{ connector }}: {{ lead.company }}\n",
    )
    .unwrap();
    std::fs::write(
        templates.path().join("brief.created.html"),
        "<p>Custom: {{ lead.company }} / {{ event.data.answers.budget }}</p>",
    )
    .unwrap();
    let mut config = config(&server);
    config.templates_dir = Some(templates.path().to_owned());
    assert_eq!(config.validate(), Vec::new());

    let attempt = deliver(&config, &brief_event()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let mail = &server.received()[0];
    assert_eq!(
        mail.header("Subject"),
        "Lead for sales_mail: Müller & Söhne – Café"
    );
    assert_eq!(
        mail.part("text/html").trim(),
        "<p>Custom: Müller &amp; Söhne – Café / &lt;500 €&#x2f;month</p>"
    );
    let text = mail.part("text/plain");
    assert!(
        text.contains("A Discovery agent finished a brief."),
        "{text}"
    );
}

#[tokio::test]
async fn without_starttls_on_offer_nothing_is_sent_when_tls_is_required() {
    let server = SmtpServer::start(&["--user", "clairo", "--password", PASSWORD]);
    let mut config = with_login(config(&server), "clairo", PASSWORD);
    config.tls = None; // smtp:// defaults to STARTTLS, required

    let attempt = deliver(&config, &brief_event()).await;

    match &attempt.verdict {
        Verdict::Retry { reason, .. } => {
            assert!(reason.contains("STARTTLS"), "{reason}");
            assert!(reason.contains("tls = \"none\""), "{reason}");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
    assert_no_password(&attempt);
    assert!(server.received().is_empty(), "mail went out in plain text");

    let connector = EmailConnector::new("sales_mail", &config).unwrap();
    let error = connector.probe().await.unwrap_err().to_string();
    assert!(error.contains("STARTTLS"), "{error}");
}

#[tokio::test]
async fn implicit_tls_against_a_plain_server_sends_nothing_and_is_retried() {
    let server = SmtpServer::start(&[]);
    let mut config = config(&server);
    config.smtp_url = format!("smtps://127.0.0.1:{}", server.port);
    config.tls = None;

    let attempt = deliver(&config, &brief_event()).await;

    assert!(
        matches!(attempt.verdict, Verdict::Retry { .. }),
        "{attempt:?}"
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn auth_is_sent_to_a_plain_local_relay_when_a_username_is_set() {
    let server = SmtpServer::start(&["--user", "clairo", "--password", PASSWORD]);
    let config = with_login(config(&server), "clairo", PASSWORD);

    let attempt = deliver(&config, &brief_event()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    assert_no_password(&attempt);
    assert_eq!(server.received()[0].meta["login"], "clairo");
}

#[tokio::test]
async fn a_server_requiring_a_login_refuses_mail_without_one_permanently() {
    let server = SmtpServer::start(&["--user", "clairo", "--password", PASSWORD]);

    let attempt = deliver(&config(&server), &brief_event()).await;

    assert_eq!(attempt.status_code, Some(530), "{attempt:?}");
    assert!(reason(&attempt).contains("set `username`"), "{attempt:?}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_wrong_password_is_permanent_with_the_servers_535_recorded() {
    let server = SmtpServer::start(&["--user", "clairo", "--password", PASSWORD]);
    let config = with_login(config(&server), "clairo", "wrong-password");

    let attempt = deliver(&config, &brief_event()).await;

    assert_eq!(attempt.status_code, Some(535), "{attempt:?}");
    assert_eq!(
        attempt.response.as_deref(),
        Some("535 5.7.8 Authentication credentials invalid")
    );
    match &attempt.verdict {
        Verdict::Permanent { reason } => {
            assert!(reason.contains("rejected the login as clairo"), "{reason}");
            assert!(reason.contains("535 5.7.8"), "{reason}");
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert_no_password(&attempt);
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_451_from_the_server_is_retried_with_its_reply() {
    let server = SmtpServer::start(&["--reject", "boss@example.com=451 4.3.0 Try again later"]);

    let attempt = deliver(&config(&server), &brief_event()).await;

    assert_eq!(attempt.status_code, Some(451), "{attempt:?}");
    assert_eq!(
        attempt.response.as_deref(),
        Some("451 4.3.0 Try again later")
    );
    match &attempt.verdict {
        Verdict::Retry { after, reason } => {
            assert_eq!(*after, None);
            assert!(reason.contains("451 4.3.0 Try again later"), "{reason}");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_550_from_the_server_is_permanent_with_its_reply_recorded() {
    let server = SmtpServer::start(&["--reject", "boss@example.com=550 5.1.1 No such user here"]);

    let attempt = deliver(&config(&server), &brief_event()).await;

    assert_eq!(attempt.status_code, Some(550), "{attempt:?}");
    assert_eq!(
        attempt.response.as_deref(),
        Some("550 5.1.1 No such user here")
    );
    match &attempt.verdict {
        Verdict::Permanent { reason } => {
            assert!(reason.contains("550 5.1.1 No such user here"), "{reason}");
            assert!(reason.contains("`to`"), "{reason}");
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let port = unused_address().port();
    let server_config = with_login(
        config_for(format!("smtp://127.0.0.1:{port}")),
        "clairo",
        PASSWORD,
    );

    let attempt = deliver(&server_config, &brief_event()).await;

    match &attempt.verdict {
        Verdict::Retry { reason, .. } => {
            assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
    assert_no_password(&attempt);
}

#[tokio::test]
async fn a_server_that_never_answers_is_cut_off_by_the_timeout_and_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and then says nothing: no greeting ever comes.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = config_for(format!("smtp://127.0.0.1:{port}"));
    config.timeout = Duration::from_millis(300);
    let connector = EmailConnector::new("sales_mail", &config).unwrap();

    let attempt = first_attempt(&connector, &brief_event()).await;
    let again = first_attempt(&connector, &brief_event()).await;

    for attempt in [attempt, again] {
        match &attempt.verdict {
            Verdict::Retry { reason, .. } => assert!(reason.contains("within 300ms"), "{reason}"),
            other => panic!("expected Retry, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn probing_logs_in_without_sending_mail() {
    let server = SmtpServer::start(&["--user", "clairo", "--password", PASSWORD]);
    let connector = EmailConnector::new(
        "sales_mail",
        &with_login(config(&server), "clairo", PASSWORD),
    )
    .unwrap();

    let description = connector.probe().await.unwrap();

    assert!(description.contains("a login as clairo"), "{description}");
    assert!(server.received().is_empty());

    let wrong = EmailConnector::new(
        "sales_mail",
        &with_login(config(&server), "clairo", "wrong-password"),
    )
    .unwrap();
    let error = wrong.probe().await.unwrap_err();
    assert!(matches!(error, ProbeError::Lasting(_)), "{error:?}");
    let error = error.to_string();
    assert!(error.contains("535"), "{error}");
    assert!(!error.contains("wrong-password"), "{error}");
}

// ---- configuration ----

fn parse(text: &str) -> Result<EmailConfig, String> {
    match table(text)? {
        ConnectorConfig::Email(config) => Ok(config),
        _ => panic!("not an email connector"),
    }
}

fn valid() -> EmailConfig {
    parse(
        r#"
        type = "email"
        smtp_url = "smtp://mail.example.com"
        username = "clairo@example.com"
        password = "hunter2-smtp-pass"
        from = "Clairo <clairo@example.com>"
        to = ["sales@example.com"]
        "#,
    )
    .unwrap()
}

#[test]
fn an_email_table_parses_with_every_key() {
    let config = parse(
        r#"
        type = "email"
        smtp_url = "smtps://mail.example.com"
        tls = "implicit"
        username = "clairo@example.com"
        password_file = "/etc/clairo-sync/smtp-password"
        from = "Clairo <clairo@example.com>"
        to = ["sales@example.com", "Boss <boss@example.com>"]
        cc = ["archive@example.com"]
        templates_dir = "/etc/clairo-sync/templates"
        timeout = "45s"
        "#,
    )
    .unwrap();
    assert_eq!(config.tls, Some(TlsMode::Implicit));
    assert_eq!(config.to.len(), 2);
    assert_eq!(config.cc, ["archive@example.com"]);
    assert_eq!(config.timeout, Duration::from_secs(45));
    assert_eq!(
        config.password_file.as_deref(),
        Some(Path::new("/etc/clairo-sync/smtp-password"))
    );

    let minimal = valid();
    assert_eq!(minimal.timeout, Duration::from_secs(30));
    assert_eq!(minimal.tls, None);
    assert!(minimal.cc.is_empty());
}

#[test]
fn an_unknown_key_in_an_email_table_is_rejected() {
    let error = parse(
        r#"
        type = "email"
        smtp_url = "smtp://mail.example.com"
        from = "clairo@example.com"
        to = ["sales@example.com"]
        pasword_file = "/etc/clairo-sync/smtp-password"
        "#,
    )
    .unwrap_err();
    assert!(error.contains("pasword_file"), "{error}");
}

#[test]
fn a_valid_config_has_no_problems_and_the_url_decides_tls_and_port() {
    assert_eq!(valid().validate(), Vec::new());
    let server_of = |url: &str, tls: Option<TlsMode>| server(url, tls).unwrap();
    assert_eq!(
        server_of("smtp://mail.example.com", None),
        Server {
            host: "mail.example.com".to_owned(),
            port: 587,
            tls: TlsMode::Starttls
        }
    );
    assert_eq!(server_of("smtps://mail.example.com", None).port, 465);
    assert_eq!(
        server_of("smtps://mail.example.com", None).tls,
        TlsMode::Implicit
    );
    assert_eq!(server_of("smtp://localhost", Some(TlsMode::None)).port, 25);
    assert_eq!(server_of("smtp://[::1]:2525/", None).host, "::1");
    assert_eq!(
        server_of("smtp://[::1]:2525/", None).to_string(),
        "[::1]:2525"
    );
}

#[test]
fn the_password_is_required_only_with_a_username() {
    let mut config = valid();
    assert!(config.secret_slots()[0].required);
    config.password = None;
    assert_eq!(keys(&config.validate()), ["password"]);
    assert!(config.validate()[0].message.contains("password_file"));
    assert!(EmailConnector::new("sales_mail", &config).is_err());

    config.username = None;
    assert!(!config.secret_slots()[0].required);
    assert_eq!(config.validate(), Vec::new());

    config.password_file = Some(PathBuf::from("/etc/clairo-sync/smtp-password"));
    assert_eq!(keys(&config.validate()), ["username"]);
}

#[test]
fn validation_names_each_key_and_never_echoes_the_password() {
    let cases: [(&str, Option<TlsMode>, &str); 8] = [
        ("http://mail.example.com", None, "smtp_url"),
        ("not a url", None, "smtp_url"),
        (
            "smtp://clairo:hunter2-smtp-pass@mail.example.com",
            None,
            "smtp_url",
        ),
        ("smtp://mail.example.com?tls=required", None, "smtp_url"),
        ("smtps://mail.example.com", Some(TlsMode::Starttls), "tls"),
        ("smtps://mail.example.com", Some(TlsMode::None), "tls"),
        ("smtp://mail.example.com", Some(TlsMode::Implicit), "tls"),
        ("smtp://mail.example.com/path", None, "smtp_url"),
    ];
    for (url, tls, key) in cases {
        let mut config = valid();
        config.smtp_url = url.to_owned();
        config.tls = tls;
        let problems = config.validate();
        assert_eq!(keys(&problems), [key], "{url}: {problems:?}");
        assert!(problems[0].message.contains("; "), "{problems:?}");
        assert!(!problems[0].message.contains("hunter2"), "{problems:?}");
    }

    let mut config = valid();
    config.from = "not an address".to_owned();
    config.to = vec![
        "sales@example.com".to_owned(),
        "two@@example.com".to_owned(),
    ];
    config.cc = vec!["<broken".to_owned()];
    config.timeout = Duration::ZERO;
    config.templates_dir = Some(PathBuf::from("templates"));
    let problems = config.validate();
    assert_eq!(
        keys(&problems),
        ["from", "to[1]", "cc[0]", "templates_dir", "timeout"],
        "{problems:?}"
    );
    for problem in &problems {
        assert!(problem.message.contains("; "), "{problem:?}");
        assert!(!problem.message.contains("hunter2"), "{problem:?}");
    }

    config.to.clear();
    assert!(keys(&config.validate()).contains(&"to"));
}

#[test]
fn a_template_override_that_does_not_parse_or_render_is_a_problem_naming_the_file() {
    let templates = TempDir::new().unwrap();
    std::fs::write(
        templates.path().join("brief.created.html"),
        "<p>{% if lead.name %}unclosed",
    )
    .unwrap();
    std::fs::write(
        templates.path().join("meeting.processed.txt"),
        "{{ meeting.title | no_such_filter }}",
    )
    .unwrap();
    std::fs::write(
        templates.path().join("conversation.updated.txt"),
        [0xff, 0xfe],
    )
    .unwrap();
    let mut config = valid();
    config.templates_dir = Some(templates.path().to_owned());

    let problems = config.validate();

    assert_eq!(keys(&problems), ["templates_dir"; 3], "{problems:?}");
    let all: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    assert!(
        all[0].contains("`brief.created.html` does not parse"),
        "{all:?}"
    );
    assert!(
        all[1].contains("`conversation.updated.txt` is not UTF-8"),
        "{all:?}"
    );
    assert!(
        all[2].contains("`meeting.processed.txt` fails to render"),
        "{all:?}"
    );
    assert!(EmailConnector::new("sales_mail", &config).is_err());

    config.templates_dir = Some(templates.path().join("missing"));
    assert!(config.validate()[0].message.contains("is not a folder"));
}

#[test]
fn the_password_never_appears_in_the_configs_debug() {
    let mut config = valid();
    config.smtp_url = format!("smtp://clairo:{PASSWORD}@mail.example.com");
    let printed = format!("{config:?}");
    assert!(!printed.contains(PASSWORD), "{printed}");
    assert!(printed.contains("**REDACTED**"), "{printed}");
    assert!(printed.contains("clairo@example.com"), "{printed}");
}

#[test]
fn the_scrubber_removes_the_password_and_its_auth_encodings() {
    let scrub = Scrubber::new("clairo", &Secret::new(PASSWORD));
    let plain = STANDARD.encode(format!("\0clairo\0{PASSWORD}"));
    let text = format!("a {PASSWORD} b {} c {plain}", STANDARD.encode(PASSWORD));
    assert_eq!(
        scrub.apply(&text),
        "a **REDACTED** b **REDACTED** c **REDACTED**"
    );
}
