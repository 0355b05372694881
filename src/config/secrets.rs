//! Reading secrets: an inline value, a `*_file`, a systemd credential
//! (`$CREDENTIALS_DIRECTORY/<name>`) or an environment variable — never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clairo_connectors::{ConnectorConfig, Secret};

use super::{ClairoConfig, Problem};

/// Where secrets may come from besides the config itself, read once from the process
/// environment (and replaceable in tests).
#[derive(Debug, Clone, Default)]
pub struct SecretSources {
    /// systemd's `$CREDENTIALS_DIRECTORY` (LoadCredential=).
    pub credentials_dir: Option<PathBuf>,
    /// Outside the service (an operator's `sudo clairo-sync check`): the directory the
    /// packaged unit's `LoadCredential=` lines take the credentials from.
    pub credential_sources: Option<PathBuf>,
    /// `CLAIRO_API_KEY`.
    pub api_key_env: Option<Secret>,
}

impl SecretSources {
    pub fn from_env() -> Self {
        let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let credential_sources = match credentials_dir {
            Some(_) => None,
            None => Some(PathBuf::from(CREDENTIALS_SOURCE_DIR)).filter(|dir| dir.is_dir()),
        };
        Self {
            credentials_dir,
            credential_sources,
            api_key_env: std::env::var("CLAIRO_API_KEY")
                .ok()
                .filter(|key| !key.trim().is_empty())
                .map(|key| Secret::new(key.trim())),
        }
    }

    fn credential(&self, name: &str) -> Option<PathBuf> {
        let in_service = self.credentials_dir.as_ref().map(|dir| dir.join(name));
        // The unit loads `clairo-api-key` from /etc/clairo-sync/api-key; every other
        // credential from the file of its own name.
        let source_name = if name == API_KEY_CREDENTIAL {
            API_KEY_SOURCE_FILE
        } else {
            name
        };
        let at_source = self
            .credential_sources
            .as_ref()
            .map(|dir| dir.join(source_name));
        in_service
            .into_iter()
            .chain(at_source)
            .find(|path| path.is_file())
    }
}

/// Where the packaged unit's `LoadCredential=` lines take the credentials from.
pub const CREDENTIALS_SOURCE_DIR: &str = "/etc/clairo-sync";

/// The file there that holds the API key (`LoadCredential=clairo-api-key:/etc/clairo-sync/api-key`).
pub const API_KEY_SOURCE_FILE: &str = "api-key";

/// The name of the systemd credential that holds the Clairo API key.
pub const API_KEY_CREDENTIAL: &str = "clairo-api-key";

/// Reads a secret file: the whole file, less surrounding white space (editors and
/// `echo` add a trailing newline). Errors never quote the file's content.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            Err(format!("{} is empty; put the secret in it", path.display()))
        }
        Ok(text) => Ok(Secret::new(text.trim())),
        Err(error) => Err(format!(
            "cannot read {}: {error}; check that the file exists and the clairo-sync user may read it",
            path.display()
        )),
    }
}

/// Order: `api_key` (inline or `CLAIRO_SYNC_CLAIRO__API_KEY`), `api_key_file`,
/// `CLAIRO_API_KEY`, then the credential `clairo-api-key`.
pub(super) fn resolve_api_key(
    clairo: &ClairoConfig,
    sources: &SecretSources,
    problems: &mut Vec<Problem>,
) -> Option<Secret> {
    if let Some(key) = &clairo.api_key {
        return Some(key.clone());
    }
    if let Some(path) = &clairo.api_key_file {
        return match read_secret_file(path) {
            Ok(key) => Some(key),
            Err(message) => {
                problems.push(Problem::new("clairo.api_key_file", message));
                // Already reported: do not report "no key" too.
                Some(Secret::new("clr_unreadable"))
            }
        };
    }
    if let Some(key) = &sources.api_key_env {
        return Some(key.clone());
    }
    let path = sources.credential(API_KEY_CREDENTIAL)?;
    match read_secret_file(&path) {
        Ok(key) => Some(key),
        Err(message) => {
            problems.push(Problem::new(
                "clairo.api_key",
                format!("credential {API_KEY_CREDENTIAL}: {message}"),
            ));
            Some(Secret::new("clr_unreadable"))
        }
    }
}

/// Adds to each connector's `headers` the `Name: value` lines of its `headers_file`, or
/// else of the credential `<connector>-headers` when there is one. A header named both
/// inline and in the file is a problem: which one wins would be a guess.
pub(super) fn resolve_connector_headers(
    connectors: &mut BTreeMap<String, ConnectorConfig>,
    sources: &SecretSources,
    problems: &mut Vec<Problem>,
) {
    for (name, connector) in connectors.iter_mut() {
        let Some(slot) = connector.header_slot() else {
            continue;
        };
        let credential = format!("{name}-headers");
        let (key, path) = match slot.file {
            Some(path) => (format!("connectors.{name}.headers_file"), path.clone()),
            None => match sources.credential(&credential) {
                Some(path) => (format!("connectors.{name}.headers"), path),
                None => continue,
            },
        };
        let parsed = read_secret_file(&path).and_then(|text| {
            clairo_connectors::webhook::parse_header_lines(text.expose())
                .map_err(|message| format!("{}: {message}", path.display()))
        });
        match parsed {
            Ok(lines) => {
                for (header, value) in lines {
                    let taken = slot
                        .headers
                        .keys()
                        .any(|known| known.eq_ignore_ascii_case(&header));
                    if taken {
                        problems.push(Problem::new(
                            key.clone(),
                            format!(
                                "the header `{header}` is also set in `headers`; keep it in one place"
                            ),
                        ));
                    } else {
                        slot.headers.insert(header, value);
                    }
                }
            }
            Err(message) => problems.push(Problem::new(key, message)),
        }
    }
}

/// Fills each connector's secrets from `<key>_file` or the credential `<connector>-<key>`.
pub(super) fn resolve_connector_secrets(
    connectors: &mut BTreeMap<String, ConnectorConfig>,
    sources: &SecretSources,
    problems: &mut Vec<Problem>,
) {
    for (name, connector) in connectors.iter_mut() {
        for slot in connector.secret_slots() {
            if slot.value.is_some() {
                continue;
            }
            let credential = format!("{name}-{}", slot.key.replace('_', "-"));
            let found = match slot.file {
                Some(path) => Some((format!("connectors.{name}.{}_file", slot.key), path.clone())),
                None => sources
                    .credential(&credential)
                    .map(|path| (format!("connectors.{name}.{}", slot.key), path)),
            };
            match found {
                Some((key, path)) => match read_secret_file(&path) {
                    Ok(secret) => *slot.value = Some(secret),
                    Err(message) => problems.push(Problem::new(key, message)),
                },
                None if slot.required => problems.push(Problem::new(
                    format!("connectors.{name}.{}", slot.key),
                    format!(
                        "is required; set {key}_file to a file holding it, or provide the systemd credential {credential}",
                        key = slot.key
                    ),
                )),
                None => {}
            }
        }
    }
}
