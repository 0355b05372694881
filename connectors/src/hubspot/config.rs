//! The `[connectors.NAME] type = "hubspot"` table: its keys, their defaults, and the
//! checks that need no network (`check --online` checks the names against the account).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::WithoutEmail;
use crate::crm::{self, CommonKeys, Title};
use crate::{ConfigProblem, Secret, SecretSlot};

pub(super) const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// HubSpot's default deal pipeline and its first stage, in every account.
const DEFAULT_PIPELINE: &str = "default";
const DEFAULT_STAGE: &str = "appointmentscheduled";

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

fn default_pipeline() -> String {
    DEFAULT_PIPELINE.to_owned()
}

fn default_stage() -> String {
    DEFAULT_STAGE.to_owned()
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
    /// "email", then the summary.
    #[serde(default)]
    pub email_answer_key: Option<String>,
    /// Answers copied onto the contact: answer key → HubSpot property (internal name).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Fixed values set on every brief's contact: property (internal name) → value, e.g.
    /// `lifecyclestage = "lead"`.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// The owner of the contact, and of the company and deal clairo-sync creates: a HubSpot
    /// owner id (`hubspot_owner_id`), as HubSpot's owners list gives it.
    #[serde(default, deserialize_with = "owner_id")]
    pub owner_id: Option<String>,
    /// Find the company of the contact's email domain (or create it) and associate it.
    #[serde(default)]
    pub company: bool,
    /// Open one deal per brief, associated with the contact and the company.
    #[serde(default)]
    pub deal: Option<DealConfig>,
    /// What a brief without an email becomes: an unassociated note, or nothing.
    #[serde(default)]
    pub without_email: WithoutEmail,
}

/// `deal = { pipeline, stage, name }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DealConfig {
    /// The pipeline's id (`default` is the one every account has).
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
    /// The stage's id in that pipeline (`appointmentscheduled` by default).
    #[serde(default = "default_stage")]
    pub stage: String,
    /// The deal's name: a template on the event's envelope; by default
    /// `<company> — Clairo brief`.
    #[serde(default)]
    pub name: Option<String>,
}

/// An owner id written as a string (as HubSpot gives it) or a number.
fn owner_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.trim().to_owned())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => Err(serde::de::Error::custom(
            "owner_id must be a HubSpot owner id, e.g. \"75030002\"",
        )),
    }
}

const MISSING_TOKEN: &str = "is missing; set `token_file` to a file holding the HubSpot \
    private app's access token (or provide the systemd credential `<connector name>-token`)";

/// Properties clairo-sync sets itself, which a mapping may not name.
const RESERVED: [(&str, &str); 2] = [
    (
        "email",
        "clairo-sync sets it from the brief's contact email; map the answer to another property",
    ),
    ("hubspot_owner_id", "set the owner with `owner_id` instead"),
];

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
        problems.extend(self.mapping_problems());
        problems
    }

    /// The problems with what is mapped where, each keyed.
    pub(super) fn mapping_problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (answer, property) in &self.properties {
            if let Err(message) = property_name(property) {
                problems.push(ConfigProblem::new(format!("properties.{answer}"), message));
            }
        }
        for (property, value) in &self.set {
            let key = format!("set.{property}");
            if let Err(message) = property_name(property) {
                problems.push(ConfigProblem::new(key, message));
            } else if let Some((answer, _)) = self.properties.iter().find(|(_, p)| *p == property) {
                problems.push(ConfigProblem::new(
                    key,
                    format!(
                        "is also filled from the answer `{answer}` (properties.{answer}); keep \
                         one of the two"
                    ),
                ));
            } else if value.trim().is_empty() {
                problems.push(ConfigProblem::new(
                    key,
                    "is empty, which would clear the property on every contact; give a value \
                     or remove the key",
                ));
            }
        }
        if let Some(owner) = &self.owner_id
            && (owner.is_empty() || !owner.chars().all(|c| c.is_ascii_digit()))
        {
            problems.push(ConfigProblem::new(
                "owner_id",
                "is not a HubSpot owner id; write the owner's numeric id as a string, e.g. \
                 \"75030002\" (`clairo-sync check --online` lists what is wrong)",
            ));
        }
        if let Some(deal) = &self.deal {
            for (key, value) in [
                ("deal.pipeline", &deal.pipeline),
                ("deal.stage", &deal.stage),
            ] {
                if value.trim().is_empty() {
                    problems.push(ConfigProblem::new(
                        key,
                        "is empty; write the id from HubSpot's pipeline settings, or remove the \
                         key for the default",
                    ));
                }
            }
            if let Err(message) = Title::new(deal.name.as_deref()) {
                problems.push(ConfigProblem::new("deal.name", message));
            }
        }
        problems
    }

    pub(super) fn common_keys(&self) -> CommonKeys<'_> {
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
/// a letter, and not one clairo-sync sets itself.
fn property_name(name: &str) -> Result<(), String> {
    if let Some((_, why)) = RESERVED.iter().find(|(reserved, _)| *reserved == name) {
        return Err(format!("names `{name}`, which may not be mapped: {why}"));
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
