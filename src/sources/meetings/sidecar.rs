//! The optional sidecar beside a recording (`call.wav.json` or `call.json`): a small JSON
//! object that names the recording's title and agent. Read like a recording (opened once,
//! never through a link, with a cap); a malformed one is a rejection, not a guess.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::checks::{InspectError, Rejection, open_recording};

/// A sidecar larger than this is not a sidecar (it holds a title and an agent id).
const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

/// The optional `<name>.json` beside a recording. Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    pub title: Option<String>,
    /// Overrides the folder's agent.
    pub agent_id: Option<String>,
}

/// The sidecar's path: `call.wav.json`, else `call.json`, if either exists (as any kind
/// of entry: a link named so is found, then refused by [`read_sidecar`], and moved along).
pub fn sidecar_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let mut full = name.to_os_string();
    full.push(".json");
    let beside = path.with_file_name(full);
    let exists = |path: &Path| path.symlink_metadata().is_ok();
    if exists(&beside) {
        return Some(beside);
    }
    let stem = path.with_extension("json");
    (stem != path && exists(&stem)).then_some(stem)
}

/// Reads a sidecar; a malformed one is a rejection (the recording would otherwise go to
/// the wrong agent or under the wrong title).
pub fn read_sidecar(path: &Path) -> Result<Sidecar, Rejection> {
    let fix = "it must be a JSON object such as {\"title\": \"Weekly standup\", \"agentId\": \"cm1…\"} (both keys optional); \
               fix it, then move the recording and its sidecar back into the drop folder";
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cannot_read = |error: &dyn fmt::Display| {
        Rejection::new(format!("its sidecar {name} cannot be read ({error})"), fix)
    };
    // Opened as a recording is: a link could make the title (sent to Clairo) or an error
    // text carry a file the person who dropped it cannot read.
    let file = match open_recording(path) {
        Ok(file) => file,
        Err(InspectError::NotAFile(kind)) => {
            return Err(Rejection::new(
                format!(
                    "its sidecar {name} is {}, not a regular file, and was not read",
                    kind.describe()
                ),
                fix,
            ));
        }
        Err(InspectError::Rejected(rejection)) => return Err(rejection),
        Err(InspectError::Gone) => return Err(cannot_read(&"it disappeared")),
        Err(InspectError::Io(error)) => return Err(cannot_read(&error)),
    };
    let metadata = file.metadata().map_err(|error| cannot_read(&error))?;
    if metadata.len() > MAX_SIDECAR_BYTES {
        return Err(Rejection::new(
            format!(
                "its sidecar {name} is {} bytes, too large for a title and an agent id",
                metadata.len()
            ),
            fix,
        ));
    }
    let mut text = Vec::new();
    file.take(MAX_SIDECAR_BYTES)
        .read_to_end(&mut text)
        .map_err(|error| cannot_read(&error))?;
    let sidecar: Sidecar = serde_json::from_slice(&text).map_err(|error| {
        Rejection::new(
            format!("its sidecar {name} is not valid ({})", json_problem(&error)),
            fix,
        )
    })?;
    if sidecar
        .agent_id
        .as_deref()
        .is_some_and(|agent| agent.trim().is_empty())
    {
        return Err(Rejection::new(
            format!("its sidecar {name} has an empty agentId"),
            fix,
        ));
    }
    Ok(sidecar)
}

/// What is wrong with a sidecar's JSON, with its place but without quoting it: serde's
/// own messages quote the values they did not expect.
fn json_problem(error: &serde_json::Error) -> String {
    let place = format!("line {}, column {}", error.line(), error.column());
    match error.classify() {
        serde_json::error::Category::Data => {
            format!("a value has the wrong type at {place}: title and agentId must be strings")
        }
        serde_json::error::Category::Eof => format!("the JSON ends too early, at {place}"),
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            format!("not JSON: a syntax error at {place}")
        }
    }
}
