//! The Slack connector: posts each event to a Slack incoming webhook as a Block Kit
//! message (built in, or from `<event type>.slack.json` in `templates_dir`), and turns
//! Slack's answer into a [`Verdict`]. The webhook URL is a secret: it is never logged,
//! printed or put in a reason; only its host is named. The posting itself is the shared
//! [`ChatConnector`]; this module holds what is Slack's own.

pub mod message;

#[cfg(any(test, feature = "fakes"))]
pub mod fake;
#[cfg(test)]
mod tests;

use reqwest::StatusCode;
use serde_json::Value;

use crate::chat::{self, Answer, ChatConfig, ChatConnector, Medium, Poster, Service};
use crate::{ConfigProblem, Event, ProbeError, Verdict};

/// `[connectors.NAME] type = "slack"`.
pub type SlackConfig = ChatConfig;

/// A running Slack connector.
pub type SlackConnector = ChatConnector<Slack>;

pub fn validate(config: &SlackConfig) -> Vec<ConfigProblem> {
    config.validate(Medium::Slack)
}

/// What Slack does its own way.
pub struct Slack;

impl Service for Slack {
    const MEDIUM: Medium = Medium::Slack;

    fn built_in(event: &Event, email_answer_key: Option<&str>) -> Value {
        message::built_in(event, email_answer_key)
    }

    fn fit_limits(message: &mut Value) {
        message::fit_limits(message);
    }

    fn verdict_for(answer: &Answer) -> Verdict {
        verdict_for(answer)
    }

    /// Posts an empty message, which Slack refuses with `no_text` when the webhook exists
    /// (and with `no_service`, `invalid_token`, … when it does not): the channel gets
    /// nothing.
    async fn probe_webhook(poster: &Poster) -> Result<String, ProbeError> {
        let answer = poster
            .post(&serde_json::json!({}))
            .await
            .map_err(ProbeError::from)?;
        let word = chat::code_word(&answer.body);
        match (answer.status.as_u16(), word) {
            (400, Some("no_text" | "missing_text_or_fallback_or_attachments")) => Ok(format!(
                "{} knows this incoming webhook (an empty test message was refused as \
                 expected; nothing was posted)",
                poster.endpoint()
            )),
            _ => match verdict_for(&answer) {
                Verdict::Delivered => {
                    Ok(format!("{} accepted an empty message", poster.endpoint()))
                }
                Verdict::Retry { reason, .. } => Err(ProbeError::Passing(reason)),
                Verdict::Permanent { reason } => Err(ProbeError::Lasting(reason)),
            },
        }
    }
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
