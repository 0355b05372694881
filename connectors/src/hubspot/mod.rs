// Over 500 lines: one connector's config, calls and answer sorting (fake, tests beside).
//! The HubSpot connector: a brief upserts its contact by email and logs a note on it; a
//! meeting logs a note. Progress is saved between calls, so a retry creates nothing twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::crm::{self, Answer, Api, CommonKeys, NOTE_LIMIT};
use crate::http::{self, MAX_WAIT};
use crate::lead::Lead;
use crate::{Attempt, ConfigProblem, Connector, Delivery, EventType, Secret, SecretSlot};

pub use crate::crm::WithoutEmail;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

const UPSERT_PATH: &str = "/crm/v3/objects/contacts/batch/upsert";
const CONTACTS_PATH: &str = "/crm/v3/objects/contacts";
const NOTES_PATH: &str = "/crm/v3/objects/notes";
const READ_NOTES_PATH: &str = "/crm/v3/objects/notes/batch/read";

/// HubSpot's own association type for "note to contact" (category HUBSPOT_DEFINED).
const NOTE_TO_CONTACT: u32 = 202;

/// The window of HubSpot's TEN_SECONDLY_ROLLING limit, for a 429 whose headers do not
/// say it (`X-HubSpot-RateLimit-Interval-Milliseconds`).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Notes read back at most when looking for one an earlier attempt created: HubSpot's
/// batch read takes 100 ids, and the note sought is among a contact's newest.
const NOTES_READ_BACK: usize = 100;

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

/// `[connectors.NAME] type = "hubspot"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubspotConfig {
    /// A private app's access token, usually filled in from `token_file` or a credential.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Limit on each call to HubSpot (a brief makes two or more).
    #[serde(default = "crm::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The answer holding the contact's email; by default any answer whose name mentions
    /// "email", then the summary (design §5).
    #[serde(default)]
    pub email_answer_key: Option<String>,
    /// Answers copied onto the contact: answer key → HubSpot property (internal name).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// What a brief without an email becomes: an unassociated note, or nothing.
    #[serde(default)]
    pub without_email: WithoutEmail,
}

const MISSING_TOKEN: &str = "is missing; set `token_file` to a file holding the HubSpot \
    private app's access token (or provide the systemd credential `<connector name>-token`)";

impl HubspotConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        vec![SecretSlot {
            key: "token",
            value: &mut self.token,
            file: self.token_file.as_ref(),
            required: true,
        }]
    }

    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = self.common_keys().problems();
        for (answer, property) in &self.properties {
            if let Err(message) = property_name(property) {
                problems.push(ConfigProblem::new(format!("properties.{answer}"), message));
            }
        }
        problems
    }

    fn common_keys(&self) -> CommonKeys<'_> {
        CommonKeys {
            service: "HubSpot",
            base_url: &self.base_url,
            token_key: "token",
            token: self.token.as_ref(),
            missing_token: MISSING_TOKEN,
            timeout: self.timeout,
            email_answer_key: self.email_answer_key.as_deref(),
        }
    }
}

/// A HubSpot property's internal name: lowercase letters, digits and `_`, starting with
/// a letter. `email` is set from the brief's contact email and may not be mapped.
fn property_name(name: &str) -> Result<(), String> {
    if name == "email" {
        return Err(
            "maps an answer to `email`, which clairo-sync sets from the brief's \
                    contact email; map the answer to another property"
                .to_owned(),
        );
    }
    let mut chars = name.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a HubSpot property's internal name; use the internal name \
             from HubSpot's property settings (lowercase letters, digits and `_`, e.g. \
             \"company_size\")"
        ))
    }
}

/// What a delivery has done so far, saved as its checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Progress {
    #[serde(
        deserialize_with = "crm::optional_id",
        skip_serializing_if = "Option::is_none"
    )]
    contact_id: Option<String>,
    #[serde(
        deserialize_with = "crm::optional_id",
        skip_serializing_if = "Option::is_none"
    )]
    note_id: Option<String>,
    /// Saved before the note is sent: when an attempt then ends without learning whether
    /// HubSpot created it (a timeout, a 5xx), the retry looks for it first.
    #[serde(skip_serializing_if = "crm::is_false")]
    note_sent: bool,
}

/// A contact found or created.
struct Contact {
    id: String,
    /// Whether HubSpot created it just now, when it says.
    new: Option<bool>,
    status: u16,
}

/// A running HubSpot connector: one HTTP client, reused for every delivery.
pub struct HubspotConnector {
    name: String,
    api: Api,
    email_answer_key: Option<String>,
    properties: BTreeMap<String, String>,
    without_email: WithoutEmail,
}

impl HubspotConnector {
    pub fn new(name: &str, config: &HubspotConfig) -> Result<Self, String> {
        let keys = config.common_keys();
        let token = keys.token()?;
        for (answer, property) in &config.properties {
            property_name(property).map_err(|message| format!("properties.{answer}: {message}"))?;
        }
        let api = Api::new(&keys, (AUTHORIZATION, format!("Bearer {token}")), token)?;
        Ok(Self {
            name: name.to_owned(),
            api,
            email_answer_key: config.email_answer_key.clone(),
            properties: config.properties.clone(),
            without_email: config.without_email,
        })
    }

    /// brief.created: contact, then a note on it; or, without an email, as configured.
    async fn brief(&self, delivery: &Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let lead = Lead::from_brief(&event.data, self.email_answer_key.as_deref());
        let mut progress: Progress = crm::load_progress(delivery.checkpoint.as_ref(), &self.name);
        if let Some(note_id) = &progress.note_id {
            return already_recorded(progress.contact_id.as_deref(), note_id);
        }
        let Some(email) = lead.email.clone() else {
            return match self.without_email {
                WithoutEmail::Skip => crm::skipped_without_email("HubSpot"),
                WithoutEmail::Note => {
                    let body = crm::brief_note(event, &lead, NOTE_LIMIT);
                    self.lone_note(delivery, &body, "the brief, which names no contact email")
                        .await
                }
            };
        };

        let mut upserted = None;
        let contact_id = match progress.contact_id.clone() {
            Some(id) => id,
            None => {
                let contact = match self.upsert_contact(&email, &lead).await {
                    Ok(contact) => contact,
                    Err(attempt) => return attempt,
                };
                progress.contact_id = Some(contact.id.clone());
                // The note is sent next; saved together, one write covers both.
                progress.note_sent = true;
                if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                    return crm::unsaved(&error, &format!("contact {} was upserted", contact.id))
                        .with_status(contact.status);
                }
                let id = contact.id.clone();
                upserted = Some(contact);
                id
            }
        };
        let context = format!("contact {contact_id} is saved and will not be upserted again");

        if progress.note_sent && upserted.is_none() {
            match self.find_note(&contact_id, &event.id).await {
                Ok(Some(note_id)) => {
                    progress.note_id = Some(note_id.clone());
                    progress.note_sent = false;
                    crm::save_last(delivery, &progress, &self.name).await;
                    return Attempt::delivered(
                        None,
                        Some(format!(
                            "contact {contact_id}; note {note_id} was created by an earlier \
                             attempt and found, so none was created again"
                        )),
                    );
                }
                Ok(None) => {}
                Err(attempt) => return crm::with_context(attempt, &context),
            }
        } else if !progress.note_sent {
            progress.note_sent = true;
            if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                return crm::unsaved(&error, &format!("contact {contact_id} is known"));
            }
        }

        let body = crm::brief_note(event, &lead, NOTE_LIMIT);
        let when = crm::occurred_at(event);
        let note = self
            .create_note(
                &body,
                when,
                Some(&contact_id),
                "creating the note on the contact",
            )
            .await;
        match note {
            Ok((note_id, status)) => {
                progress.note_id = Some(note_id.clone());
                progress.note_sent = false;
                crm::save_last(delivery, &progress, &self.name).await;
                let contact = match upserted.as_ref().and_then(|contact| contact.new) {
                    Some(true) => format!("contact {contact_id} created"),
                    Some(false) => format!("contact {contact_id} updated"),
                    None => format!("contact {contact_id}"),
                };
                Attempt::delivered(
                    Some(status),
                    Some(format!("{contact}; note {note_id} created on it")),
                )
            }
            Err(attempt) => crm::with_context(attempt, &context),
        }
    }

    /// meeting.processed: one note, on no contact (a meeting names none).
    async fn meeting(&self, delivery: &Delivery<'_>) -> Attempt {
        let progress: Progress = crm::load_progress(delivery.checkpoint.as_ref(), &self.name);
        if let Some(note_id) = &progress.note_id {
            return already_recorded(None, note_id);
        }
        let body = crm::meeting_note(delivery.event, NOTE_LIMIT);
        self.lone_note(delivery, &body, "the meeting").await
    }

    /// A note associated with nothing: a meeting, or a brief without an email. A single
    /// call, so there is no partial progress to resume.
    async fn lone_note(&self, delivery: &Delivery<'_>, body: &str, what: &str) -> Attempt {
        let when = crm::occurred_at(delivery.event);
        let doing = format!("creating the note for {what}");
        match self.create_note(body, when, None, &doing).await {
            Ok((note_id, status)) => {
                let progress = Progress {
                    note_id: Some(note_id.clone()),
                    ..Progress::default()
                };
                crm::save_last(delivery, &progress, &self.name).await;
                Attempt::delivered(
                    Some(status),
                    Some(format!(
                        "note {note_id} created for {what}, associated with no contact"
                    )),
                )
            }
            Err(attempt) => attempt,
        }
    }

    /// The contact's properties: email and what the brief says of the person, then the
    /// mapped answers. Only known values are sent: an empty string would erase a value
    /// the contact already has. HubSpot takes every value as a string.
    fn contact_properties(&self, email: &str, lead: &Lead) -> Map<String, Value> {
        let mut properties = Map::new();
        properties.insert("email".to_owned(), Value::from(email));
        let known = [
            ("firstname", &lead.first_name),
            ("lastname", &lead.last_name),
            ("company", &lead.company),
        ];
        for (property, value) in known {
            if let Some(value) = value.as_deref().filter(|value| !value.trim().is_empty()) {
                properties.insert(property.to_owned(), Value::from(value.trim()));
            }
        }
        for (answer, property) in &self.properties {
            let value = lead
                .answers
                .iter()
                .find(|(key, _)| key == answer)
                .map(|(_, value)| value.trim())
                .filter(|value| !value.is_empty());
            if let Some(value) = value {
                properties.insert(property.clone(), Value::from(value));
            }
        }
        properties
    }

    /// Creates or updates the contact whose email is `email`, in one call that HubSpot
    /// makes safe to repeat: it matches on the email, so a retry finds the same contact.
    async fn upsert_contact(&self, email: &str, lead: &Lead) -> Result<Contact, Attempt> {
        let properties = self.contact_properties(email, lead);
        let body = json!({
            "inputs": [{"idProperty": "email", "id": email, "properties": properties}],
        });
        let doing = "upserting the contact by email";
        let answer = self
            .api
            .send(self.api.post(UPSERT_PATH).json(&body), doing)
            .await?;
        let status = answer.status.as_u16();
        if answer.status.is_success()
            && let Some(result) = answer.json().pointer("/results/0")
            && let Some(id) = result.get("id").and_then(crm::id_text)
        {
            let new = result.get("new").and_then(Value::as_bool);
            return Ok(Contact { id, new, status });
        }
        if let Some(id) = existing_contact_id(answer.json()) {
            return Ok(Contact {
                id,
                new: Some(false),
                status,
            });
        }
        if answer.status == StatusCode::BAD_REQUEST && upsert_refused(&answer) {
            // Portals where email cannot serve as the upsert key: create, and a 409 names
            // the existing contact.
            return self.create_contact(properties).await;
        }
        if answer.status.is_success() {
            return Err(self.api.no_id(&answer, doing));
        }
        Err(self.failure(&answer, doing))
    }

    async fn create_contact(&self, properties: Map<String, Value>) -> Result<Contact, Attempt> {
        let doing = "creating the contact";
        let body = json!({"properties": properties});
        let answer = self
            .api
            .send(self.api.post(CONTACTS_PATH).json(&body), doing)
            .await?;
        let status = answer.status.as_u16();
        if answer.status.is_success() {
            return match answer.json().get("id").and_then(crm::id_text) {
                Some(id) => Ok(Contact {
                    id,
                    new: Some(true),
                    status,
                }),
                None => Err(self.api.no_id(&answer, doing)),
            };
        }
        match existing_contact_id(answer.json()) {
            Some(id) => Ok(Contact {
                id,
                new: Some(false),
                status,
            }),
            None => Err(self.failure(&answer, doing)),
        }
    }

    /// Creates a note, on the contact if one is given; answers its id and the status.
    async fn create_note(
        &self,
        body: &str,
        when: DateTime<Utc>,
        contact_id: Option<&str>,
        doing: &str,
    ) -> Result<(String, u16), Attempt> {
        let mut request = json!({
            "properties": {
                "hs_timestamp": crm::iso_millis(when),
                "hs_note_body": body,
            },
        });
        if let Some(contact_id) = contact_id {
            request["associations"] = json!([{
                "to": {"id": contact_id},
                "types": [{
                    "associationCategory": "HUBSPOT_DEFINED",
                    "associationTypeId": NOTE_TO_CONTACT,
                }],
            }]);
        }
        let answer = self
            .api
            .send(self.api.post(NOTES_PATH).json(&request), doing)
            .await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        match answer.json().get("id").and_then(crm::id_text) {
            Some(id) => Ok((id, answer.status.as_u16())),
            None => Err(self.api.no_id(&answer, doing)),
        }
    }

    /// Looks among the contact's notes for the one this event's note would be: its body
    /// carries the event id. Reads the contact's associations and the notes themselves,
    /// both read at once, unlike HubSpot's search index, which lags behind writes.
    async fn find_note(&self, contact_id: &str, event_id: &str) -> Result<Option<String>, Attempt> {
        let doing = "looking for the note an earlier attempt may have created";
        let path = format!(
            "/crm/v4/objects/contacts/{}/associations/notes",
            crm::path_segment(contact_id)
        );
        let request = self.api.get(&path).query(&[("limit", "500")]);
        let answer = self.api.send(request, doing).await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        let ids: Vec<String> = answer
            .json()
            .get("results")
            .and_then(Value::as_array)
            .map(|results| {
                results
                    .iter()
                    .filter_map(|result| result.get("toObjectId").and_then(crm::id_text))
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(None);
        }
        let inputs: Vec<Value> = ids
            .iter()
            .rev()
            .take(NOTES_READ_BACK)
            .map(|id| json!({"id": id}))
            .collect();
        let body = json!({"properties": ["hs_note_body"], "inputs": inputs});
        let answer = self
            .api
            .send(self.api.post(READ_NOTES_PATH).json(&body), doing)
            .await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        let found = answer
            .json()
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|note| {
                note.pointer("/properties/hs_note_body")
                    .and_then(Value::as_str)
                    .is_some_and(|body| body.contains(event_id))
            })
            .and_then(|note| note.get("id").and_then(crm::id_text));
        Ok(found)
    }

    /// An answer that is not a success, as a failed attempt that keeps HubSpot's error
    /// body (`status`, `category`, `message`, `correlationId`).
    fn failure(&self, answer: &Answer, doing: &str) -> Attempt {
        self.api.failure(answer, doing, "message", |status, described, says| {
            let attempt = match status {
                401 => Attempt::permanent(format!(
                    "HubSpot rejected the token while {doing} ({described}); check that \
                     `token_file` holds the private app's current access token (rotating it \
                     invalidates the old one) and that the app has the crm.objects.contacts.write \
                     scope"
                )),
                403 => Attempt::permanent(format!(
                    "HubSpot refused {doing} ({described}{says}); give the private app the \
                     crm.objects.contacts.read and crm.objects.contacts.write scopes, then check \
                     the token in `token_file`"
                )),
                429 => {
                    let (wait, why) = rate_limit_wait(
                        &answer.headers,
                        answer.json(),
                        Utc::now(),
                        SystemTime::now(),
                    );
                    Attempt::retry(
                        format!(
                            "HubSpot is rate-limiting ({described}) while {doing}: {why}; retrying \
                             in {}s",
                            wait.as_secs()
                        ),
                        Some(wait),
                    )
                }
                // 423: HubSpot locks a record while another write to it is in progress.
                408 | 423 => Attempt::retry(
                    format!("HubSpot could not finish {doing} ({described}{says})"),
                    None,
                ),
                400..=499 => Attempt::permanent(format!(
                    "HubSpot rejected {doing} ({described}{says}); fix the cause (often a property \
                     in `properties` HubSpot does not have, or a value it does not accept), then \
                     replay the delivery"
                )),
                _ => return None,
            };
            Some(attempt)
        })
    }
}

fn already_recorded(contact_id: Option<&str>, note_id: &str) -> Attempt {
    let contact = contact_id
        .map(|id| format!("contact {id}, "))
        .unwrap_or_default();
    Attempt::delivered(
        None,
        Some(format!(
            "already recorded by an earlier attempt ({contact}note {note_id}); nothing sent"
        )),
    )
}

/// The id in HubSpot's "Contact already exists. Existing ID: 123" (a 409 CONFLICT, or an
/// error inside a batch answer).
fn existing_contact_id(body: &Value) -> Option<String> {
    let mut messages: Vec<&str> = body
        .get("message")
        .and_then(Value::as_str)
        .into_iter()
        .collect();
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        messages.extend(
            errors
                .iter()
                .filter_map(|error| error.get("message").and_then(Value::as_str)),
        );
    }
    messages.into_iter().find_map(|message| {
        let (_, rest) = message.split_once("Existing ID:")?;
        let id: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!id.is_empty()).then_some(id)
    })
}

/// Whether a 400 says the email cannot be the upsert key in this portal ("Unable to perform
/// update/upsert by non-unique 0-1 property email").
fn upsert_refused(answer: &Answer) -> bool {
    answer
        .field("message")
        .map(str::to_ascii_lowercase)
        .is_some_and(|message| message.contains("non-unique") || message.contains("idproperty"))
}

/// How long a 429 asks to wait, and why. `Retry-After` first; else the policy HubSpot
/// names: DAILY waits for the daily reset, anything else one rolling interval.
fn rate_limit_wait(
    headers: &HeaderMap,
    body: &Value,
    now: DateTime<Utc>,
    clock: SystemTime,
) -> (Duration, String) {
    if let Some(wait) = http::retry_after(headers, clock) {
        return (
            wait,
            format!("it asked to wait {}s (Retry-After)", wait.as_secs()),
        );
    }
    let policy = body.get("policyName").and_then(Value::as_str).unwrap_or("");
    let daily_spent =
        crm::header_number(headers, "x-hubspot-ratelimit-daily-remaining") == Some(0.0);
    if policy.eq_ignore_ascii_case("DAILY") || (policy.is_empty() && daily_spent) {
        return (
            crm::until_next_utc_midnight(now),
            "the daily limit is used up; it resets at midnight in the HubSpot account's time \
             zone, which clairo-sync cannot see, so it waits until the next midnight UTC"
                .to_owned(),
        );
    }
    let interval = crm::header_number(headers, "x-hubspot-ratelimit-interval-milliseconds")
        .map(|millis| Duration::from_millis(millis.ceil() as u64))
        .filter(|interval| !interval.is_zero())
        .unwrap_or(DEFAULT_INTERVAL)
        .min(MAX_WAIT);
    let limit = if policy.is_empty() {
        "the rolling limit"
    } else {
        policy
    };
    (
        interval,
        format!(
            "{limit} is used up; waiting one interval of {}ms",
            interval.as_millis()
        ),
    )
}

#[async_trait]
impl Connector for HubspotConnector {
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt {
        let attempt = match delivery.event.kind {
            EventType::BriefCreated => self.brief(&delivery).await,
            EventType::MeetingProcessed => self.meeting(&delivery).await,
            EventType::ConversationUpdated => {
                Attempt::delivered(None, Some(crm::IGNORED_CONVERSATION.to_owned()))
            }
        };
        delivery.log_finished(&self.name, "HubSpot", &attempt);
        attempt
    }

    /// Lists one contact: cheap, and it needs both a valid token and the contacts scope.
    async fn probe(&self) -> Result<String, String> {
        let doing = "listing one contact";
        let request = self.api.get(CONTACTS_PATH).query(&[("limit", "1")]);
        let answer = self
            .api
            .send(request, doing)
            .await
            .map_err(|attempt| attempt.reason())?;
        if answer.status.is_success() {
            Ok(format!(
                "HubSpot ({}) accepted the token and listed a contact",
                self.api.endpoint()
            ))
        } else {
            Err(self.failure(&answer, doing).reason())
        }
    }
}
