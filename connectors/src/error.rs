//! The connectors' errors, one enum per kind of failure, so a caller matches on what went
//! wrong instead of reading a `String`. Each `Display` is the text an operator reads (in
//! `clairo-sync check`, a start-up refusal or a log line), and says what to do next; none
//! ever holds a secret.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use crate::json_template::JsonTemplateError;
use crate::{Attempt, EventType, Verdict};

/// Why a connector could not be built from its config table. The daemon prefixes it with
/// `connectors.NAME: `.
#[derive(Debug, Error)]
pub enum BuildError {
    /// A key's value cannot be used, or a required key is missing: the key (relative to
    /// the connector's table) and what is wrong with it and what to do.
    #[error("{key}: {message}")]
    Key { key: String, message: String },
    /// One or more templates in `templates_dir` cannot be used; each names its file.
    #[error("templates_dir: {}", join(.0))]
    Templates(Vec<TemplateError>),
    /// The HTTP client could not be set up (no TLS roots, a platform verifier failure).
    #[error("could not set up the HTTP client: {0}")]
    HttpClient(reqwest::Error),
    /// TLS towards the SMTP server could not be set up.
    #[error("could not set up TLS for {host}: {error}")]
    Tls {
        host: String,
        error: lettre::transport::smtp::Error,
    },
    /// The CRM credential holds a character an HTTP header cannot carry. Its key is not
    /// named: the credential may come from a file, a credential or the environment.
    #[error(
        "the credential holds a line break or another character not allowed in an HTTP \
         header; copy it again into its file"
    )]
    CredentialNotAHeader,
}

impl BuildError {
    /// A problem with the value of `key`.
    pub(crate) fn key(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::Key {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

fn join(errors: &[TemplateError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a destination (or its account) could not be checked: `clairo-sync check
/// --online`'s probe and mapping audit, and reads of an account's settings.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProbeError {
    /// A failure that may pass: no answer, a timeout, a 5xx, a rate limit.
    #[error("{0}")]
    Passing(String),
    /// The destination refused, or cannot be used as configured: the config, a
    /// credential or the destination itself must change.
    #[error("{0}")]
    Lasting(String),
}

impl From<Attempt> for ProbeError {
    /// A failed attempt's reason, passing when the attempt would have been retried.
    fn from(attempt: Attempt) -> Self {
        match attempt.verdict {
            Verdict::Retry { .. } => Self::Passing(attempt.reason()),
            Verdict::Permanent { .. } | Verdict::Delivered => Self::Lasting(attempt.reason()),
        }
    }
}

/// Why a connector's progress could not be saved on its delivery.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The progress could not be written as JSON.
    #[error("{0}")]
    Serialize(#[from] serde_json::Error),
    /// The sink did not keep it (the lease was lost, the disk is full).
    #[error("{0}")]
    NotSaved(Box<dyn std::error::Error + Send + Sync>),
}

impl CheckpointError {
    /// For a [`crate::CheckpointSink`] outside this crate: its own error, kept as the cause.
    pub fn not_saved(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::NotSaved(Box::new(error))
    }
}

/// Why a `templates_dir`, or one template in it, cannot be used. `built_in` (or
/// `built_ins`) names what the connector uses instead, in the advice.
#[derive(Debug, Error)]
pub enum TemplateError {
    #[error(
        "`{}` is a relative path; write the folder's absolute path, e.g. \
         \"/etc/clairo-sync/templates\"",
        .dir.display()
    )]
    RelativeDir { dir: PathBuf },
    #[error(
        "`{}` is not a folder; create it, or remove `templates_dir` to use {built_ins}",
        .dir.display()
    )]
    NotAFolder {
        dir: PathBuf,
        built_ins: &'static str,
    },
    #[error("`{name}` is not UTF-8 text; save the template as UTF-8")]
    NotUtf8 { name: String },
    #[error(
        "`{name}` cannot be read ({error}); make it readable by the clairo-sync user, or \
         remove it to use {built_in}"
    )]
    Unreadable {
        name: String,
        error: std::io::Error,
        built_in: &'static str,
    },
    /// An email template does not parse.
    #[error(
        "`{name}` does not parse ({error}); fix the template, or remove the file to use the \
         built-in"
    )]
    Parse {
        name: String,
        error: minijinja::Error,
    },
    /// A chat message template does not parse.
    #[error("{0}; fix the template, or remove the file to use the built-in message")]
    ChatParse(JsonTemplateError),
    /// An email template failed on a sample event of its type.
    #[error(
        "`{name}` fails to render a sample {kind} event ({error}); fix the template, or \
         remove the file to use the built-in"
    )]
    EmailSample {
        name: String,
        kind: EventType,
        error: Box<TemplateError>,
    },
    /// A chat message template failed on a sample event of its type.
    #[error(
        "{error} on a sample {kind} event; fix the template, or remove the file to use the \
         built-in message"
    )]
    ChatSample {
        kind: EventType,
        error: JsonTemplateError,
    },
    /// A CRM record's title template (`deal.name`, `lead.title`) does not parse; the
    /// caller names the key.
    #[error(
        "is not a valid template ({0}); write e.g. \"{{{{ data.answers.company }}}} — Clairo \
         brief\""
    )]
    Title(minijinja::Error),
    /// An email template failed while rendering an event.
    #[error("template `{name}`: {error}")]
    Render {
        name: String,
        error: minijinja::Error,
    },
}

/// Why an address in the config cannot be used. The address is never echoed: it may
/// carry a token in its path or query.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    #[error("is not a valid address ({error}); write the full address, e.g. \"{example}\"")]
    Invalid {
        error: url::ParseError,
        example: &'static str,
    },
    #[error("has no host; write the full address")]
    NoHost,
    #[error("uses the scheme `{0}`; use an http:// or https:// address")]
    Scheme(String),
    /// A chat webhook's URL over plain http to another machine: it carries the token.
    #[error(
        "uses http:// to a host other than this machine, which would send the token in the \
         URL unencrypted; use {get_it} (https://)"
    )]
    Unencrypted { get_it: &'static str },
}

/// Why a webhook signing secret (`whsec_…`) cannot be used. Never holds the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SecretError {
    #[error(
        "does not start with `whsec_`; use the signing secret exactly as the receiver gave it \
         (whsec_ followed by base64)"
    )]
    NoPrefix,
    #[error("is not valid base64 after `whsec_`; copy the whole secret again from the receiver")]
    NotBase64,
    #[error("has no key after `whsec_`; copy the whole secret again from the receiver")]
    NoKey,
}

/// Why a `Name: value` headers file cannot be read. Names the line by its number, never
/// by its text: the values are credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderLineError {
    #[error(
        "line {line} is not `Name: value`; write one header per line, e.g. \
         `X-Gateway-Token: …`"
    )]
    NotNameValue { line: usize },
    #[error("line {line} has no header name before `:`; write `Name: value`")]
    NoName { line: usize },
}
