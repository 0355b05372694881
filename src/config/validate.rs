//! Validation of a loaded config: every problem found, each named by its key path with
//! what to do (`<key.path>: <what is wrong>; <what to do>`).

use std::time::Duration;

use clairo_connectors::{EventType, Secret};

use super::{
    Config, DEFAULT_BASE_URL, MIN_RESPONSE_SIZE, Need, Problem, RateLimit, StateConfig, When,
    log_filter,
};

pub(super) fn validate(
    config: &Config,
    api_key: Option<&Secret>,
    need: Need,
    problems: &mut Vec<Problem>,
) {
    match url::Url::parse(&config.clairo.base_url) {
        Ok(url) if url.scheme() == "https" => {}
        // The API key travels in every request: in clear text only to this machine
        // (the sandbox, a local proxy).
        Ok(url) if url.scheme() == "http" && is_loopback(&url) => {}
        Ok(url) if url.scheme() == "http" => problems.push(Problem::new(
            "clairo.base_url",
            format!(
                "plain http:// to {} would send the API key unencrypted; use https://{}",
                url.host_str().unwrap_or("the host"),
                config.clairo.base_url.trim_start_matches("http://"),
            ),
        )),
        Ok(_) | Err(_) => problems.push(Problem::new(
            "clairo.base_url",
            format!(
                "{:?} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}",
                config.clairo.base_url
            ),
        )),
    }
    match api_key {
        Some(key) if !key.expose().starts_with("clr_") => problems.push(Problem::new(
            "clairo.api_key",
            "the key does not start with clr_, so it is not a Clairo API key; generate one in the Clairo dashboard under Settings → API Keys",
        )),
        Some(_) => {}
        None => {
            let _ = need;
            problems.push(Problem::new(
                "clairo.api_key",
                "no API key found; put it in the file named by clairo.api_key_file, the systemd credential clairo-api-key, or CLAIRO_API_KEY",
            ))
        }
    }
    if let Err(error) = log_filter(&config.log_level) {
        problems.push(Problem::new(
            "log_level",
            format!(
                "{error}; write a level (error, warn, info, debug, trace or off), optionally followed by per-module levels, e.g. \"info,clairo_sync=debug\""
            ),
        ));
    }
    if config.clairo.max_requests_per_minute == 0 {
        problems.push(Problem::new(
            "clairo.max_requests_per_minute",
            "must be at least 1; Clairo allows 1000 per business, 900 leaves room for other integrations",
        ));
    }
    if config.clairo.max_response_size.bytes() < MIN_RESPONSE_SIZE {
        problems.push(Problem::new(
            "clairo.max_response_size",
            "must be at least 64KiB (an error answer alone can be that long); the default is \"64MiB\"",
        ));
    }
    if config.clairo.max_attempts == 0 {
        problems.push(Problem::new(
            "clairo.max_attempts",
            "must be at least 1; the default is 5",
        ));
    }
    validate_state(&config.state, problems);
    if let Some(briefs) = &config.sync.briefs {
        check_limit("sync.briefs.limit", briefs.limit, problems);
    }
    if let Some(conversations) = &config.sync.conversations {
        check_limit("sync.conversations.limit", conversations.limit, problems);
        if conversations.refresh_interval.is_zero() {
            problems.push(Problem::new(
                "sync.conversations.refresh_interval",
                "must be longer than zero; e.g. \"15m\"",
            ));
        }
    }
    for (index, folder) in config.meetings.folders.iter().enumerate() {
        let key = format!("meetings.folders[{index}]");
        if !folder.path.is_absolute() {
            problems.push(Problem::new(
                format!("{key}.path"),
                format!(
                    "{} is not an absolute path; write it from /",
                    folder.path.display()
                ),
            ));
        }
        for (name, dir) in [("processed", &folder.processed), ("failed", &folder.failed)] {
            if let Some(dir) = dir
                && !dir.is_absolute()
            {
                problems.push(Problem::new(
                    format!("{key}.{name}"),
                    format!("{} is not an absolute path; write it from /", dir.display()),
                ));
            }
        }
        if folder.agent.trim().is_empty() {
            problems.push(Problem::new(
                format!("{key}.agent"),
                "is empty; name the agent id recordings are uploaded to (see `clairo-sync agents`)",
            ));
        }
        if folder.settle.is_zero() {
            problems.push(Problem::new(
                format!("{key}.settle"),
                "must be longer than zero, or half-written files would be taken; e.g. \"5s\"",
            ));
        }
        if folder.poll_interval < Duration::from_millis(100) {
            problems.push(Problem::new(
                format!("{key}.poll_interval"),
                "is shorter than 100ms, which would rescan the folder in a busy loop; e.g. \"10s\"",
            ));
        }
        let (processed, failed) = (folder.processed_dir(), folder.failed_dir());
        for (name, dir) in [("processed", &processed), ("failed", &failed)] {
            if *dir == folder.path {
                problems.push(Problem::new(
                    format!("{key}.{name}"),
                    "is the drop folder itself, so finished files would be taken again; name a subfolder or another folder",
                ));
            }
        }
        if processed == failed {
            problems.push(Problem::new(
                format!("{key}.failed"),
                "is the same folder as processed; keep them apart so failures stand out",
            ));
        }
        if let Some(first) = config.meetings.folders[..index]
            .iter()
            .position(|other| other.path == folder.path)
        {
            problems.push(Problem::new(
                format!("{key}.path"),
                format!("is the same folder as meetings.folders[{first}]; list each folder once"),
            ));
        }
    }
    for (name, connector) in &config.connectors {
        if !valid_name(name) {
            problems.push(Problem::new(
                format!("connectors.{name}"),
                "names may hold only letters, digits, '_' and '-'; rename the table",
            ));
        }
        if let Some(text) = &connector.rate_limit
            && let Err(message) = text.parse::<RateLimit>()
        {
            problems.push(Problem::new(
                format!("connectors.{name}.rate_limit"),
                message,
            ));
        }
        for problem in connector.validate() {
            let key = format!("connectors.{name}.{}", problem.key);
            // A missing secret was already reported, with where to put it.
            if !problems.iter().any(|known| known.key == key) {
                problems.push(Problem::new(key, problem.message));
            }
        }
    }
    for (index, route) in config.routes.iter().enumerate() {
        let key = format!("routes[{index}]");
        if route.events.is_empty() {
            problems.push(Problem::new(
                format!("{key}.events"),
                "is empty; list the event types to route (brief.created, conversation.updated, meeting.processed)",
            ));
        }
        for event in &route.events {
            if EventType::parse(event).is_none() {
                problems.push(Problem::new(
                    format!("{key}.events"),
                    format!(
                        "{event:?} is not an event type; use brief.created, conversation.updated or meeting.processed"
                    ),
                ));
            }
        }
        if let Some(problem) = route.when.as_ref().and_then(When::problem) {
            problems.push(Problem::new(format!("{key}.when"), problem));
        }
        if route.to.is_empty() {
            problems.push(Problem::new(
                format!("{key}.to"),
                "is empty; name at least one connector",
            ));
        }
        for target in &route.to {
            if !config.connectors.contains_key(target) {
                let known: Vec<&str> = config.connectors.keys().map(String::as_str).collect();
                problems.push(Problem::new(
                    format!("{key}.to"),
                    format!(
                        "{target:?} is not a configured connector; add [connectors.{target}] or use one of: {}",
                        if known.is_empty() { "(none configured)".to_owned() } else { known.join(", ") }
                    ),
                ));
            }
        }
    }
    if config.delivery.retry_schedule.is_empty() {
        problems.push(Problem::new(
            "delivery.retry_schedule",
            "is empty, so a failed delivery would die at once; list the waits, e.g. [\"5s\", \"5m\", \"30m\"]",
        ));
    }
    if config.delivery.concurrency == 0 {
        problems.push(Problem::new(
            "delivery.concurrency",
            "must be at least 1; the default is 4",
        ));
    }
    if config.delivery.lease < Duration::from_secs(5) {
        problems.push(Problem::new(
            "delivery.lease",
            "is shorter than 5s, so a slow delivery could be claimed twice; use at least the connectors' timeout",
        ));
    }
}

/// `[state]`: also judged for the commands that read nothing but the state.
pub(super) fn validate_state(state: &StateConfig, problems: &mut Vec<Problem>) {
    if state.path.as_os_str().is_empty() {
        problems.push(Problem::new(
            "state.path",
            "is empty; name the SQLite file, e.g. /var/lib/clairo-sync/state.db",
        ));
    }
    if state.lease < Duration::from_secs(3) {
        problems.push(Problem::new(
            "state.lease",
            "is shorter than 3s, so a database pause of a moment would hand a source to another instance; the default is \"30s\"",
        ));
    }
    if let Some(name) = &state.instance
        && (name.trim().is_empty() || name.chars().any(char::is_control))
    {
        problems.push(Problem::new(
            "state.instance",
            "is empty or holds control characters; name this instance, e.g. \"web-2\", or remove the key to use the host name",
        ));
    }
    let Some(url) = &state.url else {
        if state.password_file.is_some() {
            problems.push(Problem::new(
                "state.password_file",
                "is set but state.url is not, so nothing would use it; set state.url = \"postgres://user@host/db\" or remove the key",
            ));
        }
        return;
    };
    // The URL is never echoed: by mistake it may hold the password.
    const EXAMPLE: &str = "postgres://clairo_sync@db.example.com/clairo_sync";
    match url::Url::parse(url) {
        Err(_) => problems.push(Problem::new(
            "state.url",
            format!("is not a URL (the value is not shown); write e.g. {EXAMPLE}"),
        )),
        Ok(parsed) if !matches!(parsed.scheme(), "postgres" | "postgresql") => {
            problems.push(Problem::new(
                "state.url",
                format!(
                    "must start with postgres:// or postgresql:// (found {}://); for SQLite remove state.url and set state.path",
                    parsed.scheme()
                ),
            ))
        }
        // `?password=` is read by the driver too.
        Ok(parsed)
            if parsed.password().is_some()
                || parsed.query_pairs().any(|(key, _)| key == "password") =>
        {
            problems.push(Problem::new(
            "state.url",
            "holds a password (not shown), which anyone who may read the config could read and which would show wherever the URL is shown; remove it from the URL and put it in the file named by state.password_file (or the systemd credential state-password)",
            ))
        }
        Ok(_) if !cfg!(feature = "postgres") => problems.push(Problem::new(
            "state.url",
            "this build of clairo-sync has no PostgreSQL support (built without the `postgres` feature); remove state.url to keep the state in SQLite (state.path), or install a build with it",
        )),
        Ok(_) => {}
    }
}

/// 127.0.0.0/8, ::1 or `localhost`: where plain http stays on this machine.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn check_limit(key: &str, limit: u32, problems: &mut Vec<Problem>) {
    if limit == 0 {
        problems.push(Problem::new(
            key,
            "must be at least 1; the API's default is 50",
        ));
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
