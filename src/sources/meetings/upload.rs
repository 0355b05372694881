// Over 500 lines: with its tests; the upload itself is under 500.
//! One recording, from file to meeting: the checks, the content's sha256 (streamed), the
//! claim in the state database, an optional conversion, the request, and Clairo's answer
//! recorded with its `meeting.processed` event in one transaction. Shared by the drop
//! folders and `clairo-sync upload`.
//!
//! The recording is opened once, in [`prepare`]; the checks, the hash, ffmpeg and the
//! request all read that descriptor, never the name again. A file renamed over the
//! original meanwhile is not what is sent, and one rewritten in place fails the request
//! before its last byte (the bytes sent are hashed again on the way out).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clairo_connectors::EventType;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clairo::{ClairoClient, ClairoError, Meeting, MeetingUpload};
use crate::sources::SourceContext;
use crate::store::meetings::{Claim, MeetingClaim, MeetingResult, MeetingRow};
use crate::store::{Store, StoreError};

use super::checks::{self, Conversion, EntryKind, InspectError, MAX_UPLOAD_BYTES, Plan, Rejection};
use super::transcode::{self, TranscodeError, Transcoded, Transcoder};

/// Hashing reads the file in pieces this large: memory does not grow with the file.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// Recording Clairo's answer is retried this often before giving up: losing it would
/// mean uploading the recording a second time on the next start.
const RECORD_ATTEMPTS: u32 = 5;
const RECORD_RETRY_WAIT: Duration = Duration::from_secs(1);

/// A recording that passed the checks, with what it is sent as.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: PathBuf,
    /// The recording, open: what was checked and hashed, and what is sent.
    pub file: Arc<File>,
    /// The original file's name (`fileName` in the event).
    pub file_name: String,
    pub agent_id: String,
    pub title: String,
    pub sidecar: Option<PathBuf>,
    pub size: u64,
    /// Of the original file: the dedupe key and the event's key.
    pub sha256: String,
    pub plan: Plan,
}

/// What the caller decides and what a sidecar may change.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub agent_id: &'a str,
    /// The caller's title (`--title`): wins over the sidecar and the file name.
    pub title: Option<&'a str>,
    /// Whether a sidecar's `agentId` replaces `agent_id` (drop folders: yes; `upload
    /// --agent`: no, the command line is explicit).
    pub sidecar_agent: bool,
}

/// Why a file was not prepared.
#[derive(Debug)]
pub enum PrepareError {
    /// Not uploadable: goes to failed/ (with the sidecar, if any).
    Rejected {
        rejection: Rejection,
        sidecar: Option<PathBuf>,
    },
    /// Not a regular file (a link, FIFO, device, directory…): refused without being
    /// read. Moved to failed/ as it is when [`EntryKind::moved_when_refused`].
    NotAFile {
        kind: EntryKind,
        rejection: Rejection,
        sidecar: Option<PathBuf>,
    },
    /// It vanished meanwhile: nothing to do.
    Gone,
    /// It changed while being read: still being written after all.
    Changed,
    /// Reading failed in a way that may pass (a network mount's hiccup).
    Io(std::io::Error),
}

/// Checks, reads the sidecar and hashes (blocking I/O: call through `spawn_blocking`).
pub fn prepare(
    path: &Path,
    wanted: &Wanted<'_>,
    conversion: Conversion,
) -> Result<Prepared, PrepareError> {
    let sidecar_path = checks::sidecar_path(path);
    let rejected = |rejection: Rejection| PrepareError::Rejected {
        rejection,
        sidecar: sidecar_path.clone(),
    };
    let inspect_error = |error: InspectError| match error {
        InspectError::Gone => PrepareError::Gone,
        InspectError::Rejected(rejection) => rejected(rejection),
        InspectError::NotAFile(kind) => PrepareError::NotAFile {
            kind,
            rejection: checks::not_a_regular_file(kind),
            sidecar: sidecar_path.clone(),
        },
        InspectError::Io(error) => PrepareError::Io(error),
    };
    // First, before the sidecar is read: an entry that is not a regular file is refused
    // as it is.
    let file = checks::open_recording(path).map_err(inspect_error)?;
    let sidecar = match &sidecar_path {
        Some(sidecar_path) => checks::read_sidecar(sidecar_path).map_err(rejected)?,
        None => checks::Sidecar::default(),
    };
    let inspection = checks::inspect_open(&file, path, conversion).map_err(inspect_error)?;
    let (sha256, hashed) = match hash_file(&file) {
        Ok(hashed) => hashed,
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(rejected(checks::unreadable(&error)));
        }
        Err(error) => return Err(PrepareError::Io(error)),
    };
    if hashed != inspection.size {
        return Err(PrepareError::Changed);
    }
    let title = wanted
        .title
        .map(str::to_owned)
        .or_else(|| {
            sidecar
                .title
                .clone()
                .filter(|title| !title.trim().is_empty())
        })
        .unwrap_or_else(|| checks::title_from_name(path));
    let agent_id = match (&sidecar.agent_id, wanted.sidecar_agent) {
        (Some(agent), true) => agent.trim().to_owned(),
        _ => wanted.agent_id.to_owned(),
    };
    Ok(Prepared {
        path: path.to_path_buf(),
        file: Arc::new(file),
        file_name: path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        agent_id,
        title: title.trim().to_owned(),
        sidecar: sidecar_path,
        size: inspection.size,
        sha256,
        plan: inspection.plan,
    })
}

/// The lower-case hex sha256 of an open file and how many bytes were read, streamed
/// from its start (positional reads: the descriptor's offset is left alone).
pub fn hash_file(file: &File) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let read = match file.read_at(&mut buffer, total) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        total = total.saturating_add(read as u64);
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Lower-case hex, as the sha256 is stored and sent.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Sends prepared recordings.
#[derive(Clone, Debug)]
pub struct Uploader {
    pub client: ClairoClient,
    pub transcoder: Option<Transcoder>,
}

/// Clairo's answer and the name the recording was sent under.
#[derive(Debug, Clone)]
pub struct Sent {
    pub meeting: Meeting,
    pub uploaded_as: String,
}

/// Why a recording was not sent (or not answered).
#[derive(Debug, Clone)]
pub enum SendError {
    /// Refused for good (by Clairo, or the conversion): goes to failed/.
    Rejected(Rejection),
    /// Worth another try later; `auth`: Clairo refused the key or the plan (401/403).
    Retry { error: String, auth: bool },
}

impl Uploader {
    /// Converts the recording if its plan says so, then sends it. With a store, the
    /// attempt is noted just before the request, so a crash mid-request is known later.
    pub async fn send(
        &self,
        prepared: &Prepared,
        store: Option<&Store>,
    ) -> Result<Sent, SendError> {
        let converted: Option<Transcoded> = match &prepared.plan {
            Plan::Direct(_) => None,
            Plan::Transcode(why) => Some(self.convert(prepared, why).await?),
        };
        // The converted copy is ours (written into our own directory, opened once); the
        // original is sent as checked, and its bytes hashed again on the way out.
        let (file, size, sha256, uploaded_as) = match &converted {
            Some(converted) => (
                converted.file.clone(),
                converted.size,
                None,
                webm_name(&prepared.file_name),
            ),
            None => (
                prepared.file.clone(),
                prepared.size,
                Some(prepared.sha256.clone()),
                prepared.file_name.clone(),
            ),
        };
        if let Some(store) = store {
            store
                .meeting_attempt(&prepared.sha256)
                .await
                .map_err(|error| SendError::Retry {
                    error: error.to_string(),
                    auth: false,
                })?;
        }
        let upload = MeetingUpload {
            file,
            size,
            sha256,
            file_name: uploaded_as.clone(),
            agent_id: prepared.agent_id.clone(),
            title: prepared.title.clone(),
        };
        match self.client.upload_meeting(&upload).await {
            Ok(meeting) => Ok(Sent {
                meeting,
                uploaded_as,
            }),
            Err(error) => Err(verdict(&error, prepared)),
        }
    }

    async fn convert(&self, prepared: &Prepared, why: &str) -> Result<Transcoded, SendError> {
        let Some(transcoder) = &self.transcoder else {
            return Err(SendError::Rejected(Rejection::new(
                format!("{why}, and it cannot be converted here"),
                "install ffmpeg and set `[meetings] transcode = \"auto\"`, or convert it yourself to webm/mp3/wav under 25 MB",
            )));
        };
        tracing::info!(file = %prepared.path.display(), reason = why, "Converting the recording to Opus/WebM with ffmpeg.");
        let converted = match transcoder.to_webm(&prepared.file, &prepared.sha256).await {
            Ok(converted) => converted,
            Err(TranscodeError::Failed(message)) => {
                return Err(SendError::Rejected(Rejection::new(
                    format!("{why}, and ffmpeg could not convert it ({message})"),
                    "check that the recording plays; convert it yourself to webm, mp3 or wav (under 25 MB) and drop the result here",
                )));
            }
            Err(error @ TranscodeError::Io(_)) => {
                return Err(SendError::Retry {
                    error: error.to_string(),
                    auth: false,
                });
            }
        };
        if converted.size > MAX_UPLOAD_BYTES {
            let length = converted
                .duration
                .map(|duration| format!("{} long", transcode::human_duration(duration)))
                .unwrap_or_else(|| "too long".to_owned());
            return Err(SendError::Rejected(Rejection::new(
                format!(
                    "the recording is {length}: even compressed to {} Opus it is {}, over Clairo's 25 MB limit",
                    transcode::BITRATE,
                    checks::megabytes(converted.size)
                ),
                format!(
                    "split it into parts of at most {} (e.g. `ffmpeg -i INPUT -f segment -segment_time {} -c copy part%02d.{}`) and drop the parts here",
                    transcode::human_duration(transcode::MAX_PART),
                    transcode::MAX_PART.as_secs(),
                    Path::new(&prepared.file_name)
                        .extension()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "webm".to_owned()),
                ),
            )));
        }
        tracing::info!(
            file = %prepared.path.display(),
            original_bytes = prepared.size,
            converted_bytes = converted.size,
            "Converted the recording."
        );
        Ok(converted)
    }
}

/// `call.m4a` → `call.webm`.
fn webm_name(file_name: &str) -> String {
    let stem = Path::new(file_name)
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{stem}.webm")
}

/// What an API error means for the recording.
fn verdict(error: &ClairoError, prepared: &Prepared) -> SendError {
    let retry = |auth| SendError::Retry {
        error: error.to_string(),
        auth,
    };
    let back = "then move the recording back into the drop folder";
    match error {
        ClairoError::BadRequest { message } => SendError::Rejected(Rejection::new(
            format!("Clairo refused the recording: {message}"),
            format!(
                "check that it plays, is under 25 MB and that agent {} is an active MEETING agent (see `clairo-sync agents`); {back}",
                prepared.agent_id
            ),
        )),
        ClairoError::NotFound { .. } => SendError::Rejected(Rejection::new(
            format!("Clairo does not know the agent {} (404)", prepared.agent_id),
            format!(
                "fix the folder's `agent` in the config (or the sidecar's agentId); `clairo-sync agents` lists the account's agents; {back}"
            ),
        )),
        ClairoError::Decode(message) => SendError::Rejected(Rejection::new(
            format!("Clairo accepted the upload but its answer could not be read ({message})"),
            format!(
                "the meeting probably exists in Clairo already: look there first; to send it again, {back}"
            ),
        )),
        ClairoError::ResponseTooLarge { .. } => SendError::Rejected(Rejection::new(
            format!("Clairo accepted the upload but its answer could not be read ({error})"),
            format!(
                "the meeting probably exists in Clairo already: look there first; to send it again, {back}"
            ),
        )),
        ClairoError::InvalidKey | ClairoError::PlanRequired => retry(true),
        ClairoError::RateLimited
        | ClairoError::Server { .. }
        | ClairoError::Transport(_)
        | ClairoError::File(_)
        | ClairoError::Config(_) => retry(false),
    }
}

/// What happened to a recording taken with a state database.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Sent now; Clairo's answer and the event are recorded.
    Uploaded(MeetingResult),
    /// This content was uploaded before (from `row.source_path`).
    AlreadyUploaded(MeetingRow),
    /// Another file with this content is being uploaded right now.
    Busy(MeetingRow),
    Rejected(Rejection),
    Retry {
        error: String,
        auth: bool,
    },
}

/// Claims, sends and records one prepared recording. The claim is written before the
/// request, so a crash mid-upload is retried at the next start (and logged as possibly
/// duplicated at Clairo, whose API has no idempotency key).
pub async fn process(
    context: &SourceContext,
    uploader: &Uploader,
    prepared: &Prepared,
) -> Result<Outcome, StoreError> {
    let claim = MeetingClaim {
        sha256: prepared.sha256.clone(),
        file_name: prepared.file_name.clone(),
        source_path: prepared.path.display().to_string(),
        agent_id: prepared.agent_id.clone(),
        title: prepared.title.clone(),
        size: prepared.size,
    };
    let claimant = context.claimant.as_ref();
    let mut claimed = context
        .store
        .claim_meeting_as(&claim, false, claimant)
        .await?;
    if let Claim::InProgress(row) = &claimed
        && !Path::new(&row.source_path).exists()
    {
        // The other copy is gone (moved away or deleted before its upload finished).
        claimed = context
            .store
            .claim_meeting_as(&claim, true, claimant)
            .await?;
    }
    match claimed {
        Claim::Done(row) => return Ok(Outcome::AlreadyUploaded(row)),
        Claim::InProgress(row) => return Ok(Outcome::Busy(row)),
        Claim::Upload { interrupted: true } => tracing::warn!(
            file = %prepared.path.display(),
            sha256 = %prepared.sha256,
            "An earlier upload of this recording was interrupted before Clairo answered (the daemon stopped mid-upload); \
             sending it again. Clairo may already have it (its API has no idempotency key), so the meeting may appear twice there."
        ),
        Claim::Upload { interrupted: false } => {}
    }
    match uploader.send(prepared, Some(&context.store)).await {
        Ok(sent) => {
            let result = result_of(&sent, prepared);
            let event = context.event(
                EventType::MeetingProcessed,
                &prepared.sha256,
                Some(&prepared.agent_id),
                event_data(
                    &result,
                    &prepared.agent_id,
                    &prepared.file_name,
                    &prepared.sha256,
                ),
            );
            let mut attempt = 1;
            let recorded = loop {
                match context
                    .store
                    .record_meeting(&prepared.sha256, &result, Some(&event))
                    .await
                {
                    Ok(recorded) => break recorded,
                    Err(error) if attempt < RECORD_ATTEMPTS => {
                        tracing::error!(%error, attempt, "Cannot record Clairo's answer for an uploaded recording; retrying.");
                        attempt += 1;
                        tokio::time::sleep(RECORD_RETRY_WAIT).await;
                    }
                    Err(error) => return Err(error),
                }
            };
            if recorded {
                context.emitted(&event);
            }
            Ok(Outcome::Uploaded(result))
        }
        Err(SendError::Rejected(rejection)) => {
            context
                .store
                .meeting_failed(&prepared.sha256, &rejection.to_string())
                .await?;
            Ok(Outcome::Rejected(rejection))
        }
        Err(SendError::Retry { error, auth }) => {
            context
                .store
                .meeting_will_retry(&prepared.sha256, &error)
                .await?;
            Ok(Outcome::Retry { error, auth })
        }
    }
}

/// Clairo's answer, as recorded.
pub fn result_of(sent: &Sent, prepared: &Prepared) -> MeetingResult {
    let meeting = &sent.meeting;
    MeetingResult {
        meeting_id: meeting.id.clone(),
        title: meeting
            .title
            .clone()
            .filter(|title| !title.is_empty())
            .unwrap_or_else(|| prepared.title.clone()),
        transcript: meeting.transcript.clone(),
        summary: meeting.summary.clone(),
        duration_sec: meeting.duration_sec,
        uploaded_as: sent.uploaded_as.clone(),
        raw: meeting.raw.clone(),
    }
}

/// The `meeting.processed` event's `data` (the README lists the event), from Clairo's
/// answer as recorded: made once after the upload, and again by a replay whose event was
/// pruned (src/sources/rebuild.rs).
pub fn event_data(result: &MeetingResult, agent_id: &str, file_name: &str, sha256: &str) -> Value {
    // The server's own number (2700, not 2700.0) when it sent one.
    let duration = result
        .raw
        .get("durationSec")
        .cloned()
        .unwrap_or_else(|| json!(result.duration_sec));
    json!({
        "id": result.meeting_id,
        "title": result.title,
        "transcript": result.transcript,
        "summary": result.summary,
        "durationSec": duration,
        "agentId": agent_id,
        "fileName": file_name,
        "sha256": sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_converted_recording_is_sent_as_webm_under_its_own_stem() {
        assert_eq!(webm_name("call.m4a"), "call.webm");
        assert_eq!(webm_name("long.meeting.wav"), "long.meeting.webm");
    }

    #[test]
    fn hashing_streams_and_counts_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        std::fs::write(&path, vec![7u8; HASH_BUFFER_BYTES * 2 + 5]).unwrap();
        let (hex, size) = hash_file(&File::open(&path).unwrap()).unwrap();
        assert_eq!(size, (HASH_BUFFER_BYTES * 2 + 5) as u64);
        let expected: String = Sha256::digest(std::fs::read(&path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
    }
}
