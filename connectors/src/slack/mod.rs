//! The Slack connector: posts each event to a Slack incoming webhook as a Block Kit
//! message (built in, or from `<event type>.slack.json` in `templates_dir`), and turns
//! Slack's answer into a [`Verdict`]. The webhook URL is a secret: it is never logged,
//! printed or put in a reason; only its host is named.

pub mod message;

#[cfg(any(test, feature = "fakes"))]
pub mod fake;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use reqwest::StatusCode;

use crate::chat::{self, Answer, ChatConfig, Medium, Overrides, Poster};
use crate::json_template::JsonTemplateError;
use crate::{Attempt, BuildError, ConfigProblem, Connector, Delivery, ProbeError, Verdict};

/// `[connectors.NAME] type = "slack"`.
pub type SlackConfig = ChatConfig;

pub fn validate(config: &SlackConfig) -> Vec<ConfigProblem> {
    config.validate(Medium::Slack)
}

/// A running Slack connector.
pub struct SlackConnector {
    name: String,
    poster: Poster,
    overrides: Overrides,
    email_answer_key: Option<String>,
}

impl SlackConnector {
    pub fn new(name: &str, config: &SlackConfig) -> Result<Self, BuildError> {
        let poster = Poster::new(config, Medium::Slack)?;
        let overrides = Overrides::load(config.templates_dir.as_deref(), Medium::Slack)
            .map_err(BuildError::Templates)?;
        Ok(Self {
            name: name.to_owned(),
            poster,
            overrides,
            email_answer_key: config.email_answer_key.clone(),
        })
    }
}

#[async_trait]
impl Connector for SlackConnector {
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let key = self.email_answer_key.as_deref();
        let attempt = match self.overrides.render(event, key) {
            Some(Err(error)) => template_failed(&error),
            rendered => {
                let mut message = match rendered {
                    Some(Ok(message)) => message,
                    _ => message::built_in(event, key),
                };
                message::fit_limits(&mut message);
                match self.poster.post(&message).await {
                    Ok(answer) => answer.attempt(verdict_for(&answer)),
                    Err(attempt) => attempt,
                }
            }
        };
        delivery.log_finished(&self.name, "Slack", &attempt);
        attempt
    }

    /// Posts an empty message, which Slack refuses with `no_text` when the webhook exists
    /// (and with `no_service`, `invalid_token`, … when it does not): the channel gets
    /// nothing.
    async fn probe(&self) -> Result<String, ProbeError> {
        let answer = self
            .poster
            .post(&serde_json::json!({}))
            .await
            .map_err(ProbeError::from)?;
        let word = chat::code_word(&answer.body);
        match (answer.status.as_u16(), word) {
            (400, Some("no_text" | "missing_text_or_fallback_or_attachments")) => Ok(format!(
                "{} knows this incoming webhook (an empty test message was refused as \
                 expected; nothing was posted)",
                self.poster.endpoint()
            )),
            _ => match verdict_for(&answer) {
                Verdict::Delivered => Ok(format!(
                    "{} accepted an empty message",
                    self.poster.endpoint()
                )),
                Verdict::Retry { reason, .. } => Err(ProbeError::Passing(reason)),
                Verdict::Permanent { reason } => Err(ProbeError::Lasting(reason)),
            },
        }
    }
}

fn template_failed(error: &JsonTemplateError) -> Attempt {
    Attempt::permanent(format!(
        "templates_dir: {error}; fix the template (`clairo-sync check` tries it on a sample \
         event), then replay the delivery"
    ))
}

/// Slack's answers, as its incoming-webhook documentation lists them: the body is a word
/// (`ok`, `invalid_blocks`, `channel_is_archived`, …) saying what happened.
fn verdict_for(answer: &Answer) -> Verdict {
    let status = answer.status;
    let described = crate::http::describe(status);
    let word = chat::code_word(&answer.body);
    let said = word.map_or_else(|| described.clone(), |word| format!("{described} `{word}`"));
    let permanent = |advice: &str| Verdict::Permanent {
        reason: format!("Slack refused the message ({said}): {advice}"),
    };
    match status.as_u16() {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: answer.wait,
            reason: chat::with_wait(
                match status {
                    StatusCode::TOO_MANY_REQUESTS => {
                        format!("Slack is rate-limiting this webhook ({said})")
                    }
                    _ => format!("Slack failed ({said})"),
                },
                answer.wait,
            ),
        },
        300..=399 => permanent(
            "a redirect, which is not followed; set the URL to the incoming webhook's own \
             address",
        ),
        _ => permanent(advice(word)),
    }
}

/// What the operator does about each of Slack's refusals.
fn advice(word: Option<&str>) -> &'static str {
    match word.unwrap_or("") {
        "invalid_payload"
        | "invalid_blocks"
        | "invalid_blocks_format"
        | "no_text"
        | "missing_text_or_fallback_or_attachments"
        | "too_many_attachments" => {
            "the message breaks one of Slack's rules; if it comes from a template in \
             `templates_dir`, fix the template, then replay the delivery"
        }
        "channel_not_found" | "no_service" | "no_team" | "team_disabled" | "invalid_token" => {
            "this incoming webhook no longer exists or was revoked; create a new one (Slack \
             app → Incoming Webhooks → Add New Webhook), put its URL in `url_file`, restart, \
             then replay the delivery"
        }
        "channel_is_archived" => {
            "the channel is archived; unarchive it, or create a webhook for another channel \
             and put its URL in `url_file`, then replay the delivery"
        }
        "action_prohibited" | "posting_to_general_channel_denied" => {
            "the workspace does not let this webhook post there; ask a Slack admin, or \
             pick another channel, then replay the delivery"
        }
        _ => {
            "see the response on the attempt, fix the webhook or the template, then replay \
              the delivery"
        }
    }
}
