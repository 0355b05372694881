//! Reading secrets: an inline value, a `*_file`, a systemd credential
//! (`$CREDENTIALS_DIRECTORY/<name>`) or an environment variable — never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clairo_connectors::Secret;

use super::unit::{CREDENTIALS_DIR_ID, PACKAGED_CREDENTIALS_DIR, Unit};
use super::{ClairoConfig, ConnectorTable, Problem, StateConfig};

/// Where secrets may come from besides the config itself, read once from the process
/// environment (and replaceable in tests).
#[derive(Debug, Clone, Default)]
pub struct SecretSources {
    /// systemd's `$CREDENTIALS_DIRECTORY`: inside the service.
    pub credentials_dir: Option<PathBuf>,
    /// Outside the service (an operator's `sudo clairo-sync check`): the credentials the
    /// installed unit's `LoadCredential=` lines would hand the service, and their files.
    pub unit: Option<Unit>,
    /// `CLAIRO_API_KEY`.
    pub api_key_env: Option<Secret>,
}

/// Where a credential was found.
enum Found {
    /// A file to read: in `$CREDENTIALS_DIRECTORY`, or the one the unit copies it from.
    File { path: PathBuf, from_unit: bool },
    /// The unit names no file for it.
    Nowhere,
}

impl SecretSources {
    /// `config`: the config file about to be loaded, which says which unit runs it (the
    /// main one, or an instance of the per-account template).
    pub fn from_env(config: Option<&Path>) -> Self {
        let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let unit = credentials_dir.is_none().then(|| Unit::for_config(config));
        Self {
            credentials_dir,
            unit,
            api_key_env: std::env::var("CLAIRO_API_KEY")
                .ok()
                .filter(|key| !key.trim().is_empty())
                .map(|key| Secret::new(key.trim())),
        }
    }

    /// The credential `name` as the service sees it: `name` itself, or `credentials_<name>`
    /// from the credentials directory the unit loads whole.
    fn credential(&self, name: &str) -> Found {
        let names = [name.to_owned(), format!("{CREDENTIALS_DIR_ID}_{name}")];
        if let Some(dir) = &self.credentials_dir {
            return names
                .iter()
                .map(|name| dir.join(name))
                .find(|path| path.is_file())
                .map_or(Found::Nowhere, |path| Found::File {
                    path,
                    from_unit: false,
                });
        }
        let Some(unit) = &self.unit else {
            return Found::Nowhere;
        };
        let credentials = unit.credentials();
        names
            .iter()
            .find_map(|name| credentials.get(name))
            .map_or(Found::Nowhere, |path| Found::File {
                path: path.clone(),
                from_unit: true,
            })
    }

    /// What `systemctl` calls the service's unit, for advice.
    fn unit_name(&self) -> &str {
        self.unit
            .as_ref()
            .map(|unit| unit.name.as_str())
            .filter(|name| !name.is_empty())
            .unwrap_or("clairo-sync")
    }

    /// Where a new secret goes so that the unit loads it without a drop-in.
    fn credentials_home(&self) -> PathBuf {
        self.unit
            .as_ref()
            .and_then(Unit::credentials_dir)
            .map_or_else(
                || PathBuf::from(PACKAGED_CREDENTIALS_DIR),
                Path::to_path_buf,
            )
    }
}

/// The name of the systemd credential that holds the Clairo API key.
pub const API_KEY_CREDENTIAL: &str = "clairo-api-key";

/// Reads a credential's file. Outside the service the file is the one systemd copies: it
/// is root's, so a user who cannot read it is sent to run the command as root, and a
/// missing one would keep the service from starting.
fn read_credential(name: &str, path: &Path, from_unit: bool) -> Result<Secret, String> {
    if from_unit {
        match std::fs::metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "the unit loads the credential {name} from {path}, which does not exist, so the service would not start; create it (sudo install -m 0600 /dev/null {path}, then put the secret in it)",
                    path = path.display()
                ));
            }
            _ => {}
        }
        if let Err(error) = std::fs::File::open(path)
            && error.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Err(format!(
                "the credential {name} ({}) is readable by root alone, as it should be: systemd hands the service a copy; run check as root (sudo clairo-sync check) to judge the config as the service will see it",
                path.display()
            ));
        }
    }
    read_secret_file(path)
}

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

/// The name of the systemd credential that holds the PostgreSQL password.
pub const STATE_PASSWORD_CREDENTIAL: &str = "state-password";

/// The PostgreSQL password, only when `state.url` is set: `state.password_file`, else the
/// credential `state-password`, else none (the server may trust this host, or the
/// service user's `~/.pgpass` may hold it).
pub(super) fn resolve_state_password(
    state: &StateConfig,
    sources: &SecretSources,
    problems: &mut Vec<Problem>,
) -> Option<Secret> {
    state.url.as_ref()?;
    if let Some(path) = &state.password_file {
        return match read_secret_file(path) {
            Ok(password) => Some(password),
            Err(message) => {
                problems.push(Problem::new("state.password_file", message));
                None
            }
        };
    }
    let Found::File { path, from_unit } = sources.credential(STATE_PASSWORD_CREDENTIAL) else {
        return None;
    };
    match read_credential(STATE_PASSWORD_CREDENTIAL, &path, from_unit) {
        Ok(password) => Some(password),
        Err(message) => {
            problems.push(Problem::new("state.password_file", message));
            None
        }
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
    let Found::File { path, from_unit } = sources.credential(API_KEY_CREDENTIAL) else {
        return None;
    };
    match read_credential(API_KEY_CREDENTIAL, &path, from_unit) {
        Ok(key) => Some(key),
        Err(message) => {
            problems.push(Problem::new(
                "clairo.api_key",
                format!("no API key found: {message}"),
            ));
            Some(Secret::new("clr_unreadable"))
        }
    }
}

/// Adds to each connector's `headers` the `Name: value` lines of its `headers_file`, or
/// else of the credential `<connector>-headers` when there is one. A header named both
/// inline and in the file is a problem: which one wins would be a guess.
pub(super) fn resolve_connector_headers(
    connectors: &mut BTreeMap<String, ConnectorTable>,
    sources: &SecretSources,
    problems: &mut Vec<Problem>,
) {
    for (name, connector) in connectors.iter_mut() {
        let Some(slot) = connector.header_slot() else {
            continue;
        };
        let credential = format!("{name}-headers");
        let (key, path, from_unit) = match slot.file {
            Some(path) => (
                format!("connectors.{name}.headers_file"),
                path.clone(),
                false,
            ),
            None => match sources.credential(&credential) {
                Found::File { path, from_unit } => {
                    (format!("connectors.{name}.headers"), path, from_unit)
                }
                Found::Nowhere => continue,
            },
        };
        let parsed = read_credential(&credential, &path, from_unit).and_then(|text| {
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
/// A secret the service would not get, while a file of that name lies in the config's
/// directory (where these docs once put them), is reported with the line that loads it.
pub(super) fn resolve_connector_secrets(
    connectors: &mut BTreeMap<String, ConnectorTable>,
    sources: &SecretSources,
    config_dir: Option<&Path>,
    problems: &mut Vec<Problem>,
) {
    for (name, connector) in connectors.iter_mut() {
        for slot in connector.secret_slots() {
            if slot.value.is_some() {
                continue;
            }
            let credential = format!("{name}-{}", slot.key.replace('_', "-"));
            let found = match slot.file {
                Some(path) => Found::File {
                    path: path.clone(),
                    from_unit: false,
                },
                None => sources.credential(&credential),
            };
            let key = match (&found, slot.file) {
                (_, Some(_)) => format!("connectors.{name}.{}_file", slot.key),
                _ => format!("connectors.{name}.{}", slot.key),
            };
            match found {
                Found::File { path, from_unit } => {
                    match read_credential(&credential, &path, from_unit) {
                        Ok(secret) => *slot.value = Some(secret),
                        Err(message) => problems.push(Problem::new(key, message)),
                    }
                }
                Found::Nowhere if slot.required => {
                    let home = sources.credentials_home().join(&credential);
                    let stray = [config_dir, Some(Path::new("/etc/clairo-sync"))]
                        .into_iter()
                        .flatten()
                        .map(|dir| dir.join(&credential))
                        .find(|path| path.is_file());
                    let message = match stray {
                        Some(stray) if sources.credentials_dir.is_none() => format!(
                            "is required, and {stray} holds it, but the service's unit does not load that file; move it to {home} (the unit loads that directory whole), or add `LoadCredential={credential}:{stray}` in a drop-in (sudo systemctl edit {unit}), then restart",
                            stray = stray.display(),
                            home = home.display(),
                            unit = sources.unit_name()
                        ),
                        _ => format!(
                            "is required; put it in {home} (sudo install -m 0600 /dev/null {home}, then the secret; the unit loads it as the credential {credential}) and restart, or set {key}_file to a file the service may read",
                            home = home.display(),
                            key = slot.key
                        ),
                    };
                    problems.push(Problem::new(key, message));
                }
                Found::Nowhere => {}
            }
        }
    }
}
