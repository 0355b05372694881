//! What the Slack and Teams connectors share: their config (the webhook URL is a secret),
//! the rule that a chat URL is https unless it points at this machine, the
//! `templates_dir` overrides checked on sample events, and the POST of one JSON message.

mod connector;
pub(crate) mod digest;
#[cfg(any(test, feature = "fakes"))]
pub(crate) mod fake;
pub(crate) mod text;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde::Deserialize;
use serde_json::Value;
use url::{Host, Url};

use crate::http::{self, NoAnswer};
use crate::json_template::{self, JsonTemplateError, JsonTemplates};
use crate::template_dir;
pub use connector::ChatConnector;
pub use connector::Service;

use crate::{
    Attempt, BuildError, ConfigProblem, Event, EventType, MAX_RESPONSE_CHARS, Secret, SecretSlot,
    TemplateError, UrlError, truncate_response,
};

/// Bytes of an answer read at most: more than any error Slack or Teams sends, and enough
/// for [`MAX_RESPONSE_CHARS`] characters on the attempt record.
const RESPONSE_BYTES_READ: usize = (MAX_RESPONSE_CHARS + 1) * 4;

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[connectors.NAME] type = "slack"` or `type = "teams"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// The webhook URL. It holds the token that lets anyone post to the channel, so it is
    /// a secret: usually filled in from `url_file` or the credential `<name>-url`.
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// A folder of `<event type>.slack.json` / `<event type>.teams.json` templates that
    /// replace the built-in message of that event type.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// Limit on one whole attempt: connecting, sending, and reading the answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The brief answer that holds the contact's email, when the agent names it oddly.
    #[serde(default)]
    pub email_answer_key: Option<String>,
}

impl fmt::Debug for ChatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatConfig")
            .field("url", &self.url)
            .field("url_file", &self.url_file)
            .field("templates_dir", &self.templates_dir)
            .field("timeout", &self.timeout)
            .field("email_answer_key", &self.email_answer_key)
            .finish()
    }
}

/// Which chat a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    Slack,
    Teams,
}

impl Medium {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Slack => "Slack",
            Self::Teams => "Teams",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Teams => "teams",
        }
    }

    fn example_url(self) -> &'static str {
        match self {
            Self::Slack => "https://hooks.slack.com/services/T…/B…/…",
            Self::Teams => "https://prod-00.westeurope.logic.azure.com/workflows/…",
        }
    }

    fn where_to_get_it(self) -> &'static str {
        match self {
            Self::Slack => "the incoming webhook's URL from the Slack app's Incoming Webhooks page",
            Self::Teams => {
                "the URL of the Teams workflow \"Post to a channel when a webhook request is received\""
            }
        }
    }
}

/// `<event type>.slack.json` or `<event type>.teams.json`: the override's file name.
pub(crate) fn template_name(kind: EventType, medium: Medium) -> String {
    format!("{}.{}.json", kind.as_str(), medium.suffix())
}

impl ChatConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        vec![SecretSlot {
            key: "url",
            value: &mut self.url,
            file: self.url_file.as_ref(),
            required: true,
        }]
    }

    pub(crate) fn validate(&self, medium: Medium) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        match &self.url {
            Some(url) => {
                if let Err(message) = chat_url(url, medium) {
                    problems.push(ConfigProblem::new("url", message));
                }
            }
            // An unreadable `url_file` was already reported under its own key.
            None if self.url_file.is_some() => {}
            None => problems.push(ConfigProblem::new("url", missing_url(medium))),
        }
        if let Some(dir) = &self.templates_dir
            && let Err(errors) = Overrides::load(Some(dir), medium)
        {
            problems.extend(
                errors
                    .into_iter()
                    .map(|error| ConfigProblem::new("templates_dir", error)),
            );
        }
        if self.timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "timeout",
                format!(
                    "is zero; set how long to wait for {}, e.g. \"10s\"",
                    medium.name()
                ),
            ));
        }
        problems
    }
}

fn missing_url(medium: Medium) -> String {
    format!(
        "is missing; put {} in a file named by `url_file` (mode 0600), or provide the \
         systemd credential `<connector name>-url`",
        medium.where_to_get_it()
    )
}

/// The webhook URL, checked: http(s), and https unless the host is this machine (a test
/// or a local relay), because the URL carries the token. Never echoed in a message.
pub(crate) fn chat_url(url: &Secret, medium: Medium) -> Result<Url, UrlError> {
    let url = http::parse_url(url.expose().trim(), medium.example_url())?;
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(UrlError::Unencrypted {
            get_it: medium.where_to_get_it(),
        });
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(address)) => address.is_loopback(),
        Some(Host::Ipv6(address)) => address.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The `templates_dir` overrides of one medium: only the event types with a file have one.
pub(crate) struct Overrides {
    medium: Medium,
    templates: JsonTemplates,
}

impl Overrides {
    /// Reads `<event type>.<medium>.json` from `dir`, and renders each on a sample event
    /// of its type: a template that does not parse, fails, or writes something other than
    /// a JSON object is found here, at `check` or start-up, not at a delivery. The
    /// messages name the file and say what to do.
    pub(crate) fn load(dir: Option<&Path>, medium: Medium) -> Result<Self, Vec<TemplateError>> {
        let mut overrides = Self {
            medium,
            templates: JsonTemplates::new(),
        };
        let Some(dir) = dir else {
            return Ok(overrides);
        };
        template_dir::check(dir, "the built-in messages").map_err(|error| vec![error])?;
        let mut errors = Vec::new();
        for kind in EventType::ALL {
            let name = template_name(kind, medium);
            let source = match template_dir::read(dir, &name, "the built-in message") {
                Ok(Some(source)) => source,
                Ok(None) => continue,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            if let Err(error) = overrides.templates.add(&name, source) {
                errors.push(TemplateError::ChatParse(error));
                continue;
            }
            let sample = crate::email::sample_event(kind);
            if let Some(Err(error)) = overrides.render(&sample, None) {
                errors.push(TemplateError::ChatSample { kind, error });
            }
        }
        if errors.is_empty() {
            Ok(overrides)
        } else {
            Err(errors)
        }
    }

    /// The override's message for `event`, if its type has one.
    pub(crate) fn render(
        &self,
        event: &Event,
        email_answer_key: Option<&str>,
    ) -> Option<Result<Value, JsonTemplateError>> {
        let name = template_name(event.kind, self.medium);
        if !self.templates.has(&name) {
            return None;
        }
        let context = json_template::context(event, email_answer_key);
        Some(
            self.templates
                .render(&name, &context)
                .and_then(|value| match value {
                    Value::Object(_) => Ok(value),
                    _ => Err(JsonTemplateError::NotJson(format!(
                        "`{name}` produced JSON that is not an object; a {} message is a \
                         JSON object ({{ … }})",
                        self.medium.name()
                    ))),
                }),
        )
    }
}

/// What the chat service answered.
pub struct Answer {
    pub status: StatusCode,
    /// Its `Retry-After`, capped.
    pub wait: Option<Duration>,
    /// The start of the body, as text.
    pub body: String,
}

impl Answer {
    /// The attempt record for this answer with `verdict`'s reason.
    pub(crate) fn attempt(&self, verdict: crate::Verdict) -> Attempt {
        Attempt {
            verdict,
            status_code: Some(self.status.as_u16()),
            response: (!self.body.is_empty()).then(|| truncate_response(&self.body)),
        }
    }
}

/// Posts JSON messages to one webhook URL, reusing one HTTP client.
pub struct Poster {
    medium: Medium,
    url: Url,
    timeout: Duration,
    client: reqwest::Client,
}

impl Poster {
    pub(crate) fn new(config: &ChatConfig, medium: Medium) -> Result<Self, BuildError> {
        let url = config
            .url
            .as_ref()
            .ok_or_else(|| BuildError::key("url", missing_url(medium)))?;
        let url = chat_url(url, medium).map_err(|error| BuildError::key("url", error))?;
        if config.timeout.is_zero() {
            return Err(BuildError::key(
                "timeout",
                format!("is zero; set how long to wait for {}", medium.name()),
            ));
        }
        Ok(Self {
            medium,
            url,
            timeout: config.timeout,
            client: http::client(config.timeout, HeaderMap::new())?,
        })
    }

    /// `host:port` of the webhook: enough to say where, without the path that holds the
    /// token.
    pub(crate) fn endpoint(&self) -> String {
        http::endpoint(&self.url, self.medium.name())
    }

    /// POSTs `message`; `Err` holds the attempt for a request that got no answer.
    pub(crate) async fn post(&self, message: &Value) -> Result<Answer, Attempt> {
        let body = serde_json::to_vec(message).expect("a JSON value always serializes");
        self.send(
            self.client
                .post(self.url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    /// HEADs the URL: any answer means it is reachable, and nothing is posted.
    pub(crate) async fn head(&self) -> Result<Answer, Attempt> {
        self.send(self.client.head(self.url.clone())).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, Attempt> {
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let wait = http::retry_after(response.headers(), SystemTime::now());
                let body = http::read_body(response, RESPONSE_BYTES_READ).await;
                Ok(Answer { status, wait, body })
            }
            Err(error) => Err(self.unanswered(&error.without_url())),
        }
    }

    /// The attempt for a request that got no HTTP answer, in plain words, without the URL.
    fn unanswered(&self, error: &reqwest::Error) -> Attempt {
        let endpoint = self.endpoint();
        match NoAnswer::of(error) {
            NoAnswer::TimedOut => Attempt::retry(
                format!(
                    "{endpoint} gave no answer within {:?} (`timeout`); raise `timeout` if {} \
                     is just slow",
                    self.timeout,
                    self.medium.name()
                ),
                None,
            ),
            NoAnswer::Connect(cause) => {
                Attempt::retry(format!("could not connect to {endpoint}: {cause}"), None)
            }
            NoAnswer::Build(cause) => {
                Attempt::permanent(format!("could not build the request: {cause}"))
            }
            NoAnswer::Failed(cause) => {
                Attempt::retry(format!("the request to {endpoint} failed: {cause}"), None)
            }
        }
    }
}

/// `…; it asked to wait 30s` when the service sent `Retry-After`.
pub(crate) fn with_wait(reason: String, wait: Option<Duration>) -> String {
    match wait {
        Some(wait) => format!("{reason}; it asked to wait {}s", wait.as_secs()),
        None => reason,
    }
}

/// The service's one-word answer (`channel_is_archived`) if the body is one, so it can
/// go in a reason without quoting arbitrary text.
pub(crate) fn code_word(body: &str) -> Option<&str> {
    let word = body.trim();
    (!word.is_empty()
        && word.len() <= 64
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{chat_config as config, keys};

    #[test]
    fn chat_urls_are_https_unless_the_host_is_this_machine() {
        for good in [
            "https://hooks.slack.com/services/T1/B2/tok_secret",
            "http://127.0.0.1:8080/hook",
            "http://127.9.9.9/hook",
            "http://[::1]:9/hook",
            "http://LOCALHOST:9/hook",
        ] {
            assert_eq!(config(good).validate(Medium::Slack), Vec::new(), "{good}");
        }
        for bad in [
            "http://hooks.slack.com/services/T1/B2/tok_secret",
            "http://10.0.0.1/tok_secret",
            "ftp://example.com/tok_secret",
            "hooks.slack.com/tok_secret",
        ] {
            let problems = config(bad).validate(Medium::Teams);
            assert_eq!(keys(&problems), ["url"], "{bad}");
            assert!(!problems[0].message.contains("tok_secret"), "{problems:?}");
            assert!(problems[0].message.contains("; "), "{problems:?}");
        }
    }

    #[test]
    fn a_missing_url_says_where_to_put_it_and_a_config_never_prints_it() {
        let mut missing = config("https://hooks.slack.com/services/T1/B2/tok_secret");
        let printed = format!("{missing:?}");
        assert!(!printed.contains("tok_secret"), "{printed}");
        missing.url = None;
        let problems = missing.validate(Medium::Slack);
        assert_eq!(keys(&problems), ["url"]);
        assert!(problems[0].message.contains("url_file"), "{problems:?}");
        assert!(problems[0].message.contains("-url"), "{problems:?}");
    }

    #[test]
    fn the_service_word_is_kept_and_anything_else_is_not_quoted() {
        assert_eq!(
            code_word("channel_is_archived\n"),
            Some("channel_is_archived")
        );
        assert_eq!(code_word("<html>oops</html>"), None);
        assert_eq!(code_word(""), None);
    }
}
