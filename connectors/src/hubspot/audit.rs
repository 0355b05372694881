//! What `clairo-sync check --online` checks of a HubSpot mapping: that every contact
//! property named in `properties` and `set` exists (and a fixed value is one of its
//! options, when it has options), that `owner_id` is an owner, and that `deal`'s pipeline
//! and stage exist.

use serde_json::Value;

use super::HubspotConnector;
use crate::crm::{self, Answer};
use crate::{ConfigProblem, ProbeError};

const PROPERTIES_PATH: &str = "/crm/v3/properties/contacts";
const OWNERS_PATH: &str = "/crm/v3/owners";
const PIPELINES_PATH: &str = "/crm/v3/pipelines/deals";

/// Pages of owners read at most (500 each): past that, the account is larger than any
/// sales team this is for, and an owner not seen is not reported.
const OWNER_PAGES: usize = 10;

/// A contact property as the account defines it.
struct Property {
    name: String,
    /// The values an enumeration accepts; empty for free text.
    options: Vec<String>,
}

impl HubspotConnector {
    pub(super) async fn mapping_audit(&self) -> Result<Vec<ConfigProblem>, ProbeError> {
        let mut problems = Vec::new();
        if !self.properties.is_empty() || !self.set.is_empty() {
            let known = self.contact_properties_defined().await?;
            let names = || known.iter().map(|property| property.name.as_str());
            let mut check = |key: String, name: &str| {
                let found = known.iter().find(|property| property.name == name);
                if found.is_none() {
                    problems.push(ConfigProblem::new(
                        key,
                        format!(
                            "HubSpot has no contact property \"{name}\"{}",
                            crm::did_you_mean(name, names())
                        ),
                    ));
                }
                found
            };
            for (answer, property) in &self.properties {
                check(format!("properties.{answer}"), property);
            }
            let mut bad_values = Vec::new();
            for (property, value) in &self.set {
                let Some(found) = check(format!("set.{property}"), property) else {
                    continue;
                };
                if !found.options.is_empty() && !found.options.iter().any(|option| option == value)
                {
                    bad_values.push(ConfigProblem::new(
                        format!("set.{property}"),
                        format!(
                            "HubSpot's contact property \"{property}\" has no option \"{value}\"{}",
                            crm::did_you_mean(value, found.options.iter().map(String::as_str))
                        ),
                    ));
                }
            }
            problems.extend(bad_values);
        }
        if let Some(owner) = &self.owner_id {
            let owners = self.owners().await?;
            if !owners.iter().any(|(id, _)| id == owner) {
                let ids = owners.iter().map(|(id, _)| id.as_str());
                let named = crm::nearest(owner, ids)
                    .and_then(|near| owners.iter().find(|(id, _)| id == near))
                    .map(|(id, who)| format!("; did you mean {id} ({who})?"))
                    .unwrap_or_default();
                problems.push(ConfigProblem::new(
                    "owner_id",
                    format!("HubSpot has no owner \"{owner}\"{named}"),
                ));
            }
        }
        if let Some(deal) = &self.deal {
            let pipelines = self
                .get_json(PIPELINES_PATH, &[], "reading the deal pipelines")
                .await?;
            let pipelines: Vec<&Value> = list(&pipelines).collect();
            let id_of = |value: &Value| value.get("id").and_then(crm::id_text).unwrap_or_default();
            match pipelines
                .iter()
                .find(|pipeline| id_of(pipeline) == deal.pipeline)
            {
                None => {
                    let ids: Vec<String> = pipelines.iter().map(|p| id_of(p)).collect();
                    problems.push(ConfigProblem::new(
                        "deal.pipeline",
                        format!(
                            "HubSpot has no deal pipeline \"{}\"{}",
                            deal.pipeline,
                            crm::did_you_mean(&deal.pipeline, ids.iter().map(String::as_str))
                        ),
                    ));
                }
                Some(pipeline) => {
                    let stages: Vec<String> = pipeline
                        .get("stages")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(id_of)
                        .collect();
                    if !stages.contains(&deal.stage) {
                        problems.push(ConfigProblem::new(
                            "deal.stage",
                            format!(
                                "HubSpot's deal pipeline \"{}\" has no stage \"{}\"{}",
                                deal.pipeline,
                                deal.stage,
                                crm::did_you_mean(&deal.stage, stages.iter().map(String::as_str))
                            ),
                        ));
                    }
                }
            }
        }
        Ok(problems)
    }

    async fn contact_properties_defined(&self) -> Result<Vec<Property>, ProbeError> {
        let body = self
            .get_json(PROPERTIES_PATH, &[], "reading the contact properties")
            .await?;
        Ok(list(&body)
            .filter_map(|property| {
                let name = property.get("name")?.as_str()?.to_owned();
                let options = property
                    .get("options")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|option| option.get("value")?.as_str().map(str::to_owned))
                    .collect();
                Some(Property { name, options })
            })
            .collect())
    }

    /// Every owner as (id, "First Last <email>").
    async fn owners(&self) -> Result<Vec<(String, String)>, ProbeError> {
        let mut owners = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..OWNER_PAGES {
            let mut query = vec![("limit", "500".to_owned())];
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let body = self
                .get_json(OWNERS_PATH, &query, "reading the owners")
                .await?;
            for owner in list(&body) {
                let Some(id) = owner.get("id").and_then(crm::id_text) else {
                    continue;
                };
                let name = [owner.get("firstName"), owner.get("lastName")]
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ");
                let email = owner.get("email").and_then(Value::as_str).unwrap_or("");
                owners.push((id, format!("{name} <{email}>").trim().to_owned()));
            }
            after = body.pointer("/paging/next/after").and_then(crm::id_text);
            if after.is_none() {
                break;
            }
        }
        Ok(owners)
    }

    /// A GET whose JSON body is wanted; a failure in plain words.
    async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
        doing: &str,
    ) -> Result<Value, ProbeError> {
        let request = self.api.get(path).query(query);
        let answer: Answer = self
            .api
            .send(request, doing)
            .await
            .map_err(ProbeError::from)?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing).into());
        }
        Ok(answer.json.unwrap_or(Value::Null))
    }
}

fn list(body: &Value) -> impl Iterator<Item = &Value> {
    body.get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}
