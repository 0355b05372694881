//! The Pipedrive connector. A brief, with `organization = true`, finds the organisation
//! named after the email's domain (or creates it); finds its person by email (or creates
//! one, with the mapped custom fields and the owner); attaches a note to the person; and
//! with `lead` (or `create_lead = true`) opens one lead. Each step's progress is saved,
//! and a step an earlier attempt may have done unseen is looked for before it is done
//! again, so a retry creates nothing twice.
//!
//! The table's keys are in `config.rs`, the calls in `records.rs`, the person fields in
//! `fields.rs`, and what `check --online` reads in `audit.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::crm::{self, Answer, Api, NOTE_LIMIT, Title};
use crate::http::{self, MAX_WAIT};
use crate::lead::Lead;
use crate::retry;
use crate::{Attempt, BuildError, ConfigProblem, Connector, Delivery, EventType, ProbeError};

pub use crate::crm::WithoutEmail;

mod audit;
mod config;
mod fields;
mod records;

pub use config::{LeadConfig, PipedriveConfig};

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

const ME_PATH: &str = "/api/v1/users/me";

/// The header Pipedrive reads an API token from; unlike `?api_token=`, it stays out of
/// every URL that a proxy or an error message might log.
const TOKEN_HEADER: &str = "x-api-token";

/// Pipedrive's rate-limit window, for when `x-ratelimit-reset` is missing.
const DEFAULT_WINDOW: Duration = Duration::from_secs(2);

/// What a delivery has done so far, saved as its checkpoint. `*_sent` is saved before a
/// create: when the attempt then ends without learning whether Pipedrive created the
/// record, the retry looks for it first (among the newest records, which are read at once,
/// unlike the search index, which may not have them yet).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Progress {
    #[serde(
        deserialize_with = "optional_number",
        skip_serializing_if = "Option::is_none"
    )]
    org_id: Option<u64>,
    #[serde(skip_serializing_if = "crm::is_false")]
    org_sent: bool,
    #[serde(
        deserialize_with = "optional_number",
        skip_serializing_if = "Option::is_none"
    )]
    person_id: Option<u64>,
    #[serde(skip_serializing_if = "crm::is_false")]
    person_sent: bool,
    #[serde(
        deserialize_with = "optional_number",
        skip_serializing_if = "Option::is_none"
    )]
    note_id: Option<u64>,
    #[serde(skip_serializing_if = "crm::is_false")]
    note_sent: bool,
    #[serde(
        deserialize_with = "crm::optional_id",
        skip_serializing_if = "Option::is_none"
    )]
    lead_id: Option<String>,
    #[serde(skip_serializing_if = "crm::is_false")]
    lead_sent: bool,
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

/// The lead a brief opens.
struct LeadPlan {
    title: Title,
    label_ids: Vec<String>,
    channel: Option<u64>,
}

/// A running Pipedrive connector: one HTTP client, reused for every delivery.
pub struct PipedriveConnector {
    name: String,
    api: Api,
    email_answer_key: Option<String>,
    without_email: WithoutEmail,
    fields: BTreeMap<String, String>,
    owner_id: Option<u64>,
    organization: bool,
    lead: Option<LeadPlan>,
    /// The person fields, read once and again when a mapped one is not among them.
    person_fields: fields::Cache,
    /// Organisations found or created, by domain. The async lock also makes concurrent
    /// deliveries for one domain take turns, so two briefs from one company, moments
    /// apart, cannot both miss in Pipedrive's search (which lags behind writes) and both
    /// create it.
    organizations: tokio::sync::Mutex<crm::Recent<u64>>,
    /// Persons found or created, by email (lowercase), kept for the same reason.
    persons: tokio::sync::Mutex<crm::Recent<u64>>,
}

impl PipedriveConnector {
    pub fn new(name: &str, config: &PipedriveConfig) -> Result<Self, BuildError> {
        let keys = config.common_keys();
        let token = keys.token()?;
        if let Some(problem) = config.mapping_problems().into_iter().next() {
            return Err(BuildError::key(problem.key, problem.message));
        }
        let api = Api::new(
            &keys,
            (HeaderName::from_static(TOKEN_HEADER), token.to_owned()),
            token,
        )?;
        let lead = match config.lead_config() {
            Some(lead) => Some(LeadPlan {
                title: Title::new(lead.title.as_deref())
                    .map_err(|error| BuildError::key("lead.title", error))?,
                label_ids: lead.label_ids,
                channel: lead.channel,
            }),
            None => None,
        };
        Ok(Self {
            name: name.to_owned(),
            api,
            email_answer_key: config.email_answer_key.clone(),
            without_email: config.without_email,
            fields: config.fields.clone(),
            owner_id: config.owner_id,
            organization: config.organization,
            lead,
            person_fields: fields::Cache::default(),
            organizations: tokio::sync::Mutex::new(crm::Recent::default()),
            persons: tokio::sync::Mutex::new(crm::Recent::default()),
        })
    }

    /// Whether the progress covers every step this connector makes for this brief.
    fn finished(&self, progress: &Progress, organization: bool) -> bool {
        progress.note_id.is_some()
            && (!organization || progress.org_id.is_some())
            && (self.lead.is_none() || progress.lead_id.is_some())
    }

    /// brief.created: the organisation, the person, a note on them, and a lead, as
    /// configured, each once.
    async fn brief(&self, delivery: &Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let lead = Lead::from_brief(&event.data, self.email_answer_key.as_deref());
        let mut progress: Progress = crm::load_progress(delivery.checkpoint.as_ref(), &self.name);
        let domain = lead
            .email
            .as_deref()
            .filter(|_| self.organization)
            .and_then(crm::company_domain);
        if self.finished(&progress, domain.is_some()) {
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
        // Set once a step pending when this attempt began is done: every later step was
        // then never sent before, and needs no looking for.
        let mut fresh = false;

        if let Some(domain) = &domain
            && progress.org_id.is_none()
        {
            let org = match self.organization_for(domain, &mut progress, delivery).await {
                Ok(org) => org,
                Err(attempt) => return attempt,
            };
            progress.org_id = Some(org.value);
            progress.org_sent = false;
            fresh = true;
            if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                return crm::unsaved(&error, &format!("organization {} is known", org.value));
            }
            if let Some(wait) = org.spent {
                return self.pause(wait, &progress, org.status);
            }
            last_status = Some(org.status);
        }

        let person_id = match progress.person_id {
            Some(id) => id,
            None => {
                let person = match self
                    .person(&email, &lead, &mut progress, fresh, delivery)
                    .await
                {
                    Ok(person) => person,
                    Err(attempt) => return attempt,
                };
                progress.person_id = Some(person.value);
                progress.person_sent = false;
                // The note is sent next; saved together, one write covers both.
                progress.note_sent = true;
                fresh = true;
                if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                    return crm::unsaved(&error, &format!("person {} is known", person.value));
                }
                if let Some(wait) = person.spent {
                    return self.pause(wait, &progress, person.status);
                }
                last_status = Some(person.status);
                person.value
            }
        };

        if progress.note_id.is_none() {
            let context = format!("person {person_id} is saved and will not be created again");
            if progress.note_sent && !fresh {
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
                let note = match self.create_note(&content, person_id, progress.org_id).await {
                    Ok(note) => note,
                    Err(attempt) => return crm::with_context(attempt, &context),
                };
                progress.note_id = Some(note.value);
                last_status = Some(note.status);
                fresh = true;
                if self.lead.is_some() {
                    progress.note_sent = false;
                    // The lead is sent next; saved together, one write covers both.
                    progress.lead_sent = true;
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
        if let Some(plan) = &self.lead
            && progress.lead_id.is_none()
        {
            let context = format!(
                "{} are saved and will not be created again",
                describe_progress(&progress)
            );
            if progress.lead_sent && !fresh {
                match self.find_lead(person_id, &event.id).await {
                    Ok(found) => progress.lead_id = found,
                    Err(attempt) => return crm::with_context(attempt, &context),
                }
            } else if !progress.lead_sent {
                progress.lead_sent = true;
                if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                    return crm::unsaved(&error, &describe_progress(&progress));
                }
            }
            if progress.lead_id.is_none() {
                let title = plan.title.render(event, &lead, &email);
                let created = match self
                    .create_lead(plan, &title, &event.id, person_id, progress.org_id)
                    .await
                {
                    Ok(created) => created,
                    Err(attempt) => return crm::with_context(attempt, &context),
                };
                progress.lead_id = Some(created.value);
                last_status = Some(created.status);
            }
            progress.lead_sent = false;
        }
        crm::save_last(delivery, &progress, &self.name).await;
        let mut said = describe_progress(&progress);
        if domain.is_none() && self.organization {
            said.push_str("; no organization: the email is at a free-mail provider");
        }
        Attempt::delivered(last_status, Some(said))
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
    if let Some(id) = progress.org_id {
        done.push(format!("organization {id}"));
    }
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
    async fn probe(&self) -> Result<String, ProbeError> {
        let doing = "reading the token's user";
        let answer = self
            .api
            .send(self.api.get(ME_PATH), doing)
            .await
            .map_err(ProbeError::from)?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing).into());
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

    async fn audit(&self) -> Result<Vec<ConfigProblem>, ProbeError> {
        self.mapping_audit().await
    }
}
