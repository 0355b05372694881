//! The outbound side of clairo-sync: the [`Event`] envelope every connector receives,
//! the [`Connector`] trait each kind of connector implements, and one module per kind.
//!
//! A connector never touches the state database: the dispatcher hands it an event and the
//! checkpoint it saved last time, and stores whatever it answers.
#![forbid(unsafe_code)]

mod chat;
mod crm;
mod error;
mod event;
#[cfg(any(test, feature = "fakes"))]
mod fake_api;
mod http;
pub mod json_template;
pub mod lead;
pub mod retry;
mod secret;
mod template_dir;
#[cfg(test)]
mod testkit;

pub mod email;
pub mod file;
pub mod hubspot;
pub mod pipedrive;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tracing::debug;

pub use chat::ChatConfig;
pub use error::{
    BuildError, CheckpointError, HeaderLineError, ProbeError, SecretError, TemplateError, UrlError,
};
pub use event::{Event, EventType, event_id};
pub use http::{install_crypto_provider, reread_tls_roots, tls_config};
pub use secret::Secret;

/// What a connector answers for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver has the event; the delivery is done.
    Delivered,
    /// A passing failure: try again. `after` is the receiver's own request
    /// (Retry-After, a CRM's rate-limit reset); the dispatcher waits at least that long.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The receiver will never accept this event as it is (a 4xx, a rejected address):
    /// the delivery is dead at once, kept and listed for an operator to replay.
    Permanent { reason: String },
}

/// One attempt's result: the verdict plus what an operator needs to see why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: Verdict,
    /// The HTTP status (or SMTP reply code) of the last call the attempt made, if any.
    pub status_code: Option<u16>,
    /// The receiver's answer, truncated with [`truncate_response`]; never holds a secret.
    pub response: Option<String>,
}

impl Attempt {
    pub fn delivered(status_code: Option<u16>, response: Option<String>) -> Self {
        Self {
            verdict: Verdict::Delivered,
            status_code,
            response,
        }
    }

    pub fn retry(reason: impl Into<String>, after: Option<Duration>) -> Self {
        Self {
            verdict: Verdict::Retry {
                after,
                reason: reason.into(),
            },
            status_code: None,
            response: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Permanent {
                reason: reason.into(),
            },
            status_code: None,
            response: None,
        }
    }

    pub fn with_status(mut self, status_code: u16) -> Self {
        self.status_code = Some(status_code);
        self
    }

    pub fn with_response(mut self, response: impl AsRef<str>) -> Self {
        self.response = Some(truncate_response(response.as_ref()));
        self
    }

    /// Why the attempt failed, for `probe`'s plain words (`done` when it did not).
    pub(crate) fn reason(&self) -> String {
        match &self.verdict {
            Verdict::Retry { reason, .. } | Verdict::Permanent { reason } => reason.clone(),
            Verdict::Delivered => "done".to_owned(),
        }
    }
}

/// Longest response text kept on an attempt record: enough for an error body,
/// small enough that a receiver answering with a whole HTML page cannot bloat the state file.
pub const MAX_RESPONSE_CHARS: usize = 2048;

/// Cuts a receiver's answer to [`MAX_RESPONSE_CHARS`] on a character boundary.
pub fn truncate_response(text: &str) -> String {
    match text.char_indices().nth(MAX_RESPONSE_CHARS) {
        Some((cut, _)) => format!("{}… (truncated)", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Sent as `User-Agent` on every HTTP request and every mail, so a receiver's logs say
/// what called.
pub(crate) const USER_AGENT: &str = concat!("clairo-sync/", env!("CARGO_PKG_VERSION"));

/// The innermost cause of an error (`Connection refused (os error 111)`), which says what
/// happened where reqwest's or lettre's own message says only which step failed.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// Where a connector that makes several calls saves its progress, so that a retry
/// (after a timeout, a 5xx or a crash) resumes and creates nothing twice.
/// The dispatcher persists each checkpoint before `save` returns.
#[async_trait]
pub trait CheckpointSink: Send + Sync {
    async fn save(&self, checkpoint: serde_json::Value) -> Result<(), CheckpointError>;
}

/// Everything a connector gets for one delivery attempt.
pub struct Delivery<'a> {
    pub event: &'a Event,
    /// `event` as compact JSON ([`Event::to_json`]) when the caller has that text already
    /// (the outbox stores it): connectors that send the envelope send it as it is instead
    /// of serializing the event again (BENCHMARKS.md, issue 16).
    pub envelope: Option<&'a str>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What the connector saved on an earlier attempt of this delivery, if anything.
    pub checkpoint: Option<serde_json::Value>,
    pub checkpoints: &'a dyn CheckpointSink,
}

impl Delivery<'_> {
    /// The event's envelope as compact JSON: the text the caller gave, else serialized now.
    pub fn envelope(&self) -> std::borrow::Cow<'_, str> {
        match self.envelope {
            Some(text) => std::borrow::Cow::Borrowed(text),
            None => std::borrow::Cow::Owned(self.event.to_json()),
        }
    }

    /// Logs how one attempt at this delivery ended; `service` names the connector's kind
    /// as a person writes it (`Webhook`, `HubSpot`).
    pub(crate) fn log_finished(&self, connector: &str, service: &str, attempt: &Attempt) {
        debug!(
            connector = %connector,
            event = %self.event.id,
            attempt = self.attempt,
            status = ?attempt.status_code,
            verdict = ?attempt.verdict,
            "{service} attempt finished."
        );
    }
}

/// One configured destination for events.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Makes one attempt at delivering `delivery.event`. Never panics on a receiver's
    /// answer; every failure becomes a [`Verdict`].
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt;

    /// Checks that the destination is reachable and the credentials are accepted,
    /// without sending an event (`clairo-sync check --online`). `Ok` holds a short
    /// description of what was checked.
    async fn probe(&self) -> Result<String, ProbeError> {
        Ok("nothing to probe".to_owned())
    }

    /// Checks the names the config maps to (a CRM's properties, fields, owners, pipelines)
    /// against the account, for `clairo-sync check --online`: one problem for each name the
    /// account does not have, keyed like a config problem. `Err` when the account could not
    /// be read.
    async fn audit(&self) -> Result<Vec<ConfigProblem>, ProbeError> {
        Ok(Vec::new())
    }
}

/// A connector's configuration, chosen by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ConnectorConfig {
    Webhook(webhook::WebhookConfig),
    Email(email::EmailConfig),
    Hubspot(hubspot::HubspotConfig),
    Pipedrive(pipedrive::PipedriveConfig),
    File(file::FileConfig),
    Slack(slack::SlackConfig),
    Teams(teams::TeamsConfig),
}

/// A problem found in a connector's configuration: the key (relative to the
/// connector's table) and a message saying what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl ConfigProblem {
    /// `message` is any text or error whose `Display` says what is wrong and what to do.
    pub fn new(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

/// A secret a connector needs, to be filled in by the config loader from the inline
/// value, the `*_file` key, or the systemd credential `<connector name>-<key>`.
pub struct SecretSlot<'a> {
    /// The inline key's name (`secret`, `password`, `token`, `api_token`).
    pub key: &'static str,
    pub value: &'a mut Option<Secret>,
    pub file: Option<&'a PathBuf>,
    /// Whether the connector cannot work without it.
    pub required: bool,
}

/// Every key that holds a secret in some connector's table (its `SecretSlot::key`), and
/// `headers`, whose every value is one: the config loader never prints a value found at
/// these keys, and takes them as written from the environment.
pub const SECRET_KEYS: [&str; 5] = ["secret", "password", "token", "api_token", "headers"];

/// Headers a connector sends with every request, to be completed by the config loader
/// from `headers_file` or the systemd credential `<connector name>-headers`.
pub struct HeaderSlot<'a> {
    pub headers: &'a mut std::collections::BTreeMap<String, Secret>,
    pub file: Option<&'a PathBuf>,
}

impl ConnectorConfig {
    /// Where this connector's extra headers go, if it sends any.
    pub fn header_slot(&mut self) -> Option<HeaderSlot<'_>> {
        match self {
            Self::Webhook(config) => Some(HeaderSlot {
                headers: &mut config.headers,
                file: config.headers_file.as_ref(),
            }),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Email(_) => "email",
            Self::Hubspot(_) => "hubspot",
            Self::Pipedrive(_) => "pipedrive",
            Self::File(_) => "file",
            Self::Slack(_) => "slack",
            Self::Teams(_) => "teams",
        }
    }

    /// The secrets this connector reads, for the loader to resolve.
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        match self {
            Self::Webhook(config) => config.secret_slots(),
            Self::Email(config) => config.secret_slots(),
            Self::Hubspot(config) => config.secret_slots(),
            Self::Pipedrive(config) => config.secret_slots(),
            Self::File(_) => Vec::new(),
            Self::Slack(config) | Self::Teams(config) => config.secret_slots(),
        }
    }

    /// Checks beyond types (URLs parse, paths are absolute, a secret has its form).
    /// Run after secrets are resolved.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        match self {
            Self::Webhook(config) => config.validate(),
            Self::Email(config) => config.validate(),
            Self::Hubspot(config) => config.validate(),
            Self::Pipedrive(config) => config.validate(),
            Self::File(config) => config.validate(),
            Self::Slack(config) => slack::validate(config),
            Self::Teams(config) => teams::validate(config),
        }
    }

    /// Builds the running connector. `name` is the config table's name.
    pub fn build(&self, name: &str) -> Result<Arc<dyn Connector>, BuildError> {
        match self {
            Self::Webhook(config) => Ok(Arc::new(webhook::WebhookConnector::new(name, config)?)),
            Self::Email(config) => Ok(Arc::new(email::EmailConnector::new(name, config)?)),
            Self::Hubspot(config) => Ok(Arc::new(hubspot::HubspotConnector::new(name, config)?)),
            Self::Pipedrive(config) => {
                Ok(Arc::new(pipedrive::PipedriveConnector::new(name, config)?))
            }
            Self::File(config) => Ok(Arc::new(file::FileConnector::new(config))),
            Self::Slack(config) => Ok(Arc::new(slack::SlackConnector::new(name, config)?)),
            Self::Teams(config) => Ok(Arc::new(teams::TeamsConnector::new(name, config)?)),
        }
    }
}
