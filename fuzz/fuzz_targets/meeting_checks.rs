//! Any file in a drop folder through the checks made before an upload: whether its name
//! counts, what its bytes are, its sidecar and its title. A rejection is fine, a panic is not.
//!
//! Input: one byte `n`, then `n` bytes of file name, then the file's content (written to a
//! scratch directory, also as the name's `.json` sidecar).
#![no_main]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::OnceLock;

use clairo_sync::sources::meetings::checks::{
    Conversion, Format, inspect, is_candidate_name, read_sidecar, sidecar_path, title_from_name,
};
use libfuzzer_sys::fuzz_target;

/// One scratch directory per fuzzing process.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("clairo-fuzz-meetings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&length, rest)) = data.split_first() else {
        return;
    };
    let (name, content) = rest.split_at(usize::from(length).min(rest.len()));
    // A file name the file system takes: no separators, no NUL, not `.` or `..`.
    let name: String = String::from_utf8_lossy(name)
        .chars()
        .filter(|c| *c != '/' && *c != '\0')
        .take(200)
        .collect();
    let _ = is_candidate_name(OsStr::new(&name));
    if name.is_empty() || name == "." || name == ".." {
        return;
    }
    for format in [Format::Webm, Format::Mp3, Format::Wav] {
        let _ = format.matches(content);
    }
    let path = scratch().join(&name);
    let _ = title_from_name(&path);
    if std::fs::write(&path, content).is_err() {
        return;
    }
    for conversion in [Conversion::Off, Conversion::NoFfmpeg, Conversion::Available] {
        let _ = inspect(&path, conversion);
    }
    let mut sidecar = path.clone().into_os_string();
    sidecar.push(".json");
    let sidecar = PathBuf::from(sidecar);
    if std::fs::write(&sidecar, content).is_ok() {
        if let Some(found) = sidecar_path(&path) {
            let _ = read_sidecar(&found);
        }
        let _ = std::fs::remove_file(&sidecar);
    }
    let _ = std::fs::remove_file(&path);
});
