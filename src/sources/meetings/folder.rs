// Over 500 lines: one idea, the folder loop (scan, watch, settle, one file at a time).
//! The folder loop: one task per `[[meetings.folders]]` that watches (inotify, or lists
//! every `poll_interval`), rescans, lets files settle, and hands the ready ones, one at a
//! time, to handle.rs. It owns every file's state (state.rs), so a file is handled by one
//! task at a time however many events arrive.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clairo_connectors::retry::Backoff;
use notify::RecommendedWatcher;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{FolderConfig, WatchMode};
use crate::shutdown::{self, CancellationToken};

use super::Shared;
use super::files;
use super::handle::{Verdict, handle};
use super::state::{
    BUSY_RECHECK, FileState, OPEN_WRITER_GRACE, RETRY_CAP, Stamp, backoff, is_listed, list,
};
use super::watcher;

/// A watched folder is listed this often anyway: inotify can miss a file (an overflow
/// it did not report, a write through another mount of the same share).
pub const SAFETY_RESCAN: Duration = Duration::from_secs(60);

/// A folder that takes nothing (its processed/ or failed/ cannot be used) looks again this
/// often, so fixing it takes effect soon without an event to say so.
const BLOCKED_RECHECK: Duration = Duration::from_secs(5);

/// The fixed facts of a folder, shared with its tasks.
#[derive(Debug)]
pub(super) struct Folder {
    /// `meetings.folders[0]`, for logs.
    key: String,
    pub(super) path: PathBuf,
    pub(super) processed: PathBuf,
    pub(super) failed: PathBuf,
    pub(super) agent: String,
    settle: Duration,
    mode: WatchMode,
    poll_interval: Duration,
}

pub(super) struct FolderLoop {
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
    pub(super) fn new(index: usize, config: &FolderConfig, shared: Arc<Shared>) -> Self {
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

    pub(super) async fn run(mut self, shutdown: CancellationToken) {
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
                () = shutdown.cancelled() => break,
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
            if shutdown::drain(&mut tasks, self.shared.grace).await > 0 {
                tracing::warn!(
                    folder = %self.folder.path.display(),
                    "Stopped during an upload; it is sent again at the next start (and may then appear twice in Clairo)."
                );
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
                        FileState::settling(*stamp, now, false)
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
        FileState::settling(
            stamp,
            now.checked_sub(self.folder.settle).unwrap_or(now),
            false,
        )
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
                    FileState::settling(stamp, now, changed.writing)
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
                        Some(FileState::settling(stamp, now, *writing))
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
            if let Some(until) = self.shared.context.auth.paused_until() {
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
                if again {
                    // Another file arrived under the same name while this one was handled.
                    self.settle_again(path, now);
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
                if !self.settle_again(path.clone(), now) {
                    self.files.remove(&path);
                }
            }
        }
    }

    /// Starts `path` settling again from what it is now; false when it is gone.
    fn settle_again(&mut self, path: PathBuf, now: Instant) -> bool {
        let Some(stamp) = Stamp::of(&path) else {
            return false;
        };
        self.files
            .insert(path, FileState::settling(stamp, now, false));
        true
    }
}
