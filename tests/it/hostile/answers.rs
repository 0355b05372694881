//! Servers that answer badly: absurd rate-limit headers, huge bodies, histories that go back.
//!
//! Each broken server here is a loopback HTTP server the test starts and scripts, answering
//! `GET /api/v1/briefs`; the daemon is the real binary.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clairo_sync::clairo::{ClairoClient, ClientOptions, RateLimiter};
use clairo_sync::metrics::Metrics;

use crate::support::{LoggedDaemon, Receiver, daemon_config, run_cli, sandbox, write};

/// How the scripted server answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// An empty list, with these `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    Empty { remaining: u32, reset: &'static str },
    /// 429 with this `Retry-After`.
    TooMany { retry_after: &'static str },
    /// 1 GiB of a list that never ends, streamed (never held in memory), announced in
    /// `Content-Length` or sent chunked.
    Huge { announced: bool },
    /// Never answers.
    Hang,
}

/// A Clairo stand-in whose n-th `/briefs` answer (from 0) is `script(n)`.
struct Scripted {
    base_url: String,
    requests: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ScriptState {
    requests: Arc<AtomicUsize>,
    script: Arc<dyn Fn(usize) -> Answer + Send + Sync>,
}

impl Scripted {
    async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let state = ScriptState {
            requests: requests.clone(),
            script: Arc::new(script),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/api/v1/briefs", get(answer))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}/api/v1"),
            requests,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    async fn wait_for_requests(&self, count: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.requests() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.requests()
    }
}

const GIB: usize = 1 << 30;
const CHUNK: usize = 64 * 1024;

async fn answer(State(state): State<ScriptState>) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    match (state.script)(n) {
        Answer::Empty { remaining, reset } => {
            let mut response = axum::Json(serde_json::json!({"briefs": []})).into_response();
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from_static("1000"));
            headers.insert("x-ratelimit-remaining", remaining.into());
            headers.insert("x-ratelimit-reset", HeaderValue::from_static(reset));
            response
        }
        Answer::TooMany { retry_after } => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(serde_json::json!({"error": "Too many requests"})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
            response
        }
        Answer::Huge { announced } => {
            // The start of a list, then whitespace: valid JSON so far, and never finished.
            let mut first = br#"{"briefs":["#.to_vec();
            first.resize(CHUNK, b' ');
            let first = Bytes::from(first);
            let blank = Bytes::from(vec![b' '; CHUNK]);
            let chunks = futures_util::stream::iter(
                std::iter::once(first)
                    .chain(std::iter::repeat_n(blank, GIB / CHUNK - 1))
                    .map(Ok::<_, std::convert::Infallible>),
            );
            let mut response = Response::new(Body::from_stream(chunks));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if announced {
                headers.insert(header::CONTENT_LENGTH, GIB.into());
            }
            response
        }
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// A daemon config polling briefs every 2 s from `base_url`, with /readyz and /metrics on.
fn config(dir: &Path, base_url: &str, clairo_extra: &str) -> PathBuf {
    let text = format!(
        r#"
[clairo]
base_url = "{base_url}"
api_key = "clr_test_key"
max_attempts = 1
{clairo_extra}

[state]
path = "{state}"

[http]
listen = "127.0.0.1:0"

[sync.briefs]
schedule = "*/2 * * * * *"
"#,
        state = dir.join("state.db").display(),
    );
    write(dir, "clairo-sync.toml", &text)
}

fn lines_containing(daemon: &LoggedDaemon, needle: &str) -> usize {
    daemon
        .log()
        .iter()
        .filter(|line| line.contains(needle))
        .count()
}

/// The daemon's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("a VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("VmHWM in kB");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_reset_far_in_the_future_pauses_for_one_window_and_is_logged_once() {
    // The first answer says the budget is spent until the year 5138; every later one sends
    // the same absurd reset with plenty left, so a per-request warning would show.
    let server = Scripted::start(|n| Answer::Empty {
        remaining: if n == 0 { 0 } else { 999 },
        reset: "99999999999",
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = LoggedDaemon::start(&config(dir.path(), &server.base_url, ""), &[]);
    assert_eq!(
        server.wait_for_requests(1, Duration::from_secs(30)).await,
        1
    );
    // One window is a minute; the polls every 2 s resume after it. Generous bound.
    let seen = server.wait_for_requests(4, Duration::from_secs(150)).await;
    assert!(
        seen >= 4,
        "only {seen} requests reached the server: the absurd reset stopped the client"
    );
    let warnings = lines_containing(&daemon, "more than one rate window away");
    assert_eq!(
        warnings,
        1,
        "the absurd reset is logged once, not per answer:\n{}",
        daemon.log().join("\n")
    );
    let warning = daemon
        .log()
        .into_iter()
        .find(|line| line.contains("more than one rate window away"))
        .unwrap();
    assert!(warning.contains("X-RateLimit-Reset"), "{warning}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_retry_after_on_a_429_is_waited_for_one_window_at_most() {
    // Through the public client: one 429 asking for three years, then answers as usual.
    let server = Scripted::start(|n| {
        if n == 0 {
            Answer::TooMany {
                retry_after: "99999999",
            }
        } else {
            Answer::Empty {
                remaining: 999,
                reset: "30",
            }
        }
    })
    .await;
    let options = ClientOptions::new(
        server.base_url.parse().unwrap(),
        clairo_connectors::Secret::new("clr_test_key"),
    );
    let limiter = Arc::new(RateLimiter::new(options.max_requests_per_minute));
    let client = ClairoClient::new(options, limiter, Metrics::new()).unwrap();
    let listing = tokio::time::timeout(Duration::from_secs(150), client.briefs(None))
        .await
        .expect("the 429's wait is capped at one window, not three years")
        .expect("the retry after the wait succeeds");
    assert!(listing.items.is_empty());
    assert_eq!(server.requests(), 2);
}

/// Serves 1 GiB to `/briefs` and checks the poll fails with the size error while the
/// daemon's peak memory stays far below the body.
async fn a_huge_answer_fails_the_poll_in_bounded_memory(announced: bool) {
    let server = Scripted::start(move |_| Answer::Huge { announced }).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = LoggedDaemon::start(
        &config(dir.path(), &server.base_url, "timeout = \"120s\""),
        &[],
    );
    let failure = daemon
        .wait_for_line("Poll run failed", Duration::from_secs(90))
        .await
        .unwrap_or_else(|| panic!("no failed poll:\n{}", daemon.log().join("\n")));
    assert!(
        failure.contains("larger than clairo.max_response_size (64 MiB)"),
        "the failure says which limit and what to do: {failure}"
    );
    let peak = peak_rss(daemon.daemon.child.id());
    assert!(
        peak < 200 * 1024 * 1024,
        "the daemon's peak RSS reached {} MiB reading a 1 GiB answer",
        peak / 1024 / 1024
    );
    // The poll counts as failed in the metrics too.
    let address = daemon.http_address().await;
    let metrics = crate::support::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed_line = metrics
        .lines()
        .find(|line| {
            line.starts_with("clairo_sync_poll_runs_total{")
                && line.contains("source=\"briefs\"")
                && line.contains("outcome=\"failure\"")
        })
        .expect("a failure counter for briefs");
    assert!(!failed_line.ends_with(" 0"), "{failed_line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_gigabyte_chunked_briefs_answer_fails_the_poll_and_the_daemon_stays_small() {
    a_huge_answer_fails_the_poll_in_bounded_memory(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_briefs_answer_announcing_one_gigabyte_fails_the_poll_and_the_daemon_stays_small() {
    a_huge_answer_fails_the_poll_in_bounded_memory(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_has_not_completed_a_run_for_several_schedule_periods_is_not_ready() {
    // The first poll succeeds; every later one hangs, so no run completes again.
    let server = Scripted::start(|n| {
        if n == 0 {
            Answer::Empty {
                remaining: 999,
                reset: "30",
            }
        } else {
            Answer::Hang
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = LoggedDaemon::start(
        &config(dir.path(), &server.base_url, "timeout = \"10m\""),
        &[],
    );
    let address = daemon.http_address().await;
    daemon
        .wait_for_line("Poll run finished", Duration::from_secs(30))
        .await
        .expect("the first poll succeeds");
    // Three runs of the 2 s schedule and the 90 s margin, then a generous bound.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (status, body) = loop {
        let response = crate::support::get(format!("http://{address}/readyz"))
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status, 503, "a stuck source must not stay ready: {body}");
    assert!(
        body.contains("source briefs has not completed a run since"),
        "{body}"
    );
    // The gauge is brought up to date every few seconds.
    let stale = "clairo_sync_source_stale{source=\"briefs\"} 1";
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = crate::support::get(format!("http://{address}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.lines().any(|line| line == stale) || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        metrics.lines().any(|line| line == stale),
        "the stale gauge shows it:\n{metrics}"
    );
}

/// `events=N` of the last "Poll run finished." line of a `sync --once` run's log.
fn events_logged(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .rfind(|line| line.contains("Poll run finished"))
        .unwrap_or_else(|| panic!("no finished run in:\n{stderr}"));
    let start = line.find("events=").expect("an events field") + "events=".len();
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_whose_history_goes_back_then_forward_delivers_the_new_message() {
    let sandbox = sandbox(0, 0).await;
    let support = sandbox.agent_id("SUPPORT");
    let conversation = sandbox.add_conversation(&support, &[("user", "A"), ("assistant", "B")]);
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        "[sync.conversations]\nschedule = \"0 0 1 1 *\"\n",
    );
    let config = config.to_str().unwrap();
    let sync = || {
        let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config]);
        assert_eq!(code, 0, "{stderr}");
        stderr
    };
    assert_eq!(events_logged(&sync()), 1, "A,B is one event");
    sandbox.truncate_messages(&conversation, 1);
    assert_eq!(events_logged(&sync()), 0, "A alone is nothing new");
    sandbox.add_message(&conversation, "assistant", "C");
    let stderr = sync();
    let received = receiver.received();
    assert_eq!(
        received.len(),
        2,
        "A,C brings message C, which no receiver has seen"
    );
    assert_eq!(
        events_logged(&stderr),
        1,
        "the event counted is the one written"
    );
    let update = received[1].json();
    let new: Vec<&str> = update["data"]["newMessages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(new, ["C"]);
    let ids: HashSet<String> = received.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        assert!(id.starts_with("evt_") && !id.contains('.'), "{id}");
    }
    // The same state polled again is no new event.
    assert_eq!(events_logged(&sync()), 0);
    assert_eq!(receiver.received().len(), 2);
}
