// Over 500 lines: one connector's config, SMTP transport and reply sorting.
//! The email connector: renders each event into a text + HTML message from templates and
//! hands it to an SMTP server with lettre, turning the server's answer into a [`Verdict`].
//!
//! Encryption is never downgraded: with `tls = "starttls"` (the default for `smtp://`) a
//! server that offers no STARTTLS gets no mail and no credentials. lettre is built without
//! its `tracing` feature, so the SMTP dialogue is not logged at all; reasons and recorded
//! replies are scrubbed of the password all the same.

mod templates;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, Error as SmtpError};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use url::{Host, Url};

use crate::{
    Attempt, BuildError, ConfigProblem, Connector, Delivery, Event, ProbeError, Secret, SecretSlot,
    TemplateError, USER_AGENT, Verdict, root_cause,
};

pub use templates::{Part, Rendered, Templates, context, sample_event, template_name};

/// Carries the event id on every message, for filters and for spotting a repeat even
/// where a relay rewrites `Message-ID`.
const EVENT_ID_HEADER: &str = "X-Clairo-Event-Id";

/// The right-hand side of every `Message-ID`: `<evt_…@clairo-sync>`. Fixed, not the host
/// name, so a repeat sent from another machine carries the same id.
const MESSAGE_ID_DOMAIN: &str = "clairo-sync";

/// Ports when `smtp_url` names none: submission with STARTTLS (RFC 6409), submissions
/// with implicit TLS (RFC 8314), and plain SMTP for a local relay.
const STARTTLS_PORT: u16 = 587;
const IMPLICIT_TLS_PORT: u16 = 465;
const PLAIN_PORT: u16 = 25;

/// Passwords shorter than this are not scrubbed from reasons: replacing every `a` of a
/// one-letter password would garble the text, and nothing should hold it anyway.
const MIN_SCRUBBED_LEN: usize = 4;

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// How the connection to the server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connect, then STARTTLS, which is required: no STARTTLS, no mail.
    Starttls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// No encryption at all; only for a trusted local relay, and only when written out.
    None,
}

impl TlsMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Starttls => "starttls",
            Self::Implicit => "implicit",
            Self::None => "none",
        }
    }
}

/// `[connectors.NAME] type = "email"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host[:port]` (STARTTLS, port 587; port 25 with `tls = "none"`) or
    /// `smtps://host[:port]` (implicit TLS, port 465).
    pub smtp_url: String,
    /// `"starttls"` (the default for smtp://), `"implicit"` (the default for smtps://), or
    /// `"none"` for a trusted local relay.
    #[serde(default)]
    pub tls: Option<TlsMode>,
    /// When set, AUTH (PLAIN or LOGIN) is sent, also with `tls = "none"`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `"Clairo <clairo@example.com>"`.
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// A folder of templates replacing built-ins of the same name
    /// (`brief.created.subject.txt`, `brief.created.txt`, `brief.created.html`, …).
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// Limit on one whole attempt: connecting, TLS, AUTH, and sending the message.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // smtp_url is left out: a URL may hold credentials (validate refuses them, but
        // Debug may print a config before validation).
        f.debug_struct("EmailConfig")
            .field("smtp_url", &"…")
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("cc", &self.cc)
            .field("templates_dir", &self.templates_dir)
            .field("timeout", &self.timeout)
            .finish()
    }
}

const MISSING_PASSWORD: &str = "is missing while `username` is set; set `password_file` to a \
    file holding the SMTP password (or provide the systemd credential \
    `<connector name>-password`), or remove `username` if the server needs no login";

impl EmailConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        vec![SecretSlot {
            key: "password",
            value: &mut self.password,
            file: self.password_file.as_ref(),
            required: self.username.is_some(),
        }]
    }

    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(problem) = server(&self.smtp_url, self.tls) {
            problems.push(problem);
        }
        match &self.username {
            Some(username) if username.trim().is_empty() => problems.push(ConfigProblem::new(
                "username",
                "is empty; write the SMTP login, or remove `username` if the server needs none",
            )),
            Some(_) if self.password.is_none() => {
                problems.push(ConfigProblem::new("password", MISSING_PASSWORD));
            }
            None if self.password_file.is_some() => problems.push(ConfigProblem::new(
                "username",
                "is not set, so the password in `password_file` would never be sent; set \
                 `username` to the SMTP login, or remove `password_file`",
            )),
            _ => {}
        }
        if let Err(message) = mailbox(&self.from) {
            problems.push(ConfigProblem::new("from", message));
        }
        if self.to.is_empty() {
            problems.push(ConfigProblem::new(
                "to",
                "is empty; list at least one recipient, e.g. [\"sales@example.com\"]",
            ));
        }
        for (key, list) in [("to", &self.to), ("cc", &self.cc)] {
            for (index, address) in list.iter().enumerate() {
                if let Err(message) = mailbox(address) {
                    problems.push(ConfigProblem::new(format!("{key}[{index}]"), message));
                }
            }
        }
        if let Some(dir) = &self.templates_dir {
            problems.extend(
                check_templates_dir(dir)
                    .into_iter()
                    .map(|message| ConfigProblem::new("templates_dir", message)),
            );
        }
        if self.timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "timeout",
                "is zero; set how long one attempt may take, e.g. \"30s\"",
            ));
        }
        problems
    }
}

/// Where to connect, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Server {
    host: String,
    port: u16,
    tls: TlsMode,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Reads `smtp_url` and `tls` together. The URL is never echoed: it might hold a password.
fn server(smtp_url: &str, tls: Option<TlsMode>) -> Result<Server, ConfigProblem> {
    let problem = |message: String| ConfigProblem::new("smtp_url", message);
    let url = Url::parse(smtp_url.trim()).map_err(|error| {
        problem(format!(
            "is not a valid address ({error}); write it as \"smtp://mail.example.com:587\" \
             (STARTTLS) or \"smtps://mail.example.com:465\" (implicit TLS)"
        ))
    })?;
    let implicit = match url.scheme() {
        "smtp" => false,
        "smtps" => true,
        other => {
            return Err(problem(format!(
                "uses the scheme `{other}`; use smtp:// (STARTTLS) or smtps:// (implicit TLS)"
            )));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(problem(
            "holds a login; remove it from the address and set `username` and \
             `password_file` instead"
                .to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem(
            "has a `?…` or `#…` part, which is not read; remove it (set `tls` to choose the \
             encryption)"
                .to_owned(),
        ));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(problem(
            "has a path, which SMTP does not use; write only smtp://host[:port]".to_owned(),
        ));
    }
    let host = match url.host() {
        Some(Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
        Some(Host::Ipv4(address)) => address.to_string(),
        Some(Host::Ipv6(address)) => address.to_string(),
        _ => {
            return Err(problem(
                "names no server; write it as \"smtp://mail.example.com:587\"".to_owned(),
            ));
        }
    };
    let tls = match (implicit, tls) {
        (true, None | Some(TlsMode::Implicit)) => TlsMode::Implicit,
        (false, None) => TlsMode::Starttls,
        (false, Some(mode @ (TlsMode::Starttls | TlsMode::None))) => mode,
        (true, Some(mode)) => {
            return Err(ConfigProblem::new(
                "tls",
                format!(
                    "is \"{}\" but smtp_url starts with smtps://, which means implicit TLS; \
                     remove `tls`, or use smtp:// for {}",
                    mode.as_str(),
                    if mode == TlsMode::None {
                        "an unencrypted local relay"
                    } else {
                        "STARTTLS"
                    }
                ),
            ));
        }
        (false, Some(TlsMode::Implicit)) => {
            return Err(ConfigProblem::new(
                "tls",
                "is \"implicit\" but smtp_url starts with smtp://; use smtps://host:465 for \
                 implicit TLS, or remove `tls` for STARTTLS",
            ));
        }
    };
    let port = url.port().unwrap_or(match tls {
        TlsMode::Starttls => STARTTLS_PORT,
        TlsMode::Implicit => IMPLICIT_TLS_PORT,
        TlsMode::None => PLAIN_PORT,
    });
    Ok(Server { host, port, tls })
}

fn mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim().parse::<Mailbox>().map_err(|error| {
        format!(
            "`{text}` is not a valid mailbox ({error}); write an address such as \
             \"sales@example.com\" or \"Sales <sales@example.com>\""
        )
    })
}

/// Problems with `templates_dir`: not absolute, not a folder, or an override that does
/// not parse or render.
fn check_templates_dir(dir: &std::path::Path) -> Vec<TemplateError> {
    if let Err(error) = crate::template_dir::check(dir, "the built-in templates") {
        return vec![error];
    }
    Templates::load(Some(dir)).err().unwrap_or_default()
}

/// Why no message could be made for an event; a retry would fail the same way.
#[derive(Debug, thiserror::Error)]
enum MessageError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("could not build the message: {0}")]
    Build(lettre::error::Error),
}

/// The lettre transport, built on first use (its pool starts a task, so it must be made
/// inside the runtime) and replaced after an attempt is cut off by the timeout.
struct SharedTransport {
    builder: AsyncSmtpTransportBuilder,
    current: Mutex<Option<(u64, AsyncSmtpTransport<Tokio1Executor>)>>,
}

impl SharedTransport {
    /// The transport in use, and its generation (to replace exactly it, not a successor).
    fn get(&self) -> (u64, AsyncSmtpTransport<Tokio1Executor>) {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        current
            .get_or_insert_with(|| (0, self.builder.clone().build()))
            .clone()
    }

    /// Drops a transport whose attempt was cut off mid-dialogue. Its connection would
    /// otherwise go back to the pool with replies still in flight, and the next message
    /// on it would read the previous message's replies as its own.
    fn discard(&self, generation: u64) {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if current
            .as_ref()
            .is_some_and(|(live, _)| *live == generation)
        {
            let (_, old) = current.take().expect("checked above");
            *current = Some((generation + 1, self.builder.clone().build()));
            // Shut down, the old pool takes no connection back: the cut-off one is closed
            // when its task returns it.
            tokio::spawn(async move { old.shutdown().await });
        }
    }
}

impl Drop for SharedTransport {
    fn drop(&mut self) {
        // lettre's pool closes its connections from a task it spawns on drop, which
        // panics outside a Tokio runtime (a connector dropped after the runtime ended, at
        // exit). Then the sockets are left for the process's end to close.
        if tokio::runtime::Handle::try_current().is_err() {
            let current = self
                .current
                .get_mut()
                .unwrap_or_else(|poison| poison.into_inner());
            if let Some((_, transport)) = current.take() {
                std::mem::forget(transport);
            }
        }
    }
}

/// A running email connector: one pooled SMTP transport, reused for every delivery.
pub struct EmailConnector {
    name: String,
    server: Server,
    username: Option<String>,
    /// The password, kept only to scrub it from any text recorded on an attempt.
    scrub: Scrubber,
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    templates: Templates,
    timeout: Duration,
    transport: SharedTransport,
}

impl EmailConnector {
    pub fn new(name: &str, config: &EmailConfig) -> Result<Self, BuildError> {
        let keyed = |problem: ConfigProblem| BuildError::key(problem.key, problem.message);
        let server = server(&config.smtp_url, config.tls).map_err(keyed)?;
        let from = mailbox(&config.from).map_err(|message| BuildError::key("from", message))?;
        if config.to.is_empty() {
            return Err(BuildError::key(
                "to",
                "is empty; list at least one recipient",
            ));
        }
        let parse_all = |key: &str, list: &[String]| -> Result<Vec<Mailbox>, BuildError> {
            list.iter()
                .enumerate()
                .map(|(index, text)| {
                    mailbox(text)
                        .map_err(|message| BuildError::key(format!("{key}[{index}]"), message))
                })
                .collect()
        };
        let to = parse_all("to", &config.to)?;
        let cc = parse_all("cc", &config.cc)?;
        if config.timeout.is_zero() {
            return Err(BuildError::key(
                "timeout",
                "is zero; set how long one attempt may take",
            ));
        }
        let templates = match &config.templates_dir {
            Some(dir) => match check_templates_dir(dir).into_iter().next() {
                Some(error) => return Err(BuildError::Templates(vec![error])),
                None => Templates::load(Some(dir)),
            },
            None => Templates::load(None),
        }
        .map_err(BuildError::Templates)?;

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)
            .port(server.port)
            .timeout(Some(config.timeout));
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned()).map_err(|error| BuildError::Tls {
                host: host.to_owned(),
                error,
            })
        };
        builder = match server.tls {
            TlsMode::Starttls => builder.tls(Tls::Required(tls(&server.host)?)),
            TlsMode::Implicit => builder.tls(Tls::Wrapper(tls(&server.host)?)),
            TlsMode::None => builder.tls(Tls::None),
        };
        let mut scrub = Scrubber::default();
        if let Some(username) = &config.username {
            let password = config
                .password
                .as_ref()
                .ok_or_else(|| BuildError::key("password", MISSING_PASSWORD))?;
            scrub = Scrubber::new(username, password);
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose().to_owned(),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            server,
            username: config.username.clone(),
            scrub,
            from,
            to,
            cc,
            templates,
            timeout: config.timeout,
            transport: SharedTransport {
                builder,
                current: Mutex::new(None),
            },
        })
    }

    /// The message for `event`: From/To/Cc, the rendered subject and text + HTML parts,
    /// and a `Message-ID` derived from the event id, so a repeat is recognisable.
    fn message(&self, event: &Event) -> Result<Message, MessageError> {
        let rendered = self.templates.render(event, &self.name)?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(rendered.subject)
            .message_id(Some(format!("<{}@{MESSAGE_ID_DOMAIN}>", event.id)))
            .user_agent(USER_AGENT.to_owned())
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(EVENT_ID_HEADER),
                event.id.clone(),
            ))
            // RFC 3834: an automatic message; auto-responders should not answer it.
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ));
        for mailbox in &self.to {
            builder = builder.to(mailbox.clone());
        }
        for mailbox in &self.cc {
            builder = builder.cc(mailbox.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(MessageError::Build)
    }

    /// Runs `work` on the shared transport within the attempt's timeout. `None`: cut off
    /// (the transport was replaced, see [`SharedTransport::discard`]).
    async fn within_timeout<T, F>(
        &self,
        work: impl FnOnce(AsyncSmtpTransport<Tokio1Executor>) -> F,
    ) -> Option<Result<T, SmtpError>>
    where
        F: Future<Output = Result<T, SmtpError>>,
    {
        let (generation, transport) = self.transport.get();
        match tokio::time::timeout(self.timeout, work(transport)).await {
            Ok(result) => Some(result),
            Err(_) => {
                self.transport.discard(generation);
                None
            }
        }
    }

    fn timed_out(&self) -> String {
        format!(
            "{} did not finish the SMTP exchange within {:?} (`timeout`); raise `timeout` if \
             the server is just slow",
            self.server, self.timeout
        )
    }

    /// The attempt record for an SMTP failure; every text on it is scrubbed.
    fn failed(&self, error: &SmtpError) -> Attempt {
        let attempt = classify(error, &self.server, self.username.as_deref());
        Attempt {
            verdict: match attempt.verdict {
                Verdict::Retry { after, reason } => Verdict::Retry {
                    after,
                    reason: self.scrub.apply(&reason),
                },
                Verdict::Permanent { reason } => Verdict::Permanent {
                    reason: self.scrub.apply(&reason),
                },
                Verdict::Delivered => Verdict::Delivered,
            },
            status_code: attempt.status_code,
            response: attempt.response.map(|text| self.scrub.apply(&text)),
        }
    }
}

#[async_trait]
impl Connector for EmailConnector {
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let attempt = match self.message(event) {
            // A template or address that cannot make a message will not make one on a
            // retry either; fixed and reloaded, the delivery can be replayed.
            Err(reason) => Attempt::permanent(format!(
                "{reason}; fix the template in `templates_dir`, reload, then replay the \
                 delivery"
            )),
            Ok(message) => {
                let sent = self
                    .within_timeout(|transport| async move { transport.send(message).await })
                    .await;
                match sent {
                    None => Attempt::retry(self.timed_out(), None),
                    Some(Ok(response)) => {
                        let reply = reply_text(
                            u16::from(response.code()),
                            &response.message().collect::<Vec<_>>().join(" "),
                        );
                        Attempt::delivered(
                            Some(response.code().into()),
                            Some(crate::truncate_response(&self.scrub.apply(&reply))),
                        )
                    }
                    Some(Err(error)) => self.failed(&error),
                }
            }
        };
        delivery.log_finished(&self.name, "Email", &attempt);
        attempt
    }

    /// Connects, says EHLO, upgrades with STARTTLS (or starts in TLS), logs in if a
    /// username is set, and checks the connection with NOOP; no mail is sent.
    async fn probe(&self) -> Result<String, ProbeError> {
        let tested = self
            .within_timeout(|transport| async move { transport.test_connection().await })
            .await;
        let steps = match (self.server.tls, &self.username) {
            (TlsMode::Starttls, Some(user)) => format!("STARTTLS and a login as {user}"),
            (TlsMode::Starttls, None) => "STARTTLS".to_owned(),
            (TlsMode::Implicit, Some(user)) => format!("TLS and a login as {user}"),
            (TlsMode::Implicit, None) => "TLS".to_owned(),
            (TlsMode::None, Some(user)) => format!("a login as {user} (unencrypted)"),
            (TlsMode::None, None) => "an unencrypted session".to_owned(),
        };
        match tested {
            None => Err(ProbeError::Passing(self.timed_out())),
            Some(Ok(true)) => Ok(format!(
                "{} accepted {steps}; no mail was sent",
                self.server
            )),
            Some(Ok(false)) => Err(ProbeError::Lasting(format!(
                "{} accepted {steps} but did not answer NOOP; check the server",
                self.server
            ))),
            Some(Err(error)) => Err(self.failed(&error).into()),
        }
    }
}

/// `550 5.1.1 No such user`.
fn reply_text(code: u16, message: &str) -> String {
    let message = message.trim();
    if message.is_empty() {
        code.to_string()
    } else {
        format!("{code} {message}")
    }
}

/// The server's text on a negative reply: lettre keeps it as the error's source.
fn server_message(error: &SmtpError) -> String {
    std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Turns an SMTP failure into an attempt: 4xx and network trouble are retried, 5xx is
/// permanent, each with the server's reply where there is one.
fn classify(error: &SmtpError, server: &Server, username: Option<&str>) -> Attempt {
    if let Some(code) = error.status() {
        let code = u16::from(code);
        let reply = reply_text(code, &server_message(error));
        let attempt = if error.is_transient() {
            Attempt::retry(
                format!("{server} answered {reply}, a temporary failure; will try again"),
                None,
            )
        } else {
            let advice = match code {
                535 | 534 | 454 => format!(
                    "the server rejected the login{}; check `username` and the password \
                     (`password_file`), then replay the delivery",
                    username.map_or_else(String::new, |user| format!(" as {user}"))
                ),
                530 => "the server requires a login; set `username` and `password_file`, \
                        then replay the delivery"
                    .to_owned(),
                538 => "the server accepts a login only over TLS; use tls = \"starttls\" or \
                        smtps://, then replay the delivery"
                    .to_owned(),
                _ => "the server refused the message; check `from`, `to` and `cc` against \
                      its reply, then replay the delivery"
                    .to_owned(),
            };
            Attempt::permanent(format!("{server} answered {reply}: {advice}"))
        };
        return attempt.with_status(code).with_response(reply);
    }
    let cause = root_cause(error);
    if error.is_timeout() {
        return Attempt::retry(
            format!("{server} did not answer in time ({cause}); will try again"),
            None,
        );
    }
    if error.is_client() {
        if server.tls == TlsMode::Starttls && cause.contains("STARTTLS") {
            return Attempt::retry(
                format!(
                    "{server} offers no STARTTLS, and tls = \"starttls\" requires it, so \
                     nothing was sent; fix the server or set tls = \"none\" for a trusted \
                     local relay"
                ),
                None,
            );
        }
        if cause.contains("authentication mechanism") {
            return Attempt::retry(
                format!(
                    "{server} offers no login method clairo-sync can use (PLAIN or LOGIN) on \
                     this connection, so nothing was sent; enable one on the server (some \
                     offer AUTH only over TLS: use tls = \"starttls\"), or remove `username`"
                ),
                None,
            );
        }
        return Attempt::permanent(format!(
            "could not send to {server}: {cause}; check `from`, `to` and `cc`, then replay the \
             delivery"
        ));
    }
    if error.is_tls() {
        return Attempt::retry(
            format!(
                "the TLS handshake with {server} failed ({cause}); check that the server's \
                 certificate is valid for `{host}` and trusted by this machine",
                host = server.host
            ),
            None,
        );
    }
    if error.is_transport_shutdown() {
        return Attempt::retry(
            "the connection pool was reset after a timeout; will try again",
            None,
        );
    }
    Attempt::retry(
        format!("could not talk to {server}: {cause}; will try again"),
        None,
    )
}

/// Replaces the password, and the AUTH PLAIN/LOGIN encodings of it, in recorded text.
/// Nothing should contain them (lettre's errors do not, and servers do not echo AUTH),
/// but a reply is the server's text, and the attempt record is kept for months.
#[derive(Default)]
struct Scrubber {
    needles: Vec<String>,
}

impl Scrubber {
    fn new(username: &str, password: &Secret) -> Self {
        let password = password.expose();
        if password.chars().count() < MIN_SCRUBBED_LEN {
            return Self::default();
        }
        Self {
            needles: vec![
                password.to_owned(),
                STANDARD.encode(password),
                STANDARD.encode(format!("\0{username}\0{password}")),
            ],
        }
    }

    fn apply(&self, text: &str) -> String {
        self.needles.iter().fold(text.to_owned(), |text, needle| {
            text.replace(needle.as_str(), "**REDACTED**")
        })
    }
}
