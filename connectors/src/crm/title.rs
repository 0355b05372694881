//! The title of a record a brief opens (a HubSpot deal's name, a Pipedrive lead's title):
//! a minijinja template rendered on the event's envelope, or a default that names who the
//! brief is from.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use super::lead_name;
use crate::lead::Lead;
use crate::{Event, TemplateError};

/// Characters of a title kept at most: a CRM list shows a line, and Pipedrive and HubSpot
/// both refuse far longer names.
const TITLE_CHARS: usize = 255;

const TEMPLATE: &str = "title";

/// A title template, checked when the connector is built.
pub(crate) struct Title {
    env: Option<Environment<'static>>,
}

impl Title {
    /// `source` is the config's template; `None` uses the default title. The error says
    /// what is wrong with the template (the caller adds the key).
    pub fn new(source: Option<&str>) -> Result<Self, TemplateError> {
        let Some(source) = source.filter(|source| !source.trim().is_empty()) else {
            return Ok(Self { env: None });
        };
        let mut env = Environment::new();
        // A brief's answers are loosely shaped: a missing one renders as nothing rather
        // than failing the delivery.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.add_template_owned(TEMPLATE, source.to_owned())
            .map_err(TemplateError::Title)?;
        Ok(Self { env: Some(env) })
    }

    /// The title for this brief: the template rendered on the envelope (`id`, `type`,
    /// `timestamp`, `data`, and `lead` with `email`, `name`, `company`, `domain`), on one
    /// line and cut short; the default when there is no template or it renders empty.
    pub fn render(&self, event: &Event, lead: &Lead, email: &str) -> String {
        let rendered = self.env.as_ref().and_then(|env| {
            let template = env.get_template(TEMPLATE).ok()?;
            template.render(context(event, lead, email)).ok()
        });
        let rendered = rendered.map(|text| one_line(&text)).unwrap_or_default();
        if rendered.is_empty() {
            default_title(lead, email)
        } else {
            rendered
        }
    }
}

/// `<company, else the person, else the email> — Clairo brief`.
pub(crate) fn default_title(lead: &Lead, email: &str) -> String {
    let who = lead
        .company
        .clone()
        .or_else(|| lead_name(lead))
        .unwrap_or_else(|| email.to_owned());
    one_line(&format!("{who} — Clairo brief"))
}

fn context(event: &Event, lead: &Lead, email: &str) -> Value {
    json!({
        "id": event.id,
        "type": event.kind.as_str(),
        "timestamp": event.timestamp.to_rfc3339(),
        "data": event.data,
        "lead": {
            "email": email,
            "name": lead_name(lead),
            "company": lead.company,
            "domain": super::email_domain(email),
        },
    })
}

fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.chars().take(TITLE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn a_title_template_sees_the_envelope_and_the_lead() {
        let event = john_brief();
        let lead = Lead::from_brief(&event.data, None);
        let title = Title::new(Some(
            "{{ data.answers.company }} ({{ lead.domain }}) — {{ data.answers.budget }}\n",
        ))
        .unwrap();
        assert_eq!(
            title.render(&event, &lead, "john@techstart.io"),
            "TechStart (techstart.io) — $50-100/month"
        );
    }

    #[test]
    fn without_a_template_or_when_it_renders_empty_the_default_title_is_used() {
        let event = john_brief();
        let lead = Lead::from_brief(&event.data, None);
        let none = Title::new(None).unwrap();
        assert_eq!(
            none.render(&event, &lead, "john@techstart.io"),
            "TechStart — Clairo brief"
        );
        let empty = Title::new(Some("{{ data.answers.missing }}")).unwrap();
        assert_eq!(
            empty.render(&event, &lead, "john@techstart.io"),
            "TechStart — Clairo brief"
        );
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused_with_an_example() {
        let error = Title::new(Some("{{ data.answers.company ")).err().unwrap();
        assert!(matches!(error, TemplateError::Title(_)), "{error:?}");
        let error = error.to_string();
        assert!(error.contains("not a valid template"), "{error}");
        assert!(error.contains("— Clairo brief\""), "{error}");
    }
}
