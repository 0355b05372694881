//! `transcode = "auto"`: a recording over the limit, or in a format Clairo does not take
//! (m4a, ogg, flac, mp4…), is turned by ffmpeg into mono Opus in WebM, which holds about
//! two hours of speech in 25 MB. The copy lives in a temporary file that is removed when
//! dropped; the original is what the dedupe key and the drop folder keep.
//!
//! ffmpeg reads the recording that was checked, not its name: the open file is its stdin,
//! and it is told to read `/proc/self/fd/0`. Opening that reopens the same file (with
//! its own offset, so ffmpeg can seek, as MP4/M4A with the index at the end needs; a
//! `pipe:` input cannot), whatever was renamed into the drop folder since. It needs /proc,
//! which every systemd host has.
//!
//! What ffmpeg prints is outside input too: [`parse_duration`] turns any text into a
//! length or nothing, never a panic.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::sync::Semaphore;

/// Speech stays clear at 24 kbit/s Opus (`-application voip`), and 25 MB then holds
/// about 2 h 15 min.
pub const BITRATE: &str = "24k";

/// The longest recording that fits the limit at [`BITRATE`], with room for the WebM
/// container: the advice given when one does not fit.
pub const MAX_PART: Duration = Duration::from_secs(2 * 3600);

/// A conversion taking longer than this is stuck (two hours of audio take a minute or two
/// on one core).
const TRANSCODE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// ffmpeg's messages are kept up to this size (its banner and stream list are a few KiB).
const MAX_STDERR_BYTES: usize = 64 * 1024;

/// The longest recording length believed from ffmpeg's messages; beyond it (or negative,
/// or not a number) the length is unknown.
pub const LONGEST_BELIEVABLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What ffmpeg is told to read: its stdin, reopened (see the module's note).
const INPUT: &str = "file:/proc/self/fd/0";

/// Names of our temporary files start with this, so a start-up can clear leftovers.
const TEMP_PREFIX: &str = "clairo-sync-";

/// Runs ffmpeg, one conversion at a time (each takes a whole core).
#[derive(Clone, Debug)]
pub struct Transcoder {
    ffmpeg: PathBuf,
    /// `libopus`, or ffmpeg's own `opus` encoder when built without libopus.
    encoder: &'static str,
    temp_dir: PathBuf,
    permits: Arc<Semaphore>,
}

/// Why a conversion did not produce a file.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// ffmpeg could not read or convert the recording: the file's fault.
    #[error("ffmpeg could not convert the recording: {0}")]
    Failed(String),
    /// Our side (spawning ffmpeg, the temporary directory): worth retrying.
    #[error("cannot run ffmpeg: {0}")]
    Io(String),
}

/// A converted recording; the file is removed when this is dropped.
#[derive(Debug)]
pub struct Transcoded {
    pub path: PathBuf,
    /// The converted copy, open: what is sent.
    pub file: Arc<File>,
    pub size: u64,
    /// The recording's length, as ffmpeg read it from the input.
    pub duration: Option<Duration>,
}

impl Drop for Transcoded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Transcoder {
    /// Finds ffmpeg on PATH and an Opus encoder in it; the error says what is missing.
    pub async fn detect(temp_dir: PathBuf) -> Result<Self, String> {
        let ffmpeg = find_on_path("ffmpeg")
            .ok_or_else(|| "ffmpeg is not installed (not found on PATH)".to_owned())?;
        let output = tokio::process::Command::new(&ffmpeg)
            .args(["-hide_banner", "-encoders"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|error| format!("cannot run {}: {error}", ffmpeg.display()))?;
        let encoders = String::from_utf8_lossy(&output.stdout);
        let has = |name: &str| {
            encoders
                .lines()
                .any(|line| line.split_whitespace().nth(1) == Some(name))
        };
        let encoder = if has("libopus") {
            "libopus"
        } else if has("opus") {
            "opus"
        } else {
            return Err(format!(
                "{} has no Opus encoder; install a full ffmpeg build",
                ffmpeg.display()
            ));
        };
        Ok(Self {
            ffmpeg,
            encoder,
            temp_dir,
            permits: Arc::new(Semaphore::new(1)),
        })
    }

    pub fn ffmpeg(&self) -> &Path {
        &self.ffmpeg
    }

    /// Removes temporary files a previous run left (it stopped mid-conversion).
    pub fn clear_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.temp_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) && name.ends_with(".webm") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Converts the open recording `input` to mono Opus in WebM, into a temporary file
    /// named after `key`.
    pub async fn to_webm(&self, input: &File, key: &str) -> Result<Transcoded, TranscodeError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| TranscodeError::Io("shutting down".to_owned()))?;
        tokio::fs::create_dir_all(&self.temp_dir)
            .await
            .map_err(|error| {
                TranscodeError::Io(format!(
                    "cannot create {}: {error}",
                    self.temp_dir.display()
                ))
            })?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{TEMP_PREFIX}{}-{}-{}.webm",
            key.chars().take(16).collect::<String>(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let output_path = self.temp_dir.join(name);
        // Removes ffmpeg's output on every early return.
        let cleanup = RemoveOnDrop(Some(output_path.clone()));
        let stdin = input.try_clone().map_err(|error| {
            TranscodeError::Io(format!("cannot hand the recording to ffmpeg: {error}"))
        })?;
        let mut command = tokio::process::Command::new(&self.ffmpeg);
        command
            .args([
                "-nostdin",
                "-hide_banner",
                "-nostats",
                "-loglevel",
                "info",
                "-y",
                "-i",
            ])
            .arg(INPUT)
            .args([
                "-vn",
                "-sn",
                "-dn",
                "-map_metadata",
                "-1",
                "-ac",
                "1",
                "-c:a",
                self.encoder,
                "-b:a",
                BITRATE,
            ])
            .args(if self.encoder == "opus" {
                &["-strict", "-2"][..]
            } else {
                &["-application", "voip"][..]
            })
            .args(["-f", "webm"])
            // `file:` so that a name with a colon or a leading dash is not read as a protocol or option.
            .arg(file_url(&output_path))
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            TranscodeError::Io(format!("cannot start {}: {error}", self.ffmpeg.display()))
        })?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let read_messages = async move {
            let mut kept = Vec::new();
            let mut chunk = vec![0u8; 8192];
            loop {
                match stderr.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        let room = MAX_STDERR_BYTES.saturating_sub(kept.len());
                        kept.extend_from_slice(&chunk[..read.min(room)]);
                    }
                }
            }
            String::from_utf8_lossy(&kept).into_owned()
        };
        let run = async { tokio::join!(child.wait(), read_messages) };
        let (status, messages) =
            tokio::time::timeout(TRANSCODE_TIMEOUT, run)
                .await
                .map_err(|_| {
                    TranscodeError::Failed(format!(
                        "ffmpeg did not finish within {} minutes",
                        TRANSCODE_TIMEOUT.as_secs() / 60
                    ))
                })?;
        let status =
            status.map_err(|error| TranscodeError::Io(format!("waiting for ffmpeg: {error}")))?;
        let duration = parse_duration(&messages);
        if !status.success() {
            return Err(TranscodeError::Failed(last_lines(&messages, 3)));
        }
        let file = File::open(&output_path)
            .map_err(|error| TranscodeError::Io(format!("ffmpeg wrote no output: {error}")))?;
        let size = file
            .metadata()
            .map_err(|error| TranscodeError::Io(format!("ffmpeg wrote no output: {error}")))?
            .len();
        Ok(Transcoded {
            // From here on, Transcoded removes it.
            path: cleanup.keep(),
            file: Arc::new(file),
            size,
            duration,
        })
    }
}

/// Removes a file when dropped (ffmpeg's output, when the conversion fails) unless kept.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn file_url(path: &Path) -> std::ffi::OsString {
    let mut url = std::ffi::OsString::from("file:");
    url.push(path.as_os_str());
    url
}

/// The first executable named `program` in PATH.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
}

/// The input's length from ffmpeg's description of it (`Duration: 01:02:03.45`), or
/// `None` when there is none, it is not `H:MM:SS.ss` with whole hours and minutes, or it is
/// negative, not a number, or longer than [`LONGEST_BELIEVABLE`]. Any text at all may come
/// in (ffmpeg prints what a file's headers claim); nothing panics or overflows.
pub fn parse_duration(messages: &str) -> Option<Duration> {
    let at = messages.find("Duration: ")? + "Duration: ".len();
    let text = messages[at..].split([',', '\n']).next()?.trim();
    let mut parts = text.split(':');
    let whole = |part: &str| -> Option<u64> {
        // Digits only: `u64::from_str` would take a sign.
        (!part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let hours = whole(parts.next()?)?;
    let minutes = whole(parts.next()?).filter(|minutes| *minutes < 60)? * 60;
    let seconds: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !seconds.is_finite() || !(0.0..60.0).contains(&seconds) {
        return None;
    }
    let total = Duration::from_secs(hours.checked_mul(3600)?.checked_add(minutes)?)
        .checked_add(Duration::try_from_secs_f64(seconds).ok()?)?;
    (total <= LONGEST_BELIEVABLE).then_some(total)
}

/// The end of ffmpeg's messages, where it says what went wrong.
fn last_lines(messages: &str, count: usize) -> String {
    let lines: Vec<&str> = messages
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let start = lines.len().saturating_sub(count);
    // ffmpeg echoes what a file's headers claim: no control characters into logs and
    // error texts.
    let text: String = lines[start..]
        .join(" / ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.is_empty() {
        "ffmpeg gave no reason".to_owned()
    } else {
        text
    }
}

/// `2 h 05 min`, `14 min 03 s`.
pub fn human_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours} h {minutes:02} min")
    } else {
        format!("{minutes} min {seconds:02} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_duration_is_read_from_ffmpegs_messages() {
        let messages =
            "Input #0, wav, from 'file:/x.wav':\n  Duration: 02:31:07.50, bitrate: 256 kb/s\n";
        assert_eq!(
            parse_duration(messages),
            Some(Duration::from_secs_f64(2.0 * 3600.0 + 31.0 * 60.0 + 7.5))
        );
        assert_eq!(parse_duration("  Duration: N/A, bitrate: N/A"), None);
        assert_eq!(
            parse_duration("Duration: 00:00:60.00,"),
            None,
            "not a time of day"
        );
    }

    #[test]
    fn a_negative_nan_or_absurd_duration_is_unknown_and_never_panics() {
        for text in [
            "-00:00:05.00",
            "00:00:-5",
            "NaN:00:00",
            "00:00:NaN",
            "00:00:inf",
            "inf:00:00",
            "99999999999999999999:00:00",
            "18446744073709551615:00:00",
            "5124095576030431:00:00",
            "00:-1e308:00",
            "00:00:1e308",
            "+1:00:00",
            "1:2:3:4",
            "::",
            "",
            "200:00:00",
        ] {
            assert_eq!(
                parse_duration(&format!("  Duration: {text}, start: 0")),
                None,
                "{text}"
            );
        }
        assert_eq!(parse_duration("Duration: "), None);
        assert_eq!(parse_duration("Duration: é"), None);
        assert_eq!(human_duration(Duration::from_secs(9000)), "2 h 30 min");
        assert_eq!(human_duration(Duration::from_secs(843)), "14 min 03 s");
    }
}
