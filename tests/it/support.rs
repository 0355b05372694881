//! Shared helpers of the integration tests.

use std::path::{Path, PathBuf};

/// The clairo-sync binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_clairo-sync"))
}

/// An HTTP client for the tests' own requests (reqwest is built without a TLS provider of
/// its own; the daemon installs ring, and so does this).
pub fn http() -> reqwest::Client {
    clairo_connectors::install_crypto_provider();
    reqwest::Client::new()
}

/// `GET url` with [`http`].
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http().get(url).send().await
}

/// Serves /metrics, /healthz and /readyz on a free port instead of not at all (the test
/// configs say `[http] enabled = false`).
pub fn enable_http(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        "[http]\nenabled = false",
        "[http]\nlisten = \"127.0.0.1:0\"",
    );
    std::fs::write(config, text).unwrap();
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clairo_sandbox::{Sandbox, SandboxConfig};

/// The webhook secret of the tests' receivers.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How a receiver answers: a queue of scripted answers, then `default`.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

struct ReceiverState {
    received: Vec<Received>,
    script: VecDeque<(u16, Option<String>)>,
    default: u16,
    delay: Duration,
    /// Waited after the request is recorded, before the answer: the receiver has acted,
    /// its answer is late.
    late_answer: Duration,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            received: Vec::new(),
            script: VecDeque::new(),
            default: 200,
            delay: Duration::ZERO,
            late_answer: Duration::ZERO,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    /// Answers `status` (with `Retry-After: retry_after` when given) to the next `count` requests.
    pub fn script(&self, count: usize, status: u16, retry_after: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        for _ in 0..count {
            state
                .script
                .push_back((status, retry_after.map(str::to_owned)));
        }
    }

    pub fn answer(&self, status: u16) {
        self.state.lock().unwrap().default = status;
    }

    pub fn delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Records each request as it arrives (it has reached the receiver) and answers it
    /// `after` later: a sender that dies meanwhile never learns it was received.
    pub fn answer_late(&self, after: Duration) {
        self.state.lock().unwrap().late_answer = after;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    pub async fn wait_for_delivered(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let delivered = self.delivered();
            let distinct: std::collections::HashSet<_> =
                delivered.iter().map(|r| r.id.clone()).collect();
            if distinct.len() >= count || Instant::now() > deadline {
                return delivered;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = state.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (status, retry_after, late_answer) = {
        let mut state = state.lock().unwrap();
        let (status, retry_after) = state.script.pop_front().unwrap_or((state.default, None));
        state.received.push(Received {
            at: Instant::now(),
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
            answered: status,
        });
        (status, retry_after, state.late_answer)
    };
    if !late_answer.is_zero() {
        tokio::time::sleep(late_answer).await;
    }
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(retry_after) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_str(&retry_after).unwrap());
    }
    response
}

/// A sandbox with `seed_briefs` briefs and no seeded conversations unless asked.
pub async fn sandbox(seed_briefs: usize, seed_conversations: usize) -> Sandbox {
    clairo_sandbox::start(
        SandboxConfig {
            seed_briefs,
            seed_conversations,
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the sandbox starts")
}

/// A daemon config: briefs polled every `schedule`, webhook to `receiver`, a file archive,
/// both routed every brief and conversation.
pub fn daemon_config(dir: &Path, sandbox: &Sandbox, receiver: &Receiver, extra: &str) -> PathBuf {
    let rest = format!(
        "[[routes]]\nevents = [\"brief.created\", \"conversation.updated\"]\nto = [\"hook\", \"archive\"]\n{extra}"
    );
    config_without_routes(dir, sandbox, receiver, &rest)
}

/// The same config with no route: `rest` (routes, more connectors) follows the connectors
/// `hook` (a webhook to `receiver`) and `archive` (a JSONL file).
pub fn config_without_routes(
    dir: &Path,
    sandbox: &Sandbox,
    receiver: &Receiver,
    rest: &str,
) -> PathBuf {
    let text = format!(
        r#"
[clairo]
base_url = "{base}"
api_key = "clr_sandbox_key"
max_attempts = 3

[state]
path = "{state}"

[http]
enabled = false

[sync.briefs]
schedule = "*/2 * * * * *"

[connectors.hook]
type = "webhook"
url = "{url}"
secret = "{SECRET}"
timeout = "5s"

[connectors.archive]
type = "file"
path = "{archive}"

{rest}
"#,
        base = sandbox.base_url(),
        state = dir.join("state.db").display(),
        url = receiver.url,
        archive = dir.join("events.jsonl").display(),
    );
    write(dir, "clairo-sync.toml", &text)
}

/// The real daemon binary, killed on drop.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    pub fn start(config: &Path) -> Self {
        let child = Command::new(bin())
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("CLAIRO_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the daemon starts");
        Self { child }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args`, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(bin())
        .args(args)
        .env_remove("CLAIRO_API_KEY")
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Verifies a Standard Webhooks signature with this test's own HMAC code, independent of
/// the connector's.
pub fn signature_is_valid(received: &Received, secret: &str) -> bool {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(received.id.as_bytes());
    mac.update(b".");
    mac.update(received.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&received.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    received
        .signature
        .split(' ')
        .any(|candidate| candidate == expected)
}

/// A daemon whose stderr (its log) is kept for the test to read.
pub struct LoggedDaemon {
    pub daemon: Daemon,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggedDaemon {
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(bin());
        command.args(["run", "-c"]).arg(config);
        Self::spawn(command, envs)
    }

    /// Runs `command` (the daemon, possibly under a wrapper that execs it, such as
    /// `prlimit`) with the log kept.
    pub fn spawn(mut command: Command, envs: &[(&str, &str)]) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .env_remove("CLAIRO_API_KEY")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[daemon] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            daemon: Daemon { child },
            log,
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_for_line(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log().into_iter().find(|line| line.contains(needle)) {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address of /metrics, /healthz and /readyz, from the daemon's log.
    pub async fn http_address(&self) -> String {
        let line = self
            .wait_for_line("Serving /metrics", Duration::from_secs(20))
            .await
            .expect("the daemon logs its listen address");
        let start = line.find("http://").expect("an http:// address") + "http://".len();
        line[start..].split_whitespace().next().unwrap().to_owned()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.daemon.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A receiver that can go down and come back on the same port: while closed, connecting
/// is refused, as when the receiving service is stopped.
pub struct ClosableReceiver {
    pub receiver: Receiver,
    addr: SocketAddr,
    server: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    /// Bound but not listening while closed: keeps the port ours and refuses connections.
    held: Option<tokio::net::TcpSocket>,
}

impl ClosableReceiver {
    /// Starts open.
    pub async fn start() -> Self {
        let socket = reusable_socket("127.0.0.1:0".parse().unwrap());
        let addr = socket.local_addr().unwrap();
        let receiver = Receiver {
            url: format!("http://{addr}/hook"),
            state: Arc::new(Mutex::new(ReceiverState {
                received: Vec::new(),
                script: VecDeque::new(),
                default: 200,
                delay: Duration::ZERO,
                late_answer: Duration::ZERO,
            })),
        };
        let mut this = Self {
            receiver,
            addr,
            server: None,
            held: Some(socket),
        };
        this.open();
        this
    }

    /// Stops accepting, lets requests in progress finish, closes every connection, and
    /// then refuses new ones.
    pub async fn close(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        if self.held.is_none() {
            self.held = Some(reusable_socket(self.addr));
        }
    }

    /// Accepts connections again, on the same port, with the same record of requests.
    pub fn open(&mut self) {
        if self.server.is_some() {
            return;
        }
        let socket = self
            .held
            .take()
            .unwrap_or_else(|| reusable_socket(self.addr));
        let listener = socket.listen(1024).expect("listen on the receiver's port");
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(self.receiver.state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.server = Some((stop, server));
    }
}

/// A TCP socket bound to `addr` with SO_REUSEADDR (so the port can be bound again while
/// old connections linger in TIME_WAIT), not yet listening.
fn reusable_socket(addr: SocketAddr) -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind the receiver's port");
    socket
}

/// How long a drop-folder test waits for something the daemon does within seconds: generous,
/// a readiness bound on a loaded machine, not a speed claim.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `condition` holds, failing with `what` after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The names in `dir`, sorted (none when it cannot be read).
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `/readyz` of a daemon at `address`: its status and its JSON body.
pub async fn readyz(address: &str) -> (u16, serde_json::Value) {
    let response = get(format!("http://{address}/readyz"))
        .await
        .expect("/readyz answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("/readyz answers JSON"))
}

/// The value of one sample of the daemon's /metrics at `address`: the line that starts
/// with `series` (name and labels), e.g. `clairo_sync_items_skipped_total{source="briefs"}`.
pub async fn metric(address: &str, series: &str) -> Option<f64> {
    let text = get(format!("http://{address}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
