//! Moving a recording (and its sidecar) out of the drop folder into processed/ or failed/
//! without overwriting anything there, and the `<name>.error.txt` that explains a failure.
//! Files are only ever moved, never deleted.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::checks::Rejection;

/// How many numbered names (`call-2.wav` … ) are tried before giving up: far more than a
/// folder ever holds of one name.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// Where a recording and its sidecar ended up.
#[derive(Debug, Clone)]
pub struct Moved {
    pub file: PathBuf,
    pub sidecar: Option<PathBuf>,
}

/// Moves `file` (and `sidecar`, renamed alongside) into `dir`, which is created if
/// missing. A name already taken there gets a number: `call.wav` → `call-2.wav`.
pub fn move_into(dir: &Path, file: &Path, sidecar: Option<&Path>) -> std::io::Result<Moved> {
    std::fs::create_dir_all(dir)?;
    let name = file
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy()
        .into_owned();
    let (stem, extension) = split_name(&name);
    // The sidecar keeps its form: `call.wav.json` or `call.json`.
    let sidecar_form = sidecar.map(|sidecar| {
        let sidecar_name = sidecar
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        sidecar_name == format!("{name}.json")
    });
    for attempt in 1..=MAX_NAME_ATTEMPTS {
        let candidate = if attempt == 1 {
            name.clone()
        } else {
            format!("{stem}-{attempt}{extension}")
        };
        let target = dir.join(&candidate);
        let sidecar_target = sidecar_form.map(|full| {
            if full {
                dir.join(format!("{candidate}.json"))
            } else {
                let (candidate_stem, _) = split_name(&candidate);
                dir.join(format!("{candidate_stem}.json"))
            }
        });
        let error_file = dir.join(format!("{candidate}.error.txt"));
        if exists(&target) || sidecar_target.as_deref().is_some_and(exists) || exists(&error_file) {
            continue;
        }
        move_file(file, &target)?;
        let sidecar = match (sidecar, sidecar_target) {
            (Some(from), Some(to)) => match move_file(from, &to) {
                Ok(()) => Some(to),
                Err(error) => {
                    tracing::warn!(sidecar = %from.display(), %error, "Could not move the sidecar along with its recording; it stays where it is.");
                    None
                }
            },
            _ => None,
        };
        return Ok(Moved {
            file: target,
            sidecar,
        });
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{MAX_NAME_ATTEMPTS} files named like {name} are already in {}",
            dir.display()
        ),
    ))
}

/// `call.wav` → (`call`, `.wav`); `notes` → (`notes`, ``).
fn split_name(name: &str) -> (String, String) {
    match name.rfind('.') {
        Some(dot) if dot > 0 => (name[..dot].to_owned(), name[dot..].to_owned()),
        _ => (name.to_owned(), String::new()),
    }
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// A rename, or copy-then-remove when `dir` is on another file system.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::CrossesDevices => {
            let mut source = std::fs::File::open(from)?;
            let mut target = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(to)?;
            std::io::copy(&mut source, &mut target)?;
            target.sync_all()?;
            std::fs::remove_file(from)
        }
        Err(error) => Err(error),
    }
}

/// Writes `<file>.error.txt` beside a file moved to failed/.
pub fn write_error_file(
    moved: &Path,
    original: &Path,
    folder: &Path,
    rejection: &Rejection,
) -> std::io::Result<PathBuf> {
    let mut name = moved.file_name().unwrap_or_default().to_os_string();
    name.push(".error.txt");
    let path = moved.with_file_name(name);
    let text = format!(
        "clairo-sync did not upload this recording.\n\n\
         File:       {original}\n\
         When:       {when}\n\
         Why:        {why}\n\
         What to do: {what}\n\n\
         To try again, move the recording back into {folder}.\n",
        original = original.display(),
        when = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        why = rejection.why,
        what = rejection.what,
        folder = folder.display(),
    );
    let mut file = std::fs::File::create(&path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_name_gets_a_number_and_the_sidecar_follows() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("in");
        let done = dir.path().join("done");
        std::fs::create_dir_all(&inbox).unwrap();
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(done.join("call.wav"), "old").unwrap();
        std::fs::write(inbox.join("call.wav"), "new").unwrap();
        std::fs::write(inbox.join("call.wav.json"), "{}").unwrap();
        let moved = move_into(
            &done,
            &inbox.join("call.wav"),
            Some(&inbox.join("call.wav.json")),
        )
        .unwrap();
        assert_eq!(moved.file, done.join("call-2.wav"));
        assert_eq!(moved.sidecar, Some(done.join("call-2.wav.json")));
        assert_eq!(
            std::fs::read_to_string(done.join("call.wav")).unwrap(),
            "old"
        );
        assert_eq!(
            std::fs::read_to_string(done.join("call-2.wav")).unwrap(),
            "new"
        );
        assert!(!inbox.join("call.wav").exists());
    }
}
