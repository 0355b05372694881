//! Route filters (`[[routes]] when`): a minijinja expression on the event envelope (`id`,
//! `type`, `timestamp`, `data`) and `contact_email`, compiled when the config loads and
//! evaluated once per event, when the event is written (docs/architecture.md, section 2).
//!
//! What can be known from the text alone is a config error: a syntax error, a filter, test
//! or function minijinja does not have, a name the context does not hold. What depends on
//! an event's data (`data.answers.teamSize + 1` where one brief's answer is text) is found
//! only at run time, and makes that event's delivery dead with the reason, never a drop.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use clairo_connectors::Event;
use minijinja::{Environment, ErrorKind, Expression, UndefinedBehavior, Value};

/// The names an expression sees, besides minijinja's own functions.
pub const CONTEXT_NAMES: [&str; 5] = ["id", "type", "timestamp", "data", "contact_email"];

/// One environment for every filter of the process: the expressions borrow it, and it
/// holds nothing per config.
static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Event data is loosely shaped: a field one brief lacks (even a nested one) is
    // undefined, which compares and tests as nothing, rather than an error that would
    // make a dead delivery out of an ordinary brief.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env
});

/// A compiled `when`, or why it does not compile.
#[derive(Clone)]
pub struct When {
    text: String,
    compiled: Result<Arc<Expression<'static, 'static>>, String>,
}

impl fmt::Debug for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "When({:?})", self.text)
    }
}

impl<'de> serde::Deserialize<'de> for When {
    /// Never fails on the expression itself: its problem is reported by validation under
    /// `routes[N].when`, worded as every problem line is.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| Self::parse(&text))
    }
}

/// The context an expression is evaluated in, built once per event and shared by every
/// route's filter.
pub struct FilterContext(Value);

impl FilterContext {
    /// The envelope plus `contact_email` (the brief's contact email by the default rule
    /// of docs/operations.md, or none), as JSON templates see it.
    pub fn new(event: &Event) -> Self {
        Self(Value::from_serialize(
            clairo_connectors::json_template::context(event, None),
        ))
    }
}

impl When {
    pub fn parse(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            compiled: compile(text).map(Arc::new),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// What is wrong with the expression, worded as `<what>; <what to do>`.
    pub fn problem(&self) -> Option<&str> {
        self.compiled.as_ref().err().map(String::as_str)
    }

    /// Whether the route takes the event; `Err` says why the expression failed on it.
    pub fn matches(&self, context: &FilterContext) -> Result<bool, String> {
        let expression = self.compiled.as_ref().map_err(Clone::clone)?;
        expression
            .eval(&context.0)
            .map(|value| value.is_true())
            .map_err(|error| describe(&error))
    }
}

/// Compiles `text` and checks every name it uses against what exists.
fn compile(text: &str) -> Result<Expression<'static, 'static>, String> {
    if text.trim().is_empty() {
        return Err(
            "is empty; write an expression such as \"contact_email is not none\", or remove `when`"
                .to_owned(),
        );
    }
    let expression = ENVIRONMENT
        .compile_expression_owned(text.to_owned())
        .map_err(|error| {
            format!(
                "does not parse ({}); check the quotes, brackets and operators (minijinja \
                 expression syntax, e.g. \"'enterprise' in (data.summary | lower)\")",
                describe(&error)
            )
        })?;
    // minijinja looks filters, tests and functions up only when it reaches them: a name
    // that does not exist is found here, whatever path an event would take.
    let names = Names::scan(text);
    let unknown_filters: Vec<&str> = names
        .filters
        .iter()
        .map(String::as_str)
        .filter(|name| probe(&format!("none | {name}"), ErrorKind::UnknownFilter))
        .collect();
    if !unknown_filters.is_empty() {
        return Err(format!(
            "unknown filter {}; use one of minijinja's built-in filters (lower, upper, length, \
             default, trim, replace, …), see docs/operations.md \"Route filters\"",
            quoted(&unknown_filters)
        ));
    }
    let unknown_tests: Vec<&str> = names
        .tests
        .iter()
        .map(String::as_str)
        .filter(|name| probe(&format!("none is {name}"), ErrorKind::UnknownTest))
        .collect();
    if !unknown_tests.is_empty() {
        return Err(format!(
            "unknown test {}; use one of minijinja's built-in tests (none, defined, number, \
             string, startingwith, endingwith, in, …), see docs/operations.md \"Route filters\"",
            quoted(&unknown_tests)
        ));
    }
    let unknown_names: Vec<String> = expression
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| !CONTEXT_NAMES.contains(&name.as_str()))
        .filter(|name| !is_global(name))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !unknown_names.is_empty() {
        let names: Vec<&str> = unknown_names.iter().map(String::as_str).collect();
        let called = names.iter().any(|name| names_a_call(text, name));
        return Err(format!(
            "unknown {} {}; an expression sees {}{}",
            if called { "function" } else { "name" },
            quoted(&names),
            CONTEXT_NAMES.join(", "),
            if called {
                " and minijinja's functions (range, dict, namespace)"
            } else {
                " (e.g. data.summary, data.answers.email)"
            },
        ));
    }
    Ok(expression)
}

/// Whether evaluating `source` (which applies one filter or test to none) fails with
/// `kind`: how a filter's or test's existence is asked of minijinja.
fn probe(source: &str, kind: ErrorKind) -> bool {
    match ENVIRONMENT.compile_expression(source) {
        Ok(expression) => matches!(expression.eval(()), Err(error) if error.kind() == kind),
        // Not a plain name (the scan read something odd): compiling the whole expression
        // has already judged its syntax.
        Err(_) => false,
    }
}

/// A global of the environment (a function such as `range`).
fn is_global(name: &str) -> bool {
    ENVIRONMENT
        .compile_expression(&format!("{name} is defined"))
        .ok()
        .and_then(|expression| expression.eval(()).ok())
        .is_some_and(|value| value.is_true())
}

/// Whether `name(` appears in `text` as a word: the name is called, not read.
fn names_a_call(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].trim_start().starts_with('(');
        after && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
    })
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// minijinja's error in one line, without the source listing its Display may add.
fn describe(error: &minijinja::Error) -> String {
    let mut text = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    if let Some(line) = error.line()
        && line > 1
    {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// The filters and tests an expression names, read from its text with string literals
/// skipped: `x | lower` names the filter `lower`; `x is not none` the test `none`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Names {
    filters: BTreeSet<String>,
    tests: BTreeSet<String>,
}

impl Names {
    fn scan(text: &str) -> Self {
        let mut names = Self::default();
        let tokens = tokens(text);
        for (index, token) in tokens.iter().enumerate() {
            match token {
                Token::Pipe => {
                    if let Some(Token::Word(name)) = tokens.get(index + 1) {
                        names.filters.insert(name.clone());
                    }
                }
                Token::Word(word) if word == "is" => {
                    let mut next = index + 1;
                    if matches!(tokens.get(next), Some(Token::Word(word)) if word == "not") {
                        next += 1;
                    }
                    if let Some(Token::Word(name)) = tokens.get(next) {
                        names.tests.insert(name.clone());
                    }
                }
                _ => {}
            }
        }
        names
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Pipe,
    Other,
}

/// Words, `|`, and everything else, with quoted strings read as one `Other`.
fn tokens(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                while let Some(inner) = chars.next() {
                    if inner == '\\' {
                        chars.next();
                    } else if inner == c {
                        break;
                    }
                }
                tokens.push(Token::Other);
            }
            '|' => tokens.push(Token::Pipe),
            c if c.is_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_alphanumeric() || next == '_' {
                        word.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            c if c.is_whitespace() => {}
            _ => tokens.push(Token::Other),
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use clairo_connectors::EventType;

    fn brief(summary: &str, answers: serde_json::Value) -> Event {
        let mut event = clairo_connectors::email::sample_event(EventType::BriefCreated);
        event.data["summary"] = summary.into();
        event.data["answers"] = answers;
        event
    }

    fn matches(text: &str, event: &Event) -> Result<bool, String> {
        let when = When::parse(text);
        assert_eq!(when.problem(), None, "{text}");
        when.matches(&FilterContext::new(event))
    }

    #[test]
    fn the_contract_example_takes_enterprise_leads_with_an_email_only() {
        let text = "contact_email is not none and 'enterprise' in (data.summary | lower)";
        let with_email = brief(
            "Ann from ACME, Enterprise plan",
            serde_json::json!({"email": "ann@acme.example"}),
        );
        let without_email = brief("Bob, Enterprise plan", serde_json::json!({}));
        let small = brief(
            "Carl, small shop",
            serde_json::json!({"email": "c@x.example"}),
        );
        assert_eq!(matches(text, &with_email), Ok(true));
        assert_eq!(matches(text, &without_email), Ok(false));
        assert_eq!(matches(text, &small), Ok(false));
    }

    #[test]
    fn a_missing_field_is_nothing_rather_than_an_error() {
        let meeting = clairo_connectors::email::sample_event(EventType::MeetingProcessed);
        assert_eq!(
            matches("data.answers.teamSize > 10", &meeting),
            Ok(false),
            "a meeting has no answers"
        );
        assert_eq!(matches("type == 'meeting.processed'", &meeting), Ok(true));
        let conversation = clairo_connectors::email::sample_event(EventType::ConversationUpdated);
        assert_eq!(
            matches("'enterprise' in (data.summary | lower)", &conversation),
            Ok(false),
            "a conversation has no summary"
        );
    }

    #[test]
    fn a_type_error_is_found_at_run_time_on_the_event_that_has_it() {
        let text = "data.answers.teamSize + 1 > 10";
        let number = brief("x", serde_json::json!({"teamSize": 12}));
        let words = brief("x", serde_json::json!({"teamSize": "twelve"}));
        assert_eq!(matches(text, &number), Ok(true));
        let error = matches(text, &words).unwrap_err();
        assert!(error.contains("invalid operation"), "{error}");
    }

    #[test]
    fn syntax_errors_unknown_filters_tests_functions_and_names_are_found_at_load() {
        for (text, expected) in [
            ("data.summary ==", "does not parse"),
            ("(data.summary | lower", "does not parse"),
            ("data.summary | lowercase", "unknown filter `lowercase`"),
            ("false and data.summary | nope", "unknown filter `nope`"),
            ("contact_email is not nothing", "unknown test `nothing`"),
            ("lookup(data) == 1", "unknown function `lookup`"),
            ("dta.summary", "unknown name `dta`"),
            ("  ", "is empty"),
        ] {
            let problem = When::parse(text).problem().map(str::to_owned);
            assert!(
                problem.as_deref().is_some_and(|p| p.contains(expected)),
                "{text:?}: {problem:?}"
            );
        }
    }

    #[test]
    fn strings_that_look_like_filters_are_not_read_as_filters() {
        for text in [
            "'a | b' in data.summary",
            "\"x is nothing\" == data.summary",
            "data.summary | default('none') | lower is string",
            "range(3) | length == 3",
        ] {
            assert_eq!(When::parse(text).problem(), None, "{text}");
        }
    }
}
