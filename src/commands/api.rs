//! Operator commands on the Clairo API: `agents`, `conversations`, `briefs`, `chat`,
//! `discover`, and the online half of `check`. Tables for people, `--json` for scripts.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use clairo_connectors::ConnectorConfig;

use crate::clairo::ClairoClient;
use crate::cli::{BriefsCommand, ConversationsCommand, MessageArgs};
use crate::config::LoadedConfig;
use crate::metrics::Metrics;

use super::{CommandError, CommandResult, load_api_config};

/// A client for `loaded`'s account. The key was checked by the loader.
pub(crate) fn client_for(
    loaded: &LoadedConfig,
    metrics: Metrics,
) -> Result<ClairoClient, CommandError> {
    Ok(crate::daemon::build_client(loaded, None, metrics)?)
}

fn api_client(path: Option<&Path>) -> Result<ClairoClient, CommandError> {
    let loaded = load_api_config(path)?;
    client_for(&loaded, Metrics::new())
}

fn print_json<T: Serialize>(value: &T) -> CommandResult {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("encoding JSON")?
    );
    Ok(())
}

fn cell(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (index, value) in row.iter().enumerate() {
            widths[index] = widths[index].max(value.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (index, value) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                out.push_str(value);
            } else {
                out.push_str(&format!("{value:<width$}  ", width = widths[index]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!(
            "{}…",
            flat.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    } else {
        flat
    }
}

fn warn_skipped<T>(listing: &crate::clairo::Listing<T>) {
    for skipped in &listing.skipped {
        eprintln!(
            "warning: skipped item {} ({}): {}",
            skipped.index,
            skipped.id.as_deref().unwrap_or("no id"),
            skipped.reason
        );
    }
}

pub async fn agents(path: Option<&Path>, json: bool) -> CommandResult {
    let client = api_client(path)?;
    let listing = client.agents().await.map_err(anyhow::Error::from)?;
    warn_skipped(&listing);
    if json {
        return print_json(&listing.items);
    }
    let rows: Vec<Vec<String>> = listing
        .items
        .iter()
        .map(|agent| {
            vec![
                agent.id.clone(),
                cell(agent.kind.as_deref()).to_owned(),
                match agent.is_active {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "no".to_owned(),
                    None => "-".to_owned(),
                },
                cell(agent.name.as_deref()).to_owned(),
            ]
        })
        .collect();
    print_table(&["ID", "TYPE", "ACTIVE", "NAME"], &rows);
    Ok(())
}

pub async fn conversations(path: Option<&Path>, command: ConversationsCommand) -> CommandResult {
    let client = api_client(path)?;
    match command {
        ConversationsCommand::List { agent, limit, json } => {
            let listing = client
                .conversations(agent.as_deref(), limit)
                .await
                .map_err(anyhow::Error::from)?;
            warn_skipped(&listing);
            if json {
                return print_json(&listing.items);
            }
            let rows: Vec<Vec<String>> = listing
                .items
                .iter()
                .map(|conversation| {
                    vec![
                        conversation.id.clone(),
                        cell(conversation.agent_id.as_deref()).to_owned(),
                        cell(conversation.status.as_deref()).to_owned(),
                        conversation
                            .message_count
                            .map_or_else(|| "-".to_owned(), |count| count.to_string()),
                        cell(
                            conversation
                                .updated_at
                                .as_deref()
                                .or(conversation.created_at.as_deref()),
                        )
                        .to_owned(),
                    ]
                })
                .collect();
            print_table(&["ID", "AGENT", "STATUS", "MESSAGES", "UPDATED"], &rows);
        }
        ConversationsCommand::Show { id, json } => {
            let conversation = client
                .conversation(&id)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                return print_json(&conversation.raw);
            }
            println!(
                "Conversation {}  agent {}  {}",
                conversation.id,
                cell(conversation.agent_id.as_deref()),
                cell(conversation.status.as_deref())
            );
            for message in &conversation.messages {
                println!(
                    "\n[{}] {}\n{}",
                    cell(message.created_at.as_deref()),
                    cell(message.role.as_deref()),
                    cell(message.content.as_deref())
                );
            }
        }
    }
    Ok(())
}

pub async fn briefs(path: Option<&Path>, command: BriefsCommand) -> CommandResult {
    let client = api_client(path)?;
    match command {
        BriefsCommand::List { limit, json } => {
            let listing = client.briefs(limit).await.map_err(anyhow::Error::from)?;
            warn_skipped(&listing);
            if json {
                return print_json(&listing.items);
            }
            let rows: Vec<Vec<String>> = listing
                .items
                .iter()
                .map(|brief| {
                    vec![
                        brief.id.clone(),
                        cell(brief.created_at.as_deref()).to_owned(),
                        one_line(cell(brief.summary.as_deref()), 70),
                    ]
                })
                .collect();
            print_table(&["ID", "CREATED", "SUMMARY"], &rows);
        }
        BriefsCommand::Show { id, json } => {
            let brief = client.brief(&id).await.map_err(anyhow::Error::from)?;
            if json {
                return print_json(&brief.raw);
            }
            println!("Brief {}\n\n{}\n", brief.id, cell(brief.summary.as_deref()));
            if let Some(serde_json::Value::Object(answers)) = &brief.answers {
                for (key, value) in answers {
                    let text = match value {
                        serde_json::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    println!("  {key}: {text}");
                }
            }
        }
    }
    Ok(())
}

pub async fn chat(path: Option<&Path>, args: &MessageArgs, discovery: bool) -> CommandResult {
    let client = api_client(path)?;
    if discovery {
        let reply = client
            .discover(&args.agent, &args.message, args.conversation.as_deref())
            .await
            .map_err(anyhow::Error::from)?;
        if args.json {
            return print_json(&reply.raw);
        }
        println!("{}", reply.reply.as_deref().unwrap_or(""));
        let progress = reply
            .progress
            .map_or_else(String::new, |p| format!("  progress {p}%"));
        let done = if reply.completed == Some(true) {
            "  completed"
        } else {
            ""
        };
        println!(
            "\n(conversation {}{progress}{done})",
            cell(reply.conversation_id.as_deref())
        );
    } else {
        let reply = client
            .chat(&args.agent, &args.message, args.conversation.as_deref())
            .await
            .map_err(anyhow::Error::from)?;
        if args.json {
            return print_json(&reply.raw);
        }
        println!("{}", reply.reply.as_deref().unwrap_or(""));
        println!(
            "\n(conversation {})",
            cell(reply.conversation_id.as_deref())
        );
    }
    Ok(())
}

/// `check --online`: the key works, configured agents exist, are active and of the right
/// type; every connector answers its probe.
pub async fn check_online(loaded: &LoadedConfig, send_test: bool) -> CommandResult {
    let client = client_for(loaded, Metrics::new())?;
    let agents = client.agents().await.map_err(anyhow::Error::from)?;
    let mut problems = Vec::new();
    let config = &loaded.config;
    let mut wanted: Vec<(String, String, &str)> = Vec::new();
    if let Some(conversations) = &config.sync.conversations {
        for (index, agent) in conversations.agents.iter().enumerate() {
            wanted.push((
                format!("sync.conversations.agents[{index}]"),
                agent.clone(),
                "any",
            ));
        }
    }
    for (index, folder) in config.meetings.folders.iter().enumerate() {
        wanted.push((
            format!("meetings.folders[{index}].agent"),
            folder.agent.clone(),
            "MEETING",
        ));
    }
    for (key, id, kind) in wanted {
        match agents.items.iter().find(|agent| agent.id == id) {
            None => problems.push(format!("{key}: agent {id} does not exist in this account; see `clairo-sync agents`")),
            Some(agent) if agent.is_active == Some(false) => {
                problems.push(format!("{key}: agent {id} is inactive; activate it in the Clairo dashboard"))
            }
            Some(agent) if kind != "any" && agent.kind.as_deref().is_some_and(|actual| actual != kind) => {
                problems.push(format!(
                    "{key}: agent {id} is a {} agent, not a {kind} agent; pick one from `clairo-sync agents`",
                    agent.kind.as_deref().unwrap_or("?")
                ))
            }
            Some(_) => {}
        }
    }
    println!("clairo: API key accepted, {} agents", agents.items.len());
    // Outside the service, judge paths as its unit will let it use them.
    let unit = std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_none()
        .then(|| crate::config::Unit::for_config(loaded.path.as_deref()))
        .filter(|unit| unit.path.is_some());
    for (name, connector_config) in &config.connectors {
        let connector = connector_config
            .build(name)
            .map_err(|error| anyhow::anyhow!("connectors.{name}: {error}"))?;
        let file = match &connector_config.kind {
            ConnectorConfig::File(file) => Some(file.path.as_path()),
            _ => None,
        };
        match file.zip(unit.as_ref()) {
            Some((path, unit)) if unit.write_problem(path).is_some() => {
                problems.push(format!(
                    "connectors.{name}: {}",
                    unit.write_problem(path).unwrap_or_default()
                ));
            }
            Some((path, unit))
                if unit
                    .state_directories
                    .iter()
                    .any(|dir| path.starts_with(dir) && !dir.exists()) =>
            {
                println!(
                    "connectors.{name}: ok ({} will be created: systemd makes the state directory when the service starts)",
                    path.display()
                );
            }
            _ => match connector.probe().await {
                Ok(what) => {
                    println!("connectors.{name}: ok ({what})");
                    // The account's own names (CRM properties, stages, fields) checked
                    // against the mapping, each problem under its key path.
                    match connector.audit().await {
                        Ok(found) => problems.extend(found.into_iter().map(|problem| {
                            format!("connectors.{name}.{}: {}", problem.key, problem.message)
                        })),
                        Err(error) => problems.push(format!("connectors.{name}: {error}")),
                    }
                }
                Err(error) => problems.push(format!("connectors.{name}: {error}")),
            },
        }
        if !send_test {
            continue;
        }
        if file.is_some() {
            // The archive is the record of real events, and `check` may run as root: a
            // file written now could belong to root, and the service could not append
            // to it afterwards. The probe above has checked it can be written.
            println!("connectors.{name}: no test event (a file connector keeps real events only)");
            continue;
        }
        let event = crate::test_event::test_event();
        let attempt = crate::test_event::send(&*connector, &event).await;
        match attempt.verdict {
            clairo_connectors::Verdict::Delivered => {
                println!("connectors.{name}: test event {} delivered", event.id)
            }
            other => problems.push(format!(
                "connectors.{name}: test event not delivered: {other:?}"
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        for problem in &problems {
            eprintln!("{problem}");
        }
        Err(CommandError::Other(anyhow::anyhow!(
            "{} problem(s) found online",
            problems.len()
        )))
    }
}
