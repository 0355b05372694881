// Over 500 lines: the brief's four steps read best as one function, step after step.
//! The HubSpot connector. A brief upserts its contact by email (mapped answers, fixed
//! values, an owner); with `company = true` finds the company of the email's domain (or
//! creates it) and associates it; logs a note on the contact; and with `deal` opens one
//! deal associated with the contact and the company. A meeting logs a note. Each step's
//! progress is saved, and a step an earlier attempt may have done unseen (a timeout, a
//! 5xx) is looked for before it is done again, so a retry creates nothing twice.
//!
//! The table's keys are in `config.rs`, the calls in `records.rs`, the rate limits in
//! `limits.rs`, and what `check --online` reads in `audit.rs`. Longer than most files:
//! the brief's four steps read best as one function, step after step.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use chrono::Utc;
use reqwest::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::crm::{self, Answer, Api, NOTE_LIMIT, Title};
use crate::lead::Lead;
use crate::{Attempt, BuildError, ConfigProblem, Connector, Delivery, EventType, ProbeError};

pub use crate::crm::WithoutEmail;

mod audit;
mod config;
mod limits;
mod records;

pub use config::{DealConfig, HubspotConfig};

/// A local stand-in for HubSpot's API, for the daemon's integration tests (`fakes`).
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
#[cfg(test)]
mod tests;

use limits::Zone;

/// How long the account's time zone is trusted before it is read again: a day catches a
/// daylight-saving change, at one call a day.
const ZONE_FRESH_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// After failing to read the time zone, how long before trying again: often enough to
/// recover, rarely enough not to spend the rate limit on it.
const ZONE_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// What a delivery has done so far, saved as its checkpoint. `*_sent` is saved before a
/// create: when the attempt then ends without learning whether HubSpot created the record
/// (a timeout, a 5xx), the retry looks for it first.
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
    company_id: Option<String>,
    #[serde(skip_serializing_if = "crm::is_false")]
    company_sent: bool,
    #[serde(
        deserialize_with = "crm::optional_id",
        skip_serializing_if = "Option::is_none"
    )]
    note_id: Option<String>,
    #[serde(skip_serializing_if = "crm::is_false")]
    note_sent: bool,
    #[serde(
        deserialize_with = "crm::optional_id",
        skip_serializing_if = "Option::is_none"
    )]
    deal_id: Option<String>,
    #[serde(skip_serializing_if = "crm::is_false")]
    deal_sent: bool,
}

impl Progress {
    /// What a failed attempt's reason adds: what is saved, which a retry will not redo.
    fn saved(&self) -> String {
        match (&self.contact_id, &self.company_id, &self.note_id) {
            (Some(contact), None, None) => {
                format!("contact {contact} is saved and will not be upserted again")
            }
            _ => format!("{} are saved and will not be made again", self.describe()),
        }
    }

    fn describe(&self) -> String {
        let done: Vec<String> = [
            ("contact", &self.contact_id),
            ("company", &self.company_id),
            ("note", &self.note_id),
            ("deal", &self.deal_id),
        ]
        .into_iter()
        .filter_map(|(what, id)| id.as_ref().map(|id| format!("{what} {id}")))
        .collect();
        done.join(", ")
    }
}

/// The deal a brief opens.
struct Deal {
    pipeline: String,
    stage: String,
    name: Title,
}

/// The account's time zone as last read, and when.
struct ZoneRead {
    zone: Option<Zone>,
    at: Instant,
}

/// A running HubSpot connector: one HTTP client, reused for every delivery.
pub struct HubspotConnector {
    name: String,
    api: Api,
    email_answer_key: Option<String>,
    properties: BTreeMap<String, String>,
    set: BTreeMap<String, String>,
    owner_id: Option<String>,
    company: bool,
    deal: Option<Deal>,
    without_email: WithoutEmail,
    /// Companies found or created, by domain. The async lock also makes concurrent
    /// deliveries for one domain take turns, so two briefs from one company, moments
    /// apart, cannot both miss in HubSpot's search (which lags behind writes) and both
    /// create it.
    companies: tokio::sync::Mutex<crm::Recent<String>>,
    zone: Mutex<Option<ZoneRead>>,
}

impl HubspotConnector {
    pub fn new(name: &str, config: &HubspotConfig) -> Result<Self, BuildError> {
        let keys = config.common_keys();
        let token = keys.token()?;
        if let Some(problem) = config.mapping_problems().into_iter().next() {
            return Err(BuildError::key(problem.key, problem.message));
        }
        let api = Api::new(&keys, (AUTHORIZATION, format!("Bearer {token}")), token)?;
        let deal = match &config.deal {
            Some(deal) => Some(Deal {
                pipeline: deal.pipeline.trim().to_owned(),
                stage: deal.stage.trim().to_owned(),
                name: Title::new(deal.name.as_deref())
                    .map_err(|error| BuildError::key("deal.name", error))?,
            }),
            None => None,
        };
        Ok(Self {
            name: name.to_owned(),
            api,
            email_answer_key: config.email_answer_key.clone(),
            properties: config.properties.clone(),
            set: config.set.clone(),
            owner_id: config.owner_id.clone(),
            company: config.company,
            deal,
            without_email: config.without_email,
            companies: tokio::sync::Mutex::new(crm::Recent::default()),
            zone: Mutex::new(None),
        })
    }

    /// Whether every configured step is done. `company` says whether this brief has a
    /// company to find (its email's domain is not a free-mail one).
    fn finished(&self, progress: &Progress, company: bool) -> bool {
        progress.note_id.is_some()
            && (!company || progress.company_id.is_some())
            && (self.deal.is_none() || progress.deal_id.is_some())
    }

    /// brief.created: contact, company, note, deal, each once; or, without an email, as
    /// configured.
    async fn brief(&self, delivery: &Delivery<'_>) -> Attempt {
        let event = delivery.event;
        let lead = Lead::from_brief(&event.data, self.email_answer_key.as_deref());
        let mut progress: Progress = crm::load_progress(delivery.checkpoint.as_ref(), &self.name);
        let domain = lead
            .email
            .as_deref()
            .filter(|_| self.company)
            .and_then(crm::company_domain);
        if self.finished(&progress, domain.is_some())
            || (lead.email.is_none() && progress.note_id.is_some())
        {
            return already_recorded(&progress);
        }
        let Some(email) = lead.email.clone() else {
            return match self.without_email {
                WithoutEmail::Skip => crm::skipped_without_email("HubSpot"),
                WithoutEmail::Note => {
                    let body = crm::brief_note(event, &lead, NOTE_LIMIT);
                    self.lone_note(
                        delivery,
                        progress,
                        &body,
                        "the brief, which names no contact email",
                    )
                    .await
                }
            };
        };
        self.refresh_zone().await;

        // Set once a step pending when this attempt began is done: every later step was
        // then never sent before, and needs no looking for.
        let mut fresh = false;
        let mut said = Vec::new();
        let mut status = None;

        if progress.contact_id.is_none() {
            let contact = match self.upsert_contact(&email, &lead).await {
                Ok(contact) => contact,
                Err(attempt) => return attempt,
            };
            said.push(match contact.new {
                Some(true) => format!("contact {} created", contact.id),
                Some(false) => format!("contact {} updated", contact.id),
                None => format!("contact {}", contact.id),
            });
            status = Some(contact.status);
            progress.contact_id = Some(contact.id.clone());
            fresh = true;
            // The next step is sent next; saved together, one write covers both.
            self.mark_next(&mut progress, domain.is_some());
            if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                return crm::unsaved(&error, &format!("contact {} was upserted", contact.id))
                    .with_status(contact.status);
            }
        }
        let contact_id = progress.contact_id.clone().unwrap_or_default();

        if let Some(domain) = &domain
            && progress.company_id.is_none()
        {
            let context = format!("contact {contact_id} is saved and will not be upserted again");
            let found = self
                .company_for(&contact_id, domain, &lead, &mut progress, fresh, delivery)
                .await;
            let company = match found {
                Ok(company) => company,
                Err(attempt) => return crm::with_context(attempt, &context),
            };
            said.push(company.said.clone());
            status = Some(company.status);
            progress.company_id = Some(company.id.clone());
            progress.company_sent = false;
            fresh = true;
            self.mark_next(&mut progress, true);
            if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                return crm::unsaved(&error, &company.said);
            }
        }

        if progress.note_id.is_none() {
            let context = progress.saved();
            if progress.note_sent && !fresh {
                match self.find_note(&contact_id, &event.id).await {
                    Ok(Some(note_id)) => {
                        said.push(format!(
                            "note {note_id} was created by an earlier attempt and found, so \
                             none was created again"
                        ));
                        progress.note_id = Some(note_id);
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
            if progress.note_id.is_none() {
                let body = crm::brief_note(event, &lead, NOTE_LIMIT);
                let when = crm::occurred_at(event);
                let doing = "creating the note on the contact";
                match self
                    .create_note(&body, when, Some(&contact_id), doing)
                    .await
                {
                    Ok((note_id, note_status)) => {
                        said.push(format!("note {note_id} created on it"));
                        status = Some(note_status);
                        progress.note_id = Some(note_id);
                    }
                    Err(attempt) => return crm::with_context(attempt, &context),
                }
            }
            progress.note_sent = false;
            fresh = true;
            if self.deal.is_some() && progress.deal_id.is_none() {
                progress.deal_sent = true;
                if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                    return crm::unsaved(&error, &progress.describe());
                }
            }
        }

        if let Some(deal) = &self.deal
            && progress.deal_id.is_none()
        {
            let context = progress.saved();
            let marker = deal_marker(event);
            if progress.deal_sent && !fresh {
                match self.find_deal(&contact_id, &event.id).await {
                    Ok(Some(deal_id)) => {
                        said.push(format!(
                            "deal {deal_id} was created by an earlier attempt and found, so \
                             none was created again"
                        ));
                        progress.deal_id = Some(deal_id);
                    }
                    Ok(None) => {}
                    Err(attempt) => return crm::with_context(attempt, &context),
                }
            } else if !progress.deal_sent {
                progress.deal_sent = true;
                if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                    return crm::unsaved(&error, &progress.describe());
                }
            }
            if progress.deal_id.is_none() {
                let name = deal.name.render(event, &lead, &email);
                let company_id = progress.company_id.as_deref();
                match self
                    .create_deal(deal, &name, &marker, &contact_id, company_id)
                    .await
                {
                    Ok((deal_id, deal_status)) => {
                        said.push(format!("deal {deal_id} \"{name}\" opened"));
                        status = Some(deal_status);
                        progress.deal_id = Some(deal_id);
                    }
                    Err(attempt) => return crm::with_context(attempt, &context),
                }
            }
            progress.deal_sent = false;
        }

        crm::save_last(delivery, &progress, &self.name).await;
        if domain.is_none() && self.company {
            said.push("no company: the email is at a free-mail provider".to_owned());
        }
        Attempt::delivered(status, Some(said.join("; ")))
    }

    /// Flags the step after the one just done as about to be sent.
    fn mark_next(&self, progress: &mut Progress, company: bool) {
        if company && progress.company_id.is_none() {
            progress.company_sent = true;
        } else if progress.note_id.is_none() {
            progress.note_sent = true;
        }
    }

    /// meeting.processed: one note, on no contact (a meeting names none).
    async fn meeting(&self, delivery: &Delivery<'_>) -> Attempt {
        let progress: Progress = crm::load_progress(delivery.checkpoint.as_ref(), &self.name);
        if progress.note_id.is_some() {
            return already_recorded(&progress);
        }
        self.refresh_zone().await;
        let body = crm::meeting_note(delivery.event, NOTE_LIMIT);
        self.lone_note(delivery, progress, &body, "the meeting")
            .await
    }

    /// A note associated with nothing: a meeting, or a brief without an email. Flagged as
    /// sent before it is created; a retry after an attempt that did not learn the outcome
    /// searches the notes for the event id first.
    async fn lone_note(
        &self,
        delivery: &Delivery<'_>,
        mut progress: Progress,
        body: &str,
        what: &str,
    ) -> Attempt {
        let event = delivery.event;
        if progress.note_sent {
            match self.search_note(&event.id).await {
                Ok(Some(note_id)) => {
                    progress.note_id = Some(note_id.clone());
                    progress.note_sent = false;
                    crm::save_last(delivery, &progress, &self.name).await;
                    return Attempt::delivered(
                        None,
                        Some(format!(
                            "note {note_id} for {what} was created by an earlier attempt and \
                             found, so none was created again"
                        )),
                    );
                }
                Ok(None) => {}
                Err(attempt) => return attempt,
            }
        } else {
            progress.note_sent = true;
            if let Err(error) = crm::save_progress(delivery.checkpoints, &progress).await {
                return crm::unsaved(&error, "nothing was created yet");
            }
        }
        let when = crm::occurred_at(event);
        let doing = format!("creating the note for {what}");
        match self.create_note(body, when, None, &doing).await {
            Ok((note_id, status)) => {
                progress.note_id = Some(note_id.clone());
                progress.note_sent = false;
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

    /// Reads the account's time zone when it is not known or is a day old, so that a 429
    /// for the daily limit can say when the limit resets. Read ahead of need: once the
    /// daily limit is spent, HubSpot answers this call with a 429 too.
    async fn refresh_zone(&self) {
        {
            let known = self.zone.lock().expect("the zone lock is never poisoned");
            if let Some(read) = known.as_ref() {
                let fresh_for = if read.zone.is_some() {
                    ZONE_FRESH_FOR
                } else {
                    ZONE_RETRY_AFTER
                };
                if read.at.elapsed() < fresh_for {
                    return;
                }
            }
        }
        let zone = match self.account_zone().await {
            Ok(zone) => Some(zone),
            Err(reason) => {
                warn!(
                    connector = %self.name,
                    error = %reason,
                    "Could not read the HubSpot account's time zone; a daily-limit wait will \
                     end at midnight UTC instead of the account's midnight. Give the private \
                     app access to the account details, or ignore this if the daily limit is \
                     never reached."
                );
                None
            }
        };
        *self.zone.lock().expect("the zone lock is never poisoned") = Some(ZoneRead {
            zone,
            at: Instant::now(),
        });
    }

    fn known_zone(&self) -> Option<Zone> {
        self.zone
            .lock()
            .expect("the zone lock is never poisoned")
            .as_ref()
            .and_then(|read| read.zone.clone())
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
                     crm.objects.contacts.read and crm.objects.contacts.write scopes (and \
                     crm.objects.companies.* with `company`, crm.objects.deals.* with `deal`), \
                     then check the token in `token_file`"
                )),
                429 => {
                    let zone = self.known_zone();
                    let (wait, why) = limits::rate_limit_wait(
                        &answer.headers,
                        answer.json(),
                        zone.as_ref(),
                        Utc::now(),
                        SystemTime::now(),
                    );
                    Attempt::retry(
                        format!("HubSpot is rate-limiting ({described}) while {doing}: {why}"),
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
                     in `properties` or `set` HubSpot does not have, a value it does not accept, \
                     or a pipeline or stage in `deal` it does not know: `clairo-sync check \
                     --online` names them), then replay the delivery"
                )),
                _ => return None,
            };
            Some(attempt)
        })
    }
}

/// The text a deal's `description` carries so that a retry can recognise a deal an
/// earlier attempt created: the brief and the event, whose id is unique per brief.
fn deal_marker(event: &crate::Event) -> String {
    let brief = crm::text_field(&event.data, "id").unwrap_or_default();
    format!("Clairo brief {brief} · event {}", event.id)
}

fn already_recorded(progress: &Progress) -> Attempt {
    Attempt::delivered(
        None,
        Some(format!(
            "already recorded by an earlier attempt ({}); nothing sent",
            progress.describe()
        )),
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
    async fn probe(&self) -> Result<String, ProbeError> {
        let doing = "listing one contact";
        let request = self
            .api
            .get(records::CONTACTS_PATH)
            .query(&[("limit", "1")]);
        let answer = self
            .api
            .send(request, doing)
            .await
            .map_err(ProbeError::from)?;
        if answer.status.is_success() {
            Ok(format!(
                "HubSpot ({}) accepted the token and listed a contact",
                self.api.endpoint()
            ))
        } else {
            Err(self.failure(&answer, doing).into())
        }
    }

    async fn audit(&self) -> Result<Vec<ConfigProblem>, ProbeError> {
        self.mapping_audit().await
    }
}
