//! One recording of a drop folder, once it has settled: prepare (checks, sidecar,
//! sha256), then claim, send, record, and move it to processed/ or failed/. What it
//! concludes goes back to the folder loop as a [`Verdict`].

use std::path::Path;
use std::time::Instant;

use crate::auth::AUTH_BACKOFF;

use super::checks::{EntryKind, Rejection};
use super::folder::Folder;
use super::upload::{self, Outcome, PrepareError, Wanted};
use super::{DUPLICATE, FAILED, REJECTED, Shared, UPLOADED, files};

/// What a file's task concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Moved (or gone): forget it.
    Finished,
    /// Left in place; try again after a backoff.
    Retry,
    /// Left in place until Clairo's credentials pause ends.
    Paused(Instant),
    /// Another file with the same content is being uploaded.
    Busy,
    /// It changed while being read: let it settle again.
    Changed,
    /// Refused and left where it is (said once).
    Refused(EntryKind),
}

/// One recording: prepare (checks, sidecar, sha256), then claim, send, record, move.
pub(super) async fn handle(shared: &Shared, folder: &Folder, path: &Path) -> Verdict {
    let wanted_path = path.to_path_buf();
    let agent = folder.agent.clone();
    let conversion = shared.conversion;
    let prepared = tokio::task::spawn_blocking(move || {
        let wanted = Wanted {
            agent_id: &agent,
            title: None,
            sidecar_agent: true,
        };
        upload::prepare(&wanted_path, &wanted, conversion)
    })
    .await;
    let prepared = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(PrepareError::Gone)) => return Verdict::Finished,
        Ok(Err(PrepareError::NotAFile {
            kind,
            rejection,
            sidecar,
        })) => {
            if kind.moved_when_refused() {
                return reject(shared, folder, path, sidecar.as_deref(), &rejection).await;
            }
            tracing::warn!(
                entry = %path.display(),
                reason = %rejection,
                "Not a recording file; it is left where it is."
            );
            return Verdict::Refused(kind);
        }
        Ok(Err(PrepareError::Changed)) => return Verdict::Changed,
        Ok(Err(PrepareError::Rejected { rejection, sidecar })) => {
            return reject(shared, folder, path, sidecar.as_deref(), &rejection).await;
        }
        Ok(Err(PrepareError::Io(error))) => {
            tracing::warn!(file = %path.display(), %error, "Cannot read the recording.");
            shared.count(FAILED);
            return Verdict::Retry;
        }
        Err(error) => {
            tracing::error!(file = %path.display(), %error, "Checking the recording failed.");
            shared.count(FAILED);
            return Verdict::Retry;
        }
    };
    let outcome = match upload::process(&shared.context, &shared.uploader, &prepared).await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(file = %path.display(), %error, "The state database failed while handling a recording; it stays in the drop folder.");
            shared.count(FAILED);
            return Verdict::Retry;
        }
    };
    match outcome {
        Outcome::Uploaded(result) => {
            if shared.context.auth.accept() {
                tracing::info!("Clairo accepts the credentials again; uploads resume.");
            }
            shared.count(UPLOADED);
            tracing::info!(
                file = %path.display(),
                meeting_id = %result.meeting_id,
                sha256 = %prepared.sha256,
                agent = %prepared.agent_id,
                title = %result.title,
                "Uploaded the recording."
            );
            finish(shared, folder, &prepared).await
        }
        Outcome::AlreadyUploaded(row) => {
            let meeting_id = row.meeting_id.as_deref().unwrap_or("-");
            if Path::new(&row.source_path) == path {
                tracing::info!(
                    file = %path.display(),
                    meeting_id,
                    "This recording was uploaded before but not moved (the daemon stopped right after the upload); moving it to processed/ without uploading it again."
                );
            } else {
                shared.count(DUPLICATE);
                tracing::info!(
                    file = %path.display(),
                    duplicates = %row.source_path,
                    meeting_id,
                    sha256 = %prepared.sha256,
                    "Same content as a recording uploaded before; not uploading it again, moving it to processed/."
                );
            }
            finish(shared, folder, &prepared).await
        }
        Outcome::Busy(row) => {
            tracing::info!(
                file = %path.display(),
                same_as = %row.source_path,
                "Same content as a recording being uploaded right now; it waits for that upload."
            );
            Verdict::Busy
        }
        Outcome::Rejected(rejection) => {
            reject(
                shared,
                folder,
                path,
                prepared.sidecar.as_deref(),
                &rejection,
            )
            .await
        }
        Outcome::Retry { error, auth: true } => {
            shared.count(FAILED);
            let (until, first) = shared.context.auth.refuse(error.clone());
            if first {
                tracing::error!(
                    file = %path.display(),
                    %error,
                    pause_s = AUTH_BACKOFF.as_secs(),
                    "Clairo refused the credentials; recordings stay in their drop folders and uploads pause. Fix the key or the plan, then restart or reload clairo-sync."
                );
            }
            Verdict::Paused(until)
        }
        Outcome::Retry { error, auth: false } => {
            shared.count(FAILED);
            tracing::warn!(file = %path.display(), %error, "The upload failed; the recording stays in the drop folder.");
            Verdict::Retry
        }
    }
}

/// Moves an uploaded (or duplicate) recording and its sidecar to processed/.
async fn finish(shared: &Shared, folder: &Folder, prepared: &upload::Prepared) -> Verdict {
    let (dir, file, sidecar) = (
        folder.processed.clone(),
        prepared.path.clone(),
        prepared.sidecar.clone(),
    );
    let moved =
        tokio::task::spawn_blocking(move || files::move_into(&dir, &file, sidecar.as_deref()))
            .await;
    match moved {
        Ok(Ok(moved)) => {
            tracing::debug!(file = %prepared.path.display(), moved_to = %moved.file.display(), "Moved the recording to processed/.");
            if let Err(error) = shared
                .context
                .store
                .meeting_moved(&prepared.sha256, &moved.file.display().to_string())
                .await
            {
                tracing::warn!(%error, "Cannot record where the recording was moved.");
            }
            Verdict::Finished
        }
        Ok(Err(error)) => {
            tracing::error!(
                file = %prepared.path.display(),
                processed = %folder.processed.display(),
                %error,
                "Cannot move the recording to processed/; it stays in the drop folder and is moved (not uploaded again) on the next try. Check the folder's permissions."
            );
            Verdict::Retry
        }
        Err(error) => {
            tracing::error!(file = %prepared.path.display(), %error, "Moving the recording failed.");
            Verdict::Retry
        }
    }
}

/// Moves a recording that cannot be uploaded to failed/, with `<name>.error.txt`.
async fn reject(
    shared: &Shared,
    folder: &Folder,
    path: &Path,
    sidecar: Option<&Path>,
    rejection: &Rejection,
) -> Verdict {
    let (dir, file, sidecar, root, why) = (
        folder.failed.clone(),
        path.to_path_buf(),
        sidecar.map(Path::to_path_buf),
        folder.path.clone(),
        rejection.clone(),
    );
    let moved = tokio::task::spawn_blocking(move || {
        let moved = files::move_into(&dir, &file, sidecar.as_deref())?;
        let error_file = files::write_error_file(&moved.file, &file, &root, &why);
        Ok::<_, std::io::Error>((moved, error_file))
    })
    .await;
    match moved {
        Ok(Ok((moved, error_file))) => {
            shared.count(REJECTED);
            tracing::warn!(
                file = %path.display(),
                moved_to = %moved.file.display(),
                reason = %rejection,
                "The recording cannot be uploaded; moved it to failed/ with an explanation."
            );
            if let Err(error) = error_file {
                tracing::warn!(file = %moved.file.display(), %error, "Cannot write the .error.txt beside the failed recording.");
            }
            Verdict::Finished
        }
        Ok(Err(error)) => {
            tracing::error!(
                file = %path.display(),
                failed = %folder.failed.display(),
                reason = %rejection,
                %error,
                "The recording cannot be uploaded, and moving it to failed/ failed too; it stays in the drop folder. Check the folder's permissions."
            );
            Verdict::Retry
        }
        Err(error) => {
            tracing::error!(file = %path.display(), %error, "Moving the recording to failed/ failed.");
            Verdict::Retry
        }
    }
}
