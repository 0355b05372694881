//! Problem lines for what the TOML parser and serde reject, in the form the docs promise
//! (docs/operations.md §2): one line per problem, `<file>:<line>:<col>: …; …` for a syntax
//! error and `<key.path>: …; …` for a key, with where the key is when it is in the file.
//!
//! serde stops at the first error, and a TOML parser at the first syntax error. A config
//! with several mistakes should not take several rounds of `check` to fix, so:
//! - a syntax error's line is blanked and the file parsed again, so every syntax error is
//!   reported (up to [`MAX_SYNTAX_ERRORS`]), and the unknown keys of what does parse are
//!   reported with them (other checks would judge a file with lines missing: they wait);
//! - an unknown key is removed and the rest deserialized again, so each unknown key gets
//!   its own line and the config's other problems are still found.

use std::path::Path;

use figment::Figment;
use figment::providers::Serialized;
use figment::value::Value;

use super::load::figment_problems;
use super::{Config, Problem};

/// Enough for any real file; a file that is not TOML at all would otherwise get a line
/// per line.
const MAX_SYNTAX_ERRORS: usize = 10;

/// The same for unknown keys: a loop bound, never reached by a config a person wrote.
const MAX_UNKNOWN_KEYS: usize = 100;

/// A config file's text, to locate keys in it.
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

/// Every syntax error of `source`, and its text with the offending lines blanked (so the
/// rest can still be checked); no error: none, and the text unchanged.
pub fn syntax_problems(source: &Source<'_>) -> (Vec<Problem>, String) {
    let mut text = source.text.to_owned();
    let mut problems = Vec::new();
    while problems.len() < MAX_SYNTAX_ERRORS {
        let Err(error) = toml_edit::ImDocument::parse(text.as_str()) else {
            break;
        };
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = line_column(&text, offset);
        let what: Vec<&str> = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect();
        problems.push(Problem::new(
            format!("{}:{line}:{column}", source.path.display()),
            format!(
                "TOML syntax error: {}; fix this line (a value is a \"quoted string\", a number, true/false, a [list] or an {{ inline = \"table\" }}; one `key = value` per line)",
                what.join(", ")
            ),
        ));
        if !blank_line(&mut text, line) {
            break;
        }
    }
    (problems, text)
}

/// Deserializes the config, reporting every unknown key on its own line. Returns the
/// config (if the rest is valid) and the problems found.
pub fn extract(figment: &Figment, source: Option<&Source<'_>>) -> (Option<Config>, Vec<Problem>) {
    let first = match figment.extract::<Config>() {
        Ok(config) => return (Some(config), Vec::new()),
        Err(error) => error,
    };
    if !is_unknown_field(&first) {
        return (None, figment_problems(first));
    }
    // Without the keys reported so far, again: from the merged values (file and env).
    let Ok(mut value) = figment.extract::<Value>() else {
        return (None, figment_problems(first));
    };
    let mut problems = Vec::new();
    let mut error = first;
    loop {
        let Some(path) = unknown_field_path(&error) else {
            problems.extend(figment_problems(error));
            return (None, problems);
        };
        for mut problem in figment_problems(error) {
            if let Some(at) = source.and_then(|source| locate(source, &path)) {
                problem.message =
                    problem
                        .message
                        .replacen("unknown key", &format!("unknown key at {at}"), 1);
            }
            problems.push(problem);
        }
        if !remove(&mut value, &path) || problems.len() >= MAX_UNKNOWN_KEYS {
            return (None, problems);
        }
        match Figment::from(Serialized::defaults(&value)).extract::<Config>() {
            Ok(config) => return (Some(config), problems),
            Err(next) => error = next,
        }
    }
}

fn is_unknown_field(error: &figment::Error) -> bool {
    matches!(error.kind, figment::error::Kind::UnknownField(..))
}

/// The full path of an unknown key: figment's path sometimes ends with the field already.
fn unknown_field_path(error: &figment::Error) -> Option<Vec<String>> {
    let figment::error::Kind::UnknownField(field, _) = &error.kind else {
        return None;
    };
    let mut path = error.path.clone();
    if path.last() != Some(field) {
        path.push(field.clone());
    }
    Some(path)
}

/// Removes the key at `path` from a dict of dicts and arrays.
fn remove(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        node = match node {
            Value::Dict(_, dict) => match dict.get_mut(segment) {
                Some(child) => child,
                None => return false,
            },
            Value::Array(_, items) => {
                match segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(child) => child,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    match node {
        Value::Dict(_, dict) => dict.remove(last).is_some(),
        _ => false,
    }
}

/// `<file>:<line>:<col>` of the key at `path`, when the file has it (an env override
/// does not).
fn locate(source: &Source<'_>, path: &[String]) -> Option<String> {
    use toml_edit::TableLike;
    let document = toml_edit::ImDocument::parse(source.text).ok()?;
    let mut table: &dyn TableLike = document.as_table();
    let mut tables: Option<&toml_edit::ArrayOfTables> = None;
    let mut span = None;
    for segment in path {
        if let Some(array) = tables.take() {
            table = array.get(segment.parse().ok()?)?;
            continue;
        }
        let (key, child) = table.get_key_value(segment)?;
        span = key.span();
        if let Some(array) = child.as_array_of_tables() {
            tables = Some(array);
        } else if let Some(child) = child.as_table_like() {
            table = child;
        }
    }
    let (line, column) = line_column(source.text, span?.start);
    Some(format!("{}:{line}:{column}", source.path.display()))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |start| start.chars().count())
        + 1;
    (line, column)
}

/// Blanks line `number` (1-based), keeping its newline so later lines keep their numbers.
/// False when there was nothing left to blank.
fn blank_line(text: &mut String, number: usize) -> bool {
    let start: usize = text
        .split_inclusive('\n')
        .take(number - 1)
        .map(str::len)
        .sum();
    let Some(line) = text[start..].split('\n').next() else {
        return false;
    };
    if line.trim().is_empty() {
        return false;
    }
    let end = start + line.len();
    text.replace_range(start..end, "");
    true
}
