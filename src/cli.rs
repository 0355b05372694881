//! The command line (README "Commands").

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "clairo-sync",
    version,
    about = "Keeps a business's tools in step with its Clairo account",
    long_about = "Polls Clairo for Discovery briefs and conversations, uploads meeting recordings from drop folders, \
                  and delivers every event to webhooks, email, CRMs and files — without losing any."
)]
pub struct Cli {
    /// The config file [default: /etc/clairo-sync/clairo-sync.toml]
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        env = "CLAIRO_SYNC_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll on schedule, watch drop folders, deliver events
    Run,
    /// Validate the config; exits 78 with one line per problem
    Check(CheckArgs),
    /// Poll every source once, send every due delivery, then exit
    Sync(SyncArgs),
    /// Last runs, queue depth per connector, dead deliveries
    Status(JsonArg),
    /// Inspect and replay deliveries
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Upload one recording now and print its summary
    Upload(UploadArgs),
    /// Serve a local stand-in for the Clairo API, for trying a setup without an account
    Sandbox(SandboxArgs),
    /// The whole flow in one command: sandbox, temporary state and drop folder, file connector
    Demo(DemoArgs),
    /// List the account's agents
    Agents(JsonArg),
    /// List or show conversations
    #[command(subcommand)]
    Conversations(ConversationsCommand),
    /// List or show Discovery briefs
    #[command(subcommand)]
    Briefs(BriefsCommand),
    /// Send a message to a Support agent
    Chat(MessageArgs),
    /// Send an answer to a Discovery agent
    Discover(MessageArgs),
    /// Print a shell completion script (for packagers)
    #[command(hide = true)]
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print the man page, clairo-sync(1), in roff (for packagers)
    #[command(hide = true)]
    Manpage {
        /// Write clairo-sync.1 and one page per subcommand into this folder instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also call /agents and probe each connector
    #[arg(long)]
    pub online: bool,
    /// With --online: send a signed test event to every connector
    #[arg(long, requires = "online")]
    pub send_test: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Run once and exit (the only mode: `run` is the daemon)
    #[arg(long, required = true)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, most recent activity first (a re-queued one goes to the top)
    List {
        /// Only dead deliveries
        #[arg(long)]
        dead: bool,
        /// Only this connector's
        #[arg(long)]
        connector: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Re-queue deliveries (attempts reset, event id kept)
    Retry {
        /// Delivery ids, as `deliveries list` shows them
        #[arg(required_unless_present = "all_dead")]
        ids: Vec<i64>,
        /// Every dead delivery
        #[arg(long, conflicts_with = "ids")]
        all_dead: bool,
    },
    /// Queue stored events again for one connector, with their original ids (a backfill)
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The connector to send them to, as named in the config
    #[arg(long)]
    pub connector: String,
    /// Only events from this time on: RFC 3339 (2026-03-01T00:00:00Z) or an age (7d, 12h)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Only events before this time: RFC 3339 or an age
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Only events of this type (brief.created, conversation.updated, meeting.processed); repeatable
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Every stored event, not only those the current routes send to the connector
    #[arg(long)]
    pub all: bool,
    /// Say what would be queued; change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The recording (webm, mp3 or wav)
    pub file: PathBuf,
    /// The agent to upload to
    #[arg(long)]
    pub agent: String,
    /// The meeting's title [default: from the file name]
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Requests per window per API key
    #[arg(long, default_value_t = 1000)]
    pub rate_limit: u32,
    /// The rate-limit window
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub window: std::time::Duration,
    /// Briefs to seed
    #[arg(long, default_value_t = 3)]
    pub seed_briefs: usize,
    /// Support conversations to seed
    #[arg(long, default_value_t = 3)]
    pub seed_conversations: usize,
    /// Fraction of requests answered 500
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Latency added to every response, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Malformed items appended to every list
    #[arg(long, default_value_t = 0)]
    pub malformed_items: usize,
    /// An extra accepted API key (besides clr_sandbox_key)
    #[arg(long)]
    pub api_key: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long to run before exiting (default: until Ctrl-C)
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum ConversationsCommand {
    /// List conversations, most recent first
    List {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Show one conversation with its messages
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BriefsCommand {
    /// List briefs
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Show one brief with its answers
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct MessageArgs {
    /// The agent's id
    #[arg(long)]
    pub agent: String,
    /// Continue this conversation
    #[arg(long)]
    pub conversation: Option<String>,
    /// The message
    pub message: String,
    #[arg(long)]
    pub json: bool,
}
