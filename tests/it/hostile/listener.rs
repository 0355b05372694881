//! The metrics and health listener under a connection flood and slow clients: it keeps
//! answering, the daemon keeps delivering, and SIGTERM is not held up.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::support::{LoggedDaemon, Receiver, bin, daemon_config, enable_http, get, sandbox};

/// The daemon's own descriptor limit in the flood test: low enough that a few hundred
/// sockets reproduce the exhaustion the issue saw with 1,100 (the unit's `LimitNOFILE=`
/// is higher; the point is that no number of clients reaches it).
const DAEMON_NOFILE: u32 = 256;

/// More half-sent requests than the daemon has descriptors.
const FLOOD: usize = 400;

/// Opens a connection and sends the start of a request line, never finishing it.
async fn half_sent_request(address: &str) -> Option<TcpStream> {
    // A listener whose backlog is full drops the SYN and the kernel retries for minutes:
    // such a connection counts as not opened.
    tokio::time::timeout(Duration::from_secs(1), async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        stream.write_all(b"GET /healthz HTT").await.ok()?;
        Some(stream)
    })
    .await
    .ok()
    .flatten()
}

/// `/healthz` answering 200, tried until `within` has passed.
async fn healthz_answers(address: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    loop {
        let answered = client
            .get(format!("http://{address}/healthz"))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200);
        if answered {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_half_sent_requests_leaves_healthz_answering_and_webhooks_delivered() {
    clairo_connectors::install_crypto_provider();
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sandbox, &receiver, "");
    enable_http(&config);
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={DAEMON_NOFILE}"))
        .arg(bin())
        .args(["run", "-c"])
        .arg(&config);
    let daemon = LoggedDaemon::spawn(command, &[]);
    let address = daemon.http_address().await;
    assert!(healthz_answers(&address, Duration::from_secs(10)).await);

    // The flood stays connected for the whole test: whatever the daemon does with these
    // connections, the clients never finish their requests.
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.extend(half_sent_request(&address).await);
    }
    assert!(
        flood.len() > DAEMON_NOFILE as usize,
        "only {} connections opened",
        flood.len()
    );

    assert!(
        healthz_answers(&address, Duration::from_secs(15)).await,
        "/healthz stopped answering under a flood of {FLOOD} half-sent requests"
    );
    sandbox.add_briefs(1);
    let delivered = receiver
        .wait_for_delivered(1, Duration::from_secs(20))
        .await;
    assert_eq!(
        delivered.len(),
        1,
        "a webhook delivery during the flood failed; log:\n{}",
        daemon.log().join("\n")
    );
    assert!(
        !daemon
            .log()
            .iter()
            .any(|line| line.contains("Too many open files")),
        "the daemon ran out of descriptors:\n{}",
        daemon.log().join("\n")
    );
    drop(flood);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_half_sent_request_open_exits_within_the_shutdown_timeout() {
    clairo_connectors::install_crypto_provider();
    let sandbox = sandbox(0, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let shutdown_timeout = Duration::from_secs(4);
    let config = daemon_config(
        dir.path(),
        &sandbox,
        &receiver,
        &format!(
            "[delivery]\nshutdown_timeout = \"{}s\"\n",
            shutdown_timeout.as_secs()
        ),
    );
    enable_http(&config);
    let mut daemon = LoggedDaemon::start(&config, &[]);
    let address = daemon.http_address().await;
    assert!(healthz_answers(&address, Duration::from_secs(10)).await);
    let _slow = half_sent_request(&address).await.expect("connected");
    // Make sure the daemon has taken the connection before it is told to stop.
    assert_eq!(
        get(format!("http://{address}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    // A bound on the wait, not a speed claim: the shutdown timeout plus room for the
    // process to start its exit.
    let code = daemon
        .daemon
        .terminate(shutdown_timeout + Duration::from_secs(3));
    assert_eq!(
        code,
        Some(0),
        "the daemon did not exit 0 within the shutdown timeout ({shutdown_timeout:?}) while a client held a half-sent request"
    );
}
