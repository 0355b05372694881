//! A local stand-in for HubSpot's CRM API, faithful where the connector depends on it:
//! bearer auth; the request shapes (every property value a string, `hs_timestamp` present,
//! the note-to-contact association 202 in category HUBSPOT_DEFINED); the answers and error
//! bodies (`status`, `message`, `correlationId`, `category`); the rate-limit headers. A
//! request of the wrong shape is answered 400, as HubSpot would, and recorded, so a test
//! can assert there were none. Faults are injected per route.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::testkit::FakeApi;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Upsert,
    CreateContact,
    ListContacts,
    CreateNote,
    NoteAssociations,
    ReadNotes,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and HubSpot's error body, doing nothing.
    Status(u16),
    /// 409 CONFLICT "Contact already exists. Existing ID: N", N being the contact with the
    /// request's email.
    Conflict,
    /// 400 VALIDATION_ERROR: the portal will not upsert by email.
    UpsertByEmailRefused,
    /// 429 for the TEN_SECONDLY_ROLLING policy, with this interval in the headers.
    TenSecondlyRolling { interval_ms: u64 },
    /// 429 for the DAILY policy.
    Daily,
    /// Do the work, then answer only after this long (past the connector's timeout).
    SlowAfterActing(Duration),
}

#[derive(Debug, Clone)]
pub struct Contact {
    pub id: String,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Note {
    pub id: String,
    pub properties: BTreeMap<String, String>,
    pub contact_ids: Vec<String>,
}

/// The portal's records.
#[derive(Default)]
pub struct Portal {
    contacts: Vec<Contact>,
    notes: Vec<Note>,
    next_id: u64,
    authorizations: Vec<String>,
}

/// A running fake; clones share its state.
pub type FakeHubspot = FakeApi<Portal, Route, Fault>;

impl FakeHubspot {
    /// Starts a fake on 127.0.0.1 that accepts `token`.
    pub async fn start(token: &str) -> Self {
        let portal = Portal {
            next_id: 1001,
            ..Portal::default()
        };
        FakeApi::listen(token, portal, Router::new().fallback(handle)).await
    }

    pub fn seed_contact(&self, email: &str) -> String {
        let mut inner = self.lock();
        let id = inner.fresh_id();
        let properties = BTreeMap::from([("email".to_owned(), email.to_owned())]);
        inner.contacts.push(Contact {
            id: id.clone(),
            properties,
        });
        id
    }

    pub fn contacts(&self) -> Vec<Contact> {
        self.lock().contacts.clone()
    }

    pub fn notes(&self) -> Vec<Note> {
        self.lock().notes.clone()
    }

    /// Every Authorization header received.
    pub fn authorizations(&self) -> Vec<String> {
        self.lock().authorizations.clone()
    }
}

impl Portal {
    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    fn contact_by_email(&self, email: &str) -> Option<&Contact> {
        self.contacts.iter().find(|contact| {
            contact
                .properties
                .get("email")
                .is_some_and(|known| known.eq_ignore_ascii_case(email))
        })
    }
}

fn route_of(method: &Method, path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["crm", "v3", "objects", "contacts", "batch", "upsert"]) => Some(Route::Upsert),
        ("POST", ["crm", "v3", "objects", "contacts"]) => Some(Route::CreateContact),
        ("GET", ["crm", "v3", "objects", "contacts"]) => Some(Route::ListContacts),
        ("POST", ["crm", "v3", "objects", "notes"]) => Some(Route::CreateNote),
        ("POST", ["crm", "v3", "objects", "notes", "batch", "read"]) => Some(Route::ReadNotes),
        (
            "GET",
            [
                "crm",
                "v4",
                "objects",
                "contacts",
                _,
                "associations",
                "notes",
            ],
        ) => Some(Route::NoteAssociations),
        _ => None,
    }
}

fn correlation_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// HubSpot's headers on every answer.
fn rate_headers(remaining: u32, interval_ms: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-hubspot-ratelimit-max", HeaderValue::from_static("100"));
    headers.insert(
        "x-hubspot-ratelimit-remaining",
        HeaderValue::from(remaining),
    );
    headers.insert(
        "x-hubspot-ratelimit-interval-milliseconds",
        HeaderValue::from(interval_ms),
    );
    headers
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, rate_headers(99, 10_000), axum::Json(body)).into_response()
}

fn error(status: StatusCode, category: &str, message: &str) -> Response {
    answer(
        status,
        json!({
            "status": "error",
            "message": message,
            "correlationId": correlation_id(),
            "category": category,
        }),
    )
}

fn category_of(status: u16) -> &'static str {
    match status {
        400 => "VALIDATION_ERROR",
        401 => "INVALID_AUTHENTICATION",
        403 => "MISSING_SCOPES",
        404 => "OBJECT_NOT_FOUND",
        409 => "CONFLICT",
        429 => "RATE_LIMITS",
        _ => "INTERNAL_ERROR",
    }
}

async fn handle(
    State(fake): State<FakeHubspot>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    fake.lock().authorizations.push(authorization.clone());
    if authorization != format!("Bearer {}", fake.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 \
             authentication and you can find more details at \
             https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        );
    }
    let Some(route) = route_of(&method, uri.path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Unable to route request",
        );
    };
    let fault = fake.lock().call(route);
    let body: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(_) if body.is_empty() => Value::Null,
        Err(parse) => {
            return reject(&fake, &format!("Invalid input JSON: {parse}"));
        }
    };
    let mut slow = None;
    match fault {
        Some(Fault::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap();
            return error(
                status,
                category_of(status.as_u16()),
                "internal error, please retry",
            );
        }
        Some(Fault::TenSecondlyRolling { interval_ms }) => {
            let body = json!({
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": correlation_id(),
                "policyName": "TEN_SECONDLY_ROLLING",
                "groupName": "privateapp-1",
            });
            return (
                StatusCode::TOO_MANY_REQUESTS,
                rate_headers(0, interval_ms),
                axum::Json(body),
            )
                .into_response();
        }
        Some(Fault::Daily) => {
            let mut headers = rate_headers(99, 10_000);
            headers.insert("x-hubspot-ratelimit-daily", HeaderValue::from(250_000));
            headers.insert("x-hubspot-ratelimit-daily-remaining", HeaderValue::from(0));
            let body = json!({
                "status": "error",
                "message": "You have reached your daily limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": correlation_id(),
                "policyName": "DAILY",
            });
            return (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response();
        }
        Some(Fault::Conflict) => {
            let email = body
                .pointer("/inputs/0/id")
                .or_else(|| body.pointer("/properties/email"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let existing = fake
                .lock()
                .contact_by_email(email)
                .map(|contact| contact.id.clone());
            let id = existing.unwrap_or_else(|| fake.seed_contact(email));
            return error(
                StatusCode::CONFLICT,
                "CONFLICT",
                &format!("Contact already exists. Existing ID: {id}"),
            );
        }
        Some(Fault::UpsertByEmailRefused) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "Unable to perform update/upsert by non-unique 0-1 property email in portal \
                 ID 12345",
            );
        }
        Some(Fault::SlowAfterActing(delay)) => slow = Some(delay),
        None => {}
    }
    let response = match route {
        Route::Upsert => upsert(&fake, &body),
        Route::CreateContact => create_contact(&fake, &body),
        Route::ListContacts => list_contacts(&fake),
        Route::CreateNote => create_note(&fake, &body),
        Route::NoteAssociations => note_associations(&fake, uri.path()),
        Route::ReadNotes => read_notes(&fake, &body),
    };
    if let Some(delay) = slow {
        // The work is done; the answer arrives after the client stopped waiting.
        tokio::time::sleep(delay).await;
    }
    response
}

fn reject(fake: &FakeHubspot, message: &str) -> Response {
    fake.lock().reject(message);
    error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

/// The properties object with every value a string, as HubSpot requires of this client.
fn string_properties(value: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let Some(Value::Object(map)) = value else {
        return Err("Invalid input JSON: `properties` must be an object".to_owned());
    };
    map.iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            other => Err(format!(
                "Property values were not valid: property {key} must be a string, got {other}"
            )),
        })
        .collect()
}

fn now() -> String {
    Utc::now().to_rfc3339()
}

fn upsert(fake: &FakeHubspot, body: &Value) -> Response {
    let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
        return reject(fake, "Invalid input JSON: `inputs` is required");
    };
    if inputs.is_empty() || inputs.len() > 100 {
        return reject(fake, "inputs must hold 1 to 100 records");
    }
    let mut results = Vec::new();
    for input in inputs {
        if input.get("idProperty").and_then(Value::as_str) != Some("email") {
            return reject(fake, "this fake upserts contacts by email only");
        }
        let Some(email) = input.get("id").and_then(Value::as_str) else {
            return reject(fake, "`id` must be the email, a string");
        };
        let properties = match string_properties(input.get("properties")) {
            Ok(properties) => properties,
            Err(message) => return reject(fake, &message),
        };
        if properties
            .get("email")
            .is_some_and(|value| !value.eq_ignore_ascii_case(email))
        {
            return reject(fake, "properties.email differs from the upsert id");
        }
        let mut inner = fake.lock();
        let position = inner.contacts.iter().position(|contact| {
            contact
                .properties
                .get("email")
                .is_some_and(|known| known.eq_ignore_ascii_case(email))
        });
        let (contact, new) = match position {
            Some(index) => {
                let contact = &mut inner.contacts[index];
                contact.properties.extend(properties);
                (contact.clone(), false)
            }
            None => {
                let id = inner.fresh_id();
                let mut properties = properties;
                properties.insert("email".to_owned(), email.to_owned());
                let contact = Contact { id, properties };
                inner.contacts.push(contact.clone());
                (contact, true)
            }
        };
        results.push(json!({
            "id": contact.id,
            "properties": contact.properties,
            "createdAt": now(),
            "updatedAt": now(),
            "archived": false,
            "new": new,
        }));
    }
    answer(
        StatusCode::OK,
        json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": now(),
            "completedAt": now(),
        }),
    )
}

fn create_contact(fake: &FakeHubspot, body: &Value) -> Response {
    let properties = match string_properties(body.get("properties")) {
        Ok(properties) => properties,
        Err(message) => return reject(fake, &message),
    };
    let email = properties.get("email").cloned().unwrap_or_default();
    let mut inner = fake.lock();
    if let Some(existing) = inner.contact_by_email(&email) {
        let id = existing.id.clone();
        drop(inner);
        return error(
            StatusCode::CONFLICT,
            "CONFLICT",
            &format!("Contact already exists. Existing ID: {id}"),
        );
    }
    let id = inner.fresh_id();
    inner.contacts.push(Contact {
        id: id.clone(),
        properties: properties.clone(),
    });
    answer(
        StatusCode::CREATED,
        json!({"id": id, "properties": properties, "createdAt": now(), "updatedAt": now(), "archived": false}),
    )
}

fn list_contacts(fake: &FakeHubspot) -> Response {
    let first: Vec<Value> = fake
        .lock()
        .contacts
        .iter()
        .take(1)
        .map(|contact| json!({"id": contact.id, "properties": contact.properties}))
        .collect();
    answer(StatusCode::OK, json!({"results": first}))
}

fn create_note(fake: &FakeHubspot, body: &Value) -> Response {
    let properties = match string_properties(body.get("properties")) {
        Ok(properties) => properties,
        Err(message) => return reject(fake, &message),
    };
    let timestamp_ok = properties.get("hs_timestamp").is_some_and(|stamp| {
        DateTime::parse_from_rfc3339(stamp).is_ok()
            || (!stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit()))
    });
    if !timestamp_ok {
        return reject(
            fake,
            "Property values were not valid: hs_timestamp is required (ISO 8601 or epoch ms)",
        );
    }
    if properties
        .get("hs_note_body")
        .is_some_and(|text| text.encode_utf16().count() > 65_536)
    {
        return reject(fake, "hs_note_body is longer than 65536 characters");
    }
    let mut contact_ids = Vec::new();
    if let Some(associations) = body.get("associations") {
        let Some(associations) = associations.as_array() else {
            return reject(fake, "`associations` must be an array");
        };
        for association in associations {
            let Some(id) = association.pointer("/to/id").and_then(crate::crm::id_text) else {
                return reject(fake, "an association needs to.id");
            };
            let types = association.get("types").and_then(Value::as_array);
            let note_to_contact = types.is_some_and(|types| {
                types.len() == 1
                    && types[0].get("associationCategory").and_then(Value::as_str)
                        == Some("HUBSPOT_DEFINED")
                    && types[0].get("associationTypeId").and_then(Value::as_u64) == Some(202)
            });
            if !note_to_contact {
                return reject(
                    fake,
                    "association types must be [{associationCategory: HUBSPOT_DEFINED, associationTypeId: 202}]",
                );
            }
            if !fake.lock().contacts.iter().any(|contact| contact.id == id) {
                return reject(
                    fake,
                    &format!("One or more associations are invalid: no contact {id}"),
                );
            }
            contact_ids.push(id);
        }
    }
    let mut inner = fake.lock();
    let id = inner.fresh_id();
    inner.notes.push(Note {
        id: id.clone(),
        properties: properties.clone(),
        contact_ids,
    });
    answer(
        StatusCode::CREATED,
        json!({"id": id, "properties": properties, "createdAt": now(), "updatedAt": now(), "archived": false}),
    )
}

fn note_associations(fake: &FakeHubspot, path: &str) -> Response {
    let contact_id = path.split('/').nth(5).unwrap_or("").to_owned();
    let inner = fake.lock();
    if !inner
        .contacts
        .iter()
        .any(|contact| contact.id == contact_id)
    {
        drop(inner);
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("resource not found: contact {contact_id}"),
        );
    }
    let results: Vec<Value> = inner
        .notes
        .iter()
        .filter(|note| note.contact_ids.contains(&contact_id))
        .map(|note| {
            json!({
                "toObjectId": note.id.parse::<u64>().unwrap(),
                "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 202, "label": null}],
            })
        })
        .collect();
    drop(inner);
    answer(StatusCode::OK, json!({"results": results}))
}

fn read_notes(fake: &FakeHubspot, body: &Value) -> Response {
    let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
        return reject(fake, "Invalid input JSON: `inputs` is required");
    };
    if inputs.len() > 100 {
        return reject(fake, "batch read takes at most 100 inputs");
    }
    let inner = fake.lock();
    let results: Vec<Value> = inputs
        .iter()
        .filter_map(|input| input.get("id").and_then(crate::crm::id_text))
        .filter_map(|id| inner.notes.iter().find(|note| note.id == id))
        .map(|note| json!({"id": note.id, "properties": note.properties, "archived": false}))
        .collect();
    drop(inner);
    answer(
        StatusCode::OK,
        json!({"status": "COMPLETE", "results": results, "startedAt": now(), "completedAt": now()}),
    )
}
