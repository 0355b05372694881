// Over 500 lines: one connector's config, calls and answer sorting (fake, tests beside).
//! The Pipedrive connector: a brief finds its person by email (or creates one), attaches a
//! note to the person, and optionally opens a lead. Progress is saved between calls, so a
//! retry creates nothing twice.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::crm::{self, Answer, Api, CommonKeys, NOTE_LIMIT};
use crate::http::{self, MAX_WAIT};
use crate::lead::Lead;
use crate::retry;
use crate::{Attempt, ConfigProblem, Connector, Delivery, EventType, Secret, SecretSlot};

pub use crate::crm::WithoutEmail;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

const DEFAULT_BASE_URL: &str = "https://api.pipedrive.com";

const SEARCH_PATH: &str = "/api/v2/persons/search";
const PERSONS_PATH: &str = "/api/v2/persons";
const NOTES_PATH: &str = "/api/v1/notes";
const LEADS_PATH: &str = "/api/v1/leads";
const ME_PATH: &str = "/api/v1/users/me";

/// The header Pipedrive reads an API token from; unlike `?api_token=`, it stays out of
/// every URL that a proxy or an error message might log.
const TOKEN_HEADER: &str = "x-api-token";

/// The longest term Pipedrive's search matches exactly ("it will only work if search term
/// is 30 characters or less"); a longer email is searched loosely and matched here.
const EXACT_MATCH_CHARS: usize = 30;

/// Results read from a loose search: the exact email is among the best-scored.
const LOOSE_RESULTS: &str = "100";

/// Pipedrive's rate-limit window, for when `x-ratelimit-reset` is missing.
const DEFAULT_WINDOW: Duration = Duration::from_secs(2);

/// Persons read back, newest first, when an earlier attempt's create may have succeeded
/// unseen: the person sought was created moments before.
const RECENT_PERSONS: &str = "100";

/// A person's notes read back, newest first, when looking for one an earlier attempt
/// created.
const NOTES_READ_BACK: &str = "100";

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

/// `[connectors.NAME] type = "pipedrive"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipedriveConfig {
    /// A user's API token, usually filled in from `api_token_file` or a credential.
    #[serde(default)]
    pub api_token: Option<Secret>,
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Limit on each call to Pipedrive (a brief makes two to four).
    #[serde(default = "crm::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The answer holding the contact's email; by default any answer whose name mentions
    /// "email", then the summary (design §5).
    #[serde(default)]
    pub email_answer_key: Option<String>,
    /// What a brief without an email becomes. A Pipedrive note must hang on a person,
    /// organization, deal or lead, and none is known, so `note` leaves the delivery dead
    /// (kept and listed for a person to handle), while `skip` drops it.
    #[serde(default)]
    pub without_email: WithoutEmail,
    /// Also open a lead for each brief, on the person.
    #[serde(default)]
    pub create_lead: bool,
}

const MISSING_TOKEN: &str = "is missing; set `api_token_file` to a file holding the \
    Pipedrive API token (Personal preferences → API in Pipedrive), or provide the systemd \
    credential `<connector name>-api-token`";

impl PipedriveConfig {
    pub fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        vec![SecretSlot {
            key: "api_token",
            value: &mut self.api_token,
            file: self.api_token_file.as_ref(),
            required: true,
        }]
    }

    pub fn validate(&self) -> Vec<ConfigProblem> {
        self.common_keys().problems()
    }

    fn common_keys(&self) -> CommonKeys<'_> {
        CommonKeys {
            service: "Pipedrive",
            base_url: &self.base_url,
            token_key: "api_token",
            token: self.api_token.as_ref(),
            missing_token: MISSING_TOKEN,
            timeout: self.timeout,
            email_answer_key: self.email_answer_key.as_deref(),
        }
    }
}

/// What a delivery has done so far, saved as its checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Progress {
    #[serde(
        deserialize_with = "optional_number",
        skip_serializing_if = "Option::is_none"
    )]
    person_id: Option<u64>,
    /// Saved before the person is created: when the attempt then ends without learning
    /// whether Pipedrive created it, the retry looks among the newest persons, which are
    /// read at once, unlike the search index, which may not have the person yet.
    #[serde(skip_serializing_if = "crm::is_false")]
    person_sent: bool,
    #[serde(
        deserialize_with = "optional_number",
        skip_serializing_if = "Option::is_none"
    )]
    note_id: Option<u64>,
    /// Saved before the note is sent; the retry then looks among the person's notes.
    #[serde(skip_serializing_if = "crm::is_false")]
    note_sent: bool,
    #[serde(
        deserialize_with = "crm::optional_id",
        skip_serializing_if = "Option::is_none"
    )]
    lead_id: Option<String>,
}

/// An id saved as a number or a numeric string.
fn optional_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?
        .as_ref()
        .and_then(number))
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// One call's result: what it gave, its status, and whether the rate-limit window is
/// used up (`x-ratelimit-remaining: 0`), and for how long.
struct Done<T> {
    value: T,
    status: u16,
    spent: Option<Duration>,
}

/// A running Pipedrive connector: one HTTP client, reused for every delivery.
pub struct PipedriveConnector {
    name: String,
    api: Api,
    email_answer_key: Option<String>,
    without_email: WithoutEmail,
    create_lead: bool,
}

impl PipedriveConnector {
    pub fn new(name: &str, config: &PipedriveConfig) -> Result<Self, String> {
        let keys = config.common_keys();
        let token = keys.token()?;
        let api = Api::new(
            &keys,
            (HeaderName::from_static(TOKEN_HEADER), token.to_owned()),
            token,
        )?;
        Ok(Self {
            name: name.to_owned(),
            api,
            email_answer_key: config.email_answer_key.clone(),
            without_email: config.without_email,
            create_lead: config.create_lead,
        })
    }

    /// Whether the progress covers every step this connector makes.
    fn finished(&self, progress: &Progress) -> bool {
        progress.note_id.is_some() && (!self.create_lead || progress.lead_id.is_some())
    }

    /// brief.created: the person, a note on them, and a lead if configured.
    async fn brief(&self, delivery: &Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let lead = Lead::from_brief(&event.data, self.email_answer_key.as_deref());
        let mut progress: Progress = crm::load_progress(delivery.checkpoint.as_ref(), &self.name);
        if self.finished(&progress) {
            return Attempt::delivered(
                None,
                Some(format!(
                    "already recorded by an earlier attempt ({}); nothing sent",
                    describe_progress(&progress)
                )),
            );
        }
        let Some(email) = lead.email.clone() else {
            return match self.without_email {
                WithoutEmail::Skip => crm::skipped_without_email("Pipedrive"),
                WithoutEmail::Note => Attempt::permanent(
                    "the brief names no contact email, and a Pipedrive note must be attached \
                     to a person, organization, deal or lead; clairo-sync never creates a \
                     person it would have to guess, so this brief is kept here for someone to \
                     add by hand (its summary and answers are in the event). Set \
                     `without_email = \"skip\"` to drop such briefs instead",
                ),
            };
        };

        let mut last_status = None;
        // Whether this attempt found or created the person: then no note of it exists yet.
        let mut person_now = false;
        let person_id = match progress.person_id {
            Some(id) => id,
            None => {
                let person = match self.person(&email, &lead, &mut progress, delivery).await {
                    Ok(person) => person,
                    Err(attempt) => return attempt,
                };
                progress.person_id = Some(person.value);
                progress.person_sent = false;
                // The note is sent next; saved together, one write covers both.
                progress.note_sent = true;
                if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                    return crm::unsaved(&error, &format!("person {} is known", person.value));
                }
                if let Some(wait) = person.spent {
                    return self.pause(wait, &progress, person.status);
                }
                last_status = Some(person.status);
                person_now = true;
                person.value
            }
        };

        if progress.note_id.is_none() {
            let context = format!("person {person_id} is saved and will not be created again");
            if progress.note_sent && !person_now {
                match self.find_note(person_id, &event.id).await {
                    Ok(found) => progress.note_id = found,
                    Err(attempt) => return crm::with_context(attempt, &context),
                }
            } else if !progress.note_sent {
                progress.note_sent = true;
                if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                    return crm::unsaved(&error, &format!("person {person_id} is known"));
                }
            }
            if progress.note_id.is_none() {
                let content = crm::brief_note(event, &lead, NOTE_LIMIT);
                let note = match self.create_note(&content, person_id).await {
                    Ok(note) => note,
                    Err(attempt) => return crm::with_context(attempt, &context),
                };
                progress.note_id = Some(note.value);
                last_status = Some(note.status);
                if self.create_lead {
                    progress.note_sent = false;
                    if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                        return crm::unsaved(&error, &format!("note {} was created", note.value));
                    }
                    if let Some(wait) = note.spent {
                        return self.pause(wait, &progress, note.status);
                    }
                }
            }
            progress.note_sent = false;
        }
        if self.create_lead && progress.lead_id.is_none() {
            let context = format!(
                "person {person_id} and note {} are saved and will not be created again",
                progress.note_id.unwrap_or_default()
            );
            let created = match self.create_lead_for(&lead, &email, person_id).await {
                Ok(created) => created,
                Err(attempt) => return crm::with_context(attempt, &context),
            };
            progress.lead_id = Some(created.value);
            last_status = Some(created.status);
        }
        crm::save_last(delivery, &progress, &self.name).await;
        Attempt::delivered(last_status, Some(describe_progress(&progress)))
    }

    /// The person with this email: found by an exact email search, or created. An attempt
    /// that sent a create and did not learn its outcome leaves `person_sent` saved; the
    /// retry then also reads the newest persons, which the search index may not have yet.
    async fn person(
        &self,
        email: &str,
        lead: &Lead,
        progress: &mut Progress,
        delivery: &Delivery<'_>,
    ) -> Result<Done<u64>, Attempt> {
        let found = self.search_person(email).await?;
        if let Some(id) = found.value {
            return Ok(Done {
                value: id,
                status: found.status,
                spent: found.spent,
            });
        }
        if progress.person_sent {
            if let Some(id) = self.recent_person(email).await? {
                return Ok(Done {
                    value: id,
                    status: found.status,
                    spent: None,
                });
            }
        } else {
            if let Some(wait) = found.spent {
                return Err(self.pause(wait, progress, found.status));
            }
            progress.person_sent = true;
            if let Err(error) = crm::save_progress(delivery.checkpoints, progress).await {
                return Err(crm::unsaved(&error, "no person has this email yet"));
            }
        }
        self.create_person(email, lead).await
    }

    async fn search_person(&self, email: &str) -> Result<Done<Option<u64>>, Attempt> {
        let doing = "searching for the person by email";
        let exact = email.chars().count() <= EXACT_MATCH_CHARS;
        let (exact_match, limit) = if exact {
            ("true", "10")
        } else {
            ("false", LOOSE_RESULTS)
        };
        let request = self.api.get(SEARCH_PATH).query(&[
            ("term", email),
            ("fields", "email"),
            ("exact_match", exact_match),
            ("limit", limit),
        ]);
        let answer = self.api.send(request, doing).await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        let found = answer
            .json()
            .pointer("/data/items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("item"))
            .find(
                |person| match person.get("emails").and_then(Value::as_array) {
                    Some(emails) => has_email(emails, email),
                    // An exact search vouches for its results; a loose one must show the email.
                    None => exact,
                },
            )
            .and_then(|person| person.get("id").and_then(number));
        Ok(self.done(found, &answer))
    }

    /// The newest persons, read directly, for one with this email.
    async fn recent_person(&self, email: &str) -> Result<Option<u64>, Attempt> {
        let doing = "looking for a person an earlier attempt may have created";
        let request = self.api.get(PERSONS_PATH).query(&[
            ("sort_by", "add_time"),
            ("sort_direction", "desc"),
            ("limit", RECENT_PERSONS),
        ]);
        let answer = self.api.send(request, doing).await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        Ok(answer
            .json()
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|person| {
                person
                    .get("emails")
                    .and_then(Value::as_array)
                    .is_some_and(|emails| has_email(emails, email))
            })
            .and_then(|person| person.get("id").and_then(number)))
    }

    async fn create_person(&self, email: &str, lead: &Lead) -> Result<Done<u64>, Attempt> {
        let doing = "creating the person";
        // The name is required; without one in the brief, the email stands in for it.
        let name = crm::lead_name(lead).unwrap_or_else(|| email.to_owned());
        let body = json!({
            "name": name,
            "emails": [{"value": email, "primary": true, "label": "work"}],
        });
        let answer = self
            .api
            .send(self.api.post(PERSONS_PATH).json(&body), doing)
            .await?;
        self.created(&answer, doing, number)
    }

    async fn create_note(&self, content: &str, person_id: u64) -> Result<Done<u64>, Attempt> {
        let doing = "creating the note on the person";
        let body = json!({"content": content, "person_id": person_id});
        let answer = self
            .api
            .send(self.api.post(NOTES_PATH).json(&body), doing)
            .await?;
        self.created(&answer, doing, number)
    }

    async fn create_lead_for(
        &self,
        lead: &Lead,
        email: &str,
        person_id: u64,
    ) -> Result<Done<String>, Attempt> {
        let doing = "creating the lead";
        let who = lead
            .company
            .clone()
            .or_else(|| crm::lead_name(lead))
            .unwrap_or_else(|| email.to_owned());
        let body = json!({"title": format!("{who} — Clairo brief"), "person_id": person_id});
        let answer = self
            .api
            .send(self.api.post(LEADS_PATH).json(&body), doing)
            .await?;
        self.created(&answer, doing, crm::id_text)
    }

    /// Looks among the person's newest notes for the one this event's note would be: its
    /// content carries the event id.
    async fn find_note(&self, person_id: u64, event_id: &str) -> Result<Option<u64>, Attempt> {
        let doing = "looking for the note an earlier attempt may have created";
        let person = person_id.to_string();
        let request = self.api.get(NOTES_PATH).query(&[
            ("person_id", person.as_str()),
            ("sort", "add_time DESC"),
            ("limit", NOTES_READ_BACK),
        ]);
        let answer = self.api.send(request, doing).await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        Ok(answer
            .json()
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|note| {
                note.get("content")
                    .and_then(Value::as_str)
                    .is_some_and(|content| content.contains(event_id))
            })
            .and_then(|note| note.get("id").and_then(number)))
    }

    fn done<T>(&self, value: T, answer: &Answer) -> Done<T> {
        Done {
            value,
            status: answer.status.as_u16(),
            spent: spent_window(&answer.headers),
        }
    }

    /// `data.id` of a successful create, read with `read`.
    fn created<T>(
        &self,
        answer: &Answer,
        doing: &str,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Done<T>, Attempt> {
        if !answer.status.is_success() {
            return Err(self.failure(answer, doing));
        }
        let id = answer
            .json()
            .pointer("/data/id")
            .and_then(read)
            .ok_or_else(|| self.api.no_id(answer, doing))?;
        Ok(self.done(id, answer))
    }

    /// The rate-limit window is used up and more calls are due: stop, with the progress
    /// saved, and resume when the window resets.
    fn pause(&self, wait: Duration, progress: &Progress, status: u16) -> Attempt {
        Attempt::retry(
            format!(
                "Pipedrive's rate-limit window is used up (x-ratelimit-remaining: 0); \
                 recorded so far: {}; resuming in {}s",
                describe_progress(progress),
                wait.as_secs_f64().ceil()
            ),
            Some(wait),
        )
        .with_status(status)
    }

    /// An answer that is not a success, as a failed attempt that keeps Pipedrive's error
    /// body (`success`, `error`, `errorCode`, `error_info`).
    fn failure(&self, answer: &Answer, doing: &str) -> Attempt {
        self.api.failure(answer, doing, "error", |status, described, says| {
            let attempt = match status {
                401 => Attempt::permanent(format!(
                    "Pipedrive rejected the API token while {doing} ({described}); check the API \
                     token in `api_token_file` (Personal preferences → API in Pipedrive): it \
                     changes when regenerated, and each company has its own"
                )),
                402 => Attempt::permanent(format!(
                    "Pipedrive refused {doing} ({described}): the company account is not open \
                     (a trial ended or a payment is missing); reopen it, then replay the delivery"
                )),
                403 => Attempt::permanent(format!(
                    "Pipedrive refused {doing} ({described}{says}); the token's user may lack the \
                     permission, or the account reached a limit"
                )),
                429 => {
                    let wait = http::retry_after(&answer.headers, SystemTime::now())
                        .or_else(|| reset_after(&answer.headers));
                    let asked = wait
                        .map(|wait| format!("; retrying in {}s", wait.as_secs_f64().ceil()))
                        .unwrap_or_default();
                    Attempt::retry(
                        format!("Pipedrive is rate-limiting ({described}) while {doing}{asked}"),
                        wait,
                    )
                }
                408 => Attempt::retry(
                    format!("Pipedrive gave up waiting while {doing} ({described})"),
                    None,
                ),
                400..=499 => Attempt::permanent(format!(
                    "Pipedrive rejected {doing} ({described}{says}); fix the cause, then replay \
                     the delivery"
                )),
                _ => return None,
            };
            Some(attempt)
        })
    }
}

fn has_email(emails: &[Value], email: &str) -> bool {
    emails.iter().any(|entry| {
        let value = entry
            .as_str()
            .or_else(|| entry.get("value").and_then(Value::as_str));
        value.is_some_and(|value| value.trim().eq_ignore_ascii_case(email))
    })
}

/// `x-ratelimit-reset`: seconds until the window resets, capped like any wait.
fn reset_after(headers: &HeaderMap) -> Option<Duration> {
    crm::header_number(headers, "x-ratelimit-reset")
        .map(|seconds| retry::clamped_seconds(seconds, MAX_WAIT))
}

/// When an answer says the window is used up, how long until it resets.
fn spent_window(headers: &HeaderMap) -> Option<Duration> {
    (crm::header_number(headers, "x-ratelimit-remaining") == Some(0.0))
        .then(|| reset_after(headers).unwrap_or(DEFAULT_WINDOW))
}

fn describe_progress(progress: &Progress) -> String {
    let mut done = Vec::new();
    if let Some(id) = progress.person_id {
        done.push(format!("person {id}"));
    }
    if let Some(id) = progress.note_id {
        done.push(format!("note {id}"));
    }
    if let Some(id) = &progress.lead_id {
        done.push(format!("lead {id}"));
    }
    if done.is_empty() {
        "nothing recorded".to_owned()
    } else {
        done.join(", ")
    }
}

#[async_trait]
impl Connector for PipedriveConnector {
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt {
        let attempt = match delivery.event.kind {
            EventType::BriefCreated => self.brief(&delivery).await,
            EventType::MeetingProcessed => Attempt::delivered(
                None,
                Some(
                    "skipped: meeting.processed; a Pipedrive note must be attached to a person, \
                     organization, deal or lead, and a meeting names none (route meetings to \
                     another connector)"
                        .to_owned(),
                ),
            ),
            EventType::ConversationUpdated => {
                Attempt::delivered(None, Some(crm::IGNORED_CONVERSATION.to_owned()))
            }
        };
        delivery.log_finished(&self.name, "Pipedrive", &attempt);
        attempt
    }

    /// Reads the token's own user: cheap, and it fails exactly when the token does.
    async fn probe(&self) -> Result<String, String> {
        let doing = "reading the token's user";
        let answer = self
            .api
            .send(self.api.get(ME_PATH), doing)
            .await
            .map_err(|attempt| attempt.reason())?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing).reason());
        }
        let data = answer.json().get("data").cloned().unwrap_or(Value::Null);
        let user = crm::text_field(&data, "name").unwrap_or_else(|| "its user".to_owned());
        let company = crm::text_field(&data, "company_name")
            .map(|company| format!(" of {company}"))
            .unwrap_or_default();
        Ok(format!(
            "Pipedrive ({}) accepted the API token of {user}{company}",
            self.api.endpoint()
        ))
    }
}
