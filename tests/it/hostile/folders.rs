//! Drop folders written by anyone: links, swaps, devices and FIFOs, hostile names and output.
//! The daemon runs as the real binary against the sandbox; the swap between check and
//! upload, which cannot be timed through the daemon, drives the public pipeline functions
//! (`prepare`, then `Uploader::send`) with the swap done in between.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clairo_sandbox::Sandbox;
use clairo_sync::config::{self, Need, SecretSources};
use clairo_sync::daemon::Runtime;
use clairo_sync::sources::meetings::checks::Conversion;
use clairo_sync::sources::meetings::files;
use clairo_sync::sources::meetings::upload::{self, Uploader, Wanted};

use crate::support::{LoggedDaemon, PATIENCE, eventually, get, names, sandbox, sha256_hex, write};

/// What a linked key file holds: the test looks for it (and its hex) everywhere.
const SECRET_KEY: &str = "clr_live_5f3c9a0b7e2d4c1f8a6b";

struct Dirs {
    _temp: tempfile::TempDir,
    root: PathBuf,
    inbox: PathBuf,
    /// Outside the drop folder: where links point.
    elsewhere: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_path_buf();
        let inbox = root.join("inbox");
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        Self {
            _temp: temp,
            root,
            inbox,
            elsewhere,
        }
    }

    fn processed(&self) -> PathBuf {
        self.inbox.join("processed")
    }

    fn failed(&self) -> PathBuf {
        self.inbox.join("failed")
    }
}

/// A daemon config with one drop folder (settle 1s), `/readyz` on a free port, and
/// `folder` added to the folder's table (`watch = "poll"`, …).
fn config(dirs: &Dirs, sandbox: &Sandbox, transcode: &str, folder: &str) -> PathBuf {
    let text = format!(
        r#"
[clairo]
base_url = "{base}"
api_key = "clr_sandbox_key"
max_attempts = 2

[state]
path = "{state}"

[http]
listen = "127.0.0.1:0"

[meetings]
transcode = "{transcode}"

[[meetings.folders]]
path = "{inbox}"
agent = "{agent}"
settle = "1s"
{folder}

[connectors.archive]
type = "file"
path = "{archive}"

[[routes]]
events = ["meeting.processed"]
to = ["archive"]
"#,
        base = sandbox.base_url(),
        state = dirs.root.join("state.db").display(),
        inbox = dirs.inbox.display(),
        agent = sandbox.agent_id("MEETING"),
        archive = dirs.root.join("events.jsonl").display(),
    );
    write(&dirs.root, "clairo-sync.toml", &text)
}

/// A 16-bit mono PCM WAV of `seconds` of a tone; `pitch` makes contents differ.
fn wav(seconds: f64, pitch: f64) -> Vec<u8> {
    let rate = 8_000u32;
    let samples = (seconds * f64::from(rate)) as u32;
    let data_len = samples * 2;
    let mut bytes = Vec::with_capacity(44 + data_len as usize);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for n in 0..samples {
        let value = (f64::from(n) * pitch * std::f64::consts::TAU / f64::from(rate)).sin() * 8000.0;
        bytes.extend_from_slice(&(value as i16).to_le_bytes());
    }
    bytes
}

fn is_link(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|metadata| metadata.file_type().is_symlink())
}

/// `POST /meetings` requests the sandbox received, accepted or not.
fn upload_requests(sandbox: &Sandbox) -> u64 {
    sandbox
        .stats()
        .by_endpoint
        .get("POST /meetings")
        .copied()
        .unwrap_or(0)
}

/// Drops a real recording and waits until it is uploaded and in processed/: everything
/// dropped before it has been looked at by then (one file at a time, in order of
/// readiness), and the daemon is neither stuck nor gone.
async fn a_real_recording_still_goes_through(dirs: &Dirs, sandbox: &Sandbox, name: &str) {
    let content = wav(1.0, 523.0);
    let staging = dirs.root.join(name);
    std::fs::write(&staging, &content).unwrap();
    std::fs::rename(&staging, dirs.inbox.join(name)).unwrap();
    eventually(&format!("{name} is in processed/"), || {
        dirs.processed().join(name).exists()
    })
    .await;
    let sha = sha256_hex(&content);
    assert!(
        sandbox.stats().uploads.iter().any(|u| u.sha256 == sha),
        "{name} was uploaded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_in_the_drop_folder_is_moved_to_failed_as_a_link_and_never_uploaded() {
    let sandbox = sandbox(0, 0).await;
    let dirs = Dirs::new();
    let confidential = dirs.elsewhere.join("confidential.wav");
    std::fs::write(&confidential, wav(1.0, 440.0)).unwrap();
    let board = dirs.elsewhere.join("board-meeting.wav");
    std::fs::write(&board, wav(1.0, 330.0)).unwrap();
    // One link is there at start-up; the other arrives while the daemon watches.
    std::os::unix::fs::symlink(&confidential, dirs.inbox.join("steal.wav")).unwrap();
    let daemon = LoggedDaemon::start(&config(&dirs, &sandbox, "off", ""), &[]);
    daemon
        .wait_for_line("Watching the drop folder", PATIENCE)
        .await
        .expect("the daemon watches the folder");
    eventually("the link found at start-up is in failed/", || {
        dirs.failed().join("steal.wav.error.txt").exists()
    })
    .await;
    std::os::unix::fs::symlink(&board, dirs.inbox.join("later.wav")).unwrap();
    eventually("the link that arrived later is in failed/", || {
        dirs.failed().join("later.wav.error.txt").exists()
    })
    .await;
    a_real_recording_still_goes_through(&dirs, &sandbox, "real.wav").await;

    for (name, target) in [("steal.wav", &confidential), ("later.wav", &board)] {
        let moved = dirs.failed().join(name);
        assert!(is_link(&moved), "{name} was moved as a link");
        assert_eq!(&std::fs::read_link(&moved).unwrap(), target);
        let error =
            std::fs::read_to_string(dirs.failed().join(format!("{name}.error.txt"))).unwrap();
        assert!(error.contains("symbolic link"), "{error}");
        assert!(!dirs.inbox.join(name).exists());
    }
    let uploads = sandbox.stats().uploads;
    assert_eq!(uploads.len(), 1, "only the real recording: {uploads:?}");
    assert_eq!(upload_requests(&sandbox), 1);
    assert!(
        confidential.exists() && board.exists(),
        "the targets are untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_to_a_secret_file_leaves_none_of_its_bytes_in_the_error_text_or_the_log() {
    let sandbox = sandbox(0, 0).await;
    let dirs = Dirs::new();
    let key_file = dirs.elsewhere.join("api-key");
    std::fs::write(&key_file, format!("{SECRET_KEY}\n")).unwrap();
    std::os::unix::fs::symlink(&key_file, dirs.inbox.join("leak.wav")).unwrap();
    // A regular file holding a secret is refused too, in words.
    std::fs::write(dirs.inbox.join("copied.mp3"), format!("{SECRET_KEY}\n")).unwrap();
    let daemon = LoggedDaemon::start(&config(&dirs, &sandbox, "off", ""), &[]);
    eventually("both are in failed/", || {
        dirs.failed().join("leak.wav.error.txt").exists()
            && dirs.failed().join("copied.mp3.error.txt").exists()
    })
    .await;
    a_real_recording_still_goes_through(&dirs, &sandbox, "real.wav").await;

    let hex_spaced: Vec<String> = SECRET_KEY.bytes().map(|b| format!("{b:02x}")).collect();
    let needles = [
        SECRET_KEY.to_owned(),
        "clr_live".to_owned(),
        hex_spaced[..4].join(" "),
        hex_spaced[..4].join(""),
    ];
    let log = daemon.log().join("\n");
    for name in ["leak.wav.error.txt", "copied.mp3.error.txt"] {
        let error = std::fs::read_to_string(dirs.failed().join(name)).unwrap();
        for needle in &needles {
            assert!(
                !error.contains(needle.as_str()),
                "{name} quotes {needle}: {error}"
            );
        }
    }
    for needle in &needles {
        assert!(!log.contains(needle.as_str()), "the log quotes {needle}");
    }
    let copied = std::fs::read_to_string(dirs.failed().join("copied.mp3.error.txt")).unwrap();
    assert!(copied.contains("MP3"), "says what was expected: {copied}");
    assert!(copied.contains("text"), "says what was found: {copied}");

    // `clairo-sync upload` says it in words too.
    let (code, stdout, stderr) = run_upload(
        &sandbox,
        &dirs.failed().join("copied.mp3"),
        &sandbox.agent_id("MEETING"),
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("MP3"), "{stderr}");
    for needle in &needles {
        assert!(
            !stdout.contains(needle.as_str()) && !stderr.contains(needle.as_str()),
            "the upload command quotes {needle}: {stderr}"
        );
    }
}

/// `clairo-sync upload FILE --agent AGENT`, with the key in the environment.
async fn run_upload(sandbox: &Sandbox, file: &Path, agent: &str) -> (i32, String, String) {
    let base_url = sandbox.base_url();
    let args = vec![
        "upload".to_owned(),
        file.display().to_string(),
        "--agent".to_owned(),
        agent.to_owned(),
    ];
    tokio::task::spawn_blocking(move || {
        let output = Command::new(crate::support::bin())
            .args(&args)
            .env("CLAIRO_API_KEY", "clr_sandbox_key")
            .env("CLAIRO_SYNC_CLAIRO__BASE_URL", base_url)
            .env_remove("CLAIRO_SYNC_CONFIG")
            .output()
            .expect("the binary runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_a_link_and_a_directory_named_like_recordings_are_refused_in_a_polled_folder() {
    let sandbox = sandbox(0, 0).await;
    let dirs = Dirs::new();
    mkfifo(&dirs.inbox.join("pipe.wav"));
    std::fs::create_dir(dirs.inbox.join("x.wav")).unwrap();
    let outside = dirs.elsewhere.join("outside.wav");
    std::fs::write(&outside, wav(1.0, 440.0)).unwrap();
    // Polled quickly, so a refusal repeated on every listing would show in the log.
    let daemon = LoggedDaemon::start(
        &config(
            &dirs,
            &sandbox,
            "off",
            "watch = \"poll\"\npoll_interval = \"200ms\"",
        ),
        &[],
    );
    daemon
        .wait_for_line("Watching the drop folder", PATIENCE)
        .await
        .expect("the daemon watches the folder");
    // Arriving while the daemon runs.
    mkfifo(&dirs.inbox.join("later-pipe.mp3"));
    std::os::unix::fs::symlink(&outside, dirs.inbox.join("later-link.wav")).unwrap();
    eventually("the FIFOs and the link are in failed/", || {
        ["pipe.wav", "later-pipe.mp3", "later-link.wav"]
            .iter()
            .all(|name| dirs.failed().join(format!("{name}.error.txt")).exists())
    })
    .await;
    a_real_recording_still_goes_through(&dirs, &sandbox, "real.wav").await;
    // Several more listings.
    tokio::time::sleep(Duration::from_secs(2)).await;

    for name in ["pipe.wav", "later-pipe.mp3"] {
        let moved = dirs.failed().join(name);
        assert!(
            moved.symlink_metadata().unwrap().file_type().is_fifo(),
            "{name} was moved as it is"
        );
        let error =
            std::fs::read_to_string(dirs.failed().join(format!("{name}.error.txt"))).unwrap();
        assert!(error.contains("named pipe"), "{error}");
    }
    assert!(is_link(&dirs.failed().join("later-link.wav")));
    assert!(
        dirs.inbox.join("x.wav").is_dir(),
        "a directory is left where it is"
    );
    let log = daemon.log();
    let about_x: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("x.wav") && line.contains("directory"))
        .collect();
    assert_eq!(about_x.len(), 1, "said once, with a reason: {about_x:?}");
    assert_eq!(sandbox.stats().uploads.len(), 1, "only the real recording");
    assert_eq!(upload_requests(&sandbox), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn processed_and_failed_that_are_links_are_refused_and_nothing_moves_through_them() {
    let sandbox = sandbox(0, 0).await;
    let dirs = Dirs::new();
    let decoy_processed = dirs.elsewhere.join("p");
    let decoy_failed = dirs.elsewhere.join("f");
    std::fs::create_dir_all(&decoy_processed).unwrap();
    std::fs::create_dir_all(&decoy_failed).unwrap();
    std::os::unix::fs::symlink(&decoy_processed, dirs.processed()).unwrap();
    std::os::unix::fs::symlink(&decoy_failed, dirs.failed()).unwrap();
    std::fs::write(dirs.inbox.join("good.wav"), wav(1.0, 440.0)).unwrap();
    std::fs::write(dirs.inbox.join("bad.mp3"), "not audio\n").unwrap();
    let daemon = LoggedDaemon::start(
        &config(
            &dirs,
            &sandbox,
            "off",
            "watch = \"poll\"\npoll_interval = \"200ms\"",
        ),
        &[],
    );
    let address = daemon.http_address().await;
    let line = daemon
        .wait_for_line("symbolic link", PATIENCE)
        .await
        .expect("the refusal is logged");
    assert!(
        line.contains(&dirs.processed().display().to_string())
            || line.contains(&dirs.failed().display().to_string()),
        "names the path: {line}"
    );
    assert!(line.contains("rm "), "says what to do: {line}");
    let ready = get(format!("http://{address}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("meetings"), "{body}");
    // Time for several listings and any move to happen.
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert!(
        names(&decoy_processed).is_empty(),
        "nothing went through processed/"
    );
    assert!(
        names(&decoy_failed).is_empty(),
        "nothing went through failed/"
    );
    assert!(dirs.inbox.join("good.wav").exists() && dirs.inbox.join("bad.mp3").exists());
    assert_eq!(
        upload_requests(&sandbox),
        0,
        "nothing is uploaded that cannot be moved"
    );
    let refusals = daemon
        .log()
        .iter()
        .filter(|line| {
            line.contains("symbolic link") && line.contains(&dirs.processed().display().to_string())
        })
        .count();
    assert_eq!(refusals, 1, "said once per folder");

    // Fixed: the files go through.
    std::fs::remove_file(dirs.processed()).unwrap();
    std::fs::remove_file(dirs.failed()).unwrap();
    eventually("both are moved into real directories", || {
        dirs.processed().join("good.wav").exists() && dirs.failed().join("bad.mp3").exists()
    })
    .await;
    for dir in [dirs.processed(), dirs.failed()] {
        let metadata = dir.symlink_metadata().unwrap();
        assert!(metadata.is_dir());
        assert_eq!(
            metadata.permissions().mode() & 0o027,
            0,
            "{} is 0750 or tighter",
            dir.display()
        );
    }
    let ready = get(format!("http://{address}/readyz")).await.unwrap();
    let body = ready.text().await.unwrap();
    assert!(!body.contains("meetings"), "no longer named: {body}");
}

#[test]
fn concurrent_moves_of_one_name_never_overwrite_each_other() {
    // Many recordings called `call.wav` moved into one processed/ at once: each must keep
    // a name of its own (a check-then-rename would let two take the same name).
    let temp = tempfile::tempdir().unwrap();
    let target = temp.path().join("processed");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("call.wav"), "already there").unwrap();
    let count = 40;
    let sources: Vec<PathBuf> = (0..count)
        .map(|n| {
            let dir = temp.path().join(format!("in{n}"));
            std::fs::create_dir(&dir).unwrap();
            write(&dir, "call.wav", &format!("recording {n}"))
        })
        .collect();
    let start = Arc::new(std::sync::Barrier::new(count));
    let threads: Vec<_> = sources
        .into_iter()
        .map(|source| {
            let (target, start) = (target.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                files::move_into(&target, &source, None).unwrap()
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let mut contents: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .collect();
    contents.sort();
    let mut expected: Vec<String> = (0..count).map(|n| format!("recording {n}")).collect();
    expected.push("already there".to_owned());
    expected.sort();
    assert_eq!(contents, expected, "every recording kept, none overwritten");
}

/// The public pipeline, as the daemon runs it for one file, with a client for `sandbox`.
async fn uploader(dirs: &Dirs, sandbox: &Sandbox) -> Uploader {
    let path = config(dirs, sandbox, "off", "");
    let loaded = config::load(Some(&path), Need::Daemon, &SecretSources::default()).unwrap();
    let runtime = Runtime::start(&loaded, None).await.unwrap();
    Uploader {
        client: runtime.source_context().client,
        transcoder: None,
    }
}

fn prepare(path: &Path, agent: &str) -> upload::Prepared {
    let wanted = Wanted {
        agent_id: agent,
        title: None,
        sidecar_agent: true,
    };
    upload::prepare(path, &wanted, Conversion::Off).expect("the recording passes the checks")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_renamed_over_the_checked_one_is_not_what_gets_uploaded() {
    let sandbox = sandbox(0, 0).await;
    let dirs = Dirs::new();
    let uploader = uploader(&dirs, &sandbox).await;
    let checked = wav(1.0, 440.0);
    let path = dirs.inbox.join("call.wav");
    std::fs::write(&path, &checked).unwrap();
    let prepared = prepare(&path, &sandbox.agent_id("MEETING"));
    assert_eq!(prepared.sha256, sha256_hex(&checked));
    // After the checks: a 30 MB file of something else is renamed over the name.
    let swapped = dirs.root.join("swap.wav");
    let mut other = wav(1.0, 220.0);
    other.resize(30_000_000, 0x5a);
    std::fs::write(&swapped, &other).unwrap();
    std::fs::rename(&swapped, &path).unwrap();

    let sent = uploader.send(&prepared, None).await;
    assert!(sent.is_ok(), "{sent:?}");
    let uploads = sandbox.stats().uploads;
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].sha256,
        sha256_hex(&checked),
        "the checked content was sent"
    );
    assert_eq!(uploads[0].size, checked.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_in_place_after_the_checks_is_not_uploaded_under_the_old_sha256() {
    let sandbox = sandbox(0, 0).await;
    let dirs = Dirs::new();
    let uploader = uploader(&dirs, &sandbox).await;
    let checked = wav(1.0, 440.0);
    let path = dirs.inbox.join("call.wav");
    std::fs::write(&path, &checked).unwrap();
    let prepared = prepare(&path, &sandbox.agent_id("MEETING"));
    // The same inode, other bytes, the same size.
    std::fs::write(&path, wav(1.0, 220.0)).unwrap();

    let sent = uploader.send(&prepared, None).await;
    let Err(upload::SendError::Retry { error, .. }) = sent else {
        panic!("the changed file is not sent as the checked one: {sent:?}");
    };
    assert!(error.contains("changed after it was checked"), "{error}");
    let uploads = sandbox.stats().uploads;
    assert!(
        uploads
            .iter()
            .all(|upload| upload.sha256 == prepared.sha256),
        "nothing arrived under a sha256 it does not have: {uploads:?}"
    );
    assert!(uploads.is_empty(), "{uploads:?}");
}

/// A fake `ffmpeg` on PATH: it claims an Opus encoder, prints `Duration: <next of
/// durations>` for each conversion, and writes a tiny WebM.
fn fake_ffmpeg(dir: &Path, durations: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let list = durations.join(" ");
    let script = format!(
        r#"#!/bin/sh
case "$*" in
  *-encoders*) echo " A....D libopus              libopus Opus"; exit 0 ;;
esac
counter="{bin}/count"
n=$(cat "$counter" 2>/dev/null || echo 0)
echo $((n + 1)) > "$counter"
set -- "$@"
for last; do :; done
out="${{last#file:}}"
i=0
for d in {list}; do
  if [ $i -eq $((n % {len})) ]; then duration="$d"; fi
  i=$((i + 1))
done
echo "Input #0, mov,mp4,m4a, from 'input':" >&2
echo "  Duration: $duration, start: 0.000000, bitrate: 64 kb/s" >&2
printf '\032\105\337\243fake webm' > "$out"
exit 0
"#,
        bin = bin.display(),
        len = durations.len(),
    );
    let path = bin.join("ffmpeg");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_durations_printed_by_ffmpeg_neither_panic_nor_stop_the_daemon() {
    let sandbox = sandbox(0, 0).await;
    let dirs = Dirs::new();
    let durations = [
        "-00:00:05.00",
        "NaN:00:00",
        "99999999999999999999:00:00",
        "inf:00:00",
        "00:-1e308:00",
    ];
    let bin = fake_ffmpeg(&dirs.root, &durations);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let daemon = LoggedDaemon::start(&config(&dirs, &sandbox, "auto", ""), &[("PATH", &path)]);
    daemon
        .wait_for_line("converted to Opus/WebM", PATIENCE)
        .await
        .expect("the fake ffmpeg is taken");
    let names_in: Vec<String> = (0..durations.len())
        .map(|n| format!("call-{n}.m4a"))
        .collect();
    for (n, name) in names_in.iter().enumerate() {
        std::fs::write(dirs.inbox.join(name), format!("m4a {n}")).unwrap();
    }
    eventually("every recording left the drop folder", || {
        names_in.iter().all(|name| !dirs.inbox.join(name).exists())
    })
    .await;
    a_real_recording_still_goes_through(&dirs, &sandbox, "real.wav").await;
    let log = daemon.log().join("\n");
    assert!(!log.contains("panicked"), "no panic");
    for name in &names_in {
        assert!(
            dirs.processed().join(name).exists() || dirs.failed().join(name).exists(),
            "{name} was moved"
        );
    }
}
