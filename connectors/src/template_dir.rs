//! A `templates_dir` of overrides, as the email and chat connectors read it: the folder
//! checked once, and a template file read only if it is there. `built_in` names what the
//! connector uses instead, for the advice in an error.

use std::path::Path;

use crate::TemplateError;

/// The folder is absolute and is a folder. `built_ins` names what is used without it.
pub(crate) fn check(dir: &Path, built_ins: &'static str) -> Result<(), TemplateError> {
    if !dir.is_absolute() {
        return Err(TemplateError::RelativeDir {
            dir: dir.to_owned(),
        });
    }
    if !dir.is_dir() {
        return Err(TemplateError::NotAFolder {
            dir: dir.to_owned(),
            built_ins,
        });
    }
    Ok(())
}

/// The template `name` in `dir` as text, or `None` when there is no such file.
pub(crate) fn read(
    dir: &Path,
    name: &str,
    built_in: &'static str,
) -> Result<Option<String>, TemplateError> {
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| TemplateError::NotUtf8 {
                name: name.to_owned(),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(TemplateError::Unreadable {
            name: name.to_owned(),
            error,
            built_in,
        }),
    }
}
