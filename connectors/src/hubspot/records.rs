// Over 500 lines: one short method per HubSpot call a delivery makes, all alike.
//! The HubSpot calls a delivery makes: contacts, companies, notes, deals and their
//! associations, and the account's time zone. Each answers what it found or made, or the
//! failed attempt.
//!
//! Looking for a record an earlier attempt may have created goes through the contact's
//! associations, which HubSpot reads at once, not through its search, whose index lags
//! behind writes by seconds; so each record is created already associated with the
//! contact. Only a note associated with nothing is looked for through search. Longer
//! than most files: one function per call, each reading its own answer.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use super::limits::Zone;
use super::{Deal, HubspotConnector, Progress};
use crate::crm::{self, Answer, Remembered};
use crate::lead::Lead;
use crate::{Attempt, Delivery, ProbeError};

const UPSERT_PATH: &str = "/crm/v3/objects/contacts/batch/upsert";
pub(super) const CONTACTS_PATH: &str = "/crm/v3/objects/contacts";
const NOTES_PATH: &str = "/crm/v3/objects/notes";
const COMPANIES_PATH: &str = "/crm/v3/objects/companies";
const DEALS_PATH: &str = "/crm/v3/objects/deals";
const ACCOUNT_PATH: &str = "/account-info/v3/details";

/// HubSpot's own association types (category HUBSPOT_DEFINED) used on create.
const NOTE_TO_CONTACT: u32 = 202;
const COMPANY_TO_CONTACT: u32 = 280;
const DEAL_TO_CONTACT: u32 = 3;
/// "Primary company" of a deal: the one HubSpot shows on the deal's record.
const DEAL_TO_COMPANY: u32 = 5;

/// Records read back at most when looking for one an earlier attempt created: HubSpot's
/// batch read takes 100 ids, and the record sought is among the contact's newest.
const READ_BACK: usize = 100;

/// A contact found or created.
pub(super) struct Contact {
    pub id: String,
    /// Whether HubSpot created it just now, when it says.
    pub new: Option<bool>,
    pub status: u16,
}

/// A company found or created, and associated with the contact.
pub(super) struct Company {
    pub id: String,
    pub status: u16,
    /// What was done, for the delivery's response.
    pub said: String,
}

fn association(to: &str, type_id: u32) -> Value {
    json!({
        "to": {"id": to},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    })
}

impl HubspotConnector {
    /// The contact's properties: email and what the brief says of the person, the mapped
    /// answers, the fixed values and the owner. Only known values are sent: an empty
    /// string would erase a value the contact already has. HubSpot takes every value as a
    /// string.
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
        for (property, value) in &self.set {
            properties.insert(property.clone(), Value::from(value.as_str()));
        }
        if let Some(owner) = &self.owner_id {
            properties.insert("hubspot_owner_id".to_owned(), Value::from(owner.as_str()));
        }
        properties
    }

    /// Creates or updates the contact whose email is `email`, in one call that HubSpot
    /// makes safe to repeat: it matches on the email, so a retry finds the same contact.
    pub(super) async fn upsert_contact(
        &self,
        email: &str,
        lead: &Lead,
    ) -> Result<Contact, Attempt> {
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

    /// The company of `domain`, associated with the contact: remembered from an earlier
    /// brief, found where an earlier attempt created it, found by HubSpot's search on the
    /// `domain` property, or created (already associated). HubSpot does not dedupe
    /// companies by domain, so every way of finding one comes before creating one.
    pub(super) async fn company_for(
        &self,
        contact_id: &str,
        domain: &str,
        lead: &Lead,
        progress: &mut Progress,
        fresh: bool,
        delivery: &Delivery<'_>,
    ) -> Result<Company, Attempt> {
        let mut known = self.companies.lock().await;
        match known.get(domain) {
            Some(Remembered::Known(id)) => {
                return match self.associate_company(contact_id, &id).await {
                    Ok(status) => Ok(Company {
                        said: format!("company {id} ({domain}) associated"),
                        id,
                        status,
                    }),
                    Err(attempt) => {
                        // Merged or deleted since: the retry asks HubSpot again. Any other
                        // failure keeps the company, which exists whatever the answer.
                        if attempt.status_code == Some(404) {
                            known.forget(domain);
                        }
                        Err(attempt)
                    }
                };
            }
            Some(Remembered::MaybeCreated(other)) => {
                // Another delivery's create ended unseen; the company, if made, hangs on
                // that delivery's contact, and search may not show it yet.
                let doing = "looking for a company another delivery may have created";
                let found = self
                    .find_associated(&other, "companies", "domain", doing, |value| {
                        value.eq_ignore_ascii_case(domain)
                    })
                    .await?;
                known.forget(domain);
                if let Some(id) = found {
                    known.remember(domain, Remembered::Known(id.clone()));
                    let status = self.associate_company(contact_id, &id).await?;
                    return Ok(Company {
                        said: format!("company {id} ({domain}) found and associated"),
                        id,
                        status,
                    });
                }
            }
            None => {}
        }
        if progress.company_sent && !fresh {
            let doing = "looking for the company an earlier attempt may have created";
            let found = self
                .find_associated(contact_id, "companies", "domain", doing, |value| {
                    value.eq_ignore_ascii_case(domain)
                })
                .await?;
            if let Some(id) = found {
                known.remember(domain, Remembered::Known(id.clone()));
                return Ok(Company {
                    said: format!(
                        "company {id} ({domain}) was created by an earlier attempt and found, \
                         so none was created again"
                    ),
                    id,
                    status: 200,
                });
            }
        }
        if let Some(id) = self.search_company(domain).await? {
            known.remember(domain, Remembered::Known(id.clone()));
            let status = self.associate_company(contact_id, &id).await?;
            return Ok(Company {
                said: format!("company {id} ({domain}) found and associated"),
                id,
                status,
            });
        }
        if !progress.company_sent {
            progress.company_sent = true;
            if let Err(error) = crm::save_progress(delivery.checkpoints, progress).await {
                return Err(crm::unsaved(&error, "no company has this domain yet"));
            }
        }
        let (id, status) = match self.create_company(contact_id, domain, lead).await {
            Ok(created) => created,
            Err(attempt) => {
                known.remember(domain, Remembered::MaybeCreated(contact_id.to_owned()));
                return Err(attempt);
            }
        };
        known.remember(domain, Remembered::Known(id.clone()));
        Ok(Company {
            said: format!("company {id} ({domain}) created"),
            id,
            status,
        })
    }

    /// The oldest company whose `domain` is `domain`, by HubSpot's search.
    async fn search_company(&self, domain: &str) -> Result<Option<String>, Attempt> {
        let doing = "searching for the company by domain";
        let body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "domain", "operator": "EQ", "value": domain},
            ]}],
            "properties": ["domain", "name"],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": 10,
        });
        let answer = self
            .post_for_results(&format!("{COMPANIES_PATH}/search"), &body, doing)
            .await?;
        Ok(results(&answer)
            .find(|company| {
                company
                    .pointer("/properties/domain")
                    .and_then(Value::as_str)
                    .is_some_and(|found| found.trim().eq_ignore_ascii_case(domain))
            })
            .and_then(|company| company.get("id").and_then(crm::id_text)))
    }

    /// Creates the company, associated with the contact in the same call, so that the
    /// company exists only with the association a retry looks through.
    async fn create_company(
        &self,
        contact_id: &str,
        domain: &str,
        lead: &Lead,
    ) -> Result<(String, u16), Attempt> {
        let doing = "creating the company";
        let name = lead
            .company
            .clone()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| domain.to_owned());
        let mut properties = json!({"domain": domain, "name": name.trim()});
        if let Some(owner) = &self.owner_id {
            properties["hubspot_owner_id"] = Value::from(owner.as_str());
        }
        let body = json!({
            "properties": properties,
            "associations": [association(contact_id, COMPANY_TO_CONTACT)],
        });
        let answer = self
            .api
            .send(self.api.post(COMPANIES_PATH).json(&body), doing)
            .await?;
        self.created(&answer, doing)
    }

    /// Associates the contact with the company (HubSpot's default type). Repeating it
    /// changes nothing.
    async fn associate_company(&self, contact_id: &str, company_id: &str) -> Result<u16, Attempt> {
        let doing = "associating the contact with its company";
        let path = format!(
            "/crm/v4/objects/contact/{}/associations/default/company/{}",
            crm::path_segment(contact_id),
            crm::path_segment(company_id)
        );
        let answer = self.api.send(self.api.put(&path), doing).await?;
        if answer.status.is_success() {
            Ok(answer.status.as_u16())
        } else {
            Err(self.failure(&answer, doing))
        }
    }

    /// Creates a note, on the contact if one is given; answers its id and the status.
    pub(super) async fn create_note(
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
            request["associations"] = json!([association(contact_id, NOTE_TO_CONTACT)]);
        }
        let answer = self
            .api
            .send(self.api.post(NOTES_PATH).json(&request), doing)
            .await?;
        self.created(&answer, doing)
    }

    /// The contact's note whose body carries the event id: the one an earlier attempt of
    /// this delivery created.
    pub(super) async fn find_note(
        &self,
        contact_id: &str,
        event_id: &str,
    ) -> Result<Option<String>, Attempt> {
        let doing = "looking for the note an earlier attempt may have created";
        self.find_associated(contact_id, "notes", "hs_note_body", doing, |body| {
            body.contains(event_id)
        })
        .await
    }

    /// A note associated with nothing whose body carries the event id, by HubSpot's
    /// search. The index lags behind writes by seconds; the first retry comes later than
    /// that, so a note the last attempt created is found.
    pub(super) async fn search_note(&self, event_id: &str) -> Result<Option<String>, Attempt> {
        let doing = "looking for the note an earlier attempt may have created";
        let body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": "hs_note_body", "operator": "CONTAINS_TOKEN", "value": event_id},
            ]}],
            "properties": ["hs_note_body"],
            "limit": 10,
        });
        let answer = self
            .post_for_results(&format!("{NOTES_PATH}/search"), &body, doing)
            .await?;
        Ok(results(&answer)
            .find(|note| {
                note.pointer("/properties/hs_note_body")
                    .and_then(Value::as_str)
                    .is_some_and(|body| body.contains(event_id))
            })
            .and_then(|note| note.get("id").and_then(crm::id_text)))
    }

    /// The contact's deal whose description carries the event id.
    pub(super) async fn find_deal(
        &self,
        contact_id: &str,
        event_id: &str,
    ) -> Result<Option<String>, Attempt> {
        let doing = "looking for the deal an earlier attempt may have created";
        self.find_associated(contact_id, "deals", "description", doing, |text| {
            text.contains(event_id)
        })
        .await
    }

    /// Opens the deal, associated with the contact and the company in the same call. Its
    /// description carries `marker`, by which a retry recognises it.
    pub(super) async fn create_deal(
        &self,
        deal: &Deal,
        name: &str,
        marker: &str,
        contact_id: &str,
        company_id: Option<&str>,
    ) -> Result<(String, u16), Attempt> {
        let doing = "creating the deal";
        let mut properties = json!({
            "dealname": name,
            "pipeline": deal.pipeline,
            "dealstage": deal.stage,
            "description": marker,
        });
        if let Some(owner) = &self.owner_id {
            properties["hubspot_owner_id"] = Value::from(owner.as_str());
        }
        let mut associations = vec![association(contact_id, DEAL_TO_CONTACT)];
        if let Some(company_id) = company_id {
            associations.push(association(company_id, DEAL_TO_COMPANY));
        }
        let body = json!({"properties": properties, "associations": associations});
        let answer = self
            .api
            .send(self.api.post(DEALS_PATH).json(&body), doing)
            .await?;
        self.created(&answer, doing)
    }

    /// Among the records of `kind` (`notes`, `companies`, `deals`) associated with the
    /// contact, newest first, the one whose `property` satisfies `matches`.
    async fn find_associated(
        &self,
        contact_id: &str,
        kind: &str,
        property: &str,
        doing: &str,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, Attempt> {
        let path = format!(
            "/crm/v4/objects/contacts/{}/associations/{kind}",
            crm::path_segment(contact_id)
        );
        let request = self.api.get(&path).query(&[("limit", "500")]);
        let answer = self.api.send(request, doing).await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        let ids: Vec<String> = results(&answer)
            .filter_map(|result| result.get("toObjectId").and_then(crm::id_text))
            .collect();
        if ids.is_empty() {
            return Ok(None);
        }
        let inputs: Vec<Value> = ids
            .iter()
            .rev()
            .take(READ_BACK)
            .map(|id| json!({"id": id}))
            .collect();
        let body = json!({"properties": [property], "inputs": inputs});
        let answer = self
            .post_for_results(&format!("/crm/v3/objects/{kind}/batch/read"), &body, doing)
            .await?;
        let pointer = format!("/properties/{property}");
        Ok(results(&answer)
            .find(|record| {
                record
                    .pointer(&pointer)
                    .and_then(Value::as_str)
                    .is_some_and(&matches)
            })
            .and_then(|record| record.get("id").and_then(crm::id_text)))
    }

    /// The id of a successful create, and its status.
    fn created(&self, answer: &Answer, doing: &str) -> Result<(String, u16), Attempt> {
        if !answer.status.is_success() {
            return Err(self.failure(answer, doing));
        }
        match answer.json().get("id").and_then(crm::id_text) {
            Some(id) => Ok((id, answer.status.as_u16())),
            None => Err(self.api.no_id(answer, doing)),
        }
    }

    /// The account's time zone, from its details.
    pub(super) async fn account_zone(&self) -> Result<Zone, ProbeError> {
        let doing = "reading the account's time zone";
        let answer = self
            .api
            .send(self.api.get(ACCOUNT_PATH), doing)
            .await
            .map_err(ProbeError::from)?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing).into());
        }
        Zone::from_details(answer.json()).ok_or_else(|| {
            ProbeError::Lasting("HubSpot's account details hold no usable time zone offset".into())
        })
    }
}

impl HubspotConnector {
    /// POSTs a search or batch read; an answer that is not a success is the step's failure.
    async fn post_for_results(
        &self,
        path: &str,
        body: &Value,
        doing: &str,
    ) -> Result<Answer, Attempt> {
        let answer = self.api.send(self.api.post(path).json(body), doing).await?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing));
        }
        Ok(answer)
    }
}

/// `results` of a HubSpot list, search or batch answer.
fn results(answer: &Answer) -> impl Iterator<Item = &Value> {
    answer
        .json()
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The id in HubSpot's "Contact already exists. Existing ID: 123" (a 409 CONFLICT, or an
/// error inside a batch answer).
pub(super) fn existing_contact_id(body: &Value) -> Option<String> {
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
