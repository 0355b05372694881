//! Templates whose output is a JSON document (a Slack or Teams message from
//! `templates_dir`; later a webhook body): minijinja with JSON auto-escaping, so every
//! `{{ value }}` is written as a JSON value — a string with its quotes and escapes, an
//! object as an object — and no value can break the document. `slack_text` and
//! `teams_text` escape untrusted text for each medium first. See docs/operations.md
//! ("Templates that produce JSON").

use chrono::SecondsFormat;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value as JinjaValue};
use serde_json::{Value, json};

use crate::chat::text;
use crate::lead::{answer_pairs, contact_email};
use crate::{Event, EventType};

/// A set of named JSON templates.
pub struct JsonTemplates {
    env: Environment<'static>,
}

impl Default for JsonTemplates {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a template gave no document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonTemplateError {
    /// The template failed while rendering (an unknown filter, a type error).
    Render(String),
    /// It rendered, but what it wrote is not JSON.
    NotJson(String),
    /// The template does not parse.
    Parse(String),
}

impl std::fmt::Display for JsonTemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Render(message) | Self::NotJson(message) | Self::Parse(message) => {
                f.write_str(message)
            }
        }
    }
}

impl JsonTemplates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        // Every template here writes JSON, whatever its name.
        env.set_auto_escape_callback(|_| AutoEscape::Json);
        // Event data is loosely shaped: a missing field (even a nested one) is `null`
        // rather than an error that would fail the delivery.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_filter("slack_text", slack_text);
        env.add_filter("teams_text", teams_text);
        Self { env }
    }

    /// Adds (or replaces) the template `name`; the error says where it does not parse.
    pub fn add(&mut self, name: &str, source: String) -> Result<(), JsonTemplateError> {
        self.env
            .add_template_owned(name.to_owned(), source)
            .map_err(|error| JsonTemplateError::Parse(format!("`{name}` does not parse ({error})")))
    }

    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders `name` with `context` and parses the result.
    pub fn render(&self, name: &str, context: &Value) -> Result<Value, JsonTemplateError> {
        let rendered = self.render_raw(name, context)?;
        serde_json::from_str(&rendered).map_err(|error| not_json(name, &error))
    }

    /// Renders `name` with `context` and checks that the result is JSON; returns the text
    /// as rendered (a webhook body is signed and sent exactly as the template wrote it).
    pub fn render_text(&self, name: &str, context: &Value) -> Result<String, JsonTemplateError> {
        let rendered = self.render_raw(name, context)?;
        serde_json::from_str::<serde::de::IgnoredAny>(&rendered)
            .map_err(|error| not_json(name, &error))?;
        Ok(rendered)
    }

    /// The template's output as text, unparsed.
    fn render_raw(&self, name: &str, context: &Value) -> Result<String, JsonTemplateError> {
        self.env
            .get_template(name)
            .and_then(|template| template.render(context))
            .map_err(|error| {
                JsonTemplateError::Render(format!("`{name}` failed to render ({error})"))
            })
    }
}

/// What to tell the author of a template `name` whose output did not parse.
fn not_json(name: &str, error: &serde_json::Error) -> JsonTemplateError {
    JsonTemplateError::NotJson(format!(
        "`{name}` did not produce valid JSON ({error}); every {{{{ value }}}} is \
         written as a JSON value with its own quotes, so write \
         `\"text\": {{{{ data.summary | slack_text }}}}`, not `\"{{{{ … }}}}\"`, and \
         check the commas between members"
    ))
}

/// What a JSON template sees: the event envelope (`id`, `type`, `timestamp`, `data`) and
/// `contact_email` (found in the answers, then the summary, of a brief; else null).
pub fn context(event: &Event, email_answer_key: Option<&str>) -> Value {
    let contact_email = match event.kind {
        EventType::BriefCreated => contact_email(
            &answer_pairs(event.data.get("answers")),
            event.data.get("summary").and_then(Value::as_str),
            email_answer_key,
        ),
        _ => None,
    };
    json!({
        "id": event.id,
        "type": event.kind.as_str(),
        "timestamp": event.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": event.data,
        "contact_email": contact_email,
    })
}

/// Text of any value: a string as it is, nothing for none/undefined, others as printed.
fn plain(value: &JinjaValue) -> String {
    if value.is_undefined() || value.is_none() {
        String::new()
    } else if let Some(text) = value.as_str() {
        text.to_owned()
    } else {
        value.to_string()
    }
}

/// `{{ data.summary | slack_text }}`, or `slack_text(3000)` to cut with an ellipsis.
fn slack_text(value: &JinjaValue, max: Option<usize>) -> String {
    text::slack(&plain(value), max)
}

/// `{{ data.summary | teams_text }}`, or `teams_text(2000)` to cut with an ellipsis.
fn teams_text(value: &JinjaValue, max: Option<usize>) -> String {
    text::teams(&plain(value), max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn render(source: &str, event: &Event) -> Result<Value, JsonTemplateError> {
        let mut templates = JsonTemplates::new();
        templates.add("t.json", source.to_owned()).unwrap();
        templates.render("t.json", &context(event, None))
    }

    #[test]
    fn every_value_is_inserted_as_json_so_quotes_and_newlines_cannot_break_the_document() {
        let event = testkit::brief(
            json!({"name": "Ann \"the\" Hacker", "email": "ann@example.com"}),
            "line one\nline two\", \"injected\": \"yes",
        );
        let value = render(
            r#"{"id": {{ id }}, "summary": {{ data.summary }}, "answers": {{ data.answers }},
                "missing": {{ data.nothing.here }}, "email": {{ contact_email }}}"#,
            &event,
        )
        .unwrap();
        assert_eq!(value["id"], event.id.as_str());
        assert_eq!(value["summary"], event.data["summary"]);
        assert_eq!(value["answers"]["name"], "Ann \"the\" Hacker");
        assert_eq!(value["missing"], Value::Null);
        assert_eq!(value["email"], "ann@example.com");
        assert!(value.get("injected").is_none());
    }

    #[test]
    fn the_chat_filters_escape_for_their_medium_and_cut_on_request() {
        let event = testkit::brief(json!({}), "<!channel> **now** & @everyone");
        let value = render(
            r#"{"slack": {{ data.summary | slack_text }}, "teams": {{ data.summary | teams_text }},
                "short": {{ data.summary | slack_text(8) }}, "none": {{ data.nothing | slack_text }}}"#,
            &event,
        )
        .unwrap();
        assert_eq!(
            value["slack"],
            "&lt;!channel&gt; **now** &amp; @\u{200B}everyone"
        );
        assert_eq!(
            value["teams"],
            "\\<!channel\\> \\*\\*now\\*\\* & @\u{200B}everyone"
        );
        assert_eq!(value["short"], "&lt;!ch…");
        assert_eq!(value["none"], "");
    }

    #[test]
    fn output_that_is_not_json_says_how_values_are_written() {
        let error =
            render(r#"{"text": "{{ data.summary }}"}"#, &testkit::john_brief()).unwrap_err();
        let JsonTemplateError::NotJson(message) = error else {
            panic!("expected NotJson, got {error:?}");
        };
        assert!(
            message.contains("`t.json` did not produce valid JSON"),
            "{message}"
        );
        assert!(
            message.contains("{{ data.summary | slack_text }}"),
            "{message}"
        );
    }

    #[test]
    fn a_render_error_names_the_template() {
        let error = render(r#"{"n": {{ data.summary + 1 }}}"#, &testkit::john_brief()).unwrap_err();
        assert!(
            matches!(&error, JsonTemplateError::Render(message) if message.contains("`t.json` failed to render")),
            "{error:?}"
        );
    }
}
