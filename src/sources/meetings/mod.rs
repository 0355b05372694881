//! Meetings from drop folders (docs/operations.md): each `[[meetings.folders]]` is watched;
//! a recording that is complete (closed after writing or moved in, then unchanged for
//! `settle`) is checked, hashed, uploaded to `POST /meetings` once per content, recorded
//! with its `meeting.processed` event in one transaction, and moved to processed/ — or,
//! when it cannot be uploaded, to failed/ with a `<name>.error.txt` saying why.
//!
//! Anyone who may write the folder is untrusted: only regular files are taken. A link,
//! FIFO, socket or device is moved to failed/ as it is (never followed, never opened),
//! a directory named like a recording is refused once in the log, and a folder whose
//! processed/ or failed/ is a link or not a directory takes nothing until that is fixed.
//!
//! Outcomes counted in `clairo_sync_meeting_uploads_total{outcome}`:
//! `uploaded` (sent and answered), `duplicate` (content already uploaded; moved without
//! a request), `rejected` (moved to failed/: the checks, the sidecar, the conversion or
//! Clairo refused it), `failed` (an attempt that will be retried: 5xx, transport,
//! credentials, the state database).

pub mod checks;
pub mod files;
mod folder;
mod handle;
mod sidecar;
mod state;
pub mod transcode;
pub mod upload;
mod watcher;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::{Config, Transcode};
use crate::metrics::OutcomeLabels;
use crate::shutdown::CancellationToken;

use super::SourceContext;
use checks::Conversion;
use folder::FolderLoop;
use transcode::Transcoder;
use upload::Uploader;

pub use folder::SAFETY_RESCAN;
pub use state::OPEN_WRITER_GRACE;

/// The metric's outcomes: a bounded set.
pub(super) const UPLOADED: &str = "uploaded";
pub(super) const DUPLICATE: &str = "duplicate";
pub(super) const REJECTED: &str = "rejected";
pub(super) const FAILED: &str = "failed";

/// Watches every configured folder until `shutdown` is cancelled. Returns at once when
/// none is configured.
pub async fn run(context: SourceContext, config: Arc<Config>, shutdown: CancellationToken) {
    let meetings = &config.meetings;
    if meetings.folders.is_empty() {
        return;
    }
    let (conversion, transcoder) = converter(meetings.transcode, temp_dir(&config)).await;
    if let Some(transcoder) = &transcoder {
        transcoder.clear_leftovers();
    }
    match context.store.interrupted_meetings().await {
        Ok(rows) => {
            for row in rows {
                tracing::warn!(
                    file = %row.source_path,
                    sha256 = %row.sha256,
                    "An upload was interrupted before Clairo answered (the daemon stopped mid-upload); it is sent again when the file is found in a drop folder, and may then appear twice in Clairo."
                );
            }
        }
        Err(error) => tracing::error!(%error, "Cannot list interrupted uploads."),
    }
    let shared = Arc::new(Shared {
        uploader: Uploader {
            client: context.client.clone(),
            transcoder,
        },
        context,
        conversion,
        grace: config.delivery.shutdown_timeout,
    });
    let mut folders = JoinSet::new();
    for (index, folder) in meetings.folders.iter().enumerate() {
        let folder = FolderLoop::new(index, folder, shared.clone());
        folders.spawn(folder.run(shutdown.clone()));
    }
    while folders.join_next().await.is_some() {}
}

/// Where converted copies are written: beside the state database (a directory the
/// service may write to), else the system's temporary directory. With the state in
/// PostgreSQL `state.path` still names that local directory (its default is in the
/// service's `StateDirectory=`).
pub fn temp_dir(config: &Config) -> PathBuf {
    match config.state.path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join("transcode"),
        _ => std::env::temp_dir(),
    }
}

/// Whether oversize and other-format recordings can be converted, and the converter;
/// logs what `transcode = "auto"` found.
pub async fn converter(mode: Transcode, temp_dir: PathBuf) -> (Conversion, Option<Transcoder>) {
    match mode {
        Transcode::Off => (Conversion::Off, None),
        Transcode::Auto => match Transcoder::detect(temp_dir).await {
            Ok(transcoder) => {
                tracing::info!(ffmpeg = %transcoder.ffmpeg().display(), "Oversize and other-format recordings are converted to Opus/WebM.");
                (Conversion::Available, Some(transcoder))
            }
            Err(reason) => {
                tracing::warn!(
                    %reason,
                    "[meetings] transcode = \"auto\", but ffmpeg cannot be used: oversize and other-format recordings go to failed/. Install ffmpeg, then restart clairo-sync."
                );
                (Conversion::NoFfmpeg, None)
            }
        },
    }
}

/// What every folder and its recordings' tasks share. The auth gate is the process's
/// (`context.auth`): a refusal met here pauses the pollers too, and turns /readyz false.
struct Shared {
    context: SourceContext,
    uploader: Uploader,
    conversion: Conversion,
    /// How long work in flight may finish at shutdown before it is abandoned (a request
    /// abandoned mid-way is retried at the next start).
    grace: Duration,
}

impl Shared {
    /// Counts one outcome in `clairo_sync_meeting_uploads_total`.
    fn count(&self, outcome: &str) {
        self.context
            .metrics
            .meeting_uploads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
