// Over 500 lines: its tests are the last 160; the tolerant parsing itself is under 400.
//! The Clairo API's objects, parsed tolerantly.
//!
//! List items' fields are undocumented, so every field but `id` is optional and unknown
//! fields are ignored. Each object keeps its exact JSON in `raw` (for the state database);
//! `raw` is not serialized again, so `--json` output shows the parsed fields once.
//! A list is parsed item by item: an item that does not parse lands in
//! [`Listing::skipped`] and never fails the list.
//!
//! A list can be long (100,000 briefs is 28 MB of JSON), so it is never made into one
//! [`Value`] tree: the body is split into its items' texts (borrowed from the body), each
//! item is parsed from its own text, and a list item keeps that text as its `raw`
//! ([`RawValue`]). A single object keeps its `raw` as a [`Value`].

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

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
    /// The item as sent.
    #[serde(skip)]
    pub raw: Box<RawValue>,
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
    /// The item as sent.
    #[serde(skip)]
    pub raw: Box<RawValue>,
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
    /// The item as sent.
    #[serde(skip)]
    pub raw: Box<RawValue>,
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

/// One recording to send to `POST /meetings`, streamed from an open file (the one that
/// was checked: never the name again); `file_name` is what Clairo is told (its extension
/// picks the MIME type).
#[derive(Clone, Debug)]
pub struct MeetingUpload {
    pub file: std::sync::Arc<std::fs::File>,
    /// The bytes sent: the size the checks saw (a file grown since is cut there).
    pub size: u64,
    /// The sha256 the bytes must have: a file changed since it was hashed fails the
    /// request before its last byte, so Clairo never gets it under the old key.
    pub sha256: Option<String>,
    pub file_name: String,
    pub agent_id: String,
    pub title: String,
}

impl MeetingUpload {
    /// Opens `path` for a caller that names a file itself (no checks, no expected sha256).
    pub fn from_path(
        path: &std::path::Path,
        file_name: String,
        agent_id: String,
        title: String,
    ) -> Result<Self, crate::clairo::ClairoError> {
        let file_error = |error: std::io::Error| {
            crate::clairo::ClairoError::File(format!("{}: {error}", path.display()))
        };
        let file = std::fs::File::open(path).map_err(file_error)?;
        let size = file.metadata().map_err(file_error)?.len();
        Ok(Self {
            file: std::sync::Arc::new(file),
            size,
            sha256: None,
            file_name,
            agent_id,
            title,
        })
    }
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
api_object!(BriefDetail, ChatReply, DiscoverReply, Meeting);

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

/// A list item, parsed from its own JSON text and keeping that text.
pub(crate) trait ListItem: DeserializeOwned {
    fn set_raw(&mut self, raw: Box<RawValue>);
}

macro_rules! list_item {
    ($($ty:ty),*) => {$(
        impl ListItem for $ty {
            fn set_raw(&mut self, raw: Box<RawValue>) {
                self.raw = raw;
            }
        }
    )*};
}
list_item!(Agent, ConversationSummary, BriefSummary);

/// A successful answer's body as JSON; the error says it is not JSON.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|error| not_json(&error))
}

fn not_json(error: &serde_json::Error) -> String {
    format!("the body is not JSON ({error})")
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

/// Parses a list answer: `{"<key>": [...]}` as documented (other keys are ignored), or a
/// bare array. The items are held as their texts, borrowed from `body`, and each is parsed
/// from its own text: no [`Value`] tree of the body or of the items is ever built.
pub(crate) fn parse_listing<T: ListItem>(body: &[u8], key: &str) -> Result<Listing<T>, String> {
    let not_json = |error: serde_json::Error| not_json(&error);
    let whole: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
    let list = match raw_kind(whole) {
        "a list" => whole,
        "an object" => {
            // The wrapper's fields, each left as text; a repeated key counts as its last.
            let fields: BTreeMap<String, &RawValue> =
                serde_json::from_str(whole.get()).map_err(not_json)?;
            match fields.get(key) {
                Some(list) if raw_kind(list) == "a list" => *list,
                Some(other) => {
                    return Err(format!("`{key}` is {}, not a list", raw_kind(other)));
                }
                None => return Err(format!("the answer has no `{key}` list")),
            }
        }
        kind => return Err(format!("expected a JSON object, found {kind}")),
    };
    let items: Vec<&RawValue> = serde_json::from_str(list.get()).map_err(not_json)?;
    let returned = items.len();
    let mut listing = Listing {
        items: Vec::with_capacity(returned),
        skipped: Vec::new(),
        returned,
    };
    for (index, item) in items.into_iter().enumerate() {
        match parse_item::<T>(item) {
            Ok(parsed) => listing.items.push(parsed),
            Err(reason) => listing.skipped.push(SkippedItem {
                index,
                id: string_id(item),
                reason,
            }),
        }
    }
    Ok(listing)
}

/// Parses one list item from its text, keeping the text as sent.
fn parse_item<T: ListItem>(item: &RawValue) -> Result<T, String> {
    let kind = raw_kind(item);
    if kind != "an object" {
        return Err(format!("expected a JSON object, found {kind}"));
    }
    let mut parsed: T = serde_json::from_str(item.get()).map_err(|error| error.to_string())?;
    parsed.set_raw(item.to_owned());
    Ok(parsed)
}

/// The item's `id`, when it is an object whose `id` is a string.
fn string_id(item: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct WithId<'a> {
        #[serde(default, borrow)]
        id: Option<&'a RawValue>,
    }
    if raw_kind(item) != "an object" {
        return None;
    }
    let id = serde_json::from_str::<WithId<'_>>(item.get()).ok()?.id?;
    serde_json::from_str::<String>(id.get()).ok()
}

/// A JSON value's kind, from the first character of its text (a `RawValue` holds no
/// leading whitespace).
fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "a list",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
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

    /// The list answer `body` as the client gets it: bytes.
    fn listing<T: ListItem>(body: &Value, key: &str) -> Result<Listing<T>, String> {
        parse_listing(body.to_string().as_bytes(), key)
    }

    fn raw_json(raw: &RawValue) -> Value {
        serde_json::from_str(raw.get()).unwrap()
    }

    #[test]
    fn the_documented_agent_example_parses_and_keeps_its_raw_json() {
        let body = json!({"agents": [{
            "id": "cm1abc", "name": "Support Bot", "type": "SUPPORT", "isActive": true,
            "description": "Customer support agent", "createdAt": "2026-01-15T10:00:00Z",
            "somethingNew": 1
        }]});
        let listing = listing::<Agent>(&body, "agents").unwrap();
        assert_eq!(listing.returned, 1);
        let agent = &listing.items[0];
        assert_eq!(agent.kind.as_deref(), Some("SUPPORT"));
        assert_eq!(agent.is_active, Some(true));
        assert_eq!(raw_json(&agent.raw), body["agents"][0]);
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
            {"id": "b5"},
            {"id": 6, "summary": []},
            null
        ]});
        let listing = listing::<BriefSummary>(&body, "briefs").unwrap();
        assert_eq!(listing.returned, 7);
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
        assert_eq!(
            skipped,
            [(1, None), (2, Some("b3")), (3, None), (5, None), (6, None)]
        );
        let reasons: Vec<_> = listing
            .skipped
            .iter()
            .map(|item| item.reason.as_str())
            .collect();
        assert!(reasons[0].contains("`id`"), "{reasons:?}");
        assert!(reasons[1].contains("expected a string"), "{reasons:?}");
        assert_eq!(reasons[2], "expected a JSON object, found a string");
        assert_eq!(reasons[4], "expected a JSON object, found null");
    }

    #[test]
    fn a_list_answer_without_its_list_is_a_decode_failure() {
        let error = listing::<Agent>(&json!({"error": "x"}), "agents").unwrap_err();
        assert_eq!(error, "the answer has no `agents` list");
        let error = listing::<Agent>(&json!({"agents": {}}), "agents").unwrap_err();
        assert_eq!(error, "`agents` is an object, not a list");
        let error = listing::<Agent>(&json!({"agents": null}), "agents").unwrap_err();
        assert_eq!(error, "`agents` is null, not a list");
        let error = listing::<Agent>(&json!("agents"), "agents").unwrap_err();
        assert_eq!(error, "expected a JSON object, found a string");
        for body in [&b"{\"agents\": ["[..], b"", b"[] []", b"<html>"] {
            let error = parse_listing::<Agent>(body, "agents").unwrap_err();
            assert!(error.starts_with("the body is not JSON ("), "{error}");
        }
    }

    #[test]
    fn a_bare_array_is_accepted_as_the_list_and_other_keys_are_ignored() {
        assert!(
            listing::<Agent>(&json!([]), "agents")
                .unwrap()
                .items
                .is_empty()
        );
        let bare = listing::<Agent>(&json!([{"id": "a1"}, {"id": "a2"}]), "agents").unwrap();
        assert_eq!(bare.returned, 2);
        assert_eq!(bare.items[1].id, "a2");
        let wrapped = listing::<Agent>(
            &json!({"total": 1, "next": {"cursor": [1]}, "agents": [{"id": "a1"}]}),
            "agents",
        )
        .unwrap();
        assert_eq!(wrapped.items[0].id, "a1");
    }

    #[test]
    fn a_list_item_keeps_its_json_exactly_as_sent() {
        let first = r#"{
                "id": "b1",
                "summary": "two  spaces,\n a \"quote\" and {braces}",
                "unknownField": {"nested": [1, 2.50, {"deep": null}], "flag": true},
                "createdAt": "2026-01-15T10:00:00Z"
            }"#;
        let body = format!(
            r#"{{"briefs": [
            {first},
            {{"id":"b2","agentId":"a1"}}
        ], "total": 2}}"#
        );
        let listing = parse_listing::<BriefSummary>(body.as_bytes(), "briefs").unwrap();
        assert_eq!(listing.items[0].raw.get(), first);
        assert_eq!(
            listing.items[0].summary.as_deref(),
            Some("two  spaces,\n a \"quote\" and {braces}")
        );
        assert_eq!(listing.items[1].raw.get(), r#"{"id":"b2","agentId":"a1"}"#);
        assert_eq!(
            raw_json(&listing.items[0].raw)["unknownField"]["nested"][2],
            json!({"deep": null})
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
