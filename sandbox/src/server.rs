//! The running sandbox: shared state, the router, and the [`Sandbox`] handle tests and the
//! CLI hold.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::config::{Faults, SandboxConfig};
use crate::gate::{Gate, gate};
use crate::reply::ApiError;
use crate::stats::{Recorder, Stats};
use crate::store::{AgentInfo, BriefSpec, Store};
use crate::{admin, api, meetings};

/// Everything the handlers share. Three locks, each held briefly and never across an
/// `.await`: data, admission control, and counters, so recording a request's stats never
/// waits on a list being rendered.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) gate: Mutex<Gate>,
    pub(crate) stats: Mutex<Recorder>,
}

pub(crate) type App = Arc<Shared>;

impl Shared {
    pub(crate) fn faults(&self) -> Faults {
        lock(&self.gate).faults().clone()
    }

    pub(crate) fn malformed_items(&self) -> usize {
        lock(&self.gate).faults().malformed_items
    }
}

/// Locks, shrugging off poisoning: a panicking test helper must not turn every later
/// request into a second panic; the data is still consistent enough to answer.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn router(app: App) -> Router {
    let api = Router::new()
        .route("/agents", get(api::agents))
        .route("/chat", post(api::chat))
        .route("/discover", post(api::discover))
        .route("/conversations", get(api::conversations))
        .route("/conversations/{id}", get(api::conversation))
        .route("/briefs", get(api::briefs))
        .route("/briefs/{id}", get(api::brief))
        .route(
            "/meetings",
            post(meetings::upload).layer(DefaultBodyLimit::max(meetings::MAX_REQUEST_BYTES)),
        )
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        // On the API router only: the admin routes bypass auth, limits and stats.
        .layer(middleware::from_fn_with_state(app.clone(), gate));
    Router::new()
        .nest("/api/v1", api)
        .nest("/_sandbox", admin::router())
        .fallback(api::not_found)
        .with_state(app)
}

/// Binds `listen` (port 0 picks a free one) and serves until [`Sandbox::stop`].
pub async fn start(config: SandboxConfig, listen: SocketAddr) -> std::io::Result<Sandbox> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Arc::new(Shared {
        store: Mutex::new(Store::new(
            config.seed,
            config.seed_conversations,
            config.seed_briefs,
            config.conversation_list_fields,
            now_ms(),
        )),
        gate: Mutex::new(Gate::new(&config)),
        stats: Mutex::new(Recorder::default()),
    });
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    // Small request/response pairs: don't let Nagle hold them back in benchmarks.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let service = router(app.clone());
    tokio::spawn(async move {
        let shutdown = async move {
            // Only `stop()` ends the server; a dropped handle doesn't (the sender lives in
            // every clone, so an error here means all were dropped: keep serving).
            if stop_rx.wait_for(|stopped| *stopped).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        if let Err(error) = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "Sandbox server stopped with an error.");
        }
        done_tx.send_replace(true);
    });
    Ok(Sandbox {
        app,
        addr,
        stop: Arc::new(stop_tx),
        done: done_rx,
    })
}

/// A running sandbox. Clones share it.
#[derive(Clone)]
pub struct Sandbox {
    app: App,
    addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Test helpers take ids the test got from the sandbox; a wrong one is a bug in the test,
/// best reported loudly where it happened.
fn expect<T>(result: Result<T, ApiError>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: {}", error.message))
}

impl Sandbox {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/v1`; a wildcard listen address is reached via loopback.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}/api/v1")
    }

    /// Resolves once the server has stopped (after [`Sandbox::stop`]).
    pub async fn serve_forever(&self) {
        let mut done = self.done.clone();
        // An error means the server task is gone, which is "stopped" too.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Graceful shutdown: stops accepting, lets in-flight requests finish.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn agents(&self) -> Vec<AgentInfo> {
        lock(&self.app.store).agent_infos()
    }

    /// The first active agent of `kind` ("SUPPORT", "DISCOVERY" or "MEETING").
    ///
    /// # Panics
    /// If there is none (the seeded agents include one of each).
    pub fn agent_id(&self, kind: &str) -> String {
        lock(&self.app.store)
            .active_agent_id(kind)
            .unwrap_or_else(|| panic!("the sandbox has no active {kind} agent"))
            .to_owned()
    }

    /// Creates a brief and the closed Discovery conversation behind it; returns its id.
    pub fn add_brief(&self, spec: BriefSpec) -> String {
        lock(&self.app.store).add_brief(spec, now_ms())
    }

    /// `count` briefs with invented, distinct contacts (each has a unique email).
    pub fn add_briefs(&self, count: usize) -> Vec<String> {
        lock(&self.app.store).add_generated_briefs(count, now_ms())
    }

    /// An ACTIVE conversation with `messages` as (role, content); returns its id.
    ///
    /// # Panics
    /// If `agent_id` names no agent.
    pub fn add_conversation(&self, agent_id: &str, messages: &[(&str, &str)]) -> String {
        expect(
            lock(&self.app.store).add_conversation(agent_id, messages, now_ms()),
            "add_conversation",
        )
    }

    /// Appends a message; `updatedAt` moves forward and `messageCount` grows.
    ///
    /// # Panics
    /// If `conversation_id` names no conversation.
    pub fn add_message(&self, conversation_id: &str, role: &str, content: &str) {
        expect(
            lock(&self.app.store).add_message(conversation_id, role, content, now_ms()),
            "add_message",
        );
    }

    /// Keeps only the first `keep` messages (history that goes back); counts as an update.
    ///
    /// # Panics
    /// If `conversation_id` names no conversation, or `keep` would cut a scripted one's brief.
    pub fn truncate_messages(&self, conversation_id: &str, keep: usize) {
        expect(
            lock(&self.app.store).truncate_messages(conversation_id, keep, now_ms()),
            "truncate_messages",
        );
    }

    /// Sets the status ("ACTIVE", "CLOSED", or anything a test wants to see handled);
    /// counts as an update.
    ///
    /// # Panics
    /// If `conversation_id` names no conversation.
    pub fn set_conversation_status(&self, conversation_id: &str, status: &str) {
        expect(
            lock(&self.app.store).set_status(conversation_id, status, now_ms()),
            "set_conversation_status",
        );
    }

    pub fn set_faults(&self, faults: Faults) {
        lock(&self.app.gate).set_faults(faults);
    }

    /// The next `count` authenticated, admitted API requests answer `status` with an
    /// `{"error"}` body. Replaces any earlier `fail_next`.
    ///
    /// # Panics
    /// If `status` is not an HTTP status code (100–999).
    pub fn fail_next(&self, count: usize, status: u16) {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("fail_next: {status} is not an HTTP status code"));
        lock(&self.app.gate).fail_next(count, status);
    }

    /// Accepts `key` as a Max-plan key (upgrading it, if it was a no-plan key).
    pub fn add_api_key(&self, key: &str) {
        lock(&self.app.gate).add_api_key(key);
    }

    /// Requests with `key` now get 401 "Invalid API key" (or 403 if it is a no-plan key).
    pub fn remove_api_key(&self, key: &str) {
        lock(&self.app.gate).remove_api_key(key);
    }

    /// Applies at once: every key starts a fresh window of the new length.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        lock(&self.app.gate).set_rate_limit(limit, window);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.app.stats).snapshot(true)
    }

    pub fn reset_stats(&self) {
        lock(&self.app.stats).reset();
    }
}
