//! A local stand-in for HubSpot's CRM API, faithful where the connector depends on it:
//! bearer auth; the request shapes (every property value a string, `hs_timestamp` present,
//! the association types HubSpot defines for each pair of objects in category
//! HUBSPOT_DEFINED); the account's contact properties (an unknown property or an option an
//! enumeration does not have is refused as HubSpot refuses it), owners, deal pipelines and
//! stages, and time zone; companies and deals with their search (which, like HubSpot's
//! index, can be made to lag behind writes), batch reads and v4 associations; the answers
//! and error bodies (`status`, `message`, `correlationId`, `category`); the rate-limit
//! headers. A request of the wrong shape is answered 400, as HubSpot would, and recorded,
//! so a test can assert there were none. Faults are injected per route, including
//! ambiguous ones: the work done, then a 5xx or no answer in time.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::fake_api::FakeApi;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Upsert,
    CreateContact,
    ListContacts,
    CreateNote,
    NoteAssociations,
    ReadNotes,
    SearchNotes,
    CreateCompany,
    SearchCompanies,
    ReadCompanies,
    CompanyAssociations,
    AssociateDefault,
    CreateDeal,
    SearchDeals,
    ReadDeals,
    DealAssociations,
    Properties,
    Owners,
    Pipelines,
    AccountInfo,
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
    /// Do the work, then answer this status with HubSpot's error body, as a failing
    /// proxy or a HubSpot back end that committed before it failed would.
    StatusAfterActing(u16),
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
    /// Whether HubSpot's search index has it yet.
    indexed: bool,
}

/// A company or a deal, with what it is associated with.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub properties: BTreeMap<String, String>,
    pub contact_ids: Vec<String>,
    pub company_ids: Vec<String>,
    /// Whether HubSpot's search index has it yet.
    indexed: bool,
}

/// A contact property the account defines: its internal name and, for an enumeration,
/// the values it accepts.
pub struct PropertyDef {
    pub name: &'static str,
    pub options: &'static [&'static str],
}

/// The contact properties of the fake account: HubSpot's own that the tests use, and the
/// custom `budget_range`.
pub const PROPERTIES: &[PropertyDef] = &[
    PropertyDef {
        name: "email",
        options: &[],
    },
    PropertyDef {
        name: "firstname",
        options: &[],
    },
    PropertyDef {
        name: "lastname",
        options: &[],
    },
    PropertyDef {
        name: "company",
        options: &[],
    },
    PropertyDef {
        name: "jobtitle",
        options: &[],
    },
    PropertyDef {
        name: "phone",
        options: &[],
    },
    PropertyDef {
        name: "numemployees",
        options: &[],
    },
    PropertyDef {
        name: "budget_range",
        options: &[],
    },
    PropertyDef {
        name: "hubspot_owner_id",
        options: &[],
    },
    PropertyDef {
        name: "lifecyclestage",
        options: &[
            "subscriber",
            "lead",
            "marketingqualifiedlead",
            "salesqualifiedlead",
            "opportunity",
            "customer",
            "evangelist",
            "other",
        ],
    },
    PropertyDef {
        name: "hs_lead_status",
        options: &[
            "NEW",
            "OPEN",
            "IN_PROGRESS",
            "OPEN_DEAL",
            "UNQUALIFIED",
            "ATTEMPTED_TO_CONTACT",
            "CONNECTED",
            "BAD_TIMING",
        ],
    },
];

/// The account's owners.
pub const OWNERS: &[(&str, &str, &str)] = &[
    ("75030002", "Pat", "pat.seller@example.com"),
    ("75030017", "Sam", "sam.closer@example.com"),
];

/// The deal pipelines: id → stage ids.
pub const PIPELINES: &[(&str, &[&str])] = &[
    (
        "default",
        &[
            "appointmentscheduled",
            "qualifiedtobuy",
            "presentationscheduled",
            "closedwon",
            "closedlost",
        ],
    ),
    ("8127301", &["8127302", "8127303"]),
];

/// The portal's records.
#[derive(Default)]
pub struct Portal {
    contacts: Vec<Contact>,
    notes: Vec<Note>,
    companies: Vec<Record>,
    deals: Vec<Record>,
    next_id: u64,
    authorizations: Vec<String>,
    search_lags: bool,
    time_zone: Option<(String, i64)>,
    /// Waited before each authenticated request is acted on.
    latency: Duration,
}

/// A running fake; clones share its state.
pub type FakeHubspot = FakeApi<Portal, Route, Fault>;

impl FakeHubspot {
    /// Starts a fake on 127.0.0.1 that accepts `token`.
    pub async fn start(token: &str) -> Self {
        let portal = Portal {
            next_id: 1001,
            time_zone: Some(("US/Eastern".to_owned(), -18_000_000)),
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

    /// From now on, companies, deals and notes created are not found by search, as
    /// HubSpot's index lags behind writes.
    pub fn lag_search(&self) {
        self.lock().search_lags = true;
    }

    /// Every authenticated request waits this long before it is acted on, as a distant
    /// HubSpot would: a delivery of several calls is in flight for that many times it.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The account's time zone and its offset in milliseconds.
    pub fn set_time_zone(&self, name: &str, offset_millis: i64) {
        self.lock().time_zone = Some((name.to_owned(), offset_millis));
    }

    pub fn seed_company(&self, domain: &str, name: &str) -> String {
        let mut inner = self.lock();
        let id = inner.fresh_id();
        let properties = BTreeMap::from([
            ("domain".to_owned(), domain.to_owned()),
            ("name".to_owned(), name.to_owned()),
        ]);
        inner.companies.push(Record {
            id: id.clone(),
            properties,
            contact_ids: Vec::new(),
            company_ids: Vec::new(),
            indexed: true,
        });
        id
    }

    pub fn companies(&self) -> Vec<Record> {
        self.lock().companies.clone()
    }

    pub fn deals(&self) -> Vec<Record> {
        self.lock().deals.clone()
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
        ("POST", ["crm", "v3", "objects", "notes", "search"]) => Some(Route::SearchNotes),
        ("POST", ["crm", "v3", "objects", "companies"]) => Some(Route::CreateCompany),
        ("POST", ["crm", "v3", "objects", "companies", "search"]) => Some(Route::SearchCompanies),
        ("POST", ["crm", "v3", "objects", "companies", "batch", "read"]) => {
            Some(Route::ReadCompanies)
        }
        (
            "GET",
            [
                "crm",
                "v4",
                "objects",
                "contacts",
                _,
                "associations",
                "companies",
            ],
        ) => Some(Route::CompanyAssociations),
        (
            "PUT",
            [
                "crm",
                "v4",
                "objects",
                _,
                _,
                "associations",
                "default",
                _,
                _,
            ],
        ) => Some(Route::AssociateDefault),
        ("POST", ["crm", "v3", "objects", "deals"]) => Some(Route::CreateDeal),
        ("POST", ["crm", "v3", "objects", "deals", "search"]) => Some(Route::SearchDeals),
        ("POST", ["crm", "v3", "objects", "deals", "batch", "read"]) => Some(Route::ReadDeals),
        (
            "GET",
            [
                "crm",
                "v4",
                "objects",
                "contacts",
                _,
                "associations",
                "deals",
            ],
        ) => Some(Route::DealAssociations),
        ("GET", ["crm", "v3", "properties", "contacts"]) => Some(Route::Properties),
        ("GET", ["crm", "v3", "owners"]) => Some(Route::Owners),
        ("GET", ["crm", "v3", "pipelines", "deals"]) => Some(Route::Pipelines),
        ("GET", ["account-info", "v3", "details"]) => Some(Route::AccountInfo),
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
    let latency = fake.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
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
    let mut status_after = None;
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
        Some(Fault::StatusAfterActing(status)) => status_after = Some(status),
        None => {}
    }
    let response = match route {
        Route::Upsert => upsert(&fake, &body),
        Route::CreateContact => create_contact(&fake, &body),
        Route::ListContacts => list_contacts(&fake),
        Route::CreateNote => create_note(&fake, &body),
        Route::NoteAssociations => note_associations(&fake, uri.path()),
        Route::ReadNotes => read_notes(&fake, &body),
        Route::SearchNotes => search_notes(&fake, &body),
        Route::CreateCompany => create_record(&fake, &body, Kind::Company),
        Route::SearchCompanies => search_records(&fake, &body, Kind::Company),
        Route::ReadCompanies => read_records(&fake, &body, Kind::Company),
        Route::CompanyAssociations => record_associations(&fake, uri.path(), Kind::Company),
        Route::AssociateDefault => associate_default(&fake, uri.path()),
        Route::CreateDeal => create_record(&fake, &body, Kind::Deal),
        Route::SearchDeals => search_records(&fake, &body, Kind::Deal),
        Route::ReadDeals => read_records(&fake, &body, Kind::Deal),
        Route::DealAssociations => record_associations(&fake, uri.path(), Kind::Deal),
        Route::Properties => properties(),
        Route::Owners => owners(),
        Route::Pipelines => pipelines(),
        Route::AccountInfo => account_info(&fake),
    };
    if let Some(delay) = slow {
        // The work is done; the answer arrives after the client stopped waiting.
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = status_after {
        // The work is done; the answer says it failed.
        let status = StatusCode::from_u16(status).unwrap();
        return error(
            status,
            category_of(status.as_u16()),
            "internal error, please retry",
        );
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
        if let Err(message) = check_contact_properties(&properties) {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &message);
        }
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
    if let Err(message) = check_contact_properties(&properties) {
        return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &message);
    }
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
    let indexed = !inner.search_lags;
    inner.notes.push(Note {
        id: id.clone(),
        properties: properties.clone(),
        contact_ids,
        indexed,
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

/// HubSpot's refusal of a property the account does not define, or of a value an
/// enumeration or the owner list does not have.
fn check_contact_properties(properties: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in properties {
        let Some(defined) = PROPERTIES.iter().find(|property| property.name == name) else {
            return Err(format!(
                "Property values were not valid: [{{\"isValid\":false,\"message\":\"Property \\\"{name}\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"{name}\"}}]"
            ));
        };
        check_value(name, value, defined.options)?;
    }
    Ok(())
}

fn check_value(name: &str, value: &str, options: &[&str]) -> Result<(), String> {
    if name == "hubspot_owner_id" && !OWNERS.iter().any(|(id, _, _)| *id == value) {
        return Err(format!(
            "Property values were not valid: [{{\"isValid\":false,\"message\":\"{value} is not a valid owner id\",\"error\":\"INVALID_OWNER_ID\",\"name\":\"{name}\"}}]"
        ));
    }
    if !options.is_empty() && !options.contains(&value) {
        return Err(format!(
            "Property values were not valid: [{{\"isValid\":false,\"message\":\"{value} was not one of the allowed options: {}\",\"error\":\"INVALID_OPTION\",\"name\":\"{name}\"}}]",
            options.join(", ")
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Company,
    Deal,
}

impl Kind {
    fn records(self, portal: &mut Portal) -> &mut Vec<Record> {
        match self {
            Kind::Company => &mut portal.companies,
            Kind::Deal => &mut portal.deals,
        }
    }
}

/// The association types HubSpot defines from `from` to another object, by its id.
fn check_associations(
    fake: &FakeHubspot,
    body: &Value,
    allowed: &[(u64, &str)],
) -> Result<Vec<(String, String)>, Box<Response>> {
    let mut found = Vec::new();
    let Some(associations) = body.get("associations") else {
        return Ok(found);
    };
    let Some(associations) = associations.as_array() else {
        return Err(Box::new(reject(fake, "`associations` must be an array")));
    };
    for association in associations {
        let Some(id) = association.pointer("/to/id").and_then(crate::crm::id_text) else {
            return Err(Box::new(reject(fake, "an association needs to.id")));
        };
        let types = association.get("types").and_then(Value::as_array);
        let Some([kind]) = types.map(Vec::as_slice) else {
            return Err(Box::new(reject(
                fake,
                "an association needs exactly one type",
            )));
        };
        let category = kind.get("associationCategory").and_then(Value::as_str);
        let type_id = kind.get("associationTypeId").and_then(Value::as_u64);
        let target = allowed
            .iter()
            .find(|(allowed_id, _)| Some(*allowed_id) == type_id)
            .map(|(_, target)| *target);
        let (Some("HUBSPOT_DEFINED"), Some(target)) = (category, target) else {
            return Err(Box::new(reject(
                fake,
                &format!(
                    "association type {type_id:?} in category {category:?} is not one this object has"
                ),
            )));
        };
        let inner = fake.lock();
        let exists = match target {
            "contact" => inner.contacts.iter().any(|contact| contact.id == id),
            _ => inner.companies.iter().any(|company| company.id == id),
        };
        drop(inner);
        if !exists {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("One or more associations are invalid: no {target} {id}"),
            )));
        }
        found.push((target.to_owned(), id));
    }
    Ok(found)
}

fn create_record(fake: &FakeHubspot, body: &Value, kind: Kind) -> Response {
    let properties = match string_properties(body.get("properties")) {
        Ok(properties) => properties,
        Err(message) => return reject(fake, &message),
    };
    for (name, value) in &properties {
        if let Err(message) = check_value(name, value, &[]) {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &message);
        }
    }
    let allowed: &[(u64, &str)] = match kind {
        // company_to_contact
        Kind::Company => &[(280, "contact")],
        // deal_to_contact; deal_to_company (primary) and its unlabeled twin
        Kind::Deal => &[(3, "contact"), (5, "company"), (341, "company")],
    };
    if kind == Kind::Deal {
        let Some(name) = properties.get("dealname").filter(|name| !name.is_empty()) else {
            return reject(fake, "Property values were not valid: dealname is required");
        };
        let _ = name;
        let pipeline = properties.get("pipeline").map_or("default", String::as_str);
        let Some((_, stages)) = PIPELINES.iter().find(|(id, _)| *id == pipeline) else {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Property values were not valid: {pipeline} is not a valid pipeline"),
            );
        };
        let stage = properties.get("dealstage").map_or("", String::as_str);
        if !stages.contains(&stage) {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "Property values were not valid: {stage} was not one of the allowed options for dealstage in pipeline {pipeline}"
                ),
            );
        }
    }
    let associations = match check_associations(fake, body, allowed) {
        Ok(associations) => associations,
        Err(response) => return *response,
    };
    let mut inner = fake.lock();
    let id = inner.fresh_id();
    let indexed = !inner.search_lags;
    let pick = |target: &str| -> Vec<String> {
        associations
            .iter()
            .filter(|(kind, _)| kind == target)
            .map(|(_, id)| id.clone())
            .collect()
    };
    let record = Record {
        id: id.clone(),
        properties: properties.clone(),
        contact_ids: pick("contact"),
        company_ids: pick("company"),
        indexed,
    };
    kind.records(&mut inner).push(record);
    drop(inner);
    answer(
        StatusCode::CREATED,
        json!({"id": id, "properties": properties, "createdAt": now(), "updatedAt": now(), "archived": false}),
    )
}

/// The filters of a search body, all of which must hold (one filter group, as the
/// connector sends).
fn filters(
    fake: &FakeHubspot,
    body: &Value,
) -> Result<Vec<(String, String, String)>, Box<Response>> {
    let groups = body.get("filterGroups").and_then(Value::as_array);
    let Some(groups) = groups.filter(|groups| !groups.is_empty() && groups.len() <= 5) else {
        return Err(Box::new(reject(
            fake,
            "filterGroups must hold 1 to 5 groups",
        )));
    };
    let mut all = Vec::new();
    for group in groups {
        for filter in group
            .get("filters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = |key: &str| filter.get(key).and_then(Value::as_str).map(str::to_owned);
            let (Some(property), Some(operator), Some(value)) =
                (field("propertyName"), field("operator"), field("value"))
            else {
                return Err(Box::new(reject(
                    fake,
                    "a filter needs propertyName, operator and value",
                )));
            };
            if !matches!(operator.as_str(), "EQ" | "CONTAINS_TOKEN") {
                return Err(Box::new(reject(
                    fake,
                    "this fake searches with EQ or CONTAINS_TOKEN only",
                )));
            }
            all.push((property, operator, value));
        }
    }
    Ok(all)
}

fn matches(properties: &BTreeMap<String, String>, filters: &[(String, String, String)]) -> bool {
    filters.iter().all(|(property, operator, value)| {
        let Some(found) = properties.get(property) else {
            return false;
        };
        match operator.as_str() {
            // HubSpot compares strings without regard to case.
            "EQ" => found.eq_ignore_ascii_case(value),
            _ => found.to_lowercase().contains(&value.to_lowercase()),
        }
    })
}

fn search_answer(results: &[Value]) -> Response {
    answer(
        StatusCode::OK,
        json!({"total": results.len(), "results": results}),
    )
}

fn search_records(fake: &FakeHubspot, body: &Value, kind: Kind) -> Response {
    let filters = match filters(fake, body) {
        Ok(filters) => filters,
        Err(response) => return *response,
    };
    let mut inner = fake.lock();
    let results: Vec<Value> = kind
        .records(&mut inner)
        .iter()
        .filter(|record| record.indexed && matches(&record.properties, &filters))
        .map(|record| json!({"id": record.id, "properties": record.properties, "archived": false}))
        .collect();
    drop(inner);
    search_answer(&results)
}

fn search_notes(fake: &FakeHubspot, body: &Value) -> Response {
    let filters = match filters(fake, body) {
        Ok(filters) => filters,
        Err(response) => return *response,
    };
    let inner = fake.lock();
    let results: Vec<Value> = inner
        .notes
        .iter()
        .filter(|note| note.indexed && matches(&note.properties, &filters))
        .map(|note| json!({"id": note.id, "properties": note.properties, "archived": false}))
        .collect();
    drop(inner);
    search_answer(&results)
}

fn read_records(fake: &FakeHubspot, body: &Value, kind: Kind) -> Response {
    let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
        return reject(fake, "Invalid input JSON: `inputs` is required");
    };
    if inputs.len() > 100 {
        return reject(fake, "batch read takes at most 100 inputs");
    }
    let mut inner = fake.lock();
    let records = kind.records(&mut inner);
    let results: Vec<Value> = inputs
        .iter()
        .filter_map(|input| input.get("id").and_then(crate::crm::id_text))
        .filter_map(|id| records.iter().find(|record| record.id == id))
        .map(|record| json!({"id": record.id, "properties": record.properties, "archived": false}))
        .collect();
    drop(inner);
    answer(
        StatusCode::OK,
        json!({"status": "COMPLETE", "results": results, "startedAt": now(), "completedAt": now()}),
    )
}

fn record_associations(fake: &FakeHubspot, path: &str, kind: Kind) -> Response {
    let contact_id = path.split('/').nth(5).unwrap_or("").to_owned();
    let mut inner = fake.lock();
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
    let type_id = match kind {
        Kind::Company => 279,
        Kind::Deal => 4,
    };
    let results: Vec<Value> = kind
        .records(&mut inner)
        .iter()
        .filter(|record| record.contact_ids.contains(&contact_id))
        .map(|record| {
            json!({
                "toObjectId": record.id.parse::<u64>().unwrap(),
                "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": null}],
            })
        })
        .collect();
    drop(inner);
    answer(StatusCode::OK, json!({"results": results}))
}

/// `PUT /crm/v4/objects/contact/{id}/associations/default/company/{id}`: the only pair
/// the connector associates after the fact.
fn associate_default(fake: &FakeHubspot, path: &str) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (from_type, from_id, to_type, to_id) = (segments[3], segments[4], segments[7], segments[8]);
    if !matches!(from_type, "contact" | "contacts") || !matches!(to_type, "company" | "companies") {
        return reject(fake, "this fake associates contacts with companies only");
    }
    let mut inner = fake.lock();
    let contact_exists = inner.contacts.iter().any(|contact| contact.id == from_id);
    let Some(company) = inner
        .companies
        .iter_mut()
        .find(|company| company.id == to_id)
    else {
        drop(inner);
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("resource not found: company {to_id}"),
        );
    };
    if !contact_exists {
        drop(inner);
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("resource not found: contact {from_id}"),
        );
    }
    if !company.contact_ids.iter().any(|id| id == from_id) {
        company.contact_ids.push(from_id.to_owned());
    }
    drop(inner);
    answer(
        StatusCode::OK,
        json!({
            "status": "COMPLETE",
            "results": [{
                "from": {"id": from_id},
                "to": {"id": to_id},
                "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279},
            }],
            "startedAt": now(),
            "completedAt": now(),
        }),
    )
}

fn properties() -> Response {
    let results: Vec<Value> = PROPERTIES
        .iter()
        .map(|property| {
            let options: Vec<Value> = property
                .options
                .iter()
                .enumerate()
                .map(|(order, value)| json!({"label": value, "value": value, "displayOrder": order, "hidden": false}))
                .collect();
            let (kind, field) = if options.is_empty() {
                ("string", "text")
            } else {
                ("enumeration", "select")
            };
            json!({
                "name": property.name,
                "label": property.name,
                "type": kind,
                "fieldType": field,
                "groupName": "contactinformation",
                "options": options,
            })
        })
        .collect();
    answer(StatusCode::OK, json!({"results": results}))
}

fn owners() -> Response {
    let results: Vec<Value> = OWNERS
        .iter()
        .map(|(id, first, email)| {
            json!({"id": id, "email": email, "firstName": first, "lastName": "Example", "userId": 9_000_001, "archived": false})
        })
        .collect();
    answer(StatusCode::OK, json!({"results": results}))
}

fn pipelines() -> Response {
    let results: Vec<Value> = PIPELINES
        .iter()
        .map(|(id, stages)| {
            let stages: Vec<Value> = stages
                .iter()
                .enumerate()
                .map(|(order, stage)| json!({"id": stage, "label": stage, "displayOrder": order, "archived": false}))
                .collect();
            json!({"id": id, "label": format!("Pipeline {id}"), "displayOrder": 0, "stages": stages, "archived": false})
        })
        .collect();
    answer(StatusCode::OK, json!({"results": results}))
}

fn account_info(fake: &FakeHubspot) -> Response {
    let zone = fake.lock().time_zone.clone();
    let Some((name, offset)) = zone else {
        return error(
            StatusCode::FORBIDDEN,
            "MISSING_SCOPES",
            "This app has not been granted all required scopes",
        );
    };
    let sign = if offset < 0 { '-' } else { '+' };
    let minutes = offset.abs() / 60_000;
    answer(
        StatusCode::OK,
        json!({
            "portalId": 12345,
            "accountType": "STANDARD",
            "timeZone": name,
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60),
            "utcOffsetMilliseconds": offset,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        }),
    )
}
