//! Moving a recording (and its sidecar) out of the drop folder into processed/ or failed/
//! without overwriting anything there, and the `<name>.error.txt` that explains a failure.
//! Files are only ever moved, never deleted.
//!
//! Whoever writes the drop folder could put a link where processed/ or failed/ should be,
//! or a name where a file is about to go. So the target directory is opened once with
//! `O_NOFOLLOW | O_DIRECTORY` (a link or a non-directory is refused, with what to do), and
//! every name is created relative to that descriptor with `renameat2(RENAME_NOREPLACE)`
//! (or `link`, or `O_EXCL`), which fail instead of replacing: a taken name gets the next
//! number, whoever took it and whenever.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::checks::{EntryKind, Rejection};

/// How many numbered names (`call-2.wav` … ) are tried before giving up: far more than a
/// folder ever holds of one name.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// processed/ and failed/ are created with this mode when missing: the service's group
/// (an operator) may look, nobody else; the files moved in keep their own modes.
pub const DIR_MODE: u32 = 0o750;

/// `<name>.error.txt` is readable by the service's group (the directory decides who gets
/// that far); it quotes no file content.
const ERROR_FILE_MODE: u32 = 0o640;

/// Where a recording and its sidecar ended up.
#[derive(Debug, Clone)]
pub struct Moved {
    pub file: PathBuf,
    pub sidecar: Option<PathBuf>,
}

/// Why processed/ or failed/ (`dir`) cannot be used, with what to do; `None` when it is a
/// real directory or missing (it is created when first needed).
pub fn target_problem(dir: &Path) -> Option<String> {
    let kind = match EntryKind::of_path(dir) {
        Ok(kind) => kind,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            return Some(format!(
                "{} cannot be looked at ({error}); give the clairo-sync user access to it",
                dir.display()
            ));
        }
    };
    match kind {
        EntryKind::Directory => None,
        EntryKind::Symlink => Some(format!(
            "{dir} is a symbolic link; clairo-sync moves recordings only into a real directory (a link could send them anywhere), \
             so it takes nothing from this drop folder until then. Remove the link (`rm {dir}`) and clairo-sync creates the directory (mode 0750), \
             or set the folder's `processed`/`failed` in the config to a real directory",
            dir = dir.display()
        )),
        other => Some(format!(
            "{dir} is {}, not a directory; clairo-sync takes nothing from this drop folder until it is one. \
             Move it away (`mv {dir} {dir}.old`) and clairo-sync creates the directory (mode 0750)",
            other.describe(),
            dir = dir.display()
        )),
    }
}

/// Opens `dir` (creating it, mode [`DIR_MODE`], when missing) as a directory that is not
/// a link: every name is then made relative to this descriptor, so a link swapped in for
/// `dir` afterwards changes nothing.
pub fn open_target(dir: &Path) -> std::io::Result<OwnedFd> {
    match open_dir(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
            {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(error),
            }
            open_dir(dir)
        }
        opened => opened,
    }
    .map_err(|error| match target_problem(dir) {
        Some(problem) => std::io::Error::new(error.kind(), problem),
        None => error,
    })
}

fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::open(dir, flags, Mode::empty())?)
}

/// Moves `file` (and `sidecar`, renamed alongside) into `dir`, which is created if
/// missing and must not be a link. A name already taken there gets a number: `call.wav`
/// → `call-2.wav`. The entry itself is moved: a link stays a link, a FIFO is not opened.
pub fn move_into(dir: &Path, file: &Path, sidecar: Option<&Path>) -> std::io::Result<Moved> {
    let target = open_target(dir)?;
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
        let sidecar_name = sidecar_form.map(|full| {
            if full {
                format!("{candidate}.json")
            } else {
                let (candidate_stem, _) = split_name(&candidate);
                format!("{candidate_stem}.json")
            }
        });
        // Leave room for the sidecar and the error text under the same number; the
        // recording's own name is claimed atomically below.
        if sidecar_name.as_deref().is_some_and(|n| taken(&target, n))
            || taken(&target, &format!("{candidate}.error.txt"))
        {
            continue;
        }
        match place(file, &target, &candidate) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
        let sidecar = match (sidecar, sidecar_name) {
            (Some(from), Some(to)) => match place(from, &target, &to) {
                Ok(()) => Some(dir.join(to)),
                Err(error) => {
                    tracing::warn!(sidecar = %from.display(), %error, "Could not move the sidecar along with its recording; it stays where it is.");
                    None
                }
            },
            _ => None,
        };
        return Ok(Moved {
            file: dir.join(candidate),
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

/// Whether `name` is taken in `dir` (by anything, a dangling link too).
fn taken(dir: &OwnedFd, name: &str) -> bool {
    !matches!(
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW),
        Err(Errno::NOENT)
    )
}

/// Moves the entry `from` to `dir/name`; `AlreadyExists` when the name is taken, which
/// is never replaced.
fn place(from: &Path, dir: &OwnedFd, name: &str) -> std::io::Result<()> {
    match rustix::fs::renameat_with(CWD, from, dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE: a hard link fails on a taken name too.
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            rustix::fs::linkat(CWD, from, dir, name, AtFlags::empty())?;
            Ok(rustix::fs::unlinkat(CWD, from, AtFlags::empty())?)
        }
        Err(Errno::XDEV) => copy_across(from, dir, name),
        Err(errno) => Err(errno.into()),
    }
}

/// processed/ or failed/ on another file system: copy (a regular file only), then
/// remove the original.
fn copy_across(from: &Path, dir: &OwnedFd, name: &str) -> std::io::Result<()> {
    let mut source = match super::checks::open_recording(from) {
        Ok(source) => source,
        Err(super::checks::InspectError::NotAFile(kind)) => {
            return Err(std::io::Error::other(format!(
                "{} is {} and cannot be copied to another file system; keep processed/ and failed/ on the drop folder's file system",
                from.display(),
                kind.describe()
            )));
        }
        Err(super::checks::InspectError::Io(error)) => return Err(error),
        Err(_) => {
            return Err(std::io::Error::other(format!(
                "{} cannot be opened to copy it",
                from.display()
            )));
        }
    };
    let mut target = create_new(dir, name, 0o640)?;
    let copied = std::io::copy(&mut source, &mut target).and_then(|_| target.sync_all());
    if let Err(error) = copied {
        let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        return Err(error);
    }
    std::fs::remove_file(from)
}

/// Creates `dir/name`, failing if the name is taken (a link there is not followed).
fn create_new(dir: &OwnedFd, name: &str, mode: u32) -> std::io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::openat(
        dir,
        name,
        flags,
        Mode::from_raw_mode(mode),
    )?))
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
    let path = moved.with_file_name(&name);
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
    // Beside the moved file, in a directory opened as move_into opens it; never through
    // a link or over an existing name.
    let dir = open_target(moved.parent().unwrap_or(Path::new(".")))?;
    let mut file = create_new(&dir, &name.to_string_lossy(), ERROR_FILE_MODE)?;
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
