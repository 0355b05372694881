//! Person fields: the config maps an answer to a field by its key or by its name as
//! Pipedrive shows it (`Budget`); the names are resolved through `GET /personFields`,
//! kept, and read again when a mapped name is not among them (a field added or renamed
//! since). A value is sent as the field's type wants it: a number, an option's id, text.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tracing::warn;

use super::{PipedriveConnector, number};
use crate::Attempt;
use crate::lead::Lead;

const FIELDS_PATH: &str = "/api/v1/personFields";

/// Pages of fields read at most (500 each): an account has a few dozen.
const FIELD_PAGES: usize = 10;

/// A mapped field missing from the list makes it be read again, but not more often than
/// this: a field that really does not exist would otherwise cost a call per brief.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// The key of the phone field, the one built-in field a mapping may name: `phones` on a
/// person.
const PHONE: &str = "phone";

/// A person field as the account defines it.
#[derive(Debug, Clone)]
pub(super) struct Field {
    pub key: String,
    pub name: String,
    pub field_type: String,
    /// (id, label) of an `enum` or `set` field's options.
    pub options: Vec<(u64, String)>,
    /// A custom field (`edit_flag`), set through `custom_fields`.
    pub custom: bool,
}

impl Field {
    /// Whether `wanted` names this field: its key exactly, or its name in any case.
    pub fn is(&self, wanted: &str) -> bool {
        self.key == wanted || self.name.trim().eq_ignore_ascii_case(wanted.trim())
    }

    /// Whether clairo-sync can set it.
    pub fn settable(&self) -> bool {
        self.custom || self.key == PHONE
    }

    /// `text` as this field's value, or why it cannot be.
    fn value(&self, text: &str) -> Result<Value, String> {
        match self.field_type.as_str() {
            "double" => {
                let cleaned: String = text
                    .chars()
                    .filter(|c| c.is_ascii_digit() || matches!(c, '.' | '-'))
                    .collect();
                cleaned
                    .parse::<f64>()
                    .ok()
                    .filter(|number| number.is_finite())
                    .map(Value::from)
                    .ok_or_else(|| format!("\"{text}\" is not a number"))
            }
            "enum" => self
                .option(text)
                .map(Value::from)
                .ok_or_else(|| format!("\"{text}\" is not one of its options")),
            "set" => text
                .split(',')
                .map(|part| {
                    self.option(part)
                        .ok_or_else(|| format!("\"{}\" is not one of its options", part.trim()))
                })
                .collect::<Result<Vec<u64>, String>>()
                .map(|ids| json!(ids)),
            _ => Ok(Value::from(text)),
        }
    }

    fn option(&self, label: &str) -> Option<u64> {
        self.options
            .iter()
            .find(|(_, name)| name.trim().eq_ignore_ascii_case(label.trim()))
            .map(|(id, _)| *id)
    }
}

/// The fields as last read, and when.
#[derive(Default)]
pub(super) struct Cache {
    read: Mutex<Option<(Vec<Field>, Instant)>>,
}

impl Cache {
    fn get(&self) -> Option<(Vec<Field>, Instant)> {
        self.read.lock().expect("never poisoned").clone()
    }

    fn set(&self, fields: Vec<Field>) {
        *self.read.lock().expect("never poisoned") = Some((fields, Instant::now()));
    }
}

/// Puts the mapped values on a person's body: custom fields under `custom_fields`, the
/// phone as `phones`.
pub(super) fn apply(body: &mut Value, mut values: Map<String, Value>) {
    if let Some(phone) = values.remove(PHONE) {
        body["phones"] = json!([{"value": phone, "primary": true, "label": "work"}]);
    }
    if !values.is_empty() {
        body["custom_fields"] = Value::Object(values);
    }
}

impl PipedriveConnector {
    /// The mapped answers this brief has, keyed by field key, typed for their fields. A
    /// field the account does not have, or a value it cannot take, is left out with a
    /// warning: the lead still lands, and `check --online` names the field.
    pub(super) async fn mapped_values(&self, lead: &Lead) -> Result<Map<String, Value>, Attempt> {
        let wanted: Vec<(&str, &str, &str)> = self
            .fields
            .iter()
            .filter_map(|(answer, field)| {
                let value = lead
                    .answers
                    .iter()
                    .find(|(key, _)| key == answer)
                    .map(|(_, value)| value.trim())
                    .filter(|value| !value.is_empty())?;
                Some((answer.as_str(), field.as_str(), value))
            })
            .collect();
        let mut values = Map::new();
        if wanted.is_empty() {
            return Ok(values);
        }
        let mut fields = self.person_fields(false).await?;
        let all_known = |fields: &[Field]| {
            wanted
                .iter()
                .all(|(_, name, _)| fields.iter().any(|field| field.is(name)))
        };
        if !all_known(&fields) {
            fields = self.person_fields(true).await?;
        }
        for (answer, name, text) in wanted {
            let Some(field) = fields.iter().find(|field| field.is(name)) else {
                warn!(
                    connector = %self.name,
                    key = %format!("fields.{answer}"),
                    "Pipedrive has no person field {name:?}; the answer is left out. Run \
                     `clairo-sync check --online` for the nearest name."
                );
                continue;
            };
            if !field.settable() {
                warn!(
                    connector = %self.name,
                    key = %format!("fields.{answer}"),
                    "{name:?} is a built-in Pipedrive field clairo-sync does not set; map the \
                     answer to a custom field."
                );
                continue;
            }
            match field.value(text) {
                Ok(value) => {
                    values.insert(field.key.clone(), value);
                }
                Err(why) => warn!(
                    connector = %self.name,
                    key = %format!("fields.{answer}"),
                    "The answer does not fit the person field {name:?} ({why}); it is left out."
                ),
            }
        }
        Ok(values)
    }

    /// The person fields: as kept, or read again when `refresh` (at most once a minute) or
    /// never read.
    pub(super) async fn person_fields(&self, refresh: bool) -> Result<Vec<Field>, Attempt> {
        if let Some((fields, at)) = self.person_fields.get()
            && (!refresh || at.elapsed() < REFRESH_AT_MOST_EVERY)
        {
            return Ok(fields);
        }
        let fields = self.read_person_fields().await?;
        self.person_fields.set(fields.clone());
        Ok(fields)
    }

    async fn read_person_fields(&self) -> Result<Vec<Field>, Attempt> {
        let doing = "reading the person fields";
        let mut fields = Vec::new();
        let mut start = 0u64;
        for _ in 0..FIELD_PAGES {
            let first = start.to_string();
            let request = self
                .api
                .get(FIELDS_PATH)
                .query(&[("start", first.as_str()), ("limit", "500")]);
            let answer = self.api.send(request, doing).await?;
            if !answer.status.is_success() {
                return Err(self.failure(&answer, doing));
            }
            let page = answer.json().get("data").and_then(Value::as_array);
            fields.extend(page.into_iter().flatten().filter_map(read_field));
            let pagination = answer.json().pointer("/additional_data/pagination");
            let more = pagination
                .and_then(|pagination| pagination.get("more_items_in_collection"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match pagination
                .and_then(|pagination| pagination.get("next_start"))
                .and_then(number)
            {
                Some(next) if more && next > start => start = next,
                _ => break,
            }
        }
        Ok(fields)
    }
}

fn read_field(field: &Value) -> Option<Field> {
    let text = |key: &str| field.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(Field {
        key: text("key")?,
        name: text("name").unwrap_or_default(),
        field_type: text("field_type").unwrap_or_default(),
        options: field
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|option| {
                Some((
                    option.get("id").and_then(number)?,
                    option.get("label")?.as_str()?.to_owned(),
                ))
            })
            .collect(),
        custom: field
            .get("edit_flag")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}
