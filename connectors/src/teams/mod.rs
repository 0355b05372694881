//! The Teams connector: posts each event to a Teams Workflows webhook ("Post to a channel
//! when a webhook request is received") as an Adaptive Card (built in, or from
//! `<event type>.teams.json` in `templates_dir`), and turns the answer into a [`Verdict`].
//! The webhook URL holds its signature (`sig=`), so it is a secret: never logged,
//! printed or put in a reason; only its host is named. The posting itself is the shared
//! [`ChatConnector`]; this module holds what is Teams' own.

pub mod card;

#[cfg(any(test, feature = "fakes"))]
pub mod fake;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::chat::{self, Answer, ChatConfig, ChatConnector, Medium, Poster, Service};
use crate::{ConfigProblem, Event, ProbeError, Verdict};

/// `[connectors.NAME] type = "teams"`.
pub type TeamsConfig = ChatConfig;

/// A running Teams connector.
pub type TeamsConnector = ChatConnector<Teams>;

pub fn validate(config: &TeamsConfig) -> Vec<ConfigProblem> {
    config.validate(Medium::Teams)
}

/// What Teams does its own way.
pub struct Teams;

impl Service for Teams {
    const MEDIUM: Medium = Medium::Teams;

    fn built_in(event: &Event, email_answer_key: Option<&str>) -> Value {
        card::built_in(event, email_answer_key)
    }

    fn fit_limits(message: &mut Value) {
        card::fit_size(message);
    }

    fn verdict_for(answer: &Answer) -> Verdict {
        verdict_for(answer)
    }

    /// A HEAD request: any answer means the host is reachable. A POST would start the
    /// workflow, and an empty one would make it fail in the flow's run history.
    async fn probe_webhook(poster: &Poster) -> Result<String, ProbeError> {
        let answer = poster.head().await.map_err(ProbeError::from)?;
        Ok(format!(
            "{} is reachable (answered {} to a HEAD request; the workflow itself is only \
             tried by a delivery or `--send-test`)",
            poster.endpoint(),
            crate::http::describe(answer.status)
        ))
    }
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
