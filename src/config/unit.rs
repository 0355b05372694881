//! The installed systemd unit, read as systemd reads it, for commands run outside the
//! service (`sudo clairo-sync check`): which files its `LoadCredential=` lines hand the
//! daemon, and which paths its sandbox lets the daemon write. With it, `check` judges a
//! config with exactly the secrets and paths the service will have (docs/operations.md §3).
//!
//! Only what those questions need is read: the `[Service]` lines of `clairo-sync.service`
//! and of its `clairo-sync.service.d/*.conf` drop-ins, in systemd's order. A config that an
//! instance of the per-account template `clairo-sync@.service` runs (`-c
//! /etc/clairo-sync/NAME.toml`) is judged by that instance, `%i` read as NAME.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The unit's file name.
pub const UNIT_NAME: &str = "clairo-sync.service";

/// The per-account template's file name (systemd/clairo-sync@.service).
pub const TEMPLATE_NAME: &str = "clairo-sync@.service";

/// Where systemd looks for system units, most important first (systemd.unit(5)), unless
/// `$SYSTEMD_UNIT_PATH` says otherwise, as it does for systemd itself.
const UNIT_DIRS: [&str; 5] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Where `LoadCredential=ID` (no path, or a relative one) takes the file from
/// (systemd.exec(5)).
const CREDSTORE_DIRS: [&str; 3] = ["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];

/// The ID of the packaged unit's `LoadCredential=credentials:/etc/clairo-sync/credentials`:
/// systemd names each file `F` of a loaded directory `<ID>_F`, so the daemon looks for a
/// credential `N` as `N`, then as `credentials_N`.
pub const CREDENTIALS_DIR_ID: &str = "credentials";

/// Where the packaged unit loads the API key and the credentials directory from; assumed
/// when no unit is installed (a host running the daemon by hand, or a test).
pub const PACKAGED_API_KEY: &str = "/etc/clairo-sync/api-key";
pub const PACKAGED_CREDENTIALS_DIR: &str = "/etc/clairo-sync/credentials";

/// What the unit says about credentials and writable paths.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    /// The unit file found; `None`: none is installed, the packaged unit's lines are assumed.
    pub path: Option<PathBuf>,
    /// What `systemctl` calls it: `clairo-sync`, or `clairo-sync@NAME` for an instance.
    pub name: String,
    /// `LoadCredential=ID:PATH`, in order, after resets by an empty assignment.
    pub load_credentials: Vec<(String, PathBuf)>,
    /// `ReadWritePaths=`, `StateDirectory=` & co, as absolute paths.
    pub writable: Vec<PathBuf>,
    /// `StateDirectory=` as absolute paths: systemd creates them at start.
    pub state_directories: Vec<PathBuf>,
    pub protect_system_strict: bool,
    pub private_tmp: bool,
    /// The last `ExecStart=` command line.
    exec_start: Option<String>,
}

impl Unit {
    /// The unit systemd would start: the first `clairo-sync.service` on the search path,
    /// with its drop-ins.
    pub fn installed() -> Self {
        Self::read_installed(&[UNIT_NAME], None).unwrap_or_else(Self::packaged)
    }

    /// The unit that runs the config at `config`: the instance NAME of the per-account
    /// template when the config is `NAME.toml` and the installed template, with `%i` read
    /// as NAME, runs exactly that file (`-c /etc/clairo-sync/NAME.toml`); otherwise
    /// [`Unit::installed`]. `clairo-sync.toml` is always the main unit's.
    pub fn for_config(config: Option<&Path>) -> Self {
        config
            .and_then(|config| {
                let name = config.file_stem()?.to_str()?;
                if config.extension()? != "toml" || name == "clairo-sync" || name.is_empty() {
                    return None;
                }
                let instance_file = format!("clairo-sync@{name}.service");
                let unit = Self::read_installed(&[&instance_file, TEMPLATE_NAME], Some(name))?;
                unit.runs_config(config).then_some(unit)
            })
            .unwrap_or_else(Self::installed)
    }

    /// The first of `files` on the search path with its drop-ins, `%i` read as `instance`;
    /// `None` when none is installed.
    fn read_installed(files: &[&str], instance: Option<&str>) -> Option<Self> {
        let dirs = search_path();
        let main = files
            .iter()
            .flat_map(|file| dirs.iter().map(move |dir| dir.join(file)))
            .find(|path| path.is_file())?;
        let mut texts = vec![std::fs::read_to_string(&main).unwrap_or_default()];
        // Drop-ins by file name across the directories; a name in an earlier directory
        // hides the same name in later ones, and an instance's own directory hides the
        // template's (systemd.unit(5)).
        let mut dropins: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
        for file in files {
            for dir in &dirs {
                let Ok(entries) = std::fs::read_dir(dir.join(format!("{file}.d"))) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|ext| ext == "conf") {
                        dropins.entry(entry.file_name()).or_insert(path);
                    }
                }
            }
        }
        texts.extend(
            dropins
                .values()
                .map(|path| std::fs::read_to_string(path).unwrap_or_default()),
        );
        if let Some(instance) = instance {
            for text in &mut texts {
                *text = expand_instance(text, instance);
            }
        }
        let mut unit = Self::parse(&texts);
        unit.path = Some(main);
        unit.name = instance.map_or_else(
            || UNIT_NAME.trim_end_matches(".service").to_owned(),
            |instance| format!("clairo-sync@{instance}"),
        );
        Some(unit)
    }

    /// Whether the unit's `ExecStart=` runs the daemon with `-c config`.
    fn runs_config(&self, config: &Path) -> bool {
        let Some(command) = &self.exec_start else {
            return false;
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        words
            .windows(2)
            .any(|pair| matches!(pair[0], "-c" | "--config") && Path::new(pair[1]) == config)
            || words.iter().any(|word| {
                word.strip_prefix("--config=")
                    .is_some_and(|path| Path::new(path) == config)
            })
    }

    /// The lines of systemd/clairo-sync.service that matter here.
    fn packaged() -> Self {
        let mut unit = Self::parse(&[format!(
            "[Service]\nLoadCredential=clairo-api-key:{PACKAGED_API_KEY}\n\
             LoadCredential={CREDENTIALS_DIR_ID}:{PACKAGED_CREDENTIALS_DIR}\n\
             StateDirectory=clairo-sync\nProtectSystem=strict\nPrivateTmp=yes\n"
        )]);
        unit.name = UNIT_NAME.trim_end_matches(".service").to_owned();
        unit
    }

    fn parse(texts: &[String]) -> Self {
        let mut unit = Self::default();
        for text in texts {
            let mut in_service = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with('[') {
                    in_service = line == "[Service]";
                    continue;
                }
                if !in_service || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                unit.apply(key.trim(), value.trim());
            }
        }
        unit
    }

    fn apply(&mut self, key: &str, value: &str) {
        match key {
            "LoadCredential" if value.is_empty() => self.load_credentials.clear(),
            "LoadCredential" => {
                let (id, path) = value.split_once(':').unwrap_or((value, ""));
                let path = if path.starts_with('/') {
                    PathBuf::from(path)
                } else {
                    credstore(if path.is_empty() { id } else { path })
                };
                self.load_credentials.push((id.to_owned(), path));
            }
            "ReadWritePaths" if value.is_empty() => self.writable.clear(),
            "ReadWritePaths" => self.writable.extend(
                value
                    .split_whitespace()
                    .map(|path| PathBuf::from(path.trim_start_matches(['-', '+']))),
            ),
            "StateDirectory" | "CacheDirectory" | "LogsDirectory" | "RuntimeDirectory" => {
                let base = match key {
                    "StateDirectory" => "/var/lib",
                    "CacheDirectory" => "/var/cache",
                    "LogsDirectory" => "/var/log",
                    _ => "/run",
                };
                for name in value.split_whitespace() {
                    // `name:symlink` (systemd 254+) creates a link as well; the name is first.
                    let name = name.split(':').next().unwrap_or(name);
                    let path = Path::new(base).join(name);
                    if key == "StateDirectory" {
                        self.state_directories.push(path.clone());
                    }
                    self.writable.push(path);
                }
            }
            "ExecStart" if value.is_empty() => self.exec_start = None,
            // Prefixes such as `-` or `!` (systemd.service(5)) are not part of the program.
            "ExecStart" => {
                self.exec_start = Some(
                    value
                        .trim_start_matches(['-', '@', ':', '+', '!'])
                        .to_owned(),
                );
            }
            "ProtectSystem" => self.protect_system_strict = value == "strict",
            "PrivateTmp" => self.private_tmp = matches!(value, "yes" | "true" | "on" | "1"),
            _ => {}
        }
    }

    /// Every credential the service gets, by name, with the file systemd copies it from.
    /// A single file is named by its ID; each file `F` of a directory by `<ID>_F`
    /// (symlinks in a directory are ignored, as systemd ignores them).
    pub fn credentials(&self) -> BTreeMap<String, PathBuf> {
        let mut credentials = BTreeMap::new();
        for (id, path) in &self.load_credentials {
            if path.is_dir() {
                let mut files = Vec::new();
                collect_files(path, &mut files);
                for file in files {
                    if let Some(name) = file.file_name().and_then(|name| name.to_str()) {
                        credentials
                            .entry(format!("{id}_{name}"))
                            .or_insert(file.clone());
                    }
                }
            } else {
                credentials
                    .entry(id.clone())
                    .or_insert_with(|| path.clone());
            }
        }
        credentials
    }

    /// The directory loaded whole as [`CREDENTIALS_DIR_ID`], where a new secret goes.
    pub fn credentials_dir(&self) -> Option<&Path> {
        self.load_credentials
            .iter()
            .find(|(id, _)| id == CREDENTIALS_DIR_ID)
            .map(|(_, path)| path.as_path())
    }

    /// Whether the service may write `path`: `None` if it may, else what to change.
    pub fn write_problem(&self, path: &Path) -> Option<String> {
        let directory = path.parent().unwrap_or(path);
        if self.private_tmp && (path.starts_with("/tmp") || path.starts_with("/var/tmp")) {
            return Some(format!(
                "{} is in the service's private /tmp (PrivateTmp=yes), which is emptied when it stops; move `path` under {}",
                path.display(),
                self.state_directories
                    .first()
                    .map_or("/var/lib/clairo-sync".to_owned(), |dir| dir
                        .display()
                        .to_string())
            ));
        }
        if !self.protect_system_strict
            || self.writable.iter().any(|dir| path.starts_with(dir))
            || ["/tmp", "/var/tmp", "/dev/shm"]
                .iter()
                .any(|dir| path.starts_with(dir))
        {
            return None;
        }
        Some(format!(
            "the service cannot write {}: its unit (ProtectSystem=strict) lets it write only {}; add `ReadWritePaths={}` in a drop-in (sudo systemctl edit {}), or move `path` there",
            path.display(),
            if self.writable.is_empty() {
                "no directory".to_owned()
            } else {
                self.writable
                    .iter()
                    .map(|dir| dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            directory.display(),
            self.name
        ))
    }
}

fn search_path() -> Vec<PathBuf> {
    match std::env::var("SYSTEMD_UNIT_PATH") {
        Ok(value) if !value.is_empty() => {
            // A trailing ':' appends the usual directories, as for systemd.
            let mut dirs: Vec<PathBuf> = value
                .split(':')
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .collect();
            if value.ends_with(':') {
                dirs.extend(UNIT_DIRS.iter().map(PathBuf::from));
            }
            dirs
        }
        _ => UNIT_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// The unit text with the instance specifiers replaced: `%i` and `%I` by `instance` (a
/// plain account name needs no unescaping), `%%` by `%`; others are left as they are.
fn expand_instance(text: &str, instance: &str) -> String {
    let mut expanded = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            expanded.push(c);
            continue;
        }
        match chars.next() {
            Some('i' | 'I') => expanded.push_str(instance),
            Some('%') => expanded.push('%'),
            Some(other) => {
                expanded.push('%');
                expanded.push(other);
            }
            None => expanded.push('%'),
        }
    }
    expanded
}

fn credstore(name: &str) -> PathBuf {
    CREDSTORE_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| Path::new(CREDSTORE_DIRS[0]).join(name))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(kind) if kind.is_file() => files.push(entry.path()),
            Ok(kind) if kind.is_dir() => collect_files(&entry.path(), files),
            _ => {}
        }
    }
}
