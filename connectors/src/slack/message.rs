//! The Slack message of an event: a Block Kit layout made to be read on a phone (a `text`
//! fallback for notifications, a header, the facts in two columns, a link-free summary, a
//! context line), and the limits Slack enforces, applied to any message (built-in or
//! from a template) by cutting text with an ellipsis rather than having it refused.
//!
//! Untrusted text goes in `plain_text` objects, which Slack never formats as mrkdwn, and
//! is escaped ([`text::slack`]) so no `<!channel>`, `<@user>` or `<url|label>` can be
//! written; the one mrkdwn field is the contact email, which passed a strict address
//! check before it is made a `mailto:` link.

use serde_json::{Value, json};

use crate::Event;
use crate::chat::digest::Digest;
use crate::chat::text::{self, cut_slack_escaped};

/// Slack's limits (Block Kit reference), in UTF-16 units for texts.
pub const HEADER_CHARS: usize = 150;
pub const SECTION_CHARS: usize = 3000;
pub const FIELD_CHARS: usize = 2000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_BLOCKS: usize = 50;
/// Context elements: at most 10, each text object as long as a section's.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Slack truncates a longer top-level `text`; cutting it here keeps the ellipsis ours.
pub const TEXT_CHARS: usize = 40_000;

/// The fallback `text` is what a phone notification shows: a line, not the summary.
const FALLBACK_CHARS: usize = 300;

/// The built-in message for `event`.
pub fn built_in(event: &Event, email_answer_key: Option<&str>) -> Value {
    let digest = Digest::of(event, email_answer_key);
    let plain = |text: String| json!({"type": "plain_text", "text": text, "emoji": true});
    let mut blocks = vec![json!({
        "type": "header",
        "text": plain(text::slack(&digest.title, Some(HEADER_CHARS))),
    })];
    let mut fields: Vec<Value> = digest
        .facts
        .iter()
        .map(|(label, value)| plain(text::slack(&format!("{label}\n{value}"), Some(FIELD_CHARS))))
        .collect();
    if let Some(email) = &digest.email {
        // The address passed `lead::first_email`'s check: letters, digits and `._%+-@`
        // only, nothing Slack would read as markup.
        fields
            .push(json!({"type": "mrkdwn", "text": format!("*Email*\n<mailto:{email}|{email}>")}));
    }
    fields.truncate(MAX_FIELDS);
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if let Some(body) = &digest.body {
        blocks.push(json!({
            "type": "section",
            "text": plain(text::slack(&format!("{}\n{body}", digest.body_label), Some(SECTION_CHARS))),
        }));
    }
    if digest.messages_left_out > 0 {
        blocks.push(json!({
            "type": "context",
            "elements": [plain(format!("{} earlier new messages not shown", digest.messages_left_out))],
        }));
    }
    for said in &digest.messages {
        let heading = match &said.when {
            Some(when) => format!("{} · {when}", said.who),
            None => said.who.clone(),
        };
        blocks.push(json!({
            "type": "section",
            "text": plain(text::slack(&format!("{heading}\n{}", said.text), Some(SECTION_CHARS))),
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [plain(text::slack(&digest.context, Some(SECTION_CHARS)))],
    }));
    json!({
        "text": text::slack(&digest.fallback(), Some(FALLBACK_CHARS)),
        "blocks": blocks,
    })
}

/// Cuts whatever exceeds a Slack limit: texts with an ellipsis, lists to their maximum
/// length. Texts are taken as already escaped (a template's `slack_text` did it), so a
/// cut never splits an entity.
pub fn fit_limits(message: &mut Value) {
    if let Some(text) = message.get_mut("text") {
        cut(text, TEXT_CHARS);
    }
    let Some(blocks) = message.get_mut("blocks").and_then(Value::as_array_mut) else {
        return;
    };
    blocks.truncate(MAX_BLOCKS);
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("header") => cut_text_object(block.get_mut("text"), HEADER_CHARS),
            Some("section") => {
                cut_text_object(block.get_mut("text"), SECTION_CHARS);
                if let Some(fields) = block.get_mut("fields").and_then(Value::as_array_mut) {
                    fields.truncate(MAX_FIELDS);
                    for field in fields {
                        cut_text_object(Some(field), FIELD_CHARS);
                    }
                }
            }
            Some("context") => {
                if let Some(elements) = block.get_mut("elements").and_then(Value::as_array_mut) {
                    elements.truncate(MAX_CONTEXT_ELEMENTS);
                    for element in elements {
                        cut_text_object(Some(element), SECTION_CHARS);
                    }
                }
            }
            _ => {}
        }
    }
}

fn cut_text_object(object: Option<&mut Value>, max: usize) {
    if let Some(text) = object.and_then(|object| object.get_mut("text")) {
        cut(text, max);
    }
}

fn cut(value: &mut Value, max: usize) {
    if let Value::String(text) = value
        && text::utf16_len(text) > max
    {
        *text = cut_slack_escaped(text, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn a_template_message_over_the_limits_is_cut_not_refused() {
        let long = "x".repeat(5000);
        let mut message = json!({
            "text": "y".repeat(50_000),
            "blocks": (0..60).map(|_| json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": long},
                "fields": (0..12).map(|_| json!({"type": "plain_text", "text": long})).collect::<Vec<_>>(),
            })).chain([json!({"type": "header", "text": {"type": "plain_text", "text": long}})]).collect::<Vec<_>>(),
        });
        fit_limits(&mut message);
        assert_eq!(
            text::utf16_len(message["text"].as_str().unwrap()),
            TEXT_CHARS
        );
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), MAX_BLOCKS);
        let section = &blocks[0];
        assert_eq!(
            section["text"]["text"].as_str().unwrap().chars().count(),
            SECTION_CHARS
        );
        assert!(section["text"]["text"].as_str().unwrap().ends_with('…'));
        assert_eq!(section["fields"].as_array().unwrap().len(), MAX_FIELDS);
        assert_eq!(
            section["fields"][0]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            FIELD_CHARS
        );
    }

    #[test]
    fn the_built_in_brief_has_a_header_fields_summary_and_context() {
        let message = built_in(&testkit::john_brief(), None);
        let blocks = message["blocks"].as_array().unwrap();
        let types: Vec<&str> = blocks
            .iter()
            .map(|block| block["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["header", "section", "section", "context"]);
        assert_eq!(
            blocks[0]["text"]["text"],
            "New lead: John Smith (TechStart)"
        );
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|field| field["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "Who\nJohn Smith",
                "Company\nTechStart",
                "Budget\n$50-100/month",
                "*Email*\n<mailto:john@techstart.io|john@techstart.io>"
            ]
        );
        assert!(
            message["text"]
                .as_str()
                .unwrap()
                .starts_with("New lead: John Smith (TechStart): John Smith, CEO")
        );
    }
}
