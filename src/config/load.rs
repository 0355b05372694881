//! Loading a config: the TOML file through figment, `CLAIRO_SYNC_<SECTION>__<KEY>`
//! environment overrides (a secret's value taken as written), the secrets hookup, and
//! figment's errors turned into problem lines that name the key.

use std::path::{Path, PathBuf};

use clairo_connectors::Secret;
use figment::Figment;
use figment::providers::{Env, Format, Toml};

use super::validate::validate;
use super::{Config, ConfigErrors, ENV_PREFIX, Problem, SecretSources, report, secrets};

/// A config that parsed and validated, with its secrets read.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The resolved Clairo API key (`None` only where the caller allowed it).
    pub api_key: Option<Secret>,
    /// The PostgreSQL password (`state.password_file` or the credential
    /// `state-password`), when `state.url` is set and one is found.
    pub state_password: Option<Secret>,
    pub path: Option<PathBuf>,
}

/// How strictly to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The daemon: a config file must exist, an API key must be found.
    Daemon,
    /// Operator commands: the file is optional; the key is still required.
    ApiOnly,
    /// Commands that only read the state database (`status`, `deliveries`): no secret is
    /// read, so they work from a shell where only the service has its credentials.
    StateOnly,
}

/// Loads the config file (if any) with env overrides, resolves secrets, validates.
pub fn load(
    path: Option<&Path>,
    need: Need,
    sources: &SecretSources,
) -> Result<LoadedConfig, ConfigErrors> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.exists() {
            if need != Need::ApiOnly {
                return Err(ConfigErrors(vec![Problem::new(
                    "config",
                    format!(
                        "{} does not exist; create it from the annotated example config/clairo-sync.toml, or pass -c FILE",
                        path.display()
                    ),
                )]));
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigErrors(vec![Problem::new(
                    "config",
                    format!(
                        "cannot read {}: {error}; run as root (sudo clairo-sync …) or as the clairo-sync user",
                        path.display()
                    ),
                )])
            })?;
            let source = report::Source { path, text: &text };
            let (mut problems, repaired) = report::syntax_problems(&source);
            if !problems.is_empty() {
                // What still parses may hold more mistakes: its unknown keys are reported
                // too (report.rs says why only those).
                let rest = Figment::new()
                    .merge(Toml::string(&repaired))
                    .merge(env_provider());
                let repaired = report::Source {
                    path,
                    text: &repaired,
                };
                problems.extend(
                    report::extract(&rest, Some(&repaired))
                        .1
                        .into_iter()
                        .filter(|problem| problem.message.starts_with("unknown key")),
                );
                return Err(ConfigErrors(problems));
            }
            figment = figment.merge(Toml::file_exact(path));
            figment = figment.merge(env_provider());
            return finish(&figment, Some(&source), need, sources);
        }
    }
    figment = figment.merge(env_provider());
    finish(&figment, None, need, sources)
}

/// Extracts, resolves secrets (unless only the state is needed) and validates.
fn finish(
    figment: &Figment,
    source: Option<&report::Source<'_>>,
    need: Need,
    sources: &SecretSources,
) -> Result<LoadedConfig, ConfigErrors> {
    let (config, extracted) = report::extract(figment, source);
    // A secret of the wrong shape, already named by its key, makes figment report its
    // whole connector table too: keep the line that names the key.
    let mut problems = secret_shape_problems(figment);
    for problem in extracted {
        let covered = problems.iter().any(|known| {
            known.key == problem.key || known.key.starts_with(&format!("{}.", problem.key))
        });
        if !covered {
            problems.push(problem);
        }
    }
    let Some(mut config) = config else {
        return Err(ConfigErrors(problems));
    };
    let path = source.map(|source| source.path.to_path_buf());
    // Every command that opens the state needs the database's password, even those that
    // read no other secret.
    let state_password = secrets::resolve_state_password(&config.state, sources, &mut problems);
    if need == Need::StateOnly {
        super::validate::validate_state(&config.state, &mut problems);
        return if problems.is_empty() {
            Ok(LoadedConfig {
                config,
                api_key: None,
                state_password,
                path,
            })
        } else {
            Err(ConfigErrors(problems))
        };
    }
    let api_key = secrets::resolve_api_key(&config.clairo, sources, &mut problems);
    let config_dir = path.as_deref().and_then(Path::parent);
    secrets::resolve_connector_secrets(&mut config.connectors, sources, config_dir, &mut problems);
    secrets::resolve_connector_headers(&mut config.connectors, sources, &mut problems);
    validate(&config, api_key.as_ref(), need, &mut problems);
    if problems.is_empty() {
        Ok(LoadedConfig {
            config,
            api_key,
            state_password,
            path,
        })
    } else {
        Err(ConfigErrors(problems))
    }
}

fn env_provider() -> EnvOverrides {
    // `CLAIRO_SYNC_CONFIG` names the file; it is not a key inside it.
    EnvOverrides(
        Env::prefixed(ENV_PREFIX)
            .filter(|key| !key.as_str().eq_ignore_ascii_case("config"))
            .split("__"),
    )
}

/// figment's `Env`, except that a value at a secret's key is taken exactly as written.
/// `Env` reads every value as a TOML-like literal, so a password `007` would become the
/// number 7, `1.50` the float 1.5, `[x]` a list, and `"x"` lose its quotes.
struct EnvOverrides(Env);

impl figment::Provider for EnvOverrides {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut merged = Figment::new();
        for (key, raw) in self.0.iter() {
            let value: figment::value::Value = if is_secret_key(key.as_str()) {
                raw.into()
            } else {
                raw.parse().expect("parsing an env value is infallible")
            };
            merged = merged.merge(figment::providers::Serialized::default(key.as_str(), value));
        }
        merged.data()
    }
}

/// Whether a dotted key path (`connectors.mail.password`) holds a secret: the API key,
/// a connector's secret keys, or anything under a connector's `headers`.
fn is_secret_key(path: &str) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    match segments.as_slice() {
        // Not a secret, but it could hold one by mistake: validation refuses that
        // without echoing it, and a parser error must not echo it either.
        ["clairo", "api_key"] | ["state", "url"] => true,
        ["connectors", _, key, ..] => clairo_connectors::SECRET_KEYS.contains(key),
        _ => false,
    }
}

/// Secrets that are not text (a list, a table, a fraction), named by their key. figment
/// would report these at the connector's table only (a connector's `type` tag makes serde
/// read the table whole first), and with the value in the message.
fn secret_shape_problems(figment: &Figment) -> Vec<Problem> {
    use figment::value::{Num, Value};
    fn shape(value: &Value) -> Option<&'static str> {
        match value {
            Value::Array(..) => Some("a list"),
            Value::Dict(..) => Some("a table"),
            Value::Num(_, Num::F32(_) | Num::F64(_)) => Some(
                "a number with a fraction or an exponent, which cannot be kept exactly as written",
            ),
            _ => None,
        }
    }
    let problem = |key: String, found: &str| {
        Problem::new(
            key,
            format!(
                "a secret must be text, found {found} (the value is not shown); write it in quotes, or put it in the `_file` key's file"
            ),
        )
    };
    let mut problems = Vec::new();
    if let Ok(value) = figment.find_value("clairo.api_key")
        && let Some(found) = shape(&value)
    {
        problems.push(problem("clairo.api_key".to_owned(), found));
    }
    let Ok(Value::Dict(_, connectors)) = figment.find_value("connectors") else {
        return problems;
    };
    for (name, table) in &connectors {
        let Value::Dict(_, table) = table else {
            continue;
        };
        for (key, value) in table {
            if !clairo_connectors::SECRET_KEYS.contains(&key.as_str()) {
                continue;
            }
            match (key.as_str(), value) {
                ("headers", Value::Dict(_, headers)) => {
                    for (header, value) in headers {
                        if let Some(found) = shape(value) {
                            problems.push(problem(format!("connectors.{name}.headers.{header}"), found));
                        }
                    }
                }
                ("headers", _) => problems.push(Problem::new(
                    format!("connectors.{name}.headers"),
                    "must be a table of header names and values, e.g. headers = { \"X-Gateway-Token\" = \"…\" } (the value is not shown); or use headers_file",
                )),
                (_, value) => {
                    if let Some(found) = shape(value) {
                        problems.push(problem(format!("connectors.{name}.{key}"), found));
                    }
                }
            }
        }
    }
    problems
}

/// Where a config error's value could be a secret: a connector's table (whose errors
/// may not name the key) and the API key.
fn may_hold_a_secret(key: &str) -> bool {
    key == "connectors"
        || key.starts_with("connectors.")
        || key == "clairo.api_key"
        || is_secret_key(key)
}

/// What figment found, by kind only (`an integer`), where the value itself could be a
/// secret.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number with a fraction",
        Actual::Char(_) | Actual::Str(_) => "text",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another kind",
    }
}

/// Turns figment's errors into `<key.path>: …; …` lines.
pub(super) fn figment_problems(error: figment::Error) -> Vec<Problem> {
    error
        .into_iter()
        .map(|error| {
            let key = if error.path.is_empty() {
                "config".to_owned()
            } else {
                key_path(&error.path)
            };
            let source = error
                .metadata
                .as_ref()
                .map(|meta| meta.name.to_string())
                .unwrap_or_default();
            let what = match &error.kind {
                figment::error::Kind::UnknownField(field, expected) => {
                    return Problem::new(
                        field_key(&key, field),
                        format!(
                            "unknown key; remove it or fix its spelling (expected one of: {})",
                            expected.join(", ")
                        ),
                    );
                }
                figment::error::Kind::MissingField(field) => {
                    return Problem::new(field_key(&key, field), "is required; add it".to_owned());
                }
                figment::error::Kind::InvalidType(actual, expected) if may_hold_a_secret(&key) => {
                    format!(
                        "invalid type: found {}, expected {expected}",
                        kind_of(actual)
                    )
                }
                figment::error::Kind::InvalidValue(actual, expected) if may_hold_a_secret(&key) => {
                    format!(
                        "invalid value: found {}, expected {expected}",
                        kind_of(actual)
                    )
                }
                figment::error::Kind::Unsupported(actual) if may_hold_a_secret(&key) => {
                    format!("unsupported: {}", kind_of(actual))
                }
                kind => kind.to_string(),
            };
            let from = if source.is_empty() {
                String::new()
            } else {
                format!(" (from {source})")
            };
            Problem::new(key, format!("{what}{from}; fix the value"))
        })
        .collect()
}

/// `["routes", "0", "to"]` → `routes[0].to`, the form every problem line uses.
fn key_path(segments: &[String]) -> String {
    let mut out = String::new();
    for segment in segments {
        if segment.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// figment's path sometimes ends with the field already, sometimes not.
fn field_key(path: &str, field: &str) -> String {
    if path == "config" {
        field.to_owned()
    } else if path == field || path.ends_with(&format!(".{field}")) {
        path.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// [`load`] for a config held in memory rather than in a file (the fuzz target
/// `config_load` drives it): the same env overrides, secrets and validation.
pub fn load_str(
    text: &str,
    need: Need,
    sources: &SecretSources,
) -> Result<LoadedConfig, ConfigErrors> {
    let figment = Figment::new()
        .merge(Toml::string(text))
        .merge(env_provider());
    finish(&figment, None, need, sources)
}
