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
pub mod transcode;
pub mod upload;
mod watcher;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clairo_connectors::retry::{self, Backoff};
use notify::RecommendedWatcher;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, FolderConfig, Transcode, WatchMode};
use crate::metrics::OutcomeLabels;

use super::SourceContext;
use checks::{Conversion, EntryKind, Rejection};
use transcode::Transcoder;
use upload::{Outcome, PrepareError, Uploader, Wanted};

/// A watched folder is listed this often anyway: inotify can miss a file (an overflow
/// it did not report, a write through another mount of the same share).
pub const SAFETY_RESCAN: Duration = Duration::from_secs(60);

/// A file created or written to and never closed (no close-after-write seen) is taken
/// anyway once it has been unchanged this long: its writer may hold it open for good,
/// and an unreported overflow may have eaten the close.
pub const OPEN_WRITER_GRACE: Duration = Duration::from_secs(5 * 60);

/// The first wait after a failed attempt (5xx, transport); it doubles up to [`RETRY_CAP`],
/// ±[`RETRY_JITTER`], so a Clairo outage is not hammered by every file at once.
const RETRY_FIRST: Duration = Duration::from_secs(30);
const RETRY_CAP: Duration = Duration::from_secs(30 * 60);
const RETRY_JITTER: f64 = 0.2;

/// A folder that takes nothing (its processed/ or failed/ cannot be used) looks again this
/// often, so fixing it takes effect soon without an event to say so.
const BLOCKED_RECHECK: Duration = Duration::from_secs(5);

/// A file whose content another file is uploading right now checks back after this long.
const BUSY_RECHECK: Duration = Duration::from_secs(5);

/// After Clairo refused the key or the plan (401/403), uploads pause this long (the same
/// pause as the pollers'); the files stay where they are.
const AUTH_PAUSE: Duration = crate::daemon::AUTH_BACKOFF;

/// The metric's outcomes: a bounded set.
const UPLOADED: &str = "uploaded";
const DUPLICATE: &str = "duplicate";
const REJECTED: &str = "rejected";
const FAILED: &str = "failed";

/// Watches every configured folder until `shutdown` turns true. Returns at once when
/// none is configured.
pub async fn run(context: SourceContext, config: Arc<Config>, shutdown: watch::Receiver<bool>) {
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
        auth: AuthPause::default(),
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
/// service may write to), else the system's temporary directory.
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

/// What every folder shares.
struct Shared {
    context: SourceContext,
    uploader: Uploader,
    conversion: Conversion,
    auth: AuthPause,
    /// How long work in flight may finish at shutdown before it is abandoned (a request
    /// abandoned mid-way is retried at the next start).
    grace: Duration,
}

impl Shared {
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

/// Uploads pause after a 401/403, and say so once (not for every file).
#[derive(Default)]
struct AuthPause {
    state: Mutex<(Option<Instant>, bool)>,
}

impl AuthPause {
    /// Until when uploads wait, if they do.
    fn until(&self) -> Option<Instant> {
        let state = self.state.lock().expect("auth pause");
        state.0.filter(|until| *until > Instant::now())
    }

    /// Starts a pause; true the first time since the last success (log it then).
    fn pause(&self) -> (Instant, bool) {
        let mut state = self.state.lock().expect("auth pause");
        let until = Instant::now() + AUTH_PAUSE;
        let first = !state.1;
        *state = (Some(until), true);
        (until, first)
    }

    /// Clairo accepted an upload; true when it had refused the credentials before.
    fn clear(&self) -> bool {
        let mut state = self.state.lock().expect("auth pause");
        let was = state.1;
        *state = (None, false);
        was
    }
}

/// An entry's kind, size and modification time, from `lstat` (a link is not followed):
/// unchanged for `settle` means the writer is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    kind: EntryKind,
    size: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// The entry's stamp; `None` when it is gone.
    fn of(path: &Path) -> Option<Self> {
        let metadata = path.symlink_metadata().ok()?;
        Some(Self {
            kind: EntryKind::of(metadata.file_type()),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }

    /// Not a regular file: refused at once (nothing is written to it that settling would
    /// wait for, and no close-after-write ever comes).
    fn refused_at_once(self) -> bool {
        self.kind != EntryKind::Regular
    }
}

/// Where one file of the folder stands. A file is in at most one state, so it is
/// handled by one task at a time however many events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
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

/// What a file's task concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
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

/// The fixed facts of a folder, shared with its tasks.
#[derive(Debug)]
struct Folder {
    /// `meetings.folders[0]`, for logs.
    key: String,
    path: PathBuf,
    processed: PathBuf,
    failed: PathBuf,
    agent: String,
    settle: Duration,
    mode: WatchMode,
    poll_interval: Duration,
}

struct FolderLoop {
    folder: Arc<Folder>,
    shared: Arc<Shared>,
    files: HashMap<PathBuf, FileState>,
    queue: VecDeque<PathBuf>,
    /// Failed attempts in a row, per file, for the backoff.
    failures: HashMap<PathBuf, u32>,
    watcher: Option<RecommendedWatcher>,
    /// Whether the missing folder / a failing watch was reported (say it once).
    missing_reported: bool,
    watch_failed_reported: bool,
    /// Why nothing is taken from the folder now (processed/ or failed/ cannot be used);
    /// said once when it starts, once when it ends.
    blocked: Option<String>,
}

impl FolderLoop {
    fn new(index: usize, config: &FolderConfig, shared: Arc<Shared>) -> Self {
        Self {
            folder: Arc::new(Folder {
                key: format!("meetings.folders[{index}]"),
                path: config.path.clone(),
                processed: config.processed_dir(),
                failed: config.failed_dir(),
                agent: config.agent.clone(),
                settle: config.settle,
                mode: config.watch,
                poll_interval: config.poll_interval,
            }),
            shared,
            files: HashMap::new(),
            queue: VecDeque::new(),
            failures: HashMap::new(),
            watcher: None,
            missing_reported: false,
            watch_failed_reported: false,
            blocked: None,
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (sender, mut signals) = mpsc::channel(watcher::SIGNAL_CAPACITY);
        let rescan = Arc::new(watcher::Rescan::default());
        let mut tasks: JoinSet<(PathBuf, Verdict)> = JoinSet::new();
        // Often enough to notice `settle` passing without overshooting it much.
        let step =
            (self.folder.settle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(step);
        // Skip: a stalled loop catches up with one check, not a burst of them.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tracing::info!(
            folder = %self.folder.path.display(),
            agent = %self.folder.agent,
            watch = ?self.folder.mode,
            "Watching the drop folder."
        );
        // The start-up scan: files that arrived while the daemon was down.
        let mut next_scan = self.refresh(&sender, &rescan).await;
        loop {
            tokio::select! {
                () = stopped(&mut shutdown) => break,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => match joined {
                    Ok((path, verdict)) => self.finished(path, verdict),
                    Err(error) => tracing::error!(folder = %self.folder.path.display(), %error, "A recording's task failed."),
                },
                Some(changed) = signals.recv() => self.changed(changed),
                _ = rescan.requested() => {
                    if rescan.take_lost() {
                        self.forget_writers();
                    }
                    if rescan.take_rewatch() {
                        self.watcher = None;
                    }
                    next_scan = self.refresh(&sender, &rescan).await;
                }
                _ = tokio::time::sleep_until(next_scan.into()) => next_scan = self.refresh(&sender, &rescan).await,
                _ = ticks.tick(), if self.needs_ticks() => self.check().await,
            }
            self.start_next(&mut tasks);
        }
        self.watcher = None;
        self.set_blocked(None);
        if !tasks.is_empty() {
            tracing::info!(
                folder = %self.folder.path.display(),
                grace_s = self.shared.grace.as_secs(),
                "Stopping: letting the recording in progress finish."
            );
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(self.shared.grace, drain)
                .await
                .is_err()
            {
                tracing::warn!(
                    folder = %self.folder.path.display(),
                    "Stopped during an upload; it is sent again at the next start (and may then appear twice in Clairo)."
                );
                tasks.abort_all();
            }
        }
    }

    /// (Re)establishes the watch and lists the folder; returns when to list it next.
    async fn refresh(
        &mut self,
        sender: &mpsc::Sender<watcher::Changed>,
        rescan: &Arc<watcher::Rescan>,
    ) -> Instant {
        let folder = self.folder.clone();
        if !folder.path.is_dir() {
            if !self.missing_reported {
                tracing::error!(
                    folder = %folder.path.display(),
                    key = %format!("{}.path", folder.key),
                    "The drop folder does not exist (or is not a directory); create it, mount it or fix the path. Checking again every few seconds."
                );
                self.missing_reported = true;
            }
            self.watcher = None;
            return Instant::now()
                + SAFETY_RESCAN.min(folder.poll_interval.max(Duration::from_secs(5)));
        }
        if self.missing_reported {
            tracing::info!(folder = %folder.path.display(), "The drop folder is there now.");
            self.missing_reported = false;
        }
        if folder.mode == WatchMode::Notify && self.watcher.is_none() {
            // Watch first, then list: nothing can arrive unseen in between.
            match watcher::watch(&folder.path, sender.clone(), rescan.clone()) {
                Ok(watcher) => {
                    self.watcher = Some(watcher);
                    self.watch_failed_reported = false;
                }
                Err(error) => {
                    if !self.watch_failed_reported {
                        tracing::warn!(
                            folder = %folder.path.display(),
                            %error,
                            poll_interval_s = folder.poll_interval.as_secs_f64(),
                            "Cannot watch the drop folder (inotify limits? raise fs.inotify.max_user_watches); listing it every poll_interval instead."
                        );
                        self.watch_failed_reported = true;
                    }
                }
            }
        }
        self.check_targets();
        self.scan().await;
        let every = match (folder.mode, &self.watcher) {
            (WatchMode::Notify, Some(_)) => SAFETY_RESCAN,
            _ => folder.poll_interval,
        };
        if self.blocked.is_some() {
            return Instant::now() + every.min(BLOCKED_RECHECK);
        }
        Instant::now() + every
    }

    /// Looks at processed/ and failed/: a link or a non-directory there blocks the folder
    /// (nothing is uploaded that could not be moved afterwards).
    fn check_targets(&mut self) {
        let problem = [&self.folder.processed, &self.folder.failed]
            .into_iter()
            .filter_map(|dir| files::target_problem(dir))
            .collect::<Vec<_>>();
        self.set_blocked((!problem.is_empty()).then(|| problem.join("; ")));
    }

    fn set_blocked(&mut self, problem: Option<String>) {
        if problem == self.blocked {
            return;
        }
        let gauge = &self.shared.context.metrics.meeting_folders_blocked;
        match (&self.blocked, &problem) {
            (None, Some(_)) => {
                gauge.inc();
            }
            (Some(_), None) => {
                gauge.dec();
            }
            _ => {}
        }
        match &problem {
            Some(problem) => tracing::error!(
                folder = %self.folder.path.display(),
                key = %self.folder.key,
                "{problem}. The recordings stay where they are."
            ),
            None => tracing::info!(
                folder = %self.folder.path.display(),
                "processed/ and failed/ are usable again; taking recordings from the drop folder."
            ),
        }
        self.blocked = problem;
    }

    /// processed/ and failed/ (when inside the folder) are not recordings.
    fn is_target(&self, path: &Path) -> bool {
        path == self.folder.processed || path == self.folder.failed
    }

    /// Lists the folder: new files start settling, files due for another try too, and
    /// files no longer there are forgotten.
    async fn scan(&mut self) {
        let path = self.folder.path.clone();
        let targets = [self.folder.processed.clone(), self.folder.failed.clone()];
        let listed = tokio::task::spawn_blocking(move || list(&path, &targets)).await;
        let listed = match listed {
            Ok(Ok(listed)) => listed,
            Ok(Err(error)) => {
                tracing::warn!(folder = %self.folder.path.display(), %error, "Cannot list the drop folder; trying again later.");
                return;
            }
            Err(error) => {
                tracing::error!(folder = %self.folder.path.display(), %error, "Listing the drop folder failed.");
                return;
            }
        };
        let now = Instant::now();
        let present: std::collections::HashSet<&PathBuf> =
            listed.iter().map(|(path, _)| path).collect();
        self.files.retain(|path, state| {
            matches!(state, FileState::Running { .. } | FileState::Queued) || present.contains(path)
        });
        self.failures.retain(|path, _| present.contains(path));
        for (path, stamp) in &listed {
            match self.files.get(path) {
                None => {
                    let state = if stamp.refused_at_once() {
                        self.resettled(*stamp, now)
                    } else {
                        FileState::Settling {
                            seen: *stamp,
                            since: now,
                            writing: false,
                        }
                    };
                    self.files.insert(path.clone(), state);
                }
                Some(FileState::Waiting { until }) if *until <= now => {
                    self.files.insert(path.clone(), self.resettled(*stamp, now));
                }
                // Refused as one kind, now another (the directory became a file…).
                Some(FileState::Refused { kind }) if *kind != stamp.kind => {
                    self.files.insert(path.clone(), self.resettled(*stamp, now));
                }
                Some(_) => {}
            }
        }
    }

    /// A file due for another try: taken at once if unchanged since it was stamped.
    fn resettled(&self, stamp: Stamp, now: Instant) -> FileState {
        FileState::Settling {
            seen: stamp,
            since: now.checked_sub(self.folder.settle).unwrap_or(now),
            writing: false,
        }
    }

    /// The watcher saw a file change.
    fn changed(&mut self, changed: watcher::Changed) {
        let now = Instant::now();
        if self.is_target(&changed.path) {
            // processed/ or failed/ made, removed or replaced: look at them again.
            self.check_targets();
            return;
        }
        if let Some(FileState::Running { again }) = self.files.get_mut(&changed.path) {
            *again = true;
            return;
        }
        let Some(stamp) = Stamp::of(&changed.path) else {
            return;
        };
        if !is_listed(&changed.path, stamp.kind) {
            return;
        }
        match self.files.get_mut(&changed.path) {
            Some(FileState::Refused { kind }) if *kind == stamp.kind => {}
            Some(FileState::Settling { writing, since, .. }) if !stamp.refused_at_once() => {
                *writing = changed.writing;
                *since = now;
            }
            // Queued, waiting or new: (re)start settling from what the file is now.
            _ => {
                let state = if stamp.refused_at_once() {
                    self.resettled(stamp, now)
                } else {
                    FileState::Settling {
                        seen: stamp,
                        since: now,
                        writing: changed.writing,
                    }
                };
                self.files.insert(changed.path, state);
            }
        }
    }

    /// Events were lost: nothing is known any longer about open writers.
    fn forget_writers(&mut self) {
        for state in self.files.values_mut() {
            if let FileState::Settling { writing, .. } = state {
                *writing = false;
            }
        }
    }

    fn needs_ticks(&self) -> bool {
        self.files.values().any(|state| {
            matches!(
                state,
                FileState::Settling { .. } | FileState::Waiting { .. }
            )
        })
    }

    /// Stamps the settling files (and those due for another try); the ones unchanged for
    /// `settle` (and closed, or unchanged for [`OPEN_WRITER_GRACE`]) are queued.
    async fn check(&mut self) {
        let now = Instant::now();
        let due: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(_, state)| match state {
                FileState::Settling { .. } => true,
                FileState::Waiting { until } => *until <= now,
                _ => false,
            })
            .map(|(path, _)| path.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let stamped = tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|path| {
                    let stamp = Stamp::of(&path);
                    (path, stamp)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let now = Instant::now();
        let settle = self.folder.settle;
        for (path, stamp) in stamped {
            let Some(stamp) = stamp else {
                // Gone (moved away or deleted), or not a file after all.
                if !matches!(
                    self.files.get(&path),
                    Some(FileState::Running { .. } | FileState::Queued)
                ) {
                    self.files.remove(&path);
                    self.failures.remove(&path);
                }
                continue;
            };
            let next = match self.files.get(&path) {
                Some(FileState::Settling {
                    seen,
                    since,
                    writing,
                }) => {
                    if stamp != *seen {
                        Some(FileState::Settling {
                            seen: stamp,
                            since: now,
                            writing: *writing,
                        })
                    } else {
                        let unchanged = now.saturating_duration_since(*since);
                        let ready = unchanged >= settle
                            && (!*writing || unchanged >= OPEN_WRITER_GRACE.max(settle));
                        ready.then_some(FileState::Queued)
                    }
                }
                Some(FileState::Waiting { until }) if *until <= now => {
                    Some(self.resettled(stamp, now))
                }
                _ => None,
            };
            if let Some(next) = next {
                if next == FileState::Queued {
                    self.queue.push_back(path.clone());
                }
                self.files.insert(path, next);
            }
        }
    }

    /// Starts the next queued file when none is running: one upload at a time per
    /// folder, so the same content dropped twice is seen as a duplicate, not raced.
    fn start_next(&mut self, tasks: &mut JoinSet<(PathBuf, Verdict)>) {
        // Blocked: the queue waits (nothing is uploaded that could not be moved after).
        if !tasks.is_empty() || self.blocked.is_some() {
            return;
        }
        while let Some(path) = self.queue.pop_front() {
            if self.files.get(&path) != Some(&FileState::Queued) {
                continue;
            }
            if let Some(until) = self.shared.auth.until() {
                self.files.insert(path, FileState::Waiting { until });
                continue;
            }
            self.files
                .insert(path.clone(), FileState::Running { again: false });
            let folder = self.folder.clone();
            let shared = self.shared.clone();
            tasks.spawn(async move {
                let verdict = handle(&shared, &folder, &path).await;
                (path, verdict)
            });
            return;
        }
    }

    fn finished(&mut self, path: PathBuf, verdict: Verdict) {
        let now = Instant::now();
        let again = matches!(
            self.files.get(&path),
            Some(FileState::Running { again: true })
        );
        match verdict {
            Verdict::Finished => {
                self.files.remove(&path);
                self.failures.remove(&path);
                if again && let Some(stamp) = Stamp::of(&path) {
                    // Another file arrived under the same name while this one was handled.
                    self.files.insert(
                        path,
                        FileState::Settling {
                            seen: stamp,
                            since: now,
                            writing: false,
                        },
                    );
                }
            }
            Verdict::Retry => {
                let failures = self.failures.entry(path.clone()).or_insert(0);
                *failures += 1;
                let wait = backoff(*failures);
                tracing::info!(file = %path.display(), retry_in_s = wait.as_secs(), "The recording stays in the drop folder; trying again later.");
                self.files
                    .insert(path, FileState::Waiting { until: now + wait });
            }
            Verdict::Paused(until) => {
                self.files.insert(path, FileState::Waiting { until });
            }
            Verdict::Busy => {
                // Checks back soon, then less and less often (the other copy may be stuck).
                let failures = self.failures.entry(path.clone()).or_insert(0);
                *failures += 1;
                let wait = Backoff::new(BUSY_RECHECK, RETRY_CAP).step(*failures - 1);
                self.files
                    .insert(path, FileState::Waiting { until: now + wait });
            }
            Verdict::Refused(kind) => {
                self.failures.remove(&path);
                self.files.insert(path, FileState::Refused { kind });
            }
            Verdict::Changed => {
                if let Some(stamp) = Stamp::of(&path) {
                    self.files.insert(
                        path,
                        FileState::Settling {
                            seen: stamp,
                            since: now,
                            writing: false,
                        },
                    );
                } else {
                    self.files.remove(&path);
                }
            }
        }
    }
}

/// Resolves when `shutdown` turns true (or its sender is gone). The watch guard is
/// dropped inside, so the folder loop's future stays `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The candidate entries of a folder with their stamps: every kind, so that links, FIFOs
/// and devices are refused with a reason (dot files, temporaries, sidecars, error files,
/// `targets` and subfolders not named like a recording are left out).
fn list(folder: &Path, targets: &[PathBuf]) -> std::io::Result<Vec<(PathBuf, Stamp)>> {
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

/// Whether an entry is looked at: anything but a subfolder, and a subfolder named like a
/// recording (to say why it is not taken).
fn is_listed(path: &Path, kind: EntryKind) -> bool {
    kind != EntryKind::Directory || path.file_name().is_some_and(checks::looks_like_recording)
}

/// `RETRY_FIRST`, doubling, capped, ±20% so failed files do not all retry together.
fn backoff(failures: u32) -> Duration {
    let step = Backoff::new(RETRY_FIRST, RETRY_CAP).step(failures.saturating_sub(1));
    retry::jittered(step, RETRY_JITTER)
}

/// One recording: prepare (checks, sidecar, sha256), then claim, send, record, move.
async fn handle(shared: &Shared, folder: &Folder, path: &Path) -> Verdict {
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
            if shared.auth.clear() {
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
            let (until, first) = shared.auth.pause();
            if first {
                tracing::error!(
                    file = %path.display(),
                    %error,
                    pause_s = AUTH_PAUSE.as_secs(),
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
