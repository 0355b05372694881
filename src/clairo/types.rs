//! The Clairo API's objects, parsed tolerantly.
//!
//! List items' fields are undocumented, so every field but `id` is optional and unknown
//! fields are ignored. Each object keeps its exact JSON in `raw` (for the state database);
//! `raw` is not serialized again, so `--json` output shows the parsed fields once.
//! A list is parsed item by item: an item that does not parse lands in
//! [`Listing::skipped`] and never fails the list.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `SUPPORT`, `DISCOVERY` or `MEETING` in the examples.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    pub id: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub message_count: Option<u64>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub messages: Vec<Message>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// `user` or `assistant` in the examples.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BriefSummary {
    pub id: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(skip)]
    pub raw: Value,
}

/// `GET /briefs/{id}`. The documented example has only `id, summary, answers,
/// conversation`; merge with the list's [`BriefSummary`] for the rest (the detail wins).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BriefDetail {
    pub id: String,
    #[serde(default)]
    pub summary: Option<String>,
    /// Structure undocumented: kept as JSON.
    #[serde(default)]
    pub answers: Option<Value>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatReply {
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverReply {
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Percent, 0–100 in the example.
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub completed: Option<bool>,
    #[serde(skip)]
    pub raw: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meeting {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub transcript: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub duration_sec: Option<f64>,
    #[serde(skip)]
    pub raw: Value,
}

/// One recording to send to `POST /meetings`. The file is streamed from `path`;
/// `file_name` is what Clairo is told (its extension picks the MIME type).
#[derive(Clone, Debug)]
pub struct MeetingUpload {
    pub path: PathBuf,
    pub file_name: String,
    pub agent_id: String,
    pub title: String,
}

/// A parsed list. `returned` counts the items of the raw response, parsed or not, so a
/// caller can tell when a list came back exactly `limit` long.
#[derive(Clone, Debug, Serialize)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub skipped: Vec<SkippedItem>,
    pub returned: usize,
}

/// A list item that did not parse; the poll goes on without it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SkippedItem {
    /// Position in the raw list.
    pub index: usize,
    /// The item's `id`, when it has a string one.
    pub id: Option<String>,
    pub reason: String,
}

/// An API object that keeps its raw JSON.
pub(crate) trait ApiObject: DeserializeOwned {
    fn set_raw(&mut self, raw: Value);
}

macro_rules! api_object {
    ($($ty:ty),*) => {$(
        impl ApiObject for $ty {
            fn set_raw(&mut self, raw: Value) {
                self.raw = raw;
            }
        }
    )*};
}
api_object!(
    Agent,
    ConversationSummary,
    BriefSummary,
    BriefDetail,
    ChatReply,
    DiscoverReply,
    Meeting
);

impl ApiObject for Conversation {
    fn set_raw(&mut self, raw: Value) {
        if let Some(messages) = raw.get("messages").and_then(Value::as_array) {
            for (message, raw_message) in self.messages.iter_mut().zip(messages) {
                message.raw = raw_message.clone();
            }
        }
        self.raw = raw;
    }
}

/// Parses one object, keeping its JSON. The error is serde's, which names the field.
pub(crate) fn parse_object<T: ApiObject>(value: Value) -> Result<T, String> {
    if !value.is_object() {
        return Err(format!(
            "expected a JSON object, found {}",
            json_kind(&value)
        ));
    }
    let mut parsed = T::deserialize(&value).map_err(|error| error.to_string())?;
    parsed.set_raw(value);
    Ok(parsed)
}

/// Parses a list answer: `{"<key>": [...]}` as documented, or a bare array.
pub(crate) fn parse_listing<T: ApiObject>(body: Value, key: &str) -> Result<Listing<T>, String> {
    let items = match body {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove(key) {
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(format!("`{key}` is {}, not a list", json_kind(&other)));
            }
            None => return Err(format!("the answer has no `{key}` list")),
        },
        other => {
            return Err(format!(
                "expected a JSON object, found {}",
                json_kind(&other)
            ));
        }
    };
    let returned = items.len();
    let mut listing = Listing {
        items: Vec::with_capacity(returned),
        skipped: Vec::new(),
        returned,
    };
    for (index, item) in items.into_iter().enumerate() {
        let id = item.get("id").and_then(Value::as_str).map(str::to_owned);
        match parse_object::<T>(item) {
            Ok(parsed) => listing.items.push(parsed),
            Err(reason) => listing.skipped.push(SkippedItem { index, id, reason }),
        }
    }
    Ok(listing)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `null` reads as the type's default, like a missing field.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_documented_agent_example_parses_and_keeps_its_raw_json() {
        let body = json!({"agents": [{
            "id": "cm1abc", "name": "Support Bot", "type": "SUPPORT", "isActive": true,
            "description": "Customer support agent", "createdAt": "2026-01-15T10:00:00Z",
            "somethingNew": 1
        }]});
        let listing = parse_listing::<Agent>(body.clone(), "agents").unwrap();
        assert_eq!(listing.returned, 1);
        let agent = &listing.items[0];
        assert_eq!(agent.kind.as_deref(), Some("SUPPORT"));
        assert_eq!(agent.is_active, Some(true));
        assert_eq!(agent.raw, body["agents"][0]);
        let shown = serde_json::to_value(agent).unwrap();
        assert_eq!(shown["type"], "SUPPORT");
        assert!(shown.get("raw").is_none());
    }

    #[test]
    fn one_odd_item_is_skipped_and_the_rest_of_the_list_parses() {
        let body = json!({"briefs": [
            {"id": "b1", "summary": "fine"},
            {"summary": "no id"},
            {"id": "b3", "summary": 42},
            "not an object",
            {"id": "b5"}
        ]});
        let listing = parse_listing::<BriefSummary>(body, "briefs").unwrap();
        assert_eq!(listing.returned, 5);
        let ids: Vec<_> = listing
            .items
            .iter()
            .map(|brief| brief.id.as_str())
            .collect();
        assert_eq!(ids, ["b1", "b5"]);
        let skipped: Vec<_> = listing
            .skipped
            .iter()
            .map(|item| (item.index, item.id.as_deref()))
            .collect();
        assert_eq!(skipped, [(1, None), (2, Some("b3")), (3, None)]);
        assert!(
            listing.skipped[0].reason.contains("id"),
            "{:?}",
            listing.skipped[0]
        );
    }

    #[test]
    fn a_list_answer_without_its_list_is_a_decode_failure() {
        assert!(parse_listing::<Agent>(json!({"error": "x"}), "agents").is_err());
        assert!(parse_listing::<Agent>(json!({"agents": {}}), "agents").is_err());
        assert!(
            parse_listing::<Agent>(json!([]), "agents")
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[test]
    fn a_conversation_keeps_each_message_raw_and_tolerates_nulls() {
        let body = json!({"id": "c1", "status": "ACTIVE", "messages": [
            {"role": "user", "content": "Hello!", "createdAt": "t", "extra": true},
            {"role": "assistant", "content": null}
        ]});
        let conversation = parse_object::<Conversation>(body.clone()).unwrap();
        assert_eq!(conversation.messages.len(), 2);
        assert_eq!(conversation.messages[0].raw, body["messages"][0]);
        assert_eq!(conversation.messages[1].content, None);
        let conversation = parse_object::<Conversation>(json!({"id": "c2", "messages": null}));
        assert!(conversation.unwrap().messages.is_empty());
    }

    #[test]
    fn the_documented_brief_detail_lacks_list_fields_and_still_parses() {
        let detail = parse_object::<BriefDetail>(json!({
            "id": "cm3abc", "summary": "...", "answers": {"email": "a@b.c"},
            "conversation": {"id": "c", "messages": []}
        }))
        .unwrap();
        assert_eq!(detail.answers.unwrap()["email"], "a@b.c");
        assert!(detail.agent_id.is_none());
    }
}
