// Over 500 lines: its tests are the last 100; the checks themselves are under 480.
//! What is checked before a recording is sent: which files in a drop folder count at all,
//! what kind of entry it is (only regular files are taken: a link is never followed, a
//! FIFO or device never opened), what a recording is (extension and magic bytes must
//! agree), whether it fits Clairo's limit, and the optional sidecar that names its title
//! and agent. A file that fails gets a [`Rejection`] saying why and what to do, in words
//! for the person who dropped it — never quoting the file's bytes, which may belong to
//! someone else.
//!
//! A recording is opened once ([`open_recording`]); the checks, the hash and the upload
//! all read that one descriptor, so what was checked is what is sent.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

pub use super::sidecar::{Sidecar, read_sidecar, sidecar_path};

/// The largest recording sent as is. The docs say "Max size: 25MB"; 25,000,000 bytes is
/// the conservative reading, so nothing the daemon sends is too large
/// under either reading.
pub const MAX_UPLOAD_BYTES: u64 = 25_000_000;

/// Bytes read from a file's start to recognise its format.
const HEAD_BYTES: usize = 16;

/// Endings of files that are still being written by someone (browsers, copy tools,
/// editors) or that clairo-sync writes itself (`.error.txt`) or reads beside a recording
/// (`.json`): never taken as recordings.
const IGNORED_ENDINGS: [&str; 8] = [
    ".part",
    ".partial",
    ".tmp",
    ".crdownload",
    ".download",
    ".error.txt",
    ".json",
    "~",
];

/// Other audio (and audio-in-video) formats ffmpeg turns into Opus/WebM when
/// `transcode = "auto"`; without it they are refused with a message saying so.
const TRANSCODABLE: [&str; 21] = [
    "m4a", "m4b", "mp4", "aac", "ogg", "oga", "opus", "flac", "mov", "mkv", "mka", "weba", "wma",
    "amr", "3gp", "3ga", "caf", "aif", "aiff", "wv", "ac3",
];

/// What a drop-folder entry is, from `lstat` (a link is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Regular,
    Symlink,
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl EntryKind {
    pub fn of(file_type: std::fs::FileType) -> Self {
        if file_type.is_file() {
            Self::Regular
        } else if file_type.is_symlink() {
            Self::Symlink
        } else if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_fifo() {
            Self::Fifo
        } else if file_type.is_socket() {
            Self::Socket
        } else if file_type.is_char_device() {
            Self::CharDevice
        } else if file_type.is_block_device() {
            Self::BlockDevice
        } else {
            Self::Unknown
        }
    }

    /// The entry at `path` itself (`lstat`).
    pub fn of_path(path: &Path) -> std::io::Result<Self> {
        Ok(Self::of(path.symlink_metadata()?.file_type()))
    }

    /// `a symbolic link`, `a named pipe (FIFO)`, …
    pub fn describe(self) -> &'static str {
        match self {
            Self::Regular => "a regular file",
            Self::Symlink => "a symbolic link",
            Self::Directory => "a directory",
            Self::Fifo => "a named pipe (FIFO)",
            Self::Socket => "a socket",
            Self::CharDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Unknown => "a special file",
        }
    }

    /// Whether a refused entry of this kind is moved to failed/. Renaming moves the entry
    /// itself, without opening it: a link stays a link pointing where it did, a FIFO or
    /// device is never read. A directory stays where it is: it may be someone's folder.
    pub fn moved_when_refused(self) -> bool {
        !matches!(self, Self::Regular | Self::Directory)
    }
}

/// Why an entry that is not a regular file is not taken.
pub fn not_a_regular_file(kind: EntryKind) -> Rejection {
    match kind {
        EntryKind::Symlink => Rejection::new(
            "it is a symbolic link, not a regular file: clairo-sync never follows links in a drop folder, and did not read what this one points to",
            "copy or move the recording itself (not a link to it) into the drop folder",
        ),
        EntryKind::Directory => Rejection::new(
            "it is a directory, not a recording file (subfolders of a drop folder are not searched)",
            "put the recordings themselves into the drop folder",
        ),
        other => Rejection::new(
            format!(
                "it is {}, not a regular file: clairo-sync takes only regular files and did not open it",
                other.describe()
            ),
            "drop finished recordings as regular files",
        ),
    }
}

/// Whether a directory entry's name may be a recording (dot files, temporaries, sidecars
/// and our own error files are not).
pub fn is_candidate_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_lowercase();
    !name.is_empty()
        && !name.starts_with('.')
        && !IGNORED_ENDINGS.iter().any(|ending| name.ends_with(ending))
}

/// Whether a name ends like a recording (`.wav`, `.m4a`, …): a directory named so is
/// refused with a reason; other subfolders are simply not looked at.
pub fn looks_like_recording(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_lowercase();
    Path::new(&name)
        .extension()
        .map(|extension| extension.to_string_lossy().into_owned())
        .is_some_and(|extension| {
            Format::from_extension(&extension).is_some()
                || TRANSCODABLE.contains(&extension.as_str())
        })
}

/// The formats Clairo accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Webm,
    Mp3,
    Wav,
}

impl Format {
    pub fn from_extension(extension: &str) -> Option<Self> {
        match extension {
            "webm" => Some(Self::Webm),
            "mp3" => Some(Self::Mp3),
            "wav" => Some(Self::Wav),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Webm => "WebM",
            Self::Mp3 => "MP3",
            Self::Wav => "WAV",
        }
    }

    /// The magic bytes: EBML for WebM, an ID3 tag or an MPEG frame sync (0xFF then three
    /// more set bits) for MP3, `RIFF….WAVE` for WAV.
    pub fn matches(self, head: &[u8]) -> bool {
        match self {
            Self::Webm => head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]),
            Self::Mp3 => {
                head.starts_with(b"ID3")
                    || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0)
            }
            Self::Wav => head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WAVE",
        }
    }
}

/// Why a file is not uploaded, and what the person who dropped it can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub why: String,
    pub what: String,
}

impl Rejection {
    pub fn new(why: impl Into<String>, what: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            what: what.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.why, self.what)
    }
}

/// Whether oversize and other-format recordings can be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// `[meetings] transcode = "off"`.
    Off,
    /// `transcode = "auto"` but ffmpeg is not on PATH.
    NoFfmpeg,
    Available,
}

impl Conversion {
    /// The advice for a file only a conversion could make acceptable.
    fn advice(self) -> &'static str {
        match self {
            Self::Off | Self::Available => {
                "to have clairo-sync convert such files, install ffmpeg (e.g. `apt install ffmpeg`) and set `[meetings] transcode = \"auto\"`; \
                 or convert it yourself to WebM/Opus (`ffmpeg -i INPUT -vn -ac 1 -c:a libopus -b:a 24k OUTPUT.webm`) and drop the result here"
            }
            Self::NoFfmpeg => {
                "`[meetings] transcode = \"auto\"` is set but ffmpeg is not installed (not found on PATH): install it (e.g. `apt install ffmpeg`), \
                 then move the file back into the drop folder"
            }
        }
    }
}

/// How a file that passed the checks is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// As it is.
    Direct(Format),
    /// Converted to Opus in WebM first; the text says why (for the log).
    Transcode(String),
}

/// A file that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub size: u64,
    pub plan: Plan,
}

/// Why a file could not be inspected at all.
#[derive(Debug)]
pub enum InspectError {
    /// Not uploadable; goes to failed/.
    Rejected(Rejection),
    /// Not a regular file (a link, FIFO, device, directory…): refused without being read.
    NotAFile(EntryKind),
    /// It vanished (moved or deleted by someone else): nothing to do.
    Gone,
    /// Opening failed in a way that may pass (too many open files, a network mount's hiccup).
    Io(std::io::Error),
}

/// Opens a recording once, for the checks, the hash and the upload to share: the entry
/// must be a regular file. `O_NOFOLLOW` refuses a link (even one swapped in after the
/// listing), `O_NONBLOCK` keeps a FIFO swapped in from blocking the open, and the open
/// descriptor's own `fstat` decides: only a regular file is ever read.
pub fn open_recording(path: &Path) -> Result<File, InspectError> {
    // A FIFO, device or socket is refused before any open (opening a device can have
    // effects of its own); the fstat below covers one swapped in after this look.
    match EntryKind::of_path(path) {
        Ok(EntryKind::Regular) => {}
        Ok(kind) => return Err(InspectError::NotAFile(kind)),
        Err(error) => return Err(open_error(error)),
    }
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP) => return Err(InspectError::NotAFile(EntryKind::Symlink)),
        Err(errno) => return Err(open_error(errno.into())),
    };
    let metadata = file.metadata().map_err(open_error)?;
    let kind = EntryKind::of(metadata.file_type());
    if kind != EntryKind::Regular {
        return Err(InspectError::NotAFile(kind));
    }
    // Reads of a regular file never block; the flag only mattered for the open.
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|errno| open_error(errno.into()))?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)
        .map_err(|errno| open_error(errno.into()))?;
    Ok(file)
}

fn open_error(error: std::io::Error) -> InspectError {
    match error.kind() {
        std::io::ErrorKind::NotFound => InspectError::Gone,
        std::io::ErrorKind::PermissionDenied => InspectError::Rejected(unreadable(&error)),
        _ => InspectError::Io(error),
    }
}

/// Opens `path` ([`open_recording`]) and checks it ([`inspect_open`]).
pub fn inspect(path: &Path, conversion: Conversion) -> Result<Inspection, InspectError> {
    let file = open_recording(path)?;
    inspect_open(&file, path, conversion)
}

/// Checks an open recording: non-empty, extension (of `path`, its name) and magic bytes,
/// size — all from the descriptor, not the name, so a file swapped in meanwhile is not
/// what is looked at.
pub fn inspect_open(
    file: &File,
    path: &Path,
    conversion: Conversion,
) -> Result<Inspection, InspectError> {
    let metadata = file.metadata().map_err(InspectError::Io)?;
    let size = metadata.len();
    if size == 0 {
        return Err(InspectError::Rejected(Rejection::new(
            "the file is empty (0 bytes)",
            "the recording probably failed or was not copied completely; drop the complete file again",
        )));
    }
    let head = match read_head(file) {
        Ok(head) => head,
        Err(error) => return Err(InspectError::Rejected(unreadable(&error))),
    };
    let extension = path
        .extension()
        .map(|extension| extension.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let plan = if let Some(format) = Format::from_extension(&extension) {
        if !format.matches(&head) {
            return Err(InspectError::Rejected(Rejection::new(
                format!(
                    "the file ends in .{extension} but does not hold {name} audio: it does not start with a {name} header, and {found}",
                    name = format.name(),
                    found = describe_head(&head)
                ),
                "export or save the recording again, or give it the extension of its real format",
            )));
        }
        if size <= MAX_UPLOAD_BYTES {
            Plan::Direct(format)
        } else if conversion == Conversion::Available {
            Plan::Transcode(format!("{} is over Clairo's 25 MB limit", megabytes(size)))
        } else {
            return Err(InspectError::Rejected(Rejection::new(
                format!(
                    "the file is {} ({size} bytes), over Clairo's limit of 25 MB ({MAX_UPLOAD_BYTES} bytes)",
                    megabytes(size)
                ),
                conversion.advice(),
            )));
        }
    } else if TRANSCODABLE.contains(&extension.as_str()) {
        if conversion == Conversion::Available {
            Plan::Transcode(format!(".{extension} is not a format Clairo accepts"))
        } else {
            return Err(InspectError::Rejected(Rejection::new(
                format!(
                    "Clairo accepts only webm, mp3 and wav recordings, and this is a .{extension} file"
                ),
                conversion.advice(),
            )));
        }
    } else {
        let kind = if extension.is_empty() {
            "a file without an extension".to_owned()
        } else {
            format!("a .{extension} file")
        };
        return Err(InspectError::Rejected(Rejection::new(
            format!("this is {kind}, not a recording clairo-sync can upload"),
            "drop webm, mp3 or wav recordings into this folder (with `[meetings] transcode = \"auto\"` and ffmpeg, also m4a, ogg, opus, flac, aac or mp4)",
        )));
    };
    Ok(Inspection { size, plan })
}

/// The first bytes, read at offset 0 without moving the descriptor's offset.
fn read_head(file: &File) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; HEAD_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    head.truncate(filled);
    Ok(head)
}

pub fn unreadable(error: &std::io::Error) -> Rejection {
    Rejection::new(
        format!("the file cannot be read ({error})"),
        "give the clairo-sync user read permission on it (chmod/chown), then move it back into the drop folder",
    )
}

/// What a file's start looks like, in words: enough to tell a mislabelled file, and never
/// its bytes (a file in a drop folder may hold someone else's secret).
fn describe_head(head: &[u8]) -> &'static str {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if let Some(format) = [Format::Webm, Format::Mp3, Format::Wav]
        .into_iter()
        .find(|format| format.matches(head))
    {
        return match format {
            Format::Webm => "it starts like a WebM file (give it the .webm extension)",
            Format::Mp3 => "it starts like an MP3 file (give it the .mp3 extension)",
            Format::Wav => "it starts like a WAV file (give it the .wav extension)",
        };
    }
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        "it starts like an MP4/M4A file"
    } else if starts(b"OggS") {
        "it starts like an Ogg file"
    } else if starts(b"fLaC") {
        "it starts like a FLAC file"
    } else if starts(b"%PDF") {
        "it starts like a PDF document"
    } else if starts(b"PK\x03\x04") {
        "it starts like a ZIP archive (or an office document)"
    } else if head
        .iter()
        .all(|byte| byte.is_ascii_graphic() || byte.is_ascii_whitespace())
    {
        "its start looks like text"
    } else {
        "its start matches no audio format clairo-sync knows"
    }
}

/// `26.2 MB` (decimal megabytes, as the limit is stated).
pub fn megabytes(size: u64) -> String {
    format!("{:.1} MB", size as f64 / 1_000_000.0)
}

/// A title from a file name: the stem, `_` and `-` as spaces (`weekly_standup-2026.wav` →
/// `weekly standup 2026`).
pub fn title_from_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let spaced: String = stem
        .chars()
        .map(|c| if c == '_' || c == '-' { ' ' } else { c })
        .collect();
    let title = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    if title.is_empty() {
        "Recording".to_owned()
    } else {
        title
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_sidecars_and_dot_files_are_not_recordings() {
        for name in [
            ".hidden.wav",
            "call.wav.part",
            "x.TMP",
            "y.crdownload",
            "z.wav.error.txt",
            "call.wav.json",
            "a~",
        ] {
            assert!(!is_candidate_name(OsStr::new(name)), "{name}");
        }
        for name in ["call.wav", "Standup.WEBM", "notes.txt"] {
            assert!(is_candidate_name(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn magic_bytes_must_match_the_extension() {
        assert!(Format::Wav.matches(b"RIFF\x24\0\0\0WAVEfmt "));
        assert!(!Format::Wav.matches(b"RIFF\x24\0\0\0AVI "));
        assert!(Format::Mp3.matches(b"ID3\x04\0"));
        assert!(Format::Mp3.matches(&[0xFF, 0xFB, 0x90, 0x00]));
        assert!(!Format::Mp3.matches(&[0xFF, 0x1B]));
        assert!(!Format::Mp3.matches(b"hello"));
        assert!(Format::Webm.matches(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]));
    }

    #[test]
    fn a_mislabelled_file_is_described_in_words_never_by_its_bytes() {
        assert_eq!(
            describe_head(b"clr_live_secret\n"),
            "its start looks like text"
        );
        assert!(describe_head(b"RIFF\x24\0\0\0WAVEfmt ").contains("WAV"));
        assert!(describe_head(b"\0\0\0\x20ftypM4A ").contains("MP4/M4A"));
        assert!(describe_head(&[0x00, 0x01, 0x02, 0xFE]).contains("no audio format"));
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.wav");
        std::fs::write(&target, b"RIFF\0\0\0\0WAVEfmt ").unwrap();
        let link = dir.path().join("link.wav");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_recording(&target).is_ok());
        assert!(matches!(
            open_recording(&link),
            Err(InspectError::NotAFile(EntryKind::Symlink))
        ));
        assert!(matches!(
            open_recording(dir.path()),
            Err(InspectError::NotAFile(EntryKind::Directory))
        ));
        assert!(matches!(
            open_recording(&dir.path().join("gone.wav")),
            Err(InspectError::Gone)
        ));
    }

    #[test]
    fn titles_come_from_the_file_name() {
        assert_eq!(
            title_from_name(Path::new("/in/weekly_standup-2026.wav")),
            "weekly standup 2026"
        );
        assert_eq!(title_from_name(Path::new("/in/__.wav")), "Recording");
    }

    #[test]
    fn a_too_large_file_names_ffmpeg_and_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.wav");
        std::fs::write(&path, b"RIFF\0\0\0\0WAVEfmt ").unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(MAX_UPLOAD_BYTES + 1).unwrap();
        let Err(InspectError::Rejected(rejection)) = inspect(&path, Conversion::Off) else {
            panic!("a file over the limit is rejected");
        };
        assert!(
            rejection.what.contains("transcode = \"auto\""),
            "{rejection}"
        );
        assert!(rejection.what.contains("ffmpeg"), "{rejection}");
        assert!(matches!(
            inspect(&path, Conversion::Available),
            Ok(Inspection {
                plan: Plan::Transcode(_),
                ..
            })
        ));
    }
}
