//! `completions SHELL` and `manpage [--dir DIR]`: hidden commands for packagers. They print
//! what clap knows about the command line, so completions and man pages never drift from it
//! (packaging/build-deb.sh runs them).

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::cli::Cli;

use super::CommandResult;

/// The binary's name, as completions must register it.
const BIN: &str = "clairo-sync";

/// What the generated top page lacks and an operator looks for: exit codes, environment,
/// files and signals (README "Commands", docs/operations.md). Raw roff, appended before VERSION.
const OPERATOR_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success.
.TP
\fB78\fR
The config is invalid (EX_CONFIG). Each problem is one line on standard error:
\fIkey.path\fR: what is wrong; what to do. Secret values are never printed.
.TP
\fB1\fR
Any other failure.
.SH ENVIRONMENT
.TP
\fBCLAIRO_SYNC_CONFIG\fR
The config file, as \fB\-c\fR gives it; the default is /etc/clairo\-sync/clairo\-sync.toml.
.TP
\fBCLAIRO_SYNC_\fISECTION\fB__\fIKEY\fR
Overrides one config key, a double underscore between levels, e.g.
\fBCLAIRO_SYNC_CLAIRO__BASE_URL\fR or \fBCLAIRO_SYNC_SYNC__BRIEFS__SCHEDULE\fR.
.TP
\fBCLAIRO_API_KEY\fR
The Clairo API key, used when the config names no \fBclairo.api_key_file\fR.
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd for LoadCredential=. The API key is read from the credential
\fIclairo\-api\-key\fR, a connector secret from \fIconnector\fR\-\fIkey\fR
(e.g. \fIsales_hook\-secret\fR) or \fBcredentials_\fIconnector\fR\-\fIkey\fR (a file
of /etc/clairo\-sync/credentials), when the config sets neither the value nor its file.
Outside the service (no \fBCREDENTIALS_DIRECTORY\fR), \fBcheck\fR reads the files the
installed unit's LoadCredential= lines name, as systemd would.
.TP
\fBRUST_LOG\fR
A log filter such as \fBinfo,clairo_sync=debug\fR; it wins over \fBlog_level\fR.
.SH FILES
.TP
\fI/etc/clairo\-sync/clairo\-sync.toml\fR
The config: an annotated example with every key and its default.
.TP
\fI/etc/clairo\-sync/api\-key\fR
The API key, loaded by the systemd unit as the credential \fIclairo\-api\-key\fR.
.TP
\fI/etc/clairo\-sync/credentials/\fR
Connector secrets, one file each, named \fIconnector\fR\-\fIkey\fR (e.g.
\fIsales_hook\-secret\fR); the unit loads the whole directory. Root only.
.TP
\fI/var/lib/clairo\-sync/state.db\fR
The state database (SQLite): what has been seen, and the outbox of every event.
.TP
\fI/usr/share/clairo\-sync/clairo\-sync.rules.yml\fR
Prometheus alert rules for the metrics served on \fBhttp.listen\fR (/metrics).
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop polling, finish or release in\-flight deliveries, exit 0 within
\fBdelivery.shutdown_timeout\fR.
.TP
\fBSIGHUP\fR
Reload the config and re\-read every secret file (\fBsystemctl reload clairo\-sync\fR).
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.exec\fR(5),
/usr/share/doc/clairo\-sync/operations.md
"#;

/// Prints the completion script for `shell` (bash, zsh, fish, elvish, powershell).
pub fn completions(shell: clap_complete::Shell) -> CommandResult {
    let mut command = Cli::command();
    // Rendered first: clap_complete panics on a write error, and a closed pipe
    // (`completions bash | head`) is a quiet end, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, BIN, &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("writing the completion script to standard output")?;
    Ok(())
}

/// Prints clairo-sync(1) to standard output; with `dir`, writes it and one page per
/// subcommand (clairo-sync-run(1), …, which the top page refers to) into that folder.
pub fn manpage(dir: Option<&Path>) -> CommandResult {
    let mut command = Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name ("clairo-sync-run"), which names its page.
    command.build();
    let top = top_page(&command).context("rendering the man page")?;
    let Some(dir) = dir else {
        let mut out = io::stdout().lock();
        out.write_all(&top)
            .and_then(|()| out.flush())
            .context("writing the man page to standard output")?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{BIN}.1"));
    std::fs::write(&path, top).with_context(|| format!("writing {}", path.display()))?;
    write_subcommand_pages(&command, dir)?;
    Ok(())
}

/// The annotated example config, the one source of every key and its default.
const EXAMPLE_CONFIG: &str = include_str!("../../config/clairo-sync.toml");

/// clap_mangen's page with CONFIGURATION and [`OPERATOR_SECTIONS`] inserted before its
/// VERSION section.
fn top_page(command: &clap::Command) -> io::Result<Vec<u8>> {
    let mut rendered = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut rendered)?;
    let rendered = String::from_utf8(rendered).map_err(io::Error::other)?;
    let at = rendered
        .find("\n.SH VERSION")
        .map_or(rendered.len(), |at| at + 1);
    let (head, tail) = rendered.split_at(at);
    let configuration = configuration_section(EXAMPLE_CONFIG);
    Ok([head, &configuration, OPERATOR_SECTIONS, tail]
        .concat()
        .into_bytes())
}

/// CONFIGURATION: every section and key of the example config, with its default (or
/// example) value and its comment. Taken from the example itself, so the page lists what
/// the shipped file does. Keys commented out there are optional or off by default.
fn configuration_section(example: &str) -> String {
    let mut out = String::from(
        ".SH CONFIGURATION\n\
         The config file (TOML; default /etc/clairo\\-sync/clairo\\-sync.toml, installed as an annotated \
         example) has these sections and keys, each shown with its default or an example value; \
         one marked (commented out) is not set in the example: its default applies, or the feature is off. \
         Any key can be set from the environment as \\fBCLAIRO_SYNC_\\fISECTION\\fB__\\fIKEY\\fR. \
         A misspelt key is an error.\n",
    );
    let mut last_key = false;
    for raw in example.lines() {
        let commented = raw.trim_start().starts_with('#');
        let text = raw.trim_start().trim_start_matches('#').trim_start();
        let (setting, comment) = split_comment(text);
        if setting.starts_with('[') && setting.ends_with(']') {
            out.push_str(&format!(".SS \"{}\"\n", roff(setting)));
            if !comment.is_empty() {
                out.push_str(&format!("{}\n", roff(comment)));
            }
            last_key = false;
        } else if let Some((key, value)) = setting.split_once(" = ").filter(|(key, _)| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }) {
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR = {}{}\n",
                roff(key),
                roff(value.trim()),
                if commented { " (commented out)" } else { "" }
            ));
            if !comment.is_empty() {
                out.push_str(&format!("{}\n", roff(comment)));
            }
            last_key = true;
        } else if last_key && commented && setting.is_empty() && !comment.is_empty() {
            // `#      # more of the comment above`
            out.push_str(&format!("{}\n", roff(comment)));
        } else {
            last_key = false;
        }
    }
    out
}

/// `key = value  # comment` → (`key = value`, `comment`); a `#` inside quotes is kept.
fn split_comment(text: &str) -> (&str, &str) {
    let mut quoted = false;
    for (index, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => {
                let comment = text[index..].trim_start_matches('#').trim();
                return (text[..index].trim(), comment);
            }
            _ => {}
        }
    }
    (text.trim(), "")
}

/// Text safe in a roff line: backslashes and dashes escaped, no leading control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn write_subcommand_pages(command: &clap::Command, dir: &Path) -> CommandResult {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone());
        man.generate_to(dir).with_context(|| {
            format!(
                "writing the man page of `{}` into {}",
                sub.get_name(),
                dir.display()
            )
        })?;
        write_subcommand_pages(sub, dir)?;
    }
    Ok(())
}
