//! The Clairo client against the sandbox over real HTTP: pacing under a shared limit,
//! waiting out a 429, retries, typed auth errors, tolerant lists, streamed uploads.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clairo_connectors::Secret;
use clairo_sandbox::{Faults, Sandbox, SandboxConfig};
use clairo_sync::clairo::{ClairoClient, ClairoError, ClientOptions, MeetingUpload, RateLimiter};
use clairo_sync::metrics::{ApiRequestLabels, Metrics};
use sha2::{Digest, Sha256};

const KEY: &str = "clr_sandbox_key";

async fn sandbox(config: SandboxConfig) -> Sandbox {
    clairo_sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("start the sandbox")
}

/// Options for tests: a budget far above the sandbox's, and backoff in milliseconds.
fn options(sandbox: &Sandbox, key: &str) -> ClientOptions {
    ClientOptions {
        max_requests_per_minute: 60_000,
        max_attempts: 4,
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(50),
        timeout: Duration::from_secs(30),
        ..ClientOptions::new(sandbox.base_url().parse().unwrap(), Secret::new(key))
    }
}

fn client_with(options: ClientOptions, metrics: Metrics) -> ClairoClient {
    let limiter = Arc::new(RateLimiter::new(options.max_requests_per_minute));
    ClairoClient::new(options, limiter, metrics).expect("client")
}

fn client(sandbox: &Sandbox, key: &str) -> ClairoClient {
    client_with(options(sandbox, key), Metrics::new())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_windows_of_requests_from_concurrent_tasks_get_no_429_after_the_first_window() {
    let window = Duration::from_secs(2);
    let sandbox = sandbox(SandboxConfig {
        rate_limit: 10,
        window,
        ..SandboxConfig::default()
    })
    .await;
    let client = client(&sandbox, KEY);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..6 {
                client.agents().await.expect("every request succeeds");
                ok += 1;
            }
            ok
        }));
    }
    let mut succeeded = 0;
    for task in tasks {
        succeeded += task.await.unwrap();
    }
    let elapsed = started.elapsed();

    assert_eq!(succeeded, 30);
    let stats = sandbox.stats();
    let first = stats.log.first().expect("requests were logged").unix_ms;
    let late_429s: Vec<_> = stats
        .log
        .iter()
        .filter(|record| {
            record.status == 429 && record.unix_ms >= first + window.as_millis() as u64
        })
        .collect();
    assert!(
        late_429s.is_empty(),
        "429s after the first window: {late_429s:?}"
    );
    // Thirty requests at ten per window need at least two waits for a reset.
    assert!(
        elapsed >= Duration::from_millis(3500),
        "took only {elapsed:?}"
    );
    assert_eq!(stats.by_status.get(&200), Some(&30));
}

/// Spends the key's whole window with plain requests; returns the last answer's Reset.
async fn burn_budget(sandbox: &Sandbox) -> u64 {
    let http = crate::support::http();
    for _ in 0..1000 {
        let response = http
            .get(format!("{}/agents", sandbox.base_url()))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            let reset = response.headers()["x-ratelimit-reset"].to_str().unwrap();
            return reset.parse().unwrap();
        }
    }
    panic!("the sandbox never answered 429");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_makes_the_client_wait_until_the_reset_and_then_succeed() {
    let sandbox = sandbox(SandboxConfig {
        rate_limit: 5,
        window: Duration::from_secs(3),
        ..SandboxConfig::default()
    })
    .await;
    let reset = burn_budget(&sandbox).await;
    let metrics = Metrics::new();
    let client = client_with(options(&sandbox, KEY), metrics.clone());

    let started = Instant::now();
    let listing = client.agents().await.expect("succeeds after the reset");
    let waited = started.elapsed();

    assert!(!listing.items.is_empty());
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert_eq!(
        metrics.api_throttled.get(),
        1,
        "one 429, then a wait long enough"
    );
    let stats = sandbox.stats();
    let success = stats
        .log
        .iter()
        .rfind(|record| record.status == 200)
        .unwrap();
    // The retry went when the server said the window resets, not after some fixed sleep.
    assert!(success.unix_ms >= reset * 1000, "retried before the reset");
    assert!(
        success.unix_ms < reset * 1000 + 5000,
        "retried {} ms after the reset",
        success.unix_ms - reset * 1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out_for_that_long() {
    let sandbox = sandbox(SandboxConfig {
        rate_limit: 3,
        window: Duration::from_secs(2),
        faults: Faults {
            retry_after: true,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    burn_budget(&sandbox).await;
    let burned_at = unix_ms();
    let client = client(&sandbox, KEY);

    client
        .briefs(None)
        .await
        .expect("succeeds after Retry-After");

    let stats = sandbox.stats();
    assert_eq!(
        stats.by_endpoint.get("GET /briefs"),
        Some(&2),
        "one 429, one success"
    );
    let success = stats
        .log
        .iter()
        .rfind(|record| record.status == 200)
        .unwrap();
    assert!(
        success.unix_ms >= burned_at + 900,
        "did not wait for Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_errors_are_retried_and_the_third_attempt_succeeds() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    sandbox.fail_next(2, 500);
    let client = client(&sandbox, KEY);

    let listing = client
        .briefs(Some(10))
        .await
        .expect("succeeds on the third attempt");

    assert_eq!(listing.items.len(), 3);
    let stats = sandbox.stats();
    assert_eq!(stats.by_endpoint.get("GET /briefs"), Some(&3));
    assert_eq!(stats.by_status.get(&500), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_failing_gets_exactly_max_attempts_then_a_typed_error() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    sandbox.fail_next(100, 500);
    let client = client(&sandbox, KEY); // max_attempts: 4

    let error = client.agents().await.unwrap_err();

    assert!(
        matches!(error, ClairoError::Server { status: 500, .. }),
        "{error:?}"
    );
    assert_eq!(sandbox.stats().requests, 4);
    // A server error is a passing problem: not an auth failure that pauses polling.
    assert!(!error.is_auth_failure());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_reported_in_plain_words_after_one_request() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let key = "clr_not_a_real_key_4711";
    let client = client(&sandbox, key);

    let error = client.agents().await.unwrap_err();

    assert!(matches!(error, ClairoError::InvalidKey), "{error:?}");
    assert!(error.is_auth_failure());
    let message = error.to_string();
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("CLAIRO_API_KEY"), "{message}");
    assert!(
        !message.contains(key),
        "the message shows the key: {message}"
    );
    assert!(!format!("{error:?}").contains(key));
    assert_eq!(
        sandbox.stats().requests,
        1,
        "an auth failure is never retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_the_max_plan_is_told_to_upgrade_after_one_request() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let key = "clr_sandbox_noplan";
    let client = client(&sandbox, key);

    let error = client.conversations(None, Some(5)).await.unwrap_err();

    assert!(matches!(error, ClairoError::PlanRequired), "{error:?}");
    assert!(error.is_auth_failure());
    let message = error.to_string();
    assert!(message.contains("Max plan"), "{message}");
    assert!(message.contains("settings/billing"), "{message}");
    assert!(
        !message.contains(key),
        "the message shows the key: {message}"
    );
    assert_eq!(
        sandbox.stats().requests,
        1,
        "an auth failure is never retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_id_is_not_found_and_not_retried() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let client = client(&sandbox, KEY);

    let error = client.brief("cm3doesnotexist").await.unwrap_err();

    assert!(matches!(error, ClairoError::NotFound { .. }), "{error:?}");
    assert!(error.to_string().contains("GET /briefs/{id}"), "{error}");
    assert!(!error.to_string().contains("cm3doesnotexist"));
    assert_eq!(
        sandbox.stats().by_endpoint.get("GET /briefs/{id}"),
        Some(&1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_list_item_is_skipped_and_the_others_parse() {
    let sandbox = sandbox(SandboxConfig {
        seed_briefs: 4,
        faults: Faults {
            malformed_items: 1,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let client = client(&sandbox, KEY);

    let briefs = client.briefs(None).await.expect("the list still parses");
    assert_eq!(briefs.returned, 5);
    assert_eq!(briefs.items.len(), 4);
    assert_eq!(briefs.skipped.len(), 1, "{:?}", briefs.skipped);
    for brief in &briefs.items {
        let raw: serde_json::Value = serde_json::from_str(brief.raw.get()).unwrap();
        assert_eq!(raw["id"], brief.id.as_str(), "each item keeps its raw JSON");
    }

    let agents = client.agents().await.expect("the list still parses");
    assert_eq!(agents.skipped.len(), 1);
    assert!(!agents.items.is_empty());
    let conversations = client.conversations(None, None).await.expect("parses");
    assert_eq!(conversations.skipped.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_endpoint_parses_the_sandbox_answers() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let client = client(&sandbox, KEY);

    let support = sandbox.agent_id("SUPPORT");
    let reply = client
        .chat(&support, "What are your hours?", None)
        .await
        .unwrap();
    let conversation_id = reply.conversation_id.clone().expect("a conversation id");
    assert!(reply.reply.is_some());
    let conversation = client.conversation(&conversation_id).await.unwrap();
    assert!(conversation.messages.len() >= 2, "{conversation:?}");
    let listed = client
        .conversations(Some(&support), Some(50))
        .await
        .unwrap();
    assert!(listed.items.iter().any(|item| item.id == conversation_id));

    let discovery = sandbox.agent_id("DISCOVERY");
    let question = client
        .discover(&discovery, "We have 50 employees", None)
        .await
        .unwrap();
    assert!(question.conversation_id.is_some());

    let briefs = client.briefs(None).await.unwrap();
    let brief = client.brief(&briefs.items[0].id).await.unwrap();
    assert_eq!(brief.id, briefs.items[0].id);

    let stats = sandbox.stats();
    assert_eq!(stats.by_status.len(), 1, "only 200s: {:?}", stats.by_status);
}

/// Peak resident memory of this process, from /proc/self/status (VmHWM, in KiB).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A valid WAV header followed by `size - 44` zero bytes, written in chunks.
fn write_wav(path: &std::path::Path, size: u64) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let data = u32::try_from(size - 44).unwrap();
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(data + 36).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes()); // PCM
    header.extend_from_slice(&2u16.to_le_bytes()); // stereo
    header.extend_from_slice(&44_100u32.to_le_bytes());
    header.extend_from_slice(&176_400u32.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data.to_le_bytes());
    let mut hasher = Sha256::new();
    file.write_all(&header).unwrap();
    hasher.update(&header);
    let chunk = vec![0u8; 64 * 1024];
    let mut left = size - 44;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).unwrap();
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    file.flush().unwrap();
    format!("{:x}", hasher.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_recording_is_streamed_from_disk_and_arrives_intact() {
    const SIZE: u64 = 20 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all-hands.wav");
    let sha256 = write_wav(&path, SIZE);
    let sandbox = sandbox(SandboxConfig::default()).await;
    let client = client(&sandbox, KEY);
    // Warm up the connection, the runtime and the sandbox before measuring.
    client.agents().await.unwrap();
    let before = peak_rss_bytes();

    let upload = MeetingUpload::from_path(
        &path,
        "all-hands.wav".to_owned(),
        sandbox.agent_id("MEETING"),
        "All hands".to_owned(),
    )
    .unwrap();
    let meeting = client
        .upload_meeting(&upload)
        .await
        .expect("the upload is accepted");

    let growth = peak_rss_bytes().saturating_sub(before);
    assert_eq!(meeting.title.as_deref(), Some("All hands"));
    assert!(
        meeting.duration_sec.is_some_and(|seconds| seconds > 100.0),
        "{meeting:?}"
    );
    let uploads = sandbox.stats().uploads;
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].size, SIZE);
    assert_eq!(
        uploads[0].sha256, sha256,
        "the sandbox received other bytes"
    );
    assert!(
        growth < 12 * 1024 * 1024,
        "peak memory grew by {} MiB for a {} MiB file: not streamed",
        growth / (1024 * 1024),
        SIZE / (1024 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_recording_is_a_file_error_and_nothing_is_sent() {
    let sandbox = sandbox(SandboxConfig::default()).await;

    // The file is opened before anything is sent.
    let error = MeetingUpload::from_path(
        std::path::Path::new("/nonexistent/standup.webm"),
        "standup.webm".to_owned(),
        sandbox.agent_id("MEETING"),
        "Standup".to_owned(),
    )
    .unwrap_err();

    assert!(matches!(error, ClairoError::File(_)), "{error:?}");
    assert_eq!(sandbox.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_counted_under_its_route_template_with_the_remaining_budget() {
    let sandbox = sandbox(SandboxConfig {
        rate_limit: 50,
        ..SandboxConfig::default()
    })
    .await;
    let metrics = Metrics::new();
    let client = client_with(options(&sandbox, KEY), metrics.clone());
    let briefs = client.briefs(None).await.unwrap();
    client.brief(&briefs.items[0].id).await.unwrap();

    let text = metrics.encode_openmetrics();
    assert!(
        text.contains(
            r#"clairo_sync_api_requests_total{endpoint="GET /briefs/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains(&briefs.items[0].id),
        "an id leaked into a label: {text}"
    );
    assert_eq!(metrics.api_rate_limit_remaining.get(), 48);
}

fn requests_counted(metrics: &Metrics, endpoint: &str, status: &str) -> u64 {
    metrics
        .api_requests
        .get_or_create(&ApiRequestLabels {
            endpoint: endpoint.to_owned(),
            status: status.to_owned(),
        })
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_then_reported_as_a_transport_error() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let metrics = Metrics::new();
    let mut options = options(&sandbox, KEY);
    options.base_url = format!("http://127.0.0.1:{closed_port}/api/v1")
        .parse()
        .unwrap();
    let client = client_with(options, metrics.clone());

    let error = client.agents().await.unwrap_err();

    assert!(matches!(error, ClairoError::Transport(_)), "{error:?}");
    assert!(error.to_string().contains("clairo.base_url"), "{error}");
    assert_eq!(requests_counted(&metrics, "GET /agents", "error"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_timed_out_is_retried_but_a_chat_message_is_not_sent_twice() {
    let sandbox = sandbox(SandboxConfig::default()).await;
    let support = sandbox.agent_id("SUPPORT");
    sandbox.set_faults(Faults {
        latency_ms: 3000,
        ..Faults::default()
    });
    let metrics = Metrics::new();
    let mut options = options(&sandbox, KEY);
    options.timeout = Duration::from_millis(300);
    let client = client_with(options, metrics.clone());

    let error = client.agents().await.unwrap_err();
    assert!(matches!(error, ClairoError::Transport(_)), "{error:?}");
    assert_eq!(requests_counted(&metrics, "GET /agents", "error"), 4);

    let error = client.chat(&support, "Hello?", None).await.unwrap_err();
    assert!(matches!(error, ClairoError::Transport(_)), "{error:?}");
    assert!(error.to_string().contains("not sent again"), "{error}");
    assert_eq!(requests_counted(&metrics, "POST /chat", "error"), 1);
}
