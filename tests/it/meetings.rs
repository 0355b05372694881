//! Drop folders end to end: real files in temporary folders, the real inotify watcher, the
//! sandbox's `POST /meetings` over HTTP and a webhook receiver for `meeting.processed`.
//! The watcher runs in-process (`sources::meetings::run` beside the real dispatcher, as
//! the daemon runs them), so a test can look at the metrics and prepare the state
//! database; the `upload` command runs as the real binary.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clairo_sandbox::Sandbox;
use clairo_sync::config::{self, Need, SecretSources};
use clairo_sync::daemon::Runtime;
use clairo_sync::metrics::{Metrics, OutcomeLabels};
use clairo_sync::shutdown::CancellationToken;
use clairo_sync::sources::meetings;
use clairo_sync::store::Store;
use clairo_sync::store::meetings::{Claim, MeetingClaim};
use tokio::task::JoinHandle;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::support::{
    Daemon, LoggedDaemon, PATIENCE, Receiver, SECRET, bin, enable_http, eventually, names, readyz,
    sandbox, sha256_hex, write,
};

/// A test's folders.
struct Dirs {
    _temp: tempfile::TempDir,
    root: PathBuf,
    inbox: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_path_buf();
        let inbox = root.join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        Self {
            _temp: temp,
            root,
            inbox,
        }
    }

    fn processed(&self) -> PathBuf {
        self.inbox.join("processed")
    }

    fn failed(&self) -> PathBuf {
        self.inbox.join("failed")
    }
}

/// A config with one drop folder (settle 1s), a webhook route for meeting.processed.
fn meetings_config(
    dirs: &Dirs,
    sandbox: &Sandbox,
    receiver: &Receiver,
    transcode: &str,
) -> PathBuf {
    meetings_config_with(dirs, sandbox, receiver, transcode, "")
}

/// [`meetings_config`] with more keys for the folder (`watch = "poll"`, …).
fn meetings_config_with(
    dirs: &Dirs,
    sandbox: &Sandbox,
    receiver: &Receiver,
    transcode: &str,
    folder: &str,
) -> PathBuf {
    let text = format!(
        r#"
[clairo]
base_url = "{base}"
api_key = "clr_sandbox_key"
max_attempts = 2

[state]
path = "{state}"

[http]
enabled = false

[meetings]
transcode = "{transcode}"

[[meetings.folders]]
path = "{inbox}"
agent = "{agent}"
settle = "1s"
{folder}

[connectors.hook]
type = "webhook"
url = "{url}"
secret = "{SECRET}"
timeout = "5s"

[[routes]]
events = ["meeting.processed"]
to = ["hook"]

[delivery]
retry_schedule = ["1s", "1s", "1s"]
"#,
        base = sandbox.base_url(),
        state = dirs.root.join("state.db").display(),
        inbox = dirs.inbox.display(),
        agent = sandbox.agent_id("MEETING"),
        url = receiver.url,
    );
    write(&dirs.root, "clairo-sync.toml", &text)
}

/// The drop-folder watcher and the dispatcher, in this process, as the daemon runs them.
struct Watching {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    metrics: Metrics,
}

impl Watching {
    async fn start(config_path: &Path) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .finish()
            .with(Targets::new().with_target("clairo_sync", tracing::Level::DEBUG))
            .try_init();
        let loaded = config::load(Some(config_path), Need::Daemon, &SecretSources::default())
            .expect("the config loads");
        let runtime = Runtime::start(&loaded, None)
            .await
            .expect("the runtime starts");
        let stop = CancellationToken::new();
        let dispatcher = runtime.dispatcher();
        let connectors = runtime.connectors.clone();
        let dispatch_stop = stop.clone();
        let dispatch = tokio::spawn(async move { dispatcher.run(connectors, dispatch_stop).await });
        let watch = tokio::spawn(meetings::run(
            runtime.source_context(),
            runtime.config.clone(),
            stop.clone(),
        ));
        Self {
            stop,
            tasks: vec![dispatch, watch],
            metrics: runtime.metrics.clone(),
        }
    }

    fn uploads(&self, outcome: &str) -> u64 {
        self.metrics
            .meeting_uploads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .get()
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("stops in time")
                .unwrap();
        }
    }
}

/// Waits until this process holds an inotify watch on `folder` (the watcher runs in this
/// test's process): `/proc/self/fdinfo` lists each watch with its inode.
async fn inotify_watching(folder: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let inode = format!(" ino:{:x} ", std::fs::metadata(folder).unwrap().ino());
    eventually("the drop folder is watched", || {
        std::fs::read_dir("/proc/self/fdinfo")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .any(|info| {
                info.lines()
                    .any(|line| line.starts_with("inotify wd:") && line.contains(&inode))
            })
    })
    .await;
}

/// A 16-bit mono PCM WAV of `seconds` of a 440 Hz tone at `rate` Hz.
fn wav(seconds: f64, rate: u32) -> Vec<u8> {
    let samples = (seconds * f64::from(rate)) as u32;
    let mut bytes = wav_header(samples * 2, rate);
    bytes.reserve(samples as usize * 2);
    for n in 0..samples {
        let value = (f64::from(n) * 440.0 * std::f64::consts::TAU / f64::from(rate)).sin() * 8000.0;
        bytes.extend_from_slice(&(value as i16).to_le_bytes());
    }
    bytes
}

fn wav_header(data_len: u32, rate: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + data_len).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes()); // PCM
    header.extend_from_slice(&1u16.to_le_bytes()); // mono
    header.extend_from_slice(&rate.to_le_bytes());
    header.extend_from_slice(&(rate * 2).to_le_bytes()); // byte rate
    header.extend_from_slice(&2u16.to_le_bytes()); // block align
    header.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_len.to_le_bytes());
    header
}

fn meeting_events(receiver: &Receiver) -> Vec<serde_json::Value> {
    receiver
        .delivered()
        .iter()
        .map(|request| request.json())
        .filter(|event| event["type"] == "meeting.processed")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recording_written_slowly_is_uploaded_once_and_complete() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let watching = Watching::start(&meetings_config(&dirs, &sandbox, &receiver, "off")).await;
    // A file begun before the watch exists is found by the start-up scan, which cannot know
    // a writer still has it open: begin only once the daemon is watching.
    inotify_watching(&dirs.inbox).await;
    let content = wav(6.0, 16_000);
    let path = dirs.inbox.join("slow_standup.wav");
    let mut file = std::fs::File::create(&path).unwrap();
    // Pauses longer than `settle` while the writer keeps the file open: only the close
    // after the last write makes it complete.
    for chunk in content.chunks(content.len() / 4 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    drop(file);
    eventually("the recording is in processed/", || {
        dirs.processed().join("slow_standup.wav").exists()
    })
    .await;
    eventually("the event is delivered", || {
        meeting_events(&receiver).len() == 1
    })
    .await;
    // A few more settle periods: nothing else may happen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let uploads = sandbox.stats().uploads;
    assert_eq!(uploads.len(), 1, "exactly one upload: {uploads:?}");
    assert_eq!(
        uploads[0].sha256,
        sha256_hex(&content),
        "the whole file was uploaded"
    );
    assert_eq!(uploads[0].size, content.len() as u64);
    assert_eq!(
        uploads[0].title, "slow standup",
        "the title comes from the file name"
    );
    let events = meeting_events(&receiver);
    assert_eq!(events.len(), 1);
    let data = &events[0]["data"];
    assert_eq!(data["sha256"], sha256_hex(&content));
    assert_eq!(data["fileName"], "slow_standup.wav");
    assert_eq!(data["id"], uploads[0].meeting_id.as_str());
    assert_eq!(data["agentId"], sandbox.agent_id("MEETING"));
    assert!(
        data["transcript"].is_string() && data["summary"].is_string(),
        "{data}"
    );
    assert!(data["durationSec"].is_number(), "{data}");
    assert_eq!(
        names(&dirs.inbox),
        ["processed"],
        "nothing is left in the drop folder"
    );
    assert_eq!(watching.uploads("uploaded"), 1);
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_present_at_start_up_and_files_moved_in_are_uploaded() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let early = wav(1.0, 8_000);
    std::fs::write(dirs.inbox.join("before-start.wav"), &early).unwrap();
    // A sidecar names the title.
    std::fs::write(
        dirs.inbox.join("before-start.wav.json"),
        r#"{"title": "Board meeting"}"#,
    )
    .unwrap();
    let watching = Watching::start(&meetings_config(&dirs, &sandbox, &receiver, "off")).await;
    eventually("the file present at start-up is uploaded", || {
        dirs.processed().join("before-start.wav").exists()
    })
    .await;
    assert!(
        dirs.processed().join("before-start.wav.json").exists(),
        "the sidecar moves along"
    );

    // Written elsewhere, then renamed into the folder: only a rename event arrives.
    let elsewhere = dirs.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved = wav(2.0, 8_000);
    std::fs::write(elsewhere.join("moved-in.wav"), &moved).unwrap();
    std::fs::rename(
        elsewhere.join("moved-in.wav"),
        dirs.inbox.join("moved-in.wav"),
    )
    .unwrap();
    eventually("the file moved in is uploaded", || {
        dirs.processed().join("moved-in.wav").exists()
    })
    .await;
    eventually("both events are delivered", || {
        meeting_events(&receiver).len() == 2
    })
    .await;
    let uploads = sandbox.stats().uploads;
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    assert_eq!(uploads[0].title, "Board meeting");
    assert_eq!(uploads[0].sha256, sha256_hex(&early));
    assert_eq!(uploads[1].title, "moved in");
    assert_eq!(uploads[1].sha256, sha256_hex(&moved));
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_polled_folder_takes_files_without_inotify() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let config = meetings_config_with(
        &dirs,
        &sandbox,
        &receiver,
        "off",
        "watch = \"poll\"\npoll_interval = \"300ms\"",
    );
    let watching = Watching::start(&config).await;
    let content = wav(1.0, 8_000);
    std::fs::write(dirs.inbox.join("on-the-share.wav"), &content).unwrap();
    eventually("the file is uploaded", || {
        dirs.processed().join("on-the-share.wav").exists()
    })
    .await;
    let uploads = sandbox.stats().uploads;
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].sha256, sha256_hex(&content));
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_wav_and_a_text_file_named_mp3_go_to_failed_with_an_explanation() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let watching = Watching::start(&meetings_config(&dirs, &sandbox, &receiver, "off")).await;
    // 26 MB: a valid header, then silence.
    let big = dirs.inbox.join("all-hands.wav");
    let size = 26_000_000u64;
    let mut file = std::fs::File::create(&big).unwrap();
    file.write_all(&wav_header((size - 44) as u32, 16_000))
        .unwrap();
    file.set_len(size).unwrap();
    drop(file);
    std::fs::write(
        dirs.inbox.join("notes.mp3"),
        "these are my meeting notes, not audio\n",
    )
    .unwrap();
    // A sidecar that is not what it should be (agentId must be a string).
    std::fs::write(
        dirs.inbox.join("sync.wav.json"),
        r#"{"title": "Sync", "agentId": 42}"#,
    )
    .unwrap();
    std::fs::write(dirs.inbox.join("sync.wav"), wav(1.0, 8_000)).unwrap();
    eventually("the three recordings are in failed/", || {
        names(&dirs.failed())
            == [
                "all-hands.wav",
                "all-hands.wav.error.txt",
                "notes.mp3",
                "notes.mp3.error.txt",
                "sync.wav",
                "sync.wav.error.txt",
                "sync.wav.json",
            ]
    })
    .await;
    let sidecar_error = std::fs::read_to_string(dirs.failed().join("sync.wav.error.txt")).unwrap();
    assert!(
        sidecar_error.contains("sidecar sync.wav.json is not valid"),
        "{sidecar_error}"
    );
    let big_error = std::fs::read_to_string(dirs.failed().join("all-hands.wav.error.txt")).unwrap();
    assert!(big_error.contains("26.0 MB"), "{big_error}");
    assert!(big_error.contains("25 MB"), "{big_error}");
    assert!(
        big_error.contains("ffmpeg") && big_error.contains("transcode = \"auto\""),
        "says how to fix it: {big_error}"
    );
    let text_error = std::fs::read_to_string(dirs.failed().join("notes.mp3.error.txt")).unwrap();
    assert!(
        text_error.contains("does not hold MP3 audio"),
        "{text_error}"
    );
    assert!(text_error.contains("looks like text"), "{text_error}");
    assert_eq!(
        std::fs::metadata(dirs.failed().join("all-hands.wav"))
            .unwrap()
            .len(),
        size,
        "the file is kept whole"
    );
    eventually("the three are counted as rejected", || {
        watching.uploads("rejected") == 3
    })
    .await;
    assert!(sandbox.stats().uploads.is_empty(), "nothing was sent");
    assert_eq!(names(&dirs.inbox), ["failed"]);
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_content_under_two_names_is_uploaded_once() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let watching = Watching::start(&meetings_config(&dirs, &sandbox, &receiver, "off")).await;
    let content = wav(2.0, 8_000);
    std::fs::write(dirs.inbox.join("call.wav"), &content).unwrap();
    std::fs::write(dirs.inbox.join("call (copy).wav"), &content).unwrap();
    eventually("both files are in processed/", || {
        names(&dirs.processed()) == ["call (copy).wav", "call.wav"]
    })
    .await;
    eventually("the event is delivered", || {
        meeting_events(&receiver).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sandbox.stats().uploads.len(),
        1,
        "one upload for one content"
    );
    assert_eq!(
        meeting_events(&receiver).len(),
        1,
        "one event for one content"
    );
    assert_eq!(watching.uploads("uploaded"), 1);
    assert_eq!(watching.uploads("duplicate"), 1);
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_between_the_upload_and_the_move_neither_uploads_nor_announces_twice() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let config = meetings_config(&dirs, &sandbox, &receiver, "off");
    let content = wav(2.0, 8_000);
    let path = dirs.inbox.join("retro.wav");

    let watching = Watching::start(&config).await;
    std::fs::write(&path, &content).unwrap();
    eventually("the recording is processed", || {
        dirs.processed().join("retro.wav").exists()
    })
    .await;
    eventually("the event is delivered", || {
        meeting_events(&receiver).len() == 1
    })
    .await;
    watching.stop().await;

    // The state a kill -9 leaves between the commit (meeting and event recorded) and the
    // move: the row is done, and the file is still in the drop folder under its name.
    std::fs::rename(dirs.processed().join("retro.wav"), &path).unwrap();

    let watching = Watching::start(&config).await;
    eventually("the file is moved on the restart", || {
        !path.exists() && dirs.processed().join("retro.wav").exists()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sandbox.stats().uploads.len(), 1, "no second upload");
    let events = meeting_events(&receiver);
    assert_eq!(
        events.len(),
        1,
        "the event reached the webhook exactly once"
    );
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(events[0]["data"]["sha256"], sha256_hex(&content));
    watching.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_after_the_upload_but_before_the_move_finishes_the_move_and_announces_once()
{
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    // processed/ holds every name the recording could take (its own and the 9,999
    // numbered ones; a name is never overwritten): the move fails after the commit, so the
    // daemon is killed in exactly the state a crash between the two leaves. (A processed/
    // that is not a directory would stop the upload itself.)
    let done = dirs.root.join("done");
    std::fs::create_dir(&done).unwrap();
    std::fs::write(done.join("standup.wav"), "taken").unwrap();
    for n in 2..=10_000 {
        std::fs::write(done.join(format!("standup-{n}.wav")), "").unwrap();
    }
    let config = meetings_config_with(
        &dirs,
        &sandbox,
        &receiver,
        "off",
        &format!("processed = \"{}\"", done.display()),
    );
    let content = wav(2.0, 8_000);
    let path = dirs.inbox.join("standup.wav");

    let mut daemon = Daemon::start(&config);
    std::fs::write(&path, &content).unwrap();
    eventually("the event is delivered", || {
        meeting_events(&receiver).len() == 1
    })
    .await;
    assert!(
        path.exists(),
        "the move failed, so the file is still in the drop folder"
    );
    daemon.kill9();

    std::fs::remove_file(done.join("standup.wav")).unwrap();
    let _daemon = Daemon::start(&config);
    eventually("the restarted daemon moves the file", || {
        !path.exists()
            && std::fs::read(done.join("standup.wav")).is_ok_and(|moved| moved == content)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sandbox.stats().uploads.len(), 1, "no second upload");
    let ids: std::collections::HashSet<String> =
        receiver.received().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 1, "one meeting.processed event at the connector");
    assert_eq!(receiver.received().len(), 1, "delivered once");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_interrupted_by_a_crash_is_sent_again_at_start_up_and_announced_once() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let config = meetings_config(&dirs, &sandbox, &receiver, "off");
    let content = wav(2.0, 8_000);
    let path = dirs.inbox.join("interrupted.wav");
    std::fs::write(&path, &content).unwrap();
    // What a kill -9 during the request leaves: the claim, and an attempt never answered.
    let store = Store::open(&dirs.root.join("state.db")).await.unwrap();
    let claim = MeetingClaim {
        sha256: sha256_hex(&content),
        file_name: "interrupted.wav".to_owned(),
        source_path: path.display().to_string(),
        agent_id: sandbox.agent_id("MEETING"),
        title: "interrupted".to_owned(),
        size: content.len() as u64,
    };
    assert_eq!(
        store.claim_meeting(&claim, false).await.unwrap(),
        Claim::Upload { interrupted: false }
    );
    store.meeting_attempt(&claim.sha256).await.unwrap();
    assert_eq!(store.interrupted_meetings().await.unwrap().len(), 1);
    store.close().await;

    let watching = Watching::start(&config).await;
    eventually("the recording is processed", || {
        dirs.processed().join("interrupted.wav").exists()
    })
    .await;
    eventually("the event is delivered", || {
        meeting_events(&receiver).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sandbox.stats().uploads.len(), 1);
    assert_eq!(meeting_events(&receiver).len(), 1);
    watching.stop().await;
    let store = Store::open(&dirs.root.join("state.db")).await.unwrap();
    let row = store.meeting(&claim.sha256).await.unwrap().unwrap();
    assert_eq!(
        row.attempts, 2,
        "the interrupted attempt and the one that succeeded"
    );
    assert!(row.meeting_id.is_some());
    assert!(store.interrupted_meetings().await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rejected_during_an_upload_turns_readyz_false_until_a_reload() {
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let config = meetings_config(&dirs, &sandbox, &receiver, "off");
    enable_http(&config);
    let daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    // No poller is configured: only an upload can meet the rejected key.
    let (status, body) = readyz(&address).await;
    assert_eq!(status, 200, "ready before any upload: {body}");

    sandbox.remove_api_key("clr_sandbox_key");
    let content = wav(1.0, 8_000);
    let path = dirs.inbox.join("standup.wav");
    std::fs::write(&path, &content).unwrap();
    daemon
        .wait_for_line("uploads pause", PATIENCE)
        .await
        .expect("the upload meets the rejected key");
    let (status, body) = readyz(&address).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["failing"]["api_key"]
            .as_str()
            .is_some_and(|reason| reason.contains("rejected the API key")),
        "{body}"
    );
    assert!(path.exists(), "the recording stays in the drop folder");
    assert!(sandbox.stats().uploads.is_empty());

    sandbox.add_api_key("clr_sandbox_key");
    daemon.signal("HUP");
    eventually("the recording is uploaded after the reload", || {
        dirs.processed().join("standup.wav").exists()
    })
    .await;
    let (status, body) = readyz(&address).await;
    assert_eq!(status, 200, "ready again after the reload: {body}");
    assert_eq!(sandbox.stats().uploads.len(), 1);
    assert_eq!(sandbox.stats().uploads[0].sha256, sha256_hex(&content));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_ffmpeg_an_oversize_wav_is_converted_to_webm_that_clairo_accepts() {
    assert!(
        meetings::transcode::find_on_path("ffmpeg").is_some(),
        "ffmpeg is not installed: run scripts/test-prereqs.sh as root (the test command's \
         setup script does), or apt-get install ffmpeg"
    );
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dirs = Dirs::new();
    let watching = Watching::start(&meetings_config(&dirs, &sandbox, &receiver, "auto")).await;
    // About 30 MB: 16-bit mono at 48 kHz for 5 min 15 s.
    let content = wav(315.0, 48_000);
    assert!(content.len() > 30_000_000);
    let staging = dirs.root.join("long-review.wav");
    std::fs::write(&staging, &content).unwrap();
    std::fs::rename(&staging, dirs.inbox.join("long-review.wav")).unwrap();
    eventually("the original is in processed/", || {
        dirs.processed().join("long-review.wav").exists()
    })
    .await;
    eventually("the event is delivered", || {
        meeting_events(&receiver).len() == 1
    })
    .await;
    let uploads = sandbox.stats().uploads;
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].file_name, "long-review.webm",
        "the converted copy is sent"
    );
    assert!(uploads[0].size < 25_000_000, "{} bytes", uploads[0].size);
    assert_eq!(
        std::fs::metadata(dirs.processed().join("long-review.wav"))
            .unwrap()
            .len(),
        content.len() as u64,
        "the original is kept"
    );
    let data = &meeting_events(&receiver)[0]["data"];
    assert_eq!(
        data["sha256"],
        sha256_hex(&content),
        "the original's sha256 is the key"
    );
    assert_eq!(data["fileName"], "long-review.wav");
    let leftovers = names(&dirs.root.join("transcode"));
    assert!(
        leftovers.is_empty(),
        "the converted copy is removed: {leftovers:?}"
    );
    watching.stop().await;
}

/// Runs the binary with `args` and the API key in the environment.
async fn run_upload(sandbox: &Sandbox, args: Vec<String>) -> (i32, String, String) {
    let base_url = sandbox.base_url();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(bin())
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

#[tokio::test(flavor = "multi_thread")]
async fn the_upload_command_sends_one_recording_and_prints_its_summary() {
    let sandbox = sandbox(0, 0).await;
    let dirs = Dirs::new();
    let agent = sandbox.agent_id("MEETING");
    let recording = dirs.root.join("quarterly_review.wav");
    let content = wav(3.0, 8_000);
    std::fs::write(&recording, &content).unwrap();
    let file = recording.display().to_string();

    // No config file: the environment is enough.
    let (code, stdout, stderr) = run_upload(
        &sandbox,
        vec![
            "upload".into(),
            file.clone(),
            "--agent".into(),
            agent.clone(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let uploads = sandbox.stats().uploads;
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].sha256, sha256_hex(&content));
    assert_eq!(uploads[0].title, "quarterly review");
    assert!(stdout.contains(&uploads[0].meeting_id), "{stdout}");
    assert!(stdout.contains("Summary"), "{stdout}");
    assert!(recording.exists(), "the command never moves the file");

    // With a config: recorded in the state database, so the same recording is not sent twice.
    let receiver = Receiver::start().await;
    let config = meetings_config(&dirs, &sandbox, &receiver, "off")
        .display()
        .to_string();
    let args = vec![
        "upload".into(),
        file,
        "--agent".into(),
        agent,
        "--title".into(),
        "Q3 review".into(),
        "-c".into(),
        config,
    ];
    let (code, stdout, stderr) = run_upload(&sandbox, args.clone()).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Q3 review"), "{stdout}");
    assert_eq!(sandbox.stats().uploads.len(), 2);
    let (code, stdout, stderr) = run_upload(&sandbox, args).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Not sent again"), "{stdout}");
    assert_eq!(
        sandbox.stats().uploads.len(),
        2,
        "the second run sent nothing"
    );
    let store = Store::open(&dirs.root.join("state.db")).await.unwrap();
    assert_eq!(
        store.event_count().await.unwrap(),
        1,
        "one meeting.processed event is queued"
    );
    store.close().await;

    // A text file is refused before anything is sent, and says why.
    let notes = write(&dirs.root, "notes.webm", "not audio");
    let (code, _, stderr) = run_upload(
        &sandbox,
        vec![
            "upload".into(),
            notes.display().to_string(),
            "--agent".into(),
            sandbox.agent_id("MEETING"),
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("does not hold WebM audio"), "{stderr}");
    assert_eq!(sandbox.stats().uploads.len(), 2);
}
