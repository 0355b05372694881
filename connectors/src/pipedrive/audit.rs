//! What `clairo-sync check --online` checks of a Pipedrive mapping: that every field in
//! `fields` is a person field clairo-sync can set, that `owner_id` is a user, that every
//! lead label exists, and that the lead's `channel` is an option of the channel field.

use serde_json::Value;

use super::{PipedriveConnector, number};
use crate::crm;
use crate::{ConfigProblem, ProbeError};

const USERS_PATH: &str = "/api/v1/users";
const LEAD_LABELS_PATH: &str = "/api/v1/leadLabels";
/// Leads take the source channel's options from the deal fields' `channel`.
const DEAL_FIELDS_PATH: &str = "/api/v1/dealFields";

impl PipedriveConnector {
    pub(super) async fn mapping_audit(&self) -> Result<Vec<ConfigProblem>, ProbeError> {
        let mut problems = Vec::new();
        if !self.fields.is_empty() {
            let fields = self.person_fields(true).await.map_err(ProbeError::from)?;
            for (answer, wanted) in &self.fields {
                let key = format!("fields.{answer}");
                match fields.iter().find(|field| field.is(wanted)) {
                    None => problems.push(ConfigProblem::new(
                        key,
                        format!(
                            "Pipedrive has no person field \"{wanted}\"{}",
                            crm::did_you_mean(
                                wanted,
                                fields
                                    .iter()
                                    .filter(|f| f.settable())
                                    .map(|f| f.name.as_str())
                            )
                        ),
                    )),
                    Some(field) if !field.settable() => problems.push(ConfigProblem::new(
                        key,
                        format!(
                            "\"{wanted}\" is a built-in Pipedrive field clairo-sync does not set; \
                             map the answer to a custom person field (or to Phone)"
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
        if let Some(owner) = self.owner_id {
            let users = self.list(USERS_PATH, "reading the users").await?;
            let found = users
                .iter()
                .any(|user| user.get("id").and_then(number) == Some(owner));
            if !found {
                let ids: Vec<(String, String)> = users
                    .iter()
                    .filter_map(|user| {
                        let id = user.get("id").and_then(number)?.to_string();
                        let name = user.get("name").and_then(Value::as_str).unwrap_or("");
                        Some((id, name.to_owned()))
                    })
                    .collect();
                let wanted = owner.to_string();
                let near = crm::nearest(&wanted, ids.iter().map(|(id, _)| id.as_str()))
                    .and_then(|near| ids.iter().find(|(id, _)| id == near))
                    .map(|(id, name)| format!("; did you mean {id} ({name})?"))
                    .unwrap_or_default();
                problems.push(ConfigProblem::new(
                    "owner_id",
                    format!("Pipedrive has no user {owner}{near}"),
                ));
            }
        }
        if let Some(plan) = &self.lead
            && !plan.label_ids.is_empty()
        {
            let labels = self
                .list(LEAD_LABELS_PATH, "reading the lead labels")
                .await?;
            let known: Vec<(String, String)> = labels
                .iter()
                .filter_map(|label| {
                    Some((
                        label.get("id")?.as_str()?.to_owned(),
                        label
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    ))
                })
                .collect();
            for (index, wanted) in plan.label_ids.iter().enumerate() {
                if known.iter().any(|(id, _)| id == wanted) {
                    continue;
                }
                let near = crm::nearest(wanted, known.iter().map(|(id, _)| id.as_str()))
                    .and_then(|near| known.iter().find(|(id, _)| id == near))
                    .map(|(id, name)| format!("; did you mean {id} ({name})?"))
                    .unwrap_or_else(|| {
                        let all: Vec<String> = known
                            .iter()
                            .map(|(id, name)| format!("{name} = {id}"))
                            .collect();
                        format!("; the account's labels are: {}", all.join(", "))
                    });
                problems.push(ConfigProblem::new(
                    format!("lead.label_ids[{index}]"),
                    format!("Pipedrive has no lead label \"{wanted}\"{near}"),
                ));
            }
        }
        if let Some(channel) = self.lead.as_ref().and_then(|plan| plan.channel) {
            let fields = self
                .list(DEAL_FIELDS_PATH, "reading the deal fields")
                .await?;
            let options: Vec<(u64, String)> = fields
                .iter()
                .find(|field| field.get("key").and_then(Value::as_str) == Some("channel"))
                .and_then(|field| field.get("options"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|option| {
                    Some((
                        option.get("id").and_then(number)?,
                        option.get("label")?.as_str()?.to_owned(),
                    ))
                })
                .collect();
            if !options.iter().any(|(id, _)| *id == channel) {
                let all: Vec<String> = options
                    .iter()
                    .map(|(id, label)| format!("{label} = {id}"))
                    .collect();
                problems.push(ConfigProblem::new(
                    "lead.channel",
                    format!(
                        "Pipedrive has no source channel {channel}; the account's channels are: {}",
                        if all.is_empty() {
                            "none".to_owned()
                        } else {
                            all.join(", ")
                        }
                    ),
                ));
            }
        }
        Ok(problems)
    }

    /// `data` of a v1 list, in plain words when it fails.
    async fn list(&self, path: &str, doing: &str) -> Result<Vec<Value>, ProbeError> {
        let answer = self
            .api
            .send(self.api.get(path), doing)
            .await
            .map_err(ProbeError::from)?;
        if !answer.status.is_success() {
            return Err(self.failure(&answer, doing).into());
        }
        Ok(answer
            .json()
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }
}
