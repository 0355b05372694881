//! A local stand-in for Pipedrive's API, faithful where the connector depends on it: the
//! `x-api-token` header (a token in the query string is refused, so it never lands in a
//! URL); the v2 exact email search and person create, v1 notes and leads; the answers and
//! error bodies (`success`, `error`, `errorCode`, `error_info`); the rate-limit headers. A
//! request of the wrong shape is answered 400 and recorded, so a test can assert there
//! were none. The search index can be made to lag, as Pipedrive's does. The account has
//! person fields (custom ones among them), users, lead labels and organisations; a custom
//! field key, an owner, an organisation or a label that does not exist is refused as
//! Pipedrive refuses it. Faults are injected per route, including ambiguous ones: the work
//! done, then a 5xx or no answer in time.

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
    ListLeads,
    Me,
    UpdatePerson,
    PersonFields,
    SearchOrganizations,
    CreateOrganization,
    ListOrganizations,
    LeadLabels,
    Users,
    DealFields,
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
    /// Do the work, then answer this status with Pipedrive's error body.
    StatusAfterActing(u16),
}

#[derive(Debug, Clone)]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub emails: Vec<String>,
    pub org_id: Option<u64>,
    pub owner_id: Option<u64>,
    pub custom_fields: BTreeMap<String, Value>,
    pub phones: Vec<String>,
    /// Whether the search index has it yet.
    indexed: bool,
}

#[derive(Debug, Clone)]
pub struct Note {
    pub id: u64,
    pub content: String,
    pub person_id: Option<u64>,
    pub org_id: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Lead {
    pub id: String,
    pub title: String,
    pub person_id: u64,
    pub organization_id: Option<u64>,
    pub owner_id: Option<u64>,
    pub label_ids: Vec<String>,
    pub channel: Option<u64>,
    pub origin_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Organization {
    pub id: u64,
    pub name: String,
    pub owner_id: Option<u64>,
    indexed: bool,
}

/// A custom person field: key, name, type, and (id, label) options.
pub type CustomField = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(u64, &'static str)],
);

/// The account's custom person fields.
pub const CUSTOM_FIELDS: &[CustomField] = &[
    (
        "9dc80c50d78a15643bfc4ca79d76156a73a1ca0e",
        "Budget",
        "varchar",
        &[],
    ),
    (
        "e1b7a9d2c3f40b5a6c7d8e9f0a1b2c3d4e5f6a7b",
        "Team size",
        "double",
        &[],
    ),
    (
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6",
        "Source",
        "enum",
        &[(27, "Website"), (28, "Clairo")],
    ),
];

/// The account's users: (id, name).
pub const USERS: &[(u64, &str)] = &[(1002, "Pat Seller"), (1017, "Sam Closer")];

/// The source channels leads and deals take: (option id, label).
pub const CHANNELS: &[(u64, &str)] = &[(7, "Clairo"), (8, "Website"), (9, "Referral")];

/// The account's lead labels: (id, name).
pub const LEAD_LABELS: &[(&str, &str)] = &[
    ("f08b42a0-4e75-11ea-9643-03698ef1cfd6", "Hot"),
    ("f08b42a1-4e75-11ea-9643-03698ef1cfd6", "Warm"),
    ("f08b42a2-4e75-11ea-9643-03698ef1cfd6", "Cold"),
];

/// The company's records.
#[derive(Default)]
pub struct Company {
    persons: Vec<Person>,
    notes: Vec<Note>,
    leads: Vec<Lead>,
    organizations: Vec<Organization>,
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
            org_id: None,
            owner_id: None,
            custom_fields: BTreeMap::new(),
            phones: Vec::new(),
            indexed: true,
        });
        id
    }

    pub fn seed_organization(&self, name: &str) -> u64 {
        let mut inner = self.lock();
        let id = inner.fresh_id();
        inner.organizations.push(Organization {
            id,
            name: name.to_owned(),
            owner_id: None,
            indexed: true,
        });
        id
    }

    pub fn organizations(&self) -> Vec<Organization> {
        self.lock().organizations.clone()
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
        ("GET", "/api/v1/leads") => Some(Route::ListLeads),
        ("GET", "/api/v1/personFields") => Some(Route::PersonFields),
        ("GET", "/api/v2/organizations/search") => Some(Route::SearchOrganizations),
        ("POST", "/api/v2/organizations") => Some(Route::CreateOrganization),
        ("GET", "/api/v2/organizations") => Some(Route::ListOrganizations),
        ("GET", "/api/v1/leadLabels") => Some(Route::LeadLabels),
        ("GET", "/api/v1/users") => Some(Route::Users),
        ("GET", "/api/v1/dealFields") => Some(Route::DealFields),
        ("PATCH", path) if path.starts_with("/api/v2/persons/") => Some(Route::UpdatePerson),
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
    let mut status_after = None;
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
        Some(Fault::StatusAfterActing(status)) => status_after = Some(status),
        None => {}
    }
    let mut response = match route {
        Route::SearchPersons => search(&fake, &query),
        Route::CreatePerson => create_person(&fake, &body),
        Route::ListPersons => list_persons(&fake, &query),
        Route::CreateNote => create_note(&fake, &body),
        Route::ListNotes => list_notes(&fake, &query),
        Route::CreateLead => create_lead(&fake, &body),
        Route::ListLeads => list_leads(&fake, &query),
        Route::UpdatePerson => update_person(&fake, uri.path(), &body),
        Route::PersonFields => person_fields(),
        Route::SearchOrganizations => search_organizations(&fake, &query),
        Route::CreateOrganization => create_organization(&fake, &body),
        Route::ListOrganizations => list_organizations(&fake, &query),
        Route::LeadLabels => ok(
            StatusCode::OK,
            LEAD_LABELS
                .iter()
                .map(|(id, name)| json!({"id": id, "name": name, "color": "red"}))
                .collect(),
            Value::Null,
        ),
        Route::Users => ok(
            StatusCode::OK,
            USERS
                .iter()
                .map(|(id, name)| json!({"id": id, "name": name, "active_flag": true}))
                .collect(),
            Value::Null,
        ),
        Route::DealFields => ok(
            StatusCode::OK,
            json!([
                {"id": 12_453, "key": "title", "name": "Title", "field_type": "varchar"},
                {"id": 12_500, "key": "channel", "name": "Source channel", "field_type": "enum", "options": CHANNELS
                    .iter()
                    .map(|(id, label)| json!({"id": id, "label": label}))
                    .collect::<Vec<_>>()},
            ]),
            Value::Null,
        ),
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
    if let Some(status) = status_after {
        // The work is done; the answer says it failed.
        let status = StatusCode::from_u16(status).unwrap();
        return error(status, status.canonical_reason().unwrap_or("Error"));
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
    json!({
        "id": person.id,
        "name": person.name,
        "emails": emails,
        "org_id": person.org_id,
        "owner_id": person.owner_id,
        "custom_fields": person.custom_fields,
        "add_time": Utc::now().to_rfc3339(),
    })
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
                    "organization": person.org_id.map(|id| json!({"id": id})),
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
    let extras = match person_extras(fake, body) {
        Ok(extras) => extras,
        Err(response) => return *response,
    };
    let mut inner = fake.lock();
    let id = inner.fresh_id();
    let indexed = !inner.search_lags;
    let person = Person {
        id,
        name: name.to_owned(),
        emails,
        org_id: extras.org_id,
        owner_id: extras.owner_id,
        custom_fields: extras.custom_fields,
        phones: extras.phones,
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
    let org_id = match body.get("org_id") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(id) => Some(id),
            None => return reject(fake, "org_id must be an integer"),
        },
    };
    let mut inner = fake.lock();
    if !inner.persons.iter().any(|person| person.id == person_id) {
        drop(inner);
        return error(StatusCode::BAD_REQUEST, "Person not found.");
    }
    if let Some(org_id) = org_id
        && !inner.organizations.iter().any(|org| org.id == org_id)
    {
        drop(inner);
        return error(StatusCode::BAD_REQUEST, "Organization not found.");
    }
    let id = inner.fresh_id();
    inner.notes.push(Note {
        id,
        content: content.to_owned(),
        person_id: Some(person_id),
        org_id,
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
    let integer = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or(key.to_owned()),
    };
    let (organization_id, owner_id, channel) = match (
        integer("organization_id"),
        integer("owner_id"),
        integer("channel"),
    ) {
        (Ok(org), Ok(owner), Ok(channel)) => (org, owner, channel),
        (Err(key), _, _) | (_, Err(key), _) | (_, _, Err(key)) => {
            return reject(fake, &format!("{key} must be an integer"));
        }
    };
    let label_ids: Vec<String> = match body.get("label_ids") {
        None => Vec::new(),
        Some(Value::Array(ids)) if ids.iter().all(Value::is_string) => ids
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(_) => return reject(fake, "label_ids must be an array of UUID strings"),
    };
    if let Some(label) = label_ids
        .iter()
        .find(|label| !LEAD_LABELS.iter().any(|(id, _)| id == label))
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Lead label {label} not found."),
        );
    }
    if let Some(owner) = owner_id
        && !USERS.iter().any(|(id, _)| *id == owner)
    {
        return error(StatusCode::BAD_REQUEST, "User not found.");
    }
    if let Some(channel) = channel
        && !CHANNELS.iter().any(|(id, _)| *id == channel)
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("channel: {channel} is not a valid option"),
        );
    }
    let origin_id = body
        .get("origin_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut inner = fake.lock();
    if !inner.persons.iter().any(|person| person.id == person_id) {
        drop(inner);
        return error(StatusCode::BAD_REQUEST, "Person not found.");
    }
    if let Some(org_id) = organization_id
        && !inner.organizations.iter().any(|org| org.id == org_id)
    {
        drop(inner);
        return error(StatusCode::BAD_REQUEST, "Organization not found.");
    }
    let id = format!("adf21080-0e10-11eb-879b-05d71fb{:05}", inner.fresh_id());
    let lead = Lead {
        id,
        title: title.to_owned(),
        person_id,
        organization_id,
        owner_id,
        label_ids,
        channel,
        origin_id,
    };
    inner.leads.push(lead.clone());
    drop(inner);
    ok(StatusCode::CREATED, lead_json(&lead), Value::Null)
}

fn lead_json(lead: &Lead) -> Value {
    json!({
        "id": lead.id,
        "title": lead.title,
        "person_id": lead.person_id,
        "organization_id": lead.organization_id,
        "owner_id": lead.owner_id,
        "label_ids": lead.label_ids,
        "channel": lead.channel,
        "origin": "API",
        "origin_id": lead.origin_id,
        "add_time": Utc::now().to_rfc3339(),
    })
}

fn list_leads(fake: &FakePipedrive, query: &BTreeMap<String, String>) -> Response {
    let person_id: Option<u64> = query.get("person_id").and_then(|id| id.parse().ok());
    let newest_first = query.get("sort").map(String::as_str) == Some("add_time DESC");
    let inner = fake.lock();
    let mut leads: Vec<&Lead> = inner
        .leads
        .iter()
        .filter(|lead| person_id.is_none_or(|id| lead.person_id == id))
        .collect();
    if newest_first {
        leads.reverse();
    }
    let data: Vec<Value> = leads.into_iter().map(lead_json).collect();
    drop(inner);
    ok(StatusCode::OK, json!(data), Value::Null)
}

/// What a person's body may carry besides name and emails, checked.
struct Extras {
    org_id: Option<u64>,
    owner_id: Option<u64>,
    custom_fields: BTreeMap<String, Value>,
    phones: Vec<String>,
}

fn person_extras(fake: &FakePipedrive, body: &Value) -> Result<Extras, Box<Response>> {
    let integer = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| Box::new(reject(fake, &format!("{key} must be an integer")))),
    };
    let org_id = integer("org_id")?;
    let owner_id = integer("owner_id")?;
    if let Some(owner) = owner_id
        && !USERS.iter().any(|(id, _)| *id == owner)
    {
        return Err(Box::new(error(StatusCode::BAD_REQUEST, "User not found.")));
    }
    if let Some(org_id) = org_id
        && !fake.lock().organizations.iter().any(|org| org.id == org_id)
    {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "Organization not found.",
        )));
    }
    let mut custom_fields = BTreeMap::new();
    if let Some(fields) = body.get("custom_fields") {
        let Some(fields) = fields.as_object() else {
            return Err(Box::new(reject(fake, "custom_fields must be an object")));
        };
        for (key, value) in fields {
            let Some((_, _, kind, options)) = CUSTOM_FIELDS.iter().find(|(k, _, _, _)| k == key)
            else {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    &format!("Custom field with key {key} not found."),
                )));
            };
            let fits = match *kind {
                "double" => value.is_number(),
                "enum" => value
                    .as_u64()
                    .is_some_and(|id| options.iter().any(|(option, _)| *option == id)),
                _ => value.is_string(),
            };
            if !fits {
                return Err(Box::new(reject(
                    fake,
                    &format!("Invalid value for custom field {key} of type {kind}: {value}"),
                )));
            }
            custom_fields.insert(key.clone(), value.clone());
        }
    }
    let mut phones = Vec::new();
    for phone in body
        .get("phones")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match phone.get("value").and_then(Value::as_str) {
            Some(value) => phones.push(value.to_owned()),
            None => {
                return Err(Box::new(reject(
                    fake,
                    "phones must be objects {value, primary, label}",
                )));
            }
        }
    }
    Ok(Extras {
        org_id,
        owner_id,
        custom_fields,
        phones,
    })
}

fn update_person(fake: &FakePipedrive, path: &str, body: &Value) -> Response {
    let Some(id) = path
        .rsplit('/')
        .next()
        .and_then(|id| id.parse::<u64>().ok())
    else {
        return reject(fake, "the person id must be an integer");
    };
    let extras = match person_extras(fake, body) {
        Ok(extras) => extras,
        Err(response) => return *response,
    };
    let mut inner = fake.lock();
    let Some(person) = inner.persons.iter_mut().find(|person| person.id == id) else {
        drop(inner);
        return error(StatusCode::NOT_FOUND, "Person not found.");
    };
    if extras.org_id.is_some() {
        person.org_id = extras.org_id;
    }
    if extras.owner_id.is_some() {
        person.owner_id = extras.owner_id;
    }
    person.custom_fields.extend(extras.custom_fields);
    if !extras.phones.is_empty() {
        person.phones = extras.phones;
    }
    let person = person.clone();
    drop(inner);
    ok(StatusCode::OK, person_json(&person), Value::Null)
}

fn person_fields() -> Response {
    let mut data = vec![
        json!({"id": 9001, "key": "name", "name": "Name", "field_type": "varchar", "edit_flag": false}),
        json!({"id": 9002, "key": "email", "name": "Email", "field_type": "varchar", "edit_flag": false}),
        json!({"id": 9003, "key": "phone", "name": "Phone", "field_type": "phone", "edit_flag": false}),
        json!({"id": 9004, "key": "org_id", "name": "Organization", "field_type": "org", "edit_flag": false}),
        json!({"id": 9005, "key": "owner_id", "name": "Owner", "field_type": "user", "edit_flag": false}),
    ];
    for (index, (key, name, kind, options)) in CUSTOM_FIELDS.iter().enumerate() {
        let options: Vec<Value> = options
            .iter()
            .map(|(id, label)| json!({"id": id, "label": label}))
            .collect();
        data.push(json!({
            "id": 9100 + index,
            "key": key,
            "name": name,
            "field_type": kind,
            "edit_flag": true,
            "options": if options.is_empty() { Value::Null } else { json!(options) },
        }));
    }
    ok(
        StatusCode::OK,
        json!(data),
        json!({"pagination": {"start": 0, "limit": 500, "more_items_in_collection": false}}),
    )
}

fn organization_json(org: &Organization) -> Value {
    json!({"id": org.id, "name": org.name, "owner_id": org.owner_id, "add_time": Utc::now().to_rfc3339()})
}

fn search_organizations(fake: &FakePipedrive, query: &BTreeMap<String, String>) -> Response {
    let Some(term) = query.get("term").filter(|term| !term.is_empty()) else {
        return reject(fake, "term is required");
    };
    if query.get("fields").map(String::as_str) != Some("name") {
        return reject(fake, "the search must be limited to fields=name");
    }
    let exact = matches!(
        query.get("exact_match").map(String::as_str),
        Some("true" | "1")
    );
    let long = term.chars().count() > 30;
    let term = term.to_lowercase();
    let items: Vec<Value> = fake
        .lock()
        .organizations
        .iter()
        .filter(|org| org.indexed)
        .filter(|org| {
            let name = org.name.to_lowercase();
            match (exact, long) {
                (true, true) => false,
                (true, false) => name == term,
                (false, _) => name.contains(&term),
            }
        })
        .map(|org| json!({"result_score": 1.0, "item": {"id": org.id, "type": "organization", "name": org.name, "address": null, "visible_to": 3, "owner": {"id": org.owner_id}, "custom_fields": [], "notes": []}}))
        .collect();
    ok(
        StatusCode::OK,
        json!({"items": items}),
        json!({"next_cursor": null}),
    )
}

fn create_organization(fake: &FakePipedrive, body: &Value) -> Response {
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|name| !name.trim().is_empty())
    else {
        return reject(fake, "Name must be given.");
    };
    let owner_id = match body.get("owner_id") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(owner) if USERS.iter().any(|(id, _)| *id == owner) => Some(owner),
            Some(_) => return error(StatusCode::BAD_REQUEST, "User not found."),
            None => return reject(fake, "owner_id must be an integer"),
        },
    };
    let mut inner = fake.lock();
    let id = inner.fresh_id();
    let indexed = !inner.search_lags;
    let org = Organization {
        id,
        name: name.to_owned(),
        owner_id,
        indexed,
    };
    inner.organizations.push(org.clone());
    drop(inner);
    ok(StatusCode::OK, organization_json(&org), Value::Null)
}

fn list_organizations(fake: &FakePipedrive, query: &BTreeMap<String, String>) -> Response {
    let limit: usize = query
        .get("limit")
        .and_then(|limit| limit.parse().ok())
        .unwrap_or(100);
    let newest_first = query.get("sort_by").map(String::as_str) == Some("add_time")
        && query.get("sort_direction").map(String::as_str) == Some("desc");
    let inner = fake.lock();
    let mut orgs: Vec<&Organization> = inner.organizations.iter().collect();
    if newest_first {
        orgs.reverse();
    }
    let data: Vec<Value> = orgs
        .into_iter()
        .take(limit)
        .map(organization_json)
        .collect();
    drop(inner);
    ok(StatusCode::OK, json!(data), json!({"next_cursor": null}))
}
