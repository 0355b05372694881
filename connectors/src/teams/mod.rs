//! The Teams connector: posts each event to a Teams Workflows webhook ("Post to a channel
//! when a webhook request is received") as an Adaptive Card (built in, or from
//! `<event type>.teams.json` in `templates_dir`), and turns the answer into a [`Verdict`].
//! The webhook URL holds its signature (`sig=`), so it is a secret: never logged,
//! printed or put in a reason; only its host is named.

pub mod card;

#[cfg(any(test, feature = "fakes"))]
pub mod fake;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use serde_json::Value;

use crate::chat::{self, Answer, ChatConfig, Medium, Overrides, Poster};
use crate::json_template::JsonTemplateError;
use crate::{Attempt, BuildError, ConfigProblem, Connector, Delivery, ProbeError, Verdict};

/// `[connectors.NAME] type = "teams"`.
pub type TeamsConfig = ChatConfig;

pub fn validate(config: &TeamsConfig) -> Vec<ConfigProblem> {
    config.validate(Medium::Teams)
}

/// A running Teams connector.
pub struct TeamsConnector {
    name: String,
    poster: Poster,
    overrides: Overrides,
    email_answer_key: Option<String>,
}

impl TeamsConnector {
    pub fn new(name: &str, config: &TeamsConfig) -> Result<Self, BuildError> {
        let poster = Poster::new(config, Medium::Teams)?;
        let overrides = Overrides::load(config.templates_dir.as_deref(), Medium::Teams)
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
impl Connector for TeamsConnector {
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let key = self.email_answer_key.as_deref();
        let attempt = match self.overrides.render(event, key) {
            Some(Err(error)) => template_failed(&error),
            rendered => {
                let mut message = match rendered {
                    Some(Ok(message)) => message,
                    _ => card::built_in(event, key),
                };
                card::fit_size(&mut message);
                match self.poster.post(&message).await {
                    Ok(answer) => answer.attempt(verdict_for(&answer)),
                    Err(attempt) => attempt,
                }
            }
        };
        delivery.log_finished(&self.name, "Teams", &attempt);
        attempt
    }

    /// A HEAD request: any answer means the host is reachable. A POST would start the
    /// workflow, and an empty one would make it fail in the flow's run history.
    async fn probe(&self) -> Result<String, ProbeError> {
        let answer = self.poster.head().await.map_err(ProbeError::from)?;
        Ok(format!(
            "{} is reachable (answered {} to a HEAD request; the workflow itself is only \
             tried by a delivery or `--send-test`)",
            self.poster.endpoint(),
            crate::http::describe(answer.status)
        ))
    }
}

fn template_failed(error: &JsonTemplateError) -> Attempt {
    Attempt::permanent(format!(
        "templates_dir: {error}; fix the template (`clairo-sync check` tries it on a sample \
         event), then replay the delivery"
    ))
}

/// The error code Workflows (Azure Logic Apps) puts in `{"error": {"code": …}}`, if the
/// body is that and the code is a plain word.
fn error_code(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let code = value.get("error")?.get("code")?.as_str()?;
    chat::code_word(code).map(str::to_owned)
}

/// Workflows answers 202 Accepted when the flow was started; 400, 401, 403 and 404 say
/// the request or the URL is wrong, and trying again would not change that.
fn verdict_for(answer: &Answer) -> Verdict {
    let status = answer.status;
    let described = crate::http::describe(status);
    let said = match error_code(&answer.body) {
        Some(code) => format!("{described} `{code}`"),
        None => described,
    };
    let permanent = |advice: &str| Verdict::Permanent {
        reason: format!("Teams refused the message ({said}): {advice}"),
    };
    match status.as_u16() {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: answer.wait,
            reason: chat::with_wait(
                if status.as_u16() == 429 {
                    format!("Teams is throttling this workflow ({said})")
                } else {
                    format!("Teams failed ({said})")
                },
                answer.wait,
            ),
        },
        300..=399 => permanent(
            "a redirect, which is not followed; set the URL to the workflow's own address",
        ),
        401 | 403 => permanent(
            "the URL's signature was not accepted (the workflow was changed, or the URL was \
             copied in part); copy the URL again from the workflow's trigger into `url_file`, \
             restart, then replay the delivery",
        ),
        404 => permanent(
            "the workflow no longer exists or is turned off; turn it on or create it again \
             (Workflows → \"Post to a channel when a webhook request is received\"), put its \
             URL in `url_file`, then replay the delivery",
        ),
        _ => permanent(
            "the message was not accepted; if it comes from a template in `templates_dir`, \
             fix the template, then replay the delivery",
        ),
    }
}
