//! What a `brief.created` event says about the lead: contact email, name, company,
//! budget. The answers' structure is undocumented, so each is looked up tolerantly, and
//! nothing is ever invented: a brief without an email has no email.

use serde_json::Value;

/// The lead a brief describes, as far as the brief says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lead {
    pub email: Option<String>,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub budget: Option<String>,
    pub summary: Option<String>,
    /// The answers as (key, text) pairs, in the order the API gave them.
    pub answers: Vec<(String, String)>,
}

impl Lead {
    /// Reads a `brief.created` event's `data`. `email_answer_key`: the answer that holds
    /// the contact's email, when the connector's config names one.
    pub fn from_brief(data: &Value, email_answer_key: Option<&str>) -> Self {
        let answers = answer_pairs(data.get("answers"));
        let summary = data
            .get("summary")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let email = contact_email(&answers, summary.as_deref(), email_answer_key);
        let name = find(
            &answers,
            &[
                "name",
                "fullname",
                "full_name",
                "contact",
                "contactname",
                "contact_name",
            ],
        );
        let (first_name, last_name) = match (
            find(&answers, &["firstname", "first_name", "givenname"]),
            find(
                &answers,
                &["lastname", "last_name", "surname", "familyname"],
            ),
        ) {
            (Some(first), last) => (Some(first), last),
            (None, _) => split_name(name.as_deref()),
        };
        Self {
            email,
            name,
            first_name,
            last_name,
            company: find(
                &answers,
                &[
                    "company",
                    "companyname",
                    "company_name",
                    "organization",
                    "organisation",
                    "business",
                ],
            ),
            budget: find(&answers, &["budget", "monthlybudget", "monthly_budget"]),
            summary,
            answers,
        }
    }
}

/// The answers object as (key, text) pairs; non-string values are written as JSON.
pub fn answer_pairs(answers: Option<&Value>) -> Vec<(String, String)> {
    match answers {
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let question = item
                    .get("question")
                    .or_else(|| item.get("key"))
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("answer {}", index + 1), str::to_owned);
                let answer = item
                    .get("answer")
                    .or_else(|| item.get("value"))
                    .map_or_else(String::new, |value| match value {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    });
                (question, answer)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Design §5: the answer named by `email_answer_key` if set, else any answer whose key
/// contains "email", else the first email address in the summary. Never invented.
pub fn contact_email(
    answers: &[(String, String)],
    summary: Option<&str>,
    email_answer_key: Option<&str>,
) -> Option<String> {
    if let Some(key) = email_answer_key {
        return answers
            .iter()
            .find(|(name, _)| name == key)
            .and_then(|(_, value)| first_email(value));
    }
    answers
        .iter()
        .filter(|(name, _)| name.to_ascii_lowercase().contains("email"))
        .find_map(|(_, value)| first_email(value))
        .or_else(|| summary.and_then(first_email))
}

/// The first thing in `text` shaped like an email address (local@domain.tld).
pub fn first_email(text: &str) -> Option<String> {
    text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '<' | '>' | '(' | ')' | '"' | '\'' | '[' | ']'
            )
    })
    .map(|word| word.trim_matches(|c: char| matches!(c, '.' | ':' | '!' | '?')))
    .find(|word| is_email(word))
    .map(|word| word.to_ascii_lowercase())
}

fn is_email(word: &str) -> bool {
    let Some((local, domain)) = word.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
}

/// The first answer whose key, lowercased without spaces or dashes, is one of `keys`.
fn find(answers: &[(String, String)], keys: &[&str]) -> Option<String> {
    answers
        .iter()
        .find(|(key, value)| {
            let normal: String = key
                .to_ascii_lowercase()
                .chars()
                .filter(|c| !matches!(c, ' ' | '-'))
                .collect();
            keys.contains(&normal.as_str()) && !value.trim().is_empty()
        })
        .map(|(_, value)| value.trim().to_owned())
}

fn split_name(name: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(name) = name else {
        return (None, None);
    };
    let mut parts = name.split_whitespace();
    let first = parts.next().map(str::to_owned);
    let rest: Vec<&str> = parts.collect();
    (first, (!rest.is_empty()).then(|| rest.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_email_comes_from_an_answer_whose_key_mentions_email() {
        let data = json!({"answers": {"name": "John Smith", "workEmail": "John@TechStart.io"}, "summary": "x"});
        let lead = Lead::from_brief(&data, None);
        assert_eq!(lead.email.as_deref(), Some("john@techstart.io"));
        assert_eq!(lead.first_name.as_deref(), Some("John"));
        assert_eq!(lead.last_name.as_deref(), Some("Smith"));
    }

    #[test]
    fn a_configured_answer_key_wins_and_is_the_only_place_looked() {
        let data =
            json!({"answers": {"email": "a@x.io", "contact_mail": "b@y.io"}, "summary": "c@z.io"});
        assert_eq!(
            Lead::from_brief(&data, Some("contact_mail"))
                .email
                .as_deref(),
            Some("b@y.io")
        );
        assert_eq!(Lead::from_brief(&data, Some("missing")).email, None);
    }

    #[test]
    fn without_an_email_answer_the_summary_is_searched() {
        let data = json!({"answers": {"name": "Ann"}, "summary": "Ann (ann@corp.example.com), CTO. Budget: $50."});
        assert_eq!(
            Lead::from_brief(&data, None).email.as_deref(),
            Some("ann@corp.example.com")
        );
    }

    #[test]
    fn no_email_anywhere_means_none_never_a_guess() {
        let data = json!({"answers": {"name": "Ann", "company": "Corp"}, "summary": "Ann from Corp, reach her @ the office."});
        let lead = Lead::from_brief(&data, None);
        assert_eq!(lead.email, None);
        assert_eq!(lead.company.as_deref(), Some("Corp"));
    }
}
