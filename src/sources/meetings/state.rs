//! Where one file of a drop folder stands, from first sight to done: its stamp (unchanged
//! for `settle` means its writer is done), its state, and how long it waits after a
//! failed attempt. Bookkeeping and `lstat`s only: the folder loop (folder.rs) watches,
//! waits and starts the uploads.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clairo_connectors::retry::{self, Backoff};

use super::checks::{self, EntryKind};

/// A file created or written to and never closed (no close-after-write seen) is taken
/// anyway once it has been unchanged this long: its writer may hold it open for good,
/// and an unreported overflow may have eaten the close.
pub const OPEN_WRITER_GRACE: Duration = Duration::from_secs(5 * 60);

/// The first wait after a failed attempt (5xx, transport); it doubles up to [`RETRY_CAP`],
/// ±[`RETRY_JITTER`], so a Clairo outage is not hammered by every file at once.
const RETRY_FIRST: Duration = Duration::from_secs(30);
pub(super) const RETRY_CAP: Duration = Duration::from_secs(30 * 60);
const RETRY_JITTER: f64 = 0.2;

/// A file whose content another file is uploading right now checks back after this long.
pub(super) const BUSY_RECHECK: Duration = Duration::from_secs(5);

/// An entry's kind, size and modification time, from `lstat` (a link is not followed):
/// unchanged for `settle` means the writer is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) kind: EntryKind,
    size: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// The entry's stamp; `None` when it is gone.
    pub(super) fn of(path: &Path) -> Option<Self> {
        let metadata = path.symlink_metadata().ok()?;
        Some(Self {
            kind: EntryKind::of(metadata.file_type()),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }

    /// Not a regular file: refused at once (nothing is written to it that settling would
    /// wait for, and no close-after-write ever comes).
    pub(super) fn refused_at_once(self) -> bool {
        self.kind != EntryKind::Regular
    }
}

/// Where one file of the folder stands. A file is in at most one state, so it is
/// handled by one task at a time however many events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileState {
    /// Seen; waiting until it has been unchanged for `settle` (and closed).
    Settling {
        seen: Stamp,
        since: Instant,
        writing: bool,
    },
    /// Ready; waiting for its turn.
    Queued,
    /// Being checked, uploaded or moved. `again`: the watcher reported the name anew
    /// meanwhile (a new file dropped under the same name), so look again afterwards.
    Running { again: bool },
    /// Left in place after a failed attempt; looked at again after `until`.
    Waiting { until: Instant },
    /// Not a file that can be taken or moved (a directory named like a recording): said
    /// once, then left alone until it is replaced by something else.
    Refused { kind: EntryKind },
}

impl FileState {
    /// Seen as `seen` at `since`; settles from there.
    pub(super) fn settling(seen: Stamp, since: Instant, writing: bool) -> Self {
        Self::Settling {
            seen,
            since,
            writing,
        }
    }
}

/// Whether an entry is looked at: anything but a subfolder, and a subfolder named like a
/// recording (to say why it is not taken).
pub(super) fn is_listed(path: &Path, kind: EntryKind) -> bool {
    kind != EntryKind::Directory || path.file_name().is_some_and(checks::looks_like_recording)
}

/// `RETRY_FIRST`, doubling, capped, ±20% so failed files do not all retry together.
pub(super) fn backoff(failures: u32) -> Duration {
    let step = Backoff::new(RETRY_FIRST, RETRY_CAP).step(failures.saturating_sub(1));
    retry::jittered(step, RETRY_JITTER)
}

/// The candidate entries of a folder with their stamps: every kind, so that links, FIFOs
/// and devices are refused with a reason (dot files, temporaries, sidecars, error files,
/// `targets` and subfolders not named like a recording are left out).
pub(super) fn list(folder: &Path, targets: &[PathBuf]) -> std::io::Result<Vec<(PathBuf, Stamp)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        if !checks::is_candidate_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        if targets.contains(&path) {
            continue;
        }
        if let Some(stamp) = Stamp::of(&path)
            && is_listed(&path, stamp.kind)
        {
            files.push((path, stamp));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        for _ in 0..20 {
            let first = backoff(1);
            assert!(first >= RETRY_FIRST.mul_f64(0.8) && first <= RETRY_FIRST.mul_f64(1.2));
            assert!(backoff(40) <= RETRY_CAP.mul_f64(1.2));
        }
        assert!(backoff(3) >= RETRY_FIRST.mul_f64(4.0 * 0.8));
    }
}
