//! One chat connector for every chat service: the message (an override from
//! `templates_dir`, else the service's built-in), fitted to the service's limits, posted,
//! and the answer turned into a [`Verdict`]. What differs between Slack and Teams is
//! behind [`Service`]; each service's module holds only that.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde_json::Value;

use super::{Answer, ChatConfig, Medium, Overrides, Poster};
use crate::json_template::JsonTemplateError;
use crate::{Attempt, BuildError, Connector, Delivery, Event, ProbeError, Verdict};

/// What one chat service does its own way.
pub trait Service: Send + Sync + 'static {
    const MEDIUM: Medium;

    /// The built-in message for `event`, for an event type without an override.
    fn built_in(event: &Event, email_answer_key: Option<&str>) -> Value;

    /// Cuts any message (built-in or from a template) to what the service accepts.
    fn fit_limits(message: &mut Value);

    /// The service's answer to a post, as a verdict with a reason an operator can act on.
    fn verdict_for(answer: &Answer) -> Verdict;

    /// Checks the webhook without posting anything to the channel.
    fn probe_webhook(poster: &Poster) -> impl Future<Output = Result<String, ProbeError>> + Send;
}

/// A running chat connector for service `S`.
pub struct ChatConnector<S> {
    name: String,
    poster: Poster,
    overrides: Overrides,
    email_answer_key: Option<String>,
    service: PhantomData<S>,
}

impl<S: Service> ChatConnector<S> {
    pub fn new(name: &str, config: &ChatConfig) -> Result<Self, BuildError> {
        let poster = Poster::new(config, S::MEDIUM)?;
        let overrides = Overrides::load(config.templates_dir.as_deref(), S::MEDIUM)
            .map_err(BuildError::Templates)?;
        Ok(Self {
            name: name.to_owned(),
            poster,
            overrides,
            email_answer_key: config.email_answer_key.clone(),
            service: PhantomData,
        })
    }
}

#[async_trait]
impl<S: Service> Connector for ChatConnector<S> {
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let key = self.email_answer_key.as_deref();
        let attempt = match self.overrides.render(event, key) {
            Some(Err(error)) => template_failed(&error),
            rendered => {
                let mut message = match rendered {
                    Some(Ok(message)) => message,
                    _ => S::built_in(event, key),
                };
                S::fit_limits(&mut message);
                match self.poster.post(&message).await {
                    Ok(answer) => answer.attempt(S::verdict_for(&answer)),
                    Err(attempt) => attempt,
                }
            }
        };
        delivery.log_finished(&self.name, S::MEDIUM.name(), &attempt);
        attempt
    }

    async fn probe(&self) -> Result<String, ProbeError> {
        S::probe_webhook(&self.poster).await
    }
}

/// A template that fails on this event fails the same way on a retry: permanent, to be
/// replayed once the template is fixed.
fn template_failed(error: &JsonTemplateError) -> Attempt {
    Attempt::permanent(format!(
        "templates_dir: {error}; fix the template (`clairo-sync check` tries it on a sample \
         event), then replay the delivery"
    ))
}
