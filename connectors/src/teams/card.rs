//! The Teams message of an event: an Adaptive Card (version 1.4) in the `message`
//! envelope a Workflows webhook takes, laid out for a phone (a bold title, a FactSet, the
//! link-free summary or the newest messages, a subtle context line), and the size budget,
//! applied to any message (built-in or from a template) by cutting the longest texts
//! with an ellipsis rather than having the post fail.
//!
//! Untrusted text is escaped with [`text::teams`]: the card's Markdown characters get a
//! backslash, so `**`, `[link](…)`, lists and `<at>` mentions show as typed.

use serde_json::{Value, json};

use crate::Event;
use crate::chat::digest::Digest;
use crate::chat::text::{self, cut_teams_escaped};

/// What Teams allows for a whole posted message: 28 KiB.
pub const TEAMS_LIMIT_BYTES: usize = 28 * 1024;

/// What the connector lets a request body reach. Teams measures the message after the
/// workflow has wrapped it, and reports show a 24,453-byte body measured as 28,897 bytes
/// (MicrosoftDocs/msteams-docs#11274); 20 KiB leaves room for that growth.
pub const BODY_BUDGET_BYTES: usize = 20 * 1024;
const _: () = assert!(BODY_BUDGET_BYTES < TEAMS_LIMIT_BYTES);

/// Longest summary quoted, as for Slack: what a phone screen shows in a few swipes.
const BODY_CHARS: usize = 3000;
const FACT_CHARS: usize = 500;
const TITLE_CHARS: usize = 200;

pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

/// Keys whose string values are text a person reads, and so may be cut to fit.
const CUTTABLE_KEYS: [&str; 4] = ["text", "value", "title", "fallbackText"];

/// The built-in message for `event`.
pub fn built_in(event: &Event, email_answer_key: Option<&str>) -> Value {
    let digest = Digest::of(event, email_answer_key);
    let block = |text: String| json!({"type": "TextBlock", "text": text, "wrap": true});
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": text::teams(&digest.title, Some(TITLE_CHARS)),
        "size": "Medium",
        "weight": "Bolder",
        "wrap": true,
    })];
    let mut facts: Vec<Value> = digest
        .facts
        .iter()
        .map(
            |(label, value)| json!({"title": label, "value": text::teams(value, Some(FACT_CHARS))}),
        )
        .collect();
    if let Some(email) = &digest.email {
        // The address passed `lead::first_email`'s check (letters, digits, `._%+-@`), so it
        // is safe inside the link target; the label is escaped like any text.
        facts.push(json!({"title": "Email", "value": format!("[{}](mailto:{email})", text::teams(email, None))}));
    }
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    if let Some(summary) = &digest.body {
        body.push(json!({"type": "TextBlock", "text": digest.body_label, "weight": "Bolder", "wrap": true}));
        body.push(block(text::teams(summary, Some(BODY_CHARS))));
    }
    if !digest.messages.is_empty() {
        body.push(json!({"type": "TextBlock", "text": digest.body_label, "weight": "Bolder", "wrap": true}));
    }
    if digest.messages_left_out > 0 {
        body.push(json!({
            "type": "TextBlock",
            "text": format!("{} earlier new messages not shown", digest.messages_left_out),
            "isSubtle": true,
            "wrap": true,
        }));
    }
    for said in &digest.messages {
        let heading = match &said.when {
            Some(when) => format!("{} · {when}", said.who),
            None => said.who.clone(),
        };
        body.push(json!({
            "type": "TextBlock",
            "text": text::teams(&heading, None),
            "weight": "Bolder",
            "spacing": "Medium",
            "wrap": true,
        }));
        body.push(block(text::teams(&said.text, None)));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": text::teams(&digest.context, None),
        "isSubtle": true,
        "size": "Small",
        "wrap": true,
    }));
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "msteams": {"width": "Full"},
            },
        }],
    })
}

/// Cuts the longest texts until the message's JSON is within [`BODY_BUDGET_BYTES`].
/// Texts are taken as already escaped, so a cut never strands a backslash.
pub fn fit_size(message: &mut Value) {
    // Each round cuts one text by at least the excess; a message with more texts than
    // this over the budget is a template's own design, and Teams will say so.
    for _ in 0..64 {
        let size = serde_json::to_vec(message).map_or(0, |bytes| bytes.len());
        if size <= BODY_BUDGET_BYTES {
            return;
        }
        let longest = longest_text(message, None);
        if longest <= text::ELLIPSIS.len() {
            return;
        }
        // Room for the ellipsis, and for JSON escapes that make the text count for more.
        let keep = longest.saturating_sub(size - BODY_BUDGET_BYTES + 16);
        cut_first(message, None, longest, keep);
    }
}

fn longest_text(value: &Value, key: Option<&str>) -> usize {
    match value {
        Value::String(text) if key.is_some_and(|key| CUTTABLE_KEYS.contains(&key)) => text.len(),
        Value::Array(items) => items
            .iter()
            .map(|item| longest_text(item, key))
            .max()
            .unwrap_or(0),
        Value::Object(map) => map
            .iter()
            .map(|(key, member)| longest_text(member, Some(key)))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

fn cut_first(value: &mut Value, key: Option<&str>, length: usize, keep: usize) -> bool {
    match value {
        Value::String(text)
            if text.len() == length && key.is_some_and(|key| CUTTABLE_KEYS.contains(&key)) =>
        {
            *text = cut_teams_escaped(text, keep);
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .any(|item| cut_first(item, key, length, keep)),
        Value::Object(map) => map
            .iter_mut()
            .any(|(key, member)| cut_first(member, Some(key), length, keep)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn the_built_in_brief_is_an_adaptive_card_with_facts_and_a_mailto_link() {
        let message = built_in(&testkit::john_brief(), None);
        assert_eq!(message["type"], "message");
        let card = &message["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        assert_eq!(
            card["body"][0]["text"],
            "New lead: John Smith \\(TechStart\\)"
        );
        let facts = card["body"][1]["facts"].as_array().unwrap();
        assert_eq!(facts[0], json!({"title": "Who", "value": "John Smith"}));
        assert_eq!(
            facts.last().unwrap()["value"],
            "[john@techstart.\u{200B}io](mailto:john@techstart.io)"
        );
    }

    #[test]
    fn a_message_over_the_budget_is_cut_at_its_longest_texts() {
        let mut message = json!({
            "type": "message",
            "attachments": [{"contentType": CARD_CONTENT_TYPE, "content": {
                "type": "AdaptiveCard", "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": "\\*".repeat(20_000)},
                    {"type": "TextBlock", "text": "b".repeat(30_000)},
                    {"type": "TextBlock", "text": "short"},
                ],
            }}],
        });
        fit_size(&mut message);
        assert!(serde_json::to_vec(&message).unwrap().len() <= BODY_BUDGET_BYTES);
        let body = &message["attachments"][0]["content"]["body"];
        assert_eq!(body[2]["text"], "short");
        assert_eq!(body[0]["type"], "TextBlock");
        let first = body[0]["text"].as_str().unwrap();
        assert!(first.ends_with("\\*…") || first == "…", "{first}");
    }
}
