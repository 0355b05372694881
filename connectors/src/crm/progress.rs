//! The progress a delivery saves between calls, read back on a retry, so that a retry
//! resumes where the last attempt stopped and creates nothing twice.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tracing::warn;

use crate::{Attempt, CheckpointError, CheckpointSink, Delivery, Verdict};

/// The progress saved on the delivery, read back; a checkpoint this connector cannot read
/// (written by another version, or edited by hand) is set aside with a warning. Starting
/// over is safe for contacts: both CRMs' contact step finds an existing contact by email.
pub(crate) fn load_progress<T: DeserializeOwned + Default>(
    checkpoint: Option<&Value>,
    connector: &str,
) -> T {
    let Some(value) = checkpoint else {
        return T::default();
    };
    serde_json::from_value(value.clone()).unwrap_or_else(|error| {
        warn!(
            connector = %connector,
            %error,
            "Ignoring a checkpoint this connector cannot read; starting the delivery over."
        );
        T::default()
    })
}

/// Saves `progress` on the delivery; the dispatcher has persisted it when this returns.
pub(crate) async fn save_progress<T: Serialize>(
    sink: &dyn CheckpointSink,
    progress: &T,
) -> Result<(), CheckpointError> {
    sink.save(serde_json::to_value(progress)?).await
}

/// Saves the progress of a finished delivery. Failing is only logged: the work is done,
/// and a retry would find what it recorded rather than create it again.
pub(crate) async fn save_last<T: Serialize>(
    delivery: &Delivery<'_>,
    progress: &T,
    connector: &str,
) {
    if let Err(error) = save_progress(delivery.checkpoints, progress).await {
        warn!(connector = %connector, %error, "Could not save the delivery's final progress.");
    }
}

/// The attempt for a checkpoint that could not be saved: stop before making changes whose
/// record would be lost, and try again.
pub(crate) fn unsaved(error: &CheckpointError, done: &str) -> Attempt {
    Attempt::retry(
        format!(
            "{done}, but the progress could not be saved ({error}); stopping so that nothing \
             is created without a record, and retrying"
        ),
        None,
    )
}

/// Reads an id given as a string or a number (CRMs use both) as text.
pub(crate) fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// `deserialize_with` for an optional id saved as a string or a number.
pub(crate) fn optional_id<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?
        .as_ref()
        .and_then(id_text))
}

pub(crate) fn is_false(value: &bool) -> bool {
    !value
}

/// Adds what had already been done to a failed attempt's reason, so an operator reading
/// it knows that a retry will not repeat it.
pub(crate) fn with_context(mut attempt: Attempt, context: &str) -> Attempt {
    if context.is_empty() {
        return attempt;
    }
    match &mut attempt.verdict {
        Verdict::Retry { reason, .. } | Verdict::Permanent { reason } => {
            reason.push_str("; ");
            reason.push_str(context);
        }
        Verdict::Delivered => {}
    }
    attempt
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unreadable_checkpoint_is_set_aside() {
        #[derive(Default, serde::Deserialize)]
        struct Progress {
            #[serde(default, deserialize_with = "optional_id")]
            contact_id: Option<String>,
        }
        let progress: Progress = load_progress(Some(&json!({"contact_id": 12})), "crm");
        assert_eq!(progress.contact_id.as_deref(), Some("12"));
        let progress: Progress = load_progress(Some(&json!("garbage")), "crm");
        assert_eq!(progress.contact_id, None);
    }
}
