//! A local stand-in for Pipedrive's API, faithful where the connector depends on it: the
//! `x-api-token` header (a token in the query string is refused, so it never lands in a
//! URL); the v2 exact email search and person create, v1 notes and leads; the answers and
//! error bodies (`success`, `error`, `errorCode`, `error_info`); the rate-limit headers. A
//! request of the wrong shape is answered 400 and recorded, so a test can assert there
//! were none. The search index can be made to lag, as Pipedrive's does. Faults are
//! injected per route.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use crate::testkit::FakeApi;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    SearchPersons,
    CreatePerson,
    ListPersons,
    CreateNote,
    ListNotes,
    CreateLead,
    Me,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and Pipedrive's error body, doing nothing.
    Status(u16),
    /// 429, the window used up, resetting in this many seconds.
    RateLimited { reset_secs: u64 },
    /// Do the work and answer success, with the window used up (remaining 0).
    LastInWindow { reset_secs: u64 },
    /// Do the work, then answer only after this long (past the connector's timeout).
    SlowAfterActing(Duration),
}

#[derive(Debug, Clone)]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub emails: Vec<String>,
    /// Whether the search index has it yet.
    indexed: bool,
}

#[derive(Debug, Clone)]
pub struct Note {
    pub id: u64,
    pub content: String,
    pub person_id: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Lead {
    pub id: String,
    pub title: String,
    pub person_id: u64,
}

/// The company's records.
#[derive(Default)]
pub struct Company {
    persons: Vec<Person>,
    notes: Vec<Note>,
    leads: Vec<Lead>,
    next_id: u64,
    search_lags: bool,
}

/// A running fake; clones share its state.
pub type FakePipedrive = FakeApi<Company, Route, Fault>;

impl FakePipedrive {
    /// Starts a fake on 127.0.0.1 that accepts `token`.
    pub async fn start(token: &str) -> Self {
        let company = Company {
            next_id: 100,
            ..Company::default()
        };
        FakeApi::listen(token, company, Router::new().fallback(handle)).await
    }

    /// From now on, persons created are not found by search (until [`Self::catch_up`]).
    pub fn lag_search(&self) {
        self.lock().search_lags = true;
    }

    pub fn seed_person(&self, name: &str, email: &str) -> u64 {
        let mut inner = self.lock();
        let id = inner.fresh_id();
        inner.persons.push(Person {
            id,
            name: name.to_owned(),
            emails: vec![email.to_owned()],
            indexed: true,
        });
        id
    }

    pub fn persons(&self) -> Vec<Person> {
        self.lock().persons.clone()
    }

    pub fn notes(&self) -> Vec<Note> {
        self.lock().notes.clone()
    }

    pub fn leads(&self) -> Vec<Lead> {
        self.lock().leads.clone()
    }
}

impl Company {
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

fn route_of(method: &Method, path: &str) -> Option<Route> {
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/api/v2/persons/search") => Some(Route::SearchPersons),
        ("POST", "/api/v2/persons") => Some(Route::CreatePerson),
        ("GET", "/api/v2/persons") => Some(Route::ListPersons),
        ("POST", "/api/v1/notes") => Some(Route::CreateNote),
        ("GET", "/api/v1/notes") => Some(Route::ListNotes),
        ("POST", "/api/v1/leads") => Some(Route::CreateLead),
        ("GET", "/api/v1/users/me") => Some(Route::Me),
        _ => None,
    }
}

/// Pipedrive's headers on every answer (Essential plan: 20 requests per 2 s window).
fn rate_headers(remaining: u32, reset_secs: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-ratelimit-limit", HeaderValue::from_static("20"));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset_secs));
    headers
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "success": false,
        "error": message,
        "errorCode": status.as_u16(),
        "error_info": "Please check developers.pipedrive.com",
        "data": null,
        "additional_data": null,
    });
    (status, rate_headers(19, 2), axum::Json(body)).into_response()
}

fn ok(status: StatusCode, data: Value, additional: Value) -> Response {
    let mut body = json!({"success": true});
    body["data"] = data;
    body["additional_data"] = additional;
    (status, rate_headers(19, 2), axum::Json(body)).into_response()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    State(fake): State<FakePipedrive>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query(&uri);
    if query.contains_key("api_token") {
        fake.lock()
            .reject("the API token was sent in the query string");
    }
    let token = headers
        .get("x-api-token")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if token != fake.token.as_str() {
        return error(StatusCode::UNAUTHORIZED, "unauthorized access");
    }
    let Some(route) = route_of(&method, uri.path()) else {
        return error(StatusCode::NOT_FOUND, "Unknown method .");
    };
    let fault = fake.lock().call(route);
    let body: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(_) if body.is_empty() => Value::Null,
        Err(_) => return reject(&fake, "Malformed JSON body"),
    };
    let mut slow = None;
    let mut last_in_window = None;
    match fault {
        Some(Fault::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap();
            return error(status, status.canonical_reason().unwrap_or("Error"));
        }
        Some(Fault::RateLimited { reset_secs }) => {
            let body = json!({
                "success": false,
                "error": "Request over limit",
                "errorCode": 429,
                "error_info": "Please check developers.pipedrive.com",
            });
            return (
                StatusCode::TOO_MANY_REQUESTS,
                rate_headers(0, reset_secs),
                axum::Json(body),
            )
                .into_response();
        }
        Some(Fault::LastInWindow { reset_secs }) => last_in_window = Some(reset_secs),
        Some(Fault::SlowAfterActing(delay)) => slow = Some(delay),
        None => {}
    }
    let mut response = match route {
        Route::SearchPersons => search(&fake, &query),
        Route::CreatePerson => create_person(&fake, &body),
        Route::ListPersons => list_persons(&fake, &query),
        Route::CreateNote => create_note(&fake, &body),
        Route::ListNotes => list_notes(&fake, &query),
        Route::CreateLead => create_lead(&fake, &body),
        Route::Me => ok(
            StatusCode::OK,
            json!({"id": 1, "name": "Pat Seller", "email": "pat@example.com", "company_name": "Example Co"}),
            Value::Null,
        ),
    };
    if let Some(reset_secs) = last_in_window {
        response.headers_mut().extend(rate_headers(0, reset_secs));
    }
    if let Some(delay) = slow {
        // The work is done; the answer arrives after the client stopped waiting.
        tokio::time::sleep(delay).await;
    }
    response
}

fn reject(fake: &FakePipedrive, message: &str) -> Response {
    fake.lock().reject(message);
    error(StatusCode::BAD_REQUEST, message)
}

fn person_json(person: &Person) -> Value {
    let emails: Vec<Value> = person
        .emails
        .iter()
        .enumerate()
        .map(|(index, email)| json!({"value": email, "primary": index == 0, "label": "work"}))
        .collect();
    json!({"id": person.id, "name": person.name, "emails": emails, "add_time": Utc::now().to_rfc3339()})
}

fn search(fake: &FakePipedrive, query: &BTreeMap<String, String>) -> Response {
    let Some(term) = query.get("term").filter(|term| !term.is_empty()) else {
        return reject(fake, "term is required");
    };
    if query.get("fields").map(String::as_str) != Some("email") {
        return reject(fake, "the search must be limited to fields=email");
    }
    let exact = matches!(
        query.get("exact_match").map(String::as_str),
        Some("true" | "1")
    );
    let long = term.chars().count() > 30;
    if !exact && !long {
        return reject(
            fake,
            "an email this short must be searched with exact_match=true",
        );
    }
    let term = term.to_lowercase();
    let items: Vec<Value> = fake
        .lock()
        .persons
        .iter()
        .filter(|person| person.indexed)
        .filter(|person| {
            person.emails.iter().any(|email| {
                let email = email.to_lowercase();
                match (exact, long) {
                    // Pipedrive matches exactly only terms of 30 characters or less.
                    (true, true) => false,
                    (true, false) => email == term,
                    (false, _) => email.contains(&term),
                }
            })
        })
        .map(|person| {
            json!({
                "result_score": 1.0,
                "item": {
                    "id": person.id,
                    "type": "person",
                    "name": person.name,
                    "phones": [],
                    "emails": person.emails,
                    "visible_to": 3,
                    "organization": null,
                    "custom_fields": [],
                    "notes": [],
                },
            })
        })
        .collect();
    ok(
        StatusCode::OK,
        json!({"items": items}),
        json!({"next_cursor": null}),
    )
}

fn create_person(fake: &FakePipedrive, body: &Value) -> Response {
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|name| !name.trim().is_empty())
    else {
        return reject(fake, "Name must be given.");
    };
    let mut emails = Vec::new();
    for entry in body
        .get("emails")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let value = entry.get("value").and_then(Value::as_str);
        let primary = entry.get("primary").and_then(Value::as_bool);
        let label = entry.get("label").and_then(Value::as_str);
        match (value, primary, label) {
            (Some(value), Some(_), Some("work" | "home" | "other")) => {
                emails.push(value.to_owned());
            }
            _ => {
                return reject(
                    fake,
                    "emails must be objects {value, primary, label: work|home|other}",
                );
            }
        }
    }
    let mut inner = fake.lock();
    let id = inner.fresh_id();
    let indexed = !inner.search_lags;
    let person = Person {
        id,
        name: name.to_owned(),
        emails,
        indexed,
    };
    inner.persons.push(person.clone());
    drop(inner);
    ok(StatusCode::OK, person_json(&person), Value::Null)
}

fn list_persons(fake: &FakePipedrive, query: &BTreeMap<String, String>) -> Response {
    let limit: usize = query
        .get("limit")
        .and_then(|limit| limit.parse().ok())
        .unwrap_or(100);
    let newest_first = query.get("sort_by").map(String::as_str) == Some("add_time")
        && query.get("sort_direction").map(String::as_str) == Some("desc");
    let inner = fake.lock();
    let mut persons: Vec<&Person> = inner.persons.iter().collect();
    if newest_first {
        persons.reverse();
    }
    let data: Vec<Value> = persons.into_iter().take(limit).map(person_json).collect();
    drop(inner);
    ok(StatusCode::OK, json!(data), json!({"next_cursor": null}))
}

fn create_note(fake: &FakePipedrive, body: &Value) -> Response {
    let Some(content) = body
        .get("content")
        .and_then(Value::as_str)
        .filter(|content| !content.is_empty())
    else {
        return reject(fake, "Content must be given.");
    };
    let person_id = match body.get("person_id") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(id) => Some(id),
            None => return reject(fake, "person_id must be an integer"),
        },
    };
    let Some(person_id) = person_id else {
        return reject(
            fake,
            "Note must be associated with a deal, person, organization, lead or project.",
        );
    };
    let mut inner = fake.lock();
    if !inner.persons.iter().any(|person| person.id == person_id) {
        drop(inner);
        return error(StatusCode::BAD_REQUEST, "Person not found.");
    }
    let id = inner.fresh_id();
    inner.notes.push(Note {
        id,
        content: content.to_owned(),
        person_id: Some(person_id),
    });
    drop(inner);
    ok(
        StatusCode::CREATED,
        json!({"id": id, "content": content, "person_id": person_id, "add_time": Utc::now().to_rfc3339()}),
        Value::Null,
    )
}

fn list_notes(fake: &FakePipedrive, query: &BTreeMap<String, String>) -> Response {
    let person_id: Option<u64> = query.get("person_id").and_then(|id| id.parse().ok());
    let newest_first = query.get("sort").map(String::as_str) == Some("add_time DESC");
    let inner = fake.lock();
    let mut notes: Vec<&Note> = inner
        .notes
        .iter()
        .filter(|note| person_id.is_none() || note.person_id == person_id)
        .collect();
    if newest_first {
        notes.reverse();
    }
    let data: Vec<Value> = notes
        .into_iter()
        .map(|note| json!({"id": note.id, "content": note.content, "person_id": note.person_id}))
        .collect();
    drop(inner);
    ok(
        StatusCode::OK,
        json!(data),
        json!({"pagination": {"start": 0, "limit": 100, "more_items_in_collection": false}}),
    )
}

fn create_lead(fake: &FakePipedrive, body: &Value) -> Response {
    let Some(title) = body
        .get("title")
        .and_then(Value::as_str)
        .filter(|title| !title.is_empty())
    else {
        return reject(fake, "Title must be given.");
    };
    let Some(person_id) = body.get("person_id").and_then(Value::as_u64) else {
        return reject(
            fake,
            "A lead needs a person_id or an organization_id (an integer).",
        );
    };
    let mut inner = fake.lock();
    if !inner.persons.iter().any(|person| person.id == person_id) {
        drop(inner);
        return error(StatusCode::BAD_REQUEST, "Person not found.");
    }
    let id = format!("adf21080-0e10-11eb-879b-05d71fb{:05}", inner.fresh_id());
    inner.leads.push(Lead {
        id: id.clone(),
        title: title.to_owned(),
        person_id,
    });
    drop(inner);
    ok(
        StatusCode::CREATED,
        json!({"id": id, "title": title, "person_id": person_id}),
        Value::Null,
    )
}
