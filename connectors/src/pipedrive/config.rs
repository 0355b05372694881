//! The `[connectors.NAME] type = "pipedrive"` table: its keys, their defaults, and the
//! checks that need no network (`check --online` checks the names against the account).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::WithoutEmail;
use crate::crm::{self, CommonKeys, Title};
use crate::{ConfigProblem, Secret, SecretSlot};

const DEFAULT_BASE_URL: &str = "https://api.pipedrive.com";

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
    /// Limit on each call to Pipedrive (a brief makes two to eight).
    #[serde(default = "crm::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The answer holding the contact's email; by default any answer whose name mentions
    /// "email", then the summary.
    #[serde(default)]
    pub email_answer_key: Option<String>,
    /// What a brief without an email becomes. A Pipedrive note must hang on a person,
    /// organization, deal or lead, and none is known, so `note` leaves the delivery dead
    /// (kept and listed for a person to handle), while `skip` drops it.
    #[serde(default)]
    pub without_email: WithoutEmail,
    /// Answers copied onto the person: answer key → person field, by its key (the 40-hex
    /// one of a custom field) or its name as Pipedrive shows it (`Budget`).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The owner of the persons, organisations and leads clairo-sync creates: a Pipedrive
    /// user id.
    #[serde(default)]
    pub owner_id: Option<u64>,
    /// Find the organisation named after the email's domain (or create it) and link the
    /// person, note and lead to it.
    #[serde(default)]
    pub organization: bool,
    /// Open one lead per brief.
    #[serde(default)]
    pub lead: Option<LeadConfig>,
    /// The older spelling of `lead = {}`: a lead with the default title.
    #[serde(default)]
    pub create_lead: bool,
}

/// `lead = { title, label_ids, channel }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadConfig {
    /// The lead's title: a template on the event's envelope; by default
    /// `<company> — Clairo brief`.
    #[serde(default)]
    pub title: Option<String>,
    /// Lead labels' UUIDs (`GET /leadLabels`, or `check --online` names them).
    #[serde(default)]
    pub label_ids: Vec<String>,
    /// The source channel: the id of an option of the `channel` field.
    #[serde(default)]
    pub channel: Option<u64>,
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
        let mut problems = self.common_keys().problems();
        problems.extend(self.mapping_problems());
        problems
    }

    /// The lead to open, if any: `lead`, or `create_lead = true` meaning `lead = {}`.
    pub(super) fn lead_config(&self) -> Option<LeadConfig> {
        self.lead
            .clone()
            .or_else(|| self.create_lead.then(LeadConfig::default))
    }

    pub(super) fn mapping_problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (answer, field) in &self.fields {
            if field.trim().is_empty() {
                problems.push(ConfigProblem::new(
                    format!("fields.{answer}"),
                    "is empty; name the person field by its name as Pipedrive shows it, or by \
                     its key",
                ));
            }
        }
        if self.owner_id == Some(0) {
            problems.push(ConfigProblem::new(
                "owner_id",
                "is 0; write the id of a Pipedrive user (`clairo-sync check --online` lists \
                 what is wrong)",
            ));
        }
        if let Some(lead) = &self.lead {
            if let Err(message) = Title::new(lead.title.as_deref()) {
                problems.push(ConfigProblem::new("lead.title", message));
            }
            for (index, label) in lead.label_ids.iter().enumerate() {
                if !is_uuid(label) {
                    problems.push(ConfigProblem::new(
                        format!("lead.label_ids[{index}]"),
                        format!(
                            "\"{label}\" is not a lead label's id (a UUID such as \
                             \"f08b42a0-4e75-11ea-9643-03698ef1cfd6\"); `clairo-sync check \
                             --online` names the labels the account has"
                        ),
                    ));
                }
            }
        }
        problems
    }

    pub(super) fn common_keys(&self) -> CommonKeys<'_> {
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

/// `8-4-4-4-12` hex digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}
