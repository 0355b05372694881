//! The file connector: appends each event envelope as one JSON line, fsync'd before it
//! answers, for archives and the demo.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::debug;

use crate::{Attempt, ConfigProblem, Connector, Delivery, ProbeError};

/// `[connectors.NAME] type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The JSONL file events are appended to; created if missing (its directory is not).
    pub path: PathBuf,
}

impl FileConfig {
    pub fn validate(&self) -> Vec<ConfigProblem> {
        if self.path.as_os_str().is_empty() {
            vec![ConfigProblem::new(
                "path",
                "is empty; set it to the file events are appended to, \
                 e.g. \"/var/lib/clairo-sync/events.jsonl\"",
            )]
        } else if !self.path.is_absolute() {
            // Relative to what would depend on where systemd or a shell started the daemon.
            vec![ConfigProblem::new(
                "path",
                format!(
                    "`{}` is not absolute; write the full path, \
                     e.g. \"/var/lib/clairo-sync/events.jsonl\"",
                    self.path.display()
                ),
            )]
        } else {
            Vec::new()
        }
    }
}

/// A running file connector.
pub struct FileConnector {
    path: PathBuf,
    /// Held from before the write until after the fsync, and moved into the blocking task
    /// itself: lines never interleave, even when a delivery is cancelled mid-write.
    writing: Arc<Mutex<()>>,
}

impl FileConnector {
    pub fn new(config: &FileConfig) -> Self {
        Self {
            path: config.path.clone(),
            writing: Arc::new(Mutex::new(())),
        }
    }
}

#[async_trait]
impl Connector for FileConnector {
    async fn deliver(&self, delivery: Delivery<'_>) -> Attempt {
        let mut line = delivery.envelope().into_owned();
        line.push('\n');
        let turn = Arc::clone(&self.writing).lock_owned().await;
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            append_line(&path, line.as_bytes())
        })
        .await;
        let attempt = match written {
            Ok(Ok(())) => Attempt::delivered(None, None),
            Ok(Err(error)) => Attempt::retry(write_failure(&self.path, &error), None),
            Err(error) => Attempt::retry(
                format!(
                    "the write to {} was interrupted ({error}); it will be tried again",
                    self.path.display()
                ),
                None,
            ),
        };
        debug!(
            path = %self.path.display(),
            event = %delivery.event.id,
            verdict = ?attempt.verdict,
            "File append finished."
        );
        attempt
    }

    /// Checks that the file can be appended to, or created, without writing to it.
    async fn probe(&self) -> Result<String, ProbeError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || probe_path(&path))
            .await
            .map_err(|error| ProbeError::Passing(format!("the check was interrupted: {error}")))?
    }
}

/// Appends one line and makes it durable. The file is opened afresh each time, so a file
/// that logrotate moved away is recreated rather than written behind its back.
fn append_line(path: &Path, line: &[u8]) -> io::Result<()> {
    let existed = path.try_exists().unwrap_or(true);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let before = cut_torn_line(&mut file, path)?;
    if let Err(error) = file.write_all(line).and_then(|()| file.sync_data()) {
        // A half-written line would run into the next one, and a line written but not
        // synced would be written twice by the retry: cut back to where this one began.
        let _ = file.set_len(before);
        return Err(error);
    }
    if !existed {
        // A new file's name lives in its directory: sync that too, or a crash can lose
        // the whole file. The line itself is already durable in the file's data, and
        // failing here would write it twice on retry, so an error is only logged.
        if let Some(directory) = path.parent()
            && let Err(error) = File::open(directory).and_then(|directory| directory.sync_all())
        {
            debug!(path = %path.display(), %error, "Could not sync the new file's directory.");
        }
    }
    Ok(())
}

/// A line left half-written by a process killed mid-write (SIGKILL between two pages of a
/// write, a power cut) has no newline at its end: its delivery was never recorded, so it
/// is written again whole, and the fragment would stay a broken line in the archive. It is
/// cut off before the next append. Returns the file's length after that.
fn cut_torn_line(file: &mut File, path: &Path) -> io::Result<u64> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Back from the end, a block at a time, to the last newline (if any).
    let mut end = len;
    let mut block = [0u8; 4096];
    let last_newline = loop {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if end == len && chunk.last() == Some(&b'\n') {
            return Ok(len);
        }
        if let Some(at) = chunk.iter().rposition(|byte| *byte == b'\n') {
            break start + at as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    tracing::warn!(
        path = %path.display(),
        bytes = len - last_newline,
        "The archive ended in a line cut short (a crash mid-write); it was removed, and that event is written again whole."
    );
    file.set_len(last_newline)?;
    Ok(last_newline)
}

/// What went wrong, and what to fix, for a write that failed.
fn write_failure(path: &Path, error: &io::Error) -> String {
    let shown = path.display();
    let directory = path
        .parent()
        .map(|directory| directory.display().to_string())
        .unwrap_or_default();
    match error.kind() {
        io::ErrorKind::NotFound => format!(
            "cannot write {shown}: the directory {directory} does not exist; create it \
             (e.g. with a tmpfiles.d entry) or change `path`"
        ),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => format!(
            "cannot write {shown}: permission denied ({error}); give the clairo-sync user \
             write access to the file and {directory} (ReadWritePaths= in the service unit) \
             or change `path`"
        ),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => format!(
            "cannot write {shown}: the disk is full ({error}); free space on it or move \
             `path` to another disk"
        ),
        io::ErrorKind::IsADirectory => format!(
            "cannot write {shown}: it is a directory; set `path` to a file inside it, \
             e.g. {shown}/events.jsonl"
        ),
        io::ErrorKind::NotADirectory => format!(
            "cannot write {shown}: a part of the path is a file, not a directory; \
             fix `path`"
        ),
        _ => format!("cannot write {shown}: {error}; check the file, its directory and the disk"),
    }
}

/// A write that would fail is lasting: the path, its permissions or the disk must change.
fn probe_path(path: &Path) -> Result<String, ProbeError> {
    if path.try_exists().unwrap_or(false) {
        OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| format!("{} can be appended to", path.display()))
            .map_err(|error| ProbeError::Lasting(write_failure(path, &error)))
    } else {
        match path.parent().map(Path::is_dir) {
            Some(true) => Ok(format!(
                "{} does not exist yet and will be created at the first event",
                path.display()
            )),
            _ => Err(ProbeError::Lasting(write_failure(
                path,
                &io::Error::from(io::ErrorKind::NotFound),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::testkit::{first_attempt, table};
    use crate::{ConnectorConfig, Event, EventType, Verdict};

    fn event(key: &str) -> Event {
        crate::testkit::event(
            EventType::MeetingProcessed,
            key,
            // Long enough that interleaved writes would show as broken lines.
            serde_json::json!({"id": key, "transcript": "word ".repeat(4_000)}),
        )
    }

    async fn deliver(connector: &FileConnector, event: &Event) -> Attempt {
        first_attempt(connector, event).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_concurrent_deliveries_append_fifty_whole_lines() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("events.jsonl");
        let connector = Arc::new(FileConnector::new(&FileConfig { path: path.clone() }));

        let tasks: Vec<_> = (0..50)
            .map(|index| {
                let connector = Arc::clone(&connector);
                tokio::spawn(async move { deliver(&connector, &event(&format!("m{index}"))).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().verdict, Verdict::Delivered);
        }

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        let ids: BTreeSet<String> = text
            .lines()
            .map(|line| {
                serde_json::from_str::<Event>(line)
                    .expect("a whole JSON line")
                    .id
            })
            .collect();
        assert_eq!(text.lines().count(), 50);
        assert_eq!(ids.len(), 50);
    }

    #[tokio::test]
    async fn deliveries_append_after_what_the_file_already_holds() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("events.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let connector = FileConnector::new(&FileConfig { path: path.clone() });
        let event = event("m1");

        let attempt = deliver(&connector, &event).await;

        assert_eq!(attempt.verdict, Verdict::Delivered);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{{\"earlier\":true}}\n{}\n", event.to_json()));
    }

    #[tokio::test]
    async fn a_line_cut_short_by_a_crash_is_removed_before_the_next_append() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("events.jsonl");
        let whole = event("m0").to_json();
        let torn = event("m1").to_json();
        // Longer than one read block, so the newline is found a block back.
        let torn = &torn[..torn.len() - 10];
        assert!(torn.len() > 4096);
        std::fs::write(&path, format!("{whole}\n{torn}")).unwrap();
        let connector = FileConnector::new(&FileConfig { path: path.clone() });
        let again = event("m1");

        assert_eq!(
            deliver(&connector, &again).await.verdict,
            Verdict::Delivered
        );

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{whole}\n{}\n", again.to_json()));
    }

    #[tokio::test]
    async fn a_file_holding_only_a_torn_line_is_emptied_before_the_append() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("events.jsonl");
        std::fs::write(&path, "{\"id\":\"evt_").unwrap();
        let connector = FileConnector::new(&FileConfig { path: path.clone() });
        let event = event("m1");

        assert_eq!(
            deliver(&connector, &event).await.verdict,
            Verdict::Delivered
        );

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", event.to_json()));
    }

    #[tokio::test]
    async fn a_missing_directory_means_retry_with_a_reason_that_says_what_to_create() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("not-there");
        let connector = FileConnector::new(&FileConfig {
            path: missing.join("events.jsonl"),
        });

        let attempt = deliver(&connector, &event("m1")).await;

        match attempt.verdict {
            Verdict::Retry { after, reason } => {
                assert_eq!(after, None);
                assert!(reason.contains("does not exist"), "{reason}");
                assert!(reason.contains(&missing.display().to_string()), "{reason}");
                assert!(reason.contains("`path`"), "{reason}");
            }
            other => panic!("expected Retry, got {other:?}"),
        }
        assert!(
            connector
                .probe()
                .await
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }

    #[tokio::test]
    async fn a_directory_as_path_means_retry_with_a_reason_that_says_so() {
        let directory = tempfile::tempdir().unwrap();
        let connector = FileConnector::new(&FileConfig {
            path: directory.path().to_owned(),
        });

        let attempt = deliver(&connector, &event("m1")).await;

        match attempt.verdict {
            Verdict::Retry { reason, .. } => assert!(reason.contains("directory"), "{reason}"),
            other => panic!("expected Retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn probing_a_writable_place_succeeds_without_writing() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("events.jsonl");
        let connector = FileConnector::new(&FileConfig { path: path.clone() });

        assert!(connector.probe().await.unwrap().contains("will be created"));
        assert!(!path.exists());
        std::fs::write(&path, "").unwrap();
        assert!(
            connector
                .probe()
                .await
                .unwrap()
                .contains("can be appended to")
        );
    }

    #[test]
    fn a_relative_or_empty_path_is_a_problem_naming_the_key() {
        for path in ["events.jsonl", ""] {
            let problems = FileConfig { path: path.into() }.validate();
            assert_eq!(problems.len(), 1, "{path}");
            assert_eq!(problems[0].key, "path");
            assert!(problems[0].message.contains("; "), "{problems:?}");
        }
        let absolute = FileConfig {
            path: "/var/lib/clairo-sync/events.jsonl".into(),
        };
        assert_eq!(absolute.validate(), Vec::new());
    }

    #[test]
    fn a_file_table_parses_and_an_unknown_key_is_rejected() {
        let text = "type = \"file\"\npath = \"/var/lib/clairo-sync/events.jsonl\"\n";
        let Ok(ConnectorConfig::File(config)) = table(text) else {
            panic!("not a file connector");
        };
        assert_eq!(config.path, Path::new("/var/lib/clairo-sync/events.jsonl"));

        let typo = "type = \"file\"\npaht = \"/var/lib/clairo-sync/events.jsonl\"\n";
        let error = table(typo).unwrap_err();
        assert!(error.contains("paht"), "{error}");
    }
}
