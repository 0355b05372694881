//! What the HubSpot and Pipedrive connectors share, one idea per file: the note a brief or
//! a meeting becomes ([`note`]), the progress a delivery saves between calls
//! ([`progress`]), and the config keys both tables have with the API client that turns one
//! call into an answer or a failed [`Attempt`] ([`api`], on top of [`crate::http`]); the
//! free-mail domains no company is made of ([`freemail`]), the title of a deal or lead
//! ([`title`]), the suggestions `check --online` makes ([`audit`]), and the records a
//! connector remembers across deliveries ([`recent`]). What is left here
//! is the policy both follow.

use std::time::Duration;

use serde::Deserialize;

use crate::Attempt;

mod api;
mod audit;
mod freemail;
mod note;
mod progress;
mod recent;
mod title;

pub(crate) use api::*;
pub(crate) use audit::*;
pub(crate) use freemail::*;
pub(crate) use note::*;
pub(crate) use progress::*;
pub(crate) use recent::*;
pub(crate) use title::*;

/// `timeout` of a CRM connector when the config gives none: the limit on each call.
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// What a CRM connector does with a brief that names no contact email (an email is never
/// guessed, so neither is the contact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WithoutEmail {
    /// Record the brief as a note attached to no contact, so the lead is not lost.
    #[default]
    Note,
    /// Record nothing: the delivery is done, and its response says it was skipped.
    Skip,
}

/// The answer to a brief without an email under `without_email = "skip"`.
pub(crate) fn skipped_without_email(service: &str) -> Attempt {
    Attempt::delivered(
        None,
        Some(format!(
            "skipped: the brief names no contact email, and `without_email = \"skip\"`; \
             nothing was written to {service}"
        )),
    )
}

/// The words an answer for `conversation.updated` carries: a CRM records leads and
/// meetings, not every chat message, so the event is acknowledged and left out.
pub(crate) const IGNORED_CONVERSATION: &str = "ignored: conversation.updated (a CRM records briefs and meetings; route conversations \
     to a webhook, email or file connector instead)";
