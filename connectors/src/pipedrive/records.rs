// Over 500 lines: one short method per Pipedrive call a delivery makes, all alike.
//! The Pipedrive calls a delivery makes: organisations, persons, notes and leads. Each
//! answers what it found or made, or the failed attempt.
//!
//! Looking for a record an earlier attempt may have created reads the newest records (or
//! the person's notes and leads) directly, not through Pipedrive's search, whose index
//! lags behind writes.

use serde_json::{Map, Value, json};

use super::{Done, LeadPlan, PipedriveConnector, Progress, has_email, number, spent_window};
use crate::crm::{self, Answer, Remembered};
use crate::lead::Lead;
use crate::{Attempt, Delivery};

const PERSON_SEARCH_PATH: &str = "/api/v2/persons/search";
const PERSONS_PATH: &str = "/api/v2/persons";
const ORGANIZATION_SEARCH_PATH: &str = "/api/v2/organizations/search";
const ORGANIZATIONS_PATH: &str = "/api/v2/organizations";
const NOTES_PATH: &str = "/api/v1/notes";
const LEADS_PATH: &str = "/api/v1/leads";

/// The longest term Pipedrive's search matches exactly ("it will only work if search term
/// is 30 characters or less"); a longer one is searched loosely and matched here.
const EXACT_MATCH_CHARS: usize = 30;

/// Results read from a loose search: the exact match is among the best-scored.
const LOOSE_RESULTS: &str = "100";

/// Records read back, newest first, when an earlier attempt's create may have succeeded
/// unseen: the record sought was created moments before.
const READ_BACK: &str = "100";

/// A person found by search.
struct Found {
    id: u64,
    /// Whether the person is already linked to an organisation.
    has_organization: bool,
}

impl PipedriveConnector {
    /// The organisation named `domain`: remembered from an earlier brief, found among the
    /// newest when a create may have happened unseen, found by search, or created.
    pub(super) async fn organization_for(
        &self,
        domain: &str,
        progress: &mut Progress,
        delivery: &Delivery<'_>,
    ) -> Result<Done<u64>, Attempt> {
        let mut known = self.organizations.lock().await;
        let pending = match known.get(domain) {
            Some(Remembered::Known(id)) => {
                return Ok(Done {
                    value: id,
                    status: 200,
                    spent: None,
                });
            }
            Some(Remembered::MaybeCreated(_)) => true,
            None => false,
        };
        if pending || progress.org_sent {
            let doing = "looking for an organization an earlier attempt may have created";
            if let Some(id) = self
                .recent(ORGANIZATIONS_PATH, doing, |org| {
                    org.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|name| name.trim().eq_ignore_ascii_case(domain))
                })
                .await?
            {
                known.remember(domain, Remembered::Known(id));
                return Ok(Done {
                    value: id,
                    status: 200,
                    spent: None,
                });
            }
            known.forget(domain);
        }
        let found = self
            .search(
                ORGANIZATION_SEARCH_PATH,
                "name",
                domain,
                "searching for the organization",
            )
            .await?;
        let id = found.value.iter().find_map(|item| {
            let matches = item
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| name.trim().eq_ignore_ascii_case(domain));
            matches.then(|| item.get("id").and_then(number)).flatten()
        });
        if let Some(id) = id {
            known.remember(domain, Remembered::Known(id));
            return Ok(Done {
                value: id,
                status: found.status,
                spent: found.spent,
            });
        }
        if !progress.org_sent {
            progress.org_sent = true;
            if let Err(error) = crm::save_progress(delivery.checkpoints, progress).await {
                return Err(crm::unsaved(&error, "no organization has this name yet"));
            }
        }
        let doing = "creating the organization";
        let mut body = json!({"name": domain});
        if let Some(owner) = self.owner_id {
            body["owner_id"] = Value::from(owner);
        }
        let created = match self
            .api
            .send(self.api.post(ORGANIZATIONS_PATH).json(&body), doing)
            .await
        {
            Ok(answer) => self.created(&answer, doing, number),
            Err(attempt) => Err(attempt),
        };
        match &created {
            Ok(done) => known.remember(domain, Remembered::Known(done.value)),
            Err(_) => known.remember(domain, Remembered::MaybeCreated(String::new())),
        }
        created
    }

    /// The person with this email: found by an exact email search (and then linked to the
    /// organisation and given the mapped fields), or created. An attempt that sent a create
    /// and did not learn its outcome leaves `person_sent` saved; the retry then also reads
    /// the newest persons, which the search index may not have yet.
    pub(super) async fn person(
        &self,
        email: &str,
        lead: &Lead,
        progress: &mut Progress,
        fresh: bool,
        delivery: &Delivery<'_>,
    ) -> Result<Done<u64>, Attempt> {
        let custom = self.mapped_values(lead).await?;
        let mut known = self.persons.lock().await;
        let key = email.to_ascii_lowercase();
        let pending = match known.get(&key) {
            Some(Remembered::Known(id)) => {
                // Made or found by this connector: its organisation is already settled.
                let person = Found {
                    id,
                    has_organization: true,
                };
                let status = self.update_person(&person, None, &custom).await?;
                return Ok(Done {
                    value: person.id,
                    status: status.unwrap_or(200),
                    spent: None,
                });
            }
            Some(Remembered::MaybeCreated(_)) => true,
            None => false,
        };
        let found = self.search_person(email).await?;
        if let Some(person) = &found.value {
            let status = self
                .update_person(person, progress.org_id, &custom)
                .await?
                .unwrap_or(found.status);
            known.remember(&key, Remembered::Known(person.id));
            return Ok(Done {
                value: person.id,
                status,
                spent: found.spent,
            });
        }
        if pending || (progress.person_sent && !fresh) {
            let doing = "looking for a person an earlier attempt may have created";
            let recent = self
                .recent(PERSONS_PATH, doing, |person| {
                    person
                        .get("emails")
                        .and_then(Value::as_array)
                        .is_some_and(|emails| has_email(emails, email))
                })
                .await?;
            if let Some(id) = recent {
                known.remember(&key, Remembered::Known(id));
                return Ok(Done {
                    value: id,
                    status: found.status,
                    spent: None,
                });
            }
            known.forget(&key);
        }
        if !progress.person_sent {
            if let Some(wait) = found.spent {
                return Err(self.pause(wait, progress, found.status));
            }
            progress.person_sent = true;
            if let Err(error) = crm::save_progress(delivery.checkpoints, progress).await {
                return Err(crm::unsaved(&error, "no person has this email yet"));
            }
        }
        let created = self
            .create_person(email, lead, progress.org_id, custom)
            .await;
        match &created {
            Ok(done) => known.remember(&key, Remembered::Known(done.value)),
            Err(_) => known.remember(&key, Remembered::MaybeCreated(String::new())),
        }
        created
    }

    async fn search_person(&self, email: &str) -> Result<Done<Option<Found>>, Attempt> {
        let exact = email.chars().count() <= EXACT_MATCH_CHARS;
        let found = self
            .search(
                PERSON_SEARCH_PATH,
                "email",
                email,
                "searching for the person by email",
            )
            .await?;
        let person = found
            .value
            .iter()
            .find(
                |person| match person.get("emails").and_then(Value::as_array) {
                    Some(emails) => has_email(emails, email),
                    // An exact search vouches for its results; a loose one must show the email.
                    None => exact,
                },
            )
            .and_then(|person| {
                Some(Found {
                    id: person.get("id").and_then(number)?,
                    has_organization: person.get("organization").is_some_and(|org| !org.is_null()),
                })
            });
        Ok(Done {
            value: person,
            status: found.status,
            spent: found.spent,
        })
    }

    /// The items of a v2 search of `field` for `term`: exact when Pipedrive can match the
    /// term exactly, else loose (and the caller matches).
    async fn search(
        &self,
        path: &str,
        field: &str,
        term: &str,
        doing: &str,
    ) -> Result<Done<Vec<Value>>, Attempt> {
        let exact = term.chars().count() <= EXACT_MATCH_CHARS;
        let (exact_match, limit) = if exact {
            ("true", "10")
        } else {
            ("false", LOOSE_RESULTS)
        };
        let request = self.api.get(path).query(&[
            ("term", term),
            ("fields", field),
            ("exact_match", exact_match),
            ("limit", limit),
        ]);
        let answer = self.api.send(request, doing).await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        let items = answer
            .json()
            .pointer("/data/items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("item").cloned())
            .collect();
        Ok(self.done(items, &answer))
    }

    /// The newest records at a v2 list `path`, read directly, for one that `matches`.
    async fn recent(
        &self,
        path: &str,
        doing: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<u64>, Attempt> {
        let request = self.api.get(path).query(&[
            ("sort_by", "add_time"),
            ("sort_direction", "desc"),
            ("limit", READ_BACK),
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
            .find(|record| matches(record))
            .and_then(|record| record.get("id").and_then(number)))
    }

    async fn create_person(
        &self,
        email: &str,
        lead: &Lead,
        org_id: Option<u64>,
        custom: Map<String, Value>,
    ) -> Result<Done<u64>, Attempt> {
        let doing = "creating the person";
        // The name is required; without one in the brief, the email stands in for it.
        let name = crm::lead_name(lead).unwrap_or_else(|| email.to_owned());
        let mut body = json!({
            "name": name,
            "emails": [{"value": email, "primary": true, "label": "work"}],
        });
        if let Some(owner) = self.owner_id {
            body["owner_id"] = Value::from(owner);
        }
        if let Some(org_id) = org_id {
            body["org_id"] = Value::from(org_id);
        }
        fields::apply(&mut body, custom);
        let answer = self
            .api
            .send(self.api.post(PERSONS_PATH).json(&body), doing)
            .await?;
        self.created(&answer, doing, number)
    }

    /// Gives a person found by email the mapped fields, and the organisation when they
    /// have none (a person already at another organisation keeps it). The owner is left
    /// as it is: the person is someone's already. `None` when there was nothing to change.
    async fn update_person(
        &self,
        person: &Found,
        org_id: Option<u64>,
        custom: &Map<String, Value>,
    ) -> Result<Option<u16>, Attempt> {
        let mut body = json!({});
        if let Some(org_id) = org_id.filter(|_| !person.has_organization) {
            body["org_id"] = Value::from(org_id);
        }
        fields::apply(&mut body, custom.clone());
        if body.as_object().is_some_and(Map::is_empty) {
            return Ok(None);
        }
        let doing = "updating the person found by email";
        let path = format!("{PERSONS_PATH}/{}", person.id);
        let answer = self
            .api
            .send(self.api.patch(&path).json(&body), doing)
            .await?;
        if answer.status.is_success() {
            Ok(Some(answer.status.as_u16()))
        } else {
            Err(self.failure(&answer, doing))
        }
    }

    pub(super) async fn create_note(
        &self,
        content: &str,
        person_id: u64,
        org_id: Option<u64>,
    ) -> Result<Done<u64>, Attempt> {
        let doing = "creating the note on the person";
        let mut body = json!({"content": content, "person_id": person_id});
        if let Some(org_id) = org_id {
            body["org_id"] = Value::from(org_id);
        }
        let answer = self
            .api
            .send(self.api.post(NOTES_PATH).json(&body), doing)
            .await?;
        self.created(&answer, doing, number)
    }

    /// The person's newest records at `path` (notes, leads), newest first: where a record an
    /// earlier attempt may have created is looked for.
    async fn newest_of_person(
        &self,
        path: &str,
        person_id: u64,
        doing: &str,
    ) -> Result<Answer, Attempt> {
        let person = person_id.to_string();
        let request = self.api.get(path).query(&[
            ("person_id", person.as_str()),
            ("sort", "add_time DESC"),
            ("limit", READ_BACK),
        ]);
        let answer = self.api.send(request, doing).await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        Ok(answer)
    }

    /// Looks among the person's newest notes for the one this event's note would be: its
    /// content carries the event id.
    pub(super) async fn find_note(
        &self,
        person_id: u64,
        event_id: &str,
    ) -> Result<Option<u64>, Attempt> {
        let doing = "looking for the note an earlier attempt may have created";
        let answer = self.newest_of_person(NOTES_PATH, person_id, doing).await?;
        Ok(data(&answer)
            .find(|note| {
                note.get("content")
                    .and_then(Value::as_str)
                    .is_some_and(|content| content.contains(event_id))
            })
            .and_then(|note| note.get("id").and_then(number)))
    }

    /// Opens the lead. Its `origin_id` is the event id, which Pipedrive keeps as given and
    /// by which a retry recognises it.
    pub(super) async fn create_lead(
        &self,
        plan: &LeadPlan,
        title: &str,
        event_id: &str,
        person_id: u64,
        org_id: Option<u64>,
    ) -> Result<Done<String>, Attempt> {
        let doing = "creating the lead";
        let mut body = json!({"title": title, "person_id": person_id, "origin_id": event_id});
        if let Some(org_id) = org_id {
            body["organization_id"] = Value::from(org_id);
        }
        if let Some(owner) = self.owner_id {
            body["owner_id"] = Value::from(owner);
        }
        if !plan.label_ids.is_empty() {
            body["label_ids"] = json!(plan.label_ids);
        }
        if let Some(channel) = plan.channel {
            body["channel"] = Value::from(channel);
        }
        let answer = self
            .api
            .send(self.api.post(LEADS_PATH).json(&body), doing)
            .await?;
        self.created(&answer, doing, crm::id_text)
    }

    /// The person's lead whose `origin_id` is this event's id.
    pub(super) async fn find_lead(
        &self,
        person_id: u64,
        event_id: &str,
    ) -> Result<Option<String>, Attempt> {
        let doing = "looking for the lead an earlier attempt may have created";
        let answer = self.newest_of_person(LEADS_PATH, person_id, doing).await?;
        Ok(data(&answer)
            .find(|lead| lead.get("origin_id").and_then(Value::as_str) == Some(event_id))
            .and_then(|lead| lead.get("id").and_then(crm::id_text)))
    }

    pub(super) fn done<T>(&self, value: T, answer: &Answer) -> Done<T> {
        Done {
            value,
            status: answer.status.as_u16(),
            spent: spent_window(&answer.headers),
        }
    }

    /// `data.id` of a successful create, read with `read`.
    pub(super) fn created<T>(
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
}

use super::fields;

/// `data` of a v1 list answer.
fn data(answer: &Answer) -> impl Iterator<Item = &Value> {
    answer
        .json()
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}
