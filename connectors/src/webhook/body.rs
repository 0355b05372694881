//! What a webhook sends: the event envelope, or the receiver's own shape from
//! `body_template` / `body_template_file` (minijinja, rendered per event on the envelope
//! and `contact_email`). When `content_type` is JSON the template is a JSON template
//! (crate::json_template: every `{{ value }}` written as a JSON value) and what it renders
//! must parse; otherwise it is text, written as rendered.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use reqwest::header::HeaderValue;

use crate::json_template::{self, JsonTemplates};
use crate::{ConfigProblem, Event, EventType};

/// The content type of the envelope, and of a template's body unless `content_type` says.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// The name a body template is known by in its environment and in messages.
const TEMPLATE: &str = "body_template";

/// How bodies are made for one connector.
pub(super) enum Body {
    /// The event envelope, as JSON.
    Envelope,
    /// A template whose output is JSON.
    Json(JsonTemplates),
    /// A template whose output is text of `content_type`.
    Text(Box<Environment<'static>>),
}

/// Why a body could not be made for an event.
pub(super) type BodyError = String;

impl Body {
    /// From the config's keys; the error is a problem at the key that holds the template.
    pub(super) fn new(
        template: Option<&str>,
        file: Option<&Path>,
        content_type: &str,
    ) -> Result<Self, ConfigProblem> {
        let (key, source) = match (template, file) {
            (None, None) => return Ok(Self::Envelope),
            (Some(_), Some(_)) => {
                return Err(ConfigProblem::new(
                    "body_template",
                    "is set together with `body_template_file`; keep one of them",
                ));
            }
            (Some(text), None) => ("body_template", text.to_owned()),
            (None, Some(path)) => ("body_template_file", read_template(path)?),
        };
        let problem = |message: String| ConfigProblem::new(key, message);
        if is_json(content_type) {
            let mut templates = JsonTemplates::new();
            templates
                .add(TEMPLATE, source)
                .map_err(|message| problem(format!("{message}; fix the template")))?;
            Ok(Self::Json(templates))
        } else {
            let mut env = Environment::new();
            // As in the JSON templates: a field one event lacks is empty, not an error.
            env.set_undefined_behavior(UndefinedBehavior::Chainable);
            env.set_trim_blocks(true);
            env.set_lstrip_blocks(true);
            env.add_template_owned(TEMPLATE, source).map_err(|error| {
                problem(format!(
                    "`{TEMPLATE}` does not parse ({error}); fix the template"
                ))
            })?;
            Ok(Self::Text(Box::new(env)))
        }
    }

    /// Renders the template on a sample event of each type, so that a template that fails
    /// or writes something that is not JSON is found by `check`, not at a delivery.
    pub(super) fn check_on_samples(&self, key: &str) -> Vec<ConfigProblem> {
        EventType::ALL
            .into_iter()
            .filter_map(|kind| {
                self.render(&crate::email::sample_event(kind), None)
                    .err()
                    .map(|error| {
                        ConfigProblem::new(
                            key,
                            format!("{error} on a sample {kind} event; fix the template"),
                        )
                    })
            })
            .collect()
    }

    /// The body for `event`, exactly as it will be sent and signed; `envelope` is the
    /// event's JSON when the caller has it already (`Delivery::envelope`).
    pub(super) fn render(
        &self,
        event: &Event,
        envelope: Option<&str>,
    ) -> Result<String, BodyError> {
        match self {
            Self::Envelope => Ok(envelope.map_or_else(|| event.to_json(), str::to_owned)),
            Self::Json(templates) => templates
                .render_text(TEMPLATE, &json_template::context(event, None))
                .map_err(|error| error.to_string()),
            Self::Text(env) => env
                .get_template(TEMPLATE)
                .and_then(|template| template.render(json_template::context(event, None)))
                .map_err(|error| format!("`{TEMPLATE}` failed to render ({error})")),
        }
    }
}

/// Whether a content type is JSON: `application/json`, or any `…+json` type.
pub(super) fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// `content_type` as a header value, or what is wrong with it.
pub(super) fn content_type_header(content_type: &str) -> Result<HeaderValue, String> {
    if !content_type.contains('/') {
        return Err(format!(
            "{content_type:?} is not a media type; write e.g. \"application/json\" or \"text/plain; charset=utf-8\""
        ));
    }
    HeaderValue::from_str(content_type).map_err(|_| {
        format!("{content_type:?} is not a valid header value; write e.g. \"application/json\"")
    })
}

fn read_template(path: &Path) -> Result<String, ConfigProblem> {
    let problem = |message: String| ConfigProblem::new("body_template_file", message);
    if !path.is_absolute() {
        return Err(problem(format!(
            "`{}` is a relative path; write the file's absolute path, e.g. \"/etc/clairo-sync/body.json.j2\"",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(|error| {
        problem(format!(
            "cannot read `{}`: {error}; check that the file exists and the clairo-sync user may read it",
            path.display()
        ))
    })
}
