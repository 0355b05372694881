//! One drop folder's notify (inotify) watcher, reduced to what the folder loop needs:
//! "this file may be ready" (and whether a writer still has it open), or "list the
//! folder again" (the kernel's queue overflowed, the watcher failed, the folder itself
//! was moved or deleted). Non-recursive: processed/ and failed/ inside it are not watched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc};

use super::checks;

/// Signals waiting for the folder loop. Past this, signals are dropped and a rescan is
/// requested instead, so a burst of events cannot grow memory.
pub const SIGNAL_CAPACITY: usize = 1024;

/// A file in the folder was created, written, closed or moved in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub path: PathBuf,
    /// Created or written to, and not closed since: a writer may still have it open.
    /// Closed after writing, or renamed into the folder: complete as far as we can tell.
    pub writing: bool,
}

/// Requests from the watcher's thread for the folder to be listed again.
#[derive(Debug, Default)]
pub struct Rescan {
    wanted: AtomicBool,
    /// Events may have been lost: what was learnt about open writers is stale.
    lost: AtomicBool,
    /// The watch itself is no longer valid (the folder was moved or deleted).
    rewatch: AtomicBool,
    notify: Notify,
}

impl Rescan {
    pub fn request(&self) {
        self.wanted.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn request_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.request();
    }

    fn request_rewatch(&self) {
        self.rewatch.store(true, Ordering::SeqCst);
        self.request();
    }

    /// Waits until a rescan is requested.
    pub async fn requested(&self) {
        loop {
            if self.wanted.swap(false, Ordering::SeqCst) {
                return;
            }
            self.notify.notified().await;
        }
    }

    pub fn take_lost(&self) -> bool {
        self.lost.swap(false, Ordering::SeqCst)
    }

    pub fn take_rewatch(&self) -> bool {
        self.rewatch.swap(false, Ordering::SeqCst)
    }
}

/// Starts watching `folder`; the returned watcher stops when dropped.
pub fn watch(
    folder: &Path,
    signals: mpsc::Sender<Changed>,
    rescan: Arc<Rescan>,
) -> notify::Result<RecommendedWatcher> {
    let root = folder.to_path_buf();
    // Writes arrive as a stream of modify events: forward the first of a run only.
    let mut last_written: Option<PathBuf> = None;
    let handler = move |result: notify::Result<notify::Event>| {
        let event = match result {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(folder = %root.display(), %error, "The folder watcher reported an error; listing the folder again.");
                rescan.request_lost();
                return;
            }
        };
        if event.need_rescan() {
            tracing::warn!(folder = %root.display(), "The kernel's event queue overflowed; listing the folder again.");
            rescan.request_lost();
            return;
        }
        let writing = match event.kind {
            EventKind::Create(CreateKind::File | CreateKind::Any) => true,
            // A directory named like a recording is refused with a reason (and processed/
            // or failed/ made anew is looked at); links, FIFOs and devices arrive as `File`.
            EventKind::Create(CreateKind::Folder | CreateKind::Other) => false,
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
            // `Both` carries [from, to]: the last path is where the file is now.
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => false,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => {
                if event.paths.iter().any(|path| path == &root) {
                    tracing::warn!(folder = %root.display(), "The drop folder itself was moved or deleted; watching it again when it is back.");
                    rescan.request_rewatch();
                }
                return;
            }
            _ => return,
        };
        let Some(path) = event.paths.last() else {
            return;
        };
        if path.parent() != Some(root.as_path())
            || !path.file_name().is_some_and(checks::is_candidate_name)
        {
            return;
        }
        let modify = matches!(
            event.kind,
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
        );
        if modify && last_written.as_ref() == Some(path) {
            return;
        }
        last_written = modify.then(|| path.clone());
        let changed = Changed {
            path: path.clone(),
            writing,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = signals.try_send(changed) {
            rescan.request_lost();
        }
    };
    let mut watcher = notify::recommended_watcher(handler)?;
    watcher.watch(folder, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
