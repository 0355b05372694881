//! Webhook bodies and secret rotation through the real binary: a `body_template` shapes
//! what the receiver gets, every request carries one signature per secret, and the
//! Standard Webhooks reference verifier (Python, from PyPI) accepts it with either secret.
//! Over HTTPS, a receiver is trusted through the system's CA roots (certificates made with
//! `openssl`, the receiver Python's `http.server` behind `ssl`).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Received, Receiver, SECRET, run_cli, sandbox, write};

/// The secret rotated in beside [`SECRET`].
const NEW_SECRET: &str = "whsec_cm90YXRlZC1pbi1zZWNyZXQta2V5LTI0";
/// A secret the daemon does not have.
const OTHER_SECRET: &str = "whsec_YW4tdW5yZWxhdGVkLXNlY3JldC1oZXJl";

fn config(dir: &Path, base_url: &str, hook: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[clairo]
base_url = "{base_url}"
api_key = "clr_sandbox_key"

[state]
path = "{state}"

[http]
enabled = false

[sync.briefs]
schedule = "*/2 * * * * *"

[connectors.hook]
type = "webhook"
{hook}

[[routes]]
events = ["brief.created"]
to = ["hook"]
"#,
        state = dir.join("state.db").display(),
    );
    write(dir, "clairo-sync.toml", &text)
}

/// Whether the reference verifier accepts `request` with `secret`.
fn reference_verifies(request: &Received, secret: &str) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_webhook.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(secret)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test-prereqs.sh installs standardwebhooks)");
    let input = serde_json::json!({
        "headers": {
            "webhook-id": request.id,
            "webhook-timestamp": request.timestamp,
            "webhook-signature": request.signature,
        },
        "body": String::from_utf8(request.body.to_vec()).unwrap(),
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the reference verifier is not installed: run scripts/test-prereqs.sh ({stderr})"
    );
    output.status.success()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_templated_body_signed_with_two_secrets_verifies_with_each_in_the_reference_verifier() {
    let sandbox = sandbox(1, 0).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = write(
        dir.path(),
        "webhook-secret",
        &format!("{SECRET}\n{NEW_SECRET}\n"),
    );
    let config = config(
        dir.path(),
        &sandbox.base_url(),
        &format!(
            r#"url = "{url}"
secret_file = "{secrets}"
body_template = '{{"lead": {{{{ data.id }}}}, "email": {{{{ contact_email }}}}, "text": {{{{ data.summary }}}}, "kind": {{{{ type }}}}}}'
"#,
            url = receiver.url,
            secrets = secrets.display(),
        ),
    );

    let (code, _, stderr) = run_cli(&["sync", "--once", "-c", config.to_str().unwrap()]);

    assert_eq!(code, 0, "{stderr}");
    let received = receiver.delivered();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    let body = request.json();
    assert_eq!(body["kind"], "brief.created");
    assert!(
        body["lead"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    assert!(
        body["email"]
            .as_str()
            .is_some_and(|email| email.contains('@')),
        "{body}"
    );
    assert!(
        body.get("data").is_none(),
        "the envelope was sent instead: {body}"
    );
    assert_eq!(
        request.signature.split(' ').count(),
        2,
        "{}",
        request.signature
    );
    assert!(
        request
            .signature
            .split(' ')
            .all(|part| part.starts_with("v1,"))
    );
    assert!(reference_verifies(request, SECRET), "the old secret");
    assert!(reference_verifies(request, NEW_SECRET), "the new secret");
    assert!(
        !reference_verifies(request, OTHER_SECRET),
        "a secret it does not have"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_template_that_does_not_make_json_is_refused_by_check() {
    let sandbox = sandbox(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sandbox.base_url(),
        &format!(
            r#"url = "http://127.0.0.1:9/hook"
secret = "{SECRET}"
# Quotes around a value that is already written as JSON: "text": ""…"".
body_template = '{{"text": "{{{{ data.summary }}}}"}}'
"#
        ),
    );

    let (code, _, stderr) = run_cli(&["check", "-c", config.to_str().unwrap()]);

    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr
            .contains("connectors.hook.body_template: `body_template` did not produce valid JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("on a sample brief.created event"),
        "{stderr}"
    );
    assert!(
        stderr.contains("{{ data.summary | slack_text }}"),
        "{stderr}"
    );
}

/// A certificate authority made with `openssl` for one test: `NAME.pem` and `NAME.key`.
fn make_ca(dir: &Path, name: &str) -> std::path::PathBuf {
    let pem = dir.join(format!("{name}.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(&pem)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (scripts/test-prereqs.sh installs it)");
    assert!(status.success());
    pem
}

/// A server certificate for 127.0.0.1 signed by the CA `ca` (made by [`make_ca`]):
/// (certificate, key).
fn make_server_cert(dir: &Path, ca: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key, request) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("server.csr"),
    );
    let extensions = write(
        dir,
        "server.ext",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    let steps: [Vec<std::ffi::OsString>; 2] = [
        [
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ]
        .iter()
        .map(Into::into)
        .chain(["-subj".into(), "/CN=127.0.0.1".into(), "-keyout".into()])
        .chain([key.clone().into(), "-out".into(), request.clone().into()])
        .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]
            .iter()
            .map(Into::into)
            .chain([
                request.into(),
                "-CA".into(),
                dir.join(format!("{ca}.pem")).into(),
            ])
            .chain(["-CAkey".into(), dir.join(format!("{ca}.key")).into()])
            .chain([
                "-extfile".into(),
                extensions.into(),
                "-out".into(),
                cert.clone().into(),
            ])
            .collect(),
    ];
    for args in steps {
        let status = Command::new("openssl")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    (cert, key)
}

/// An HTTPS receiver (Python's `http.server` behind its `ssl`) on 127.0.0.1 answering 204
/// and appending each body, one per line, to a file; killed when dropped.
struct HttpsReceiver {
    child: std::process::Child,
    port: u16,
    bodies: std::path::PathBuf,
}

impl HttpsReceiver {
    fn start(dir: &Path, cert: &Path, key: &Path) -> Self {
        const SCRIPT: &str = r#"
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[3], "ab") as out:
            out.write(body + b"\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        use std::io::BufRead as _;
        let bodies = dir.join("bodies.jsonl");
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .args([cert, key, &bodies])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the receiver prints its port");
        Self {
            child,
            port,
            bodies,
        }
    }

    fn bodies(&self) -> Vec<String> {
        std::fs::read_to_string(&self.bodies)
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_receiver_is_trusted_only_through_the_system_roots_read_again_at_a_reload() {
    let sandbox = sandbox(1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = std::fs::read_to_string(make_ca(dir.path(), "other-ca")).unwrap();
    let receivers_ca = std::fs::read_to_string(make_ca(dir.path(), "receivers-ca")).unwrap();
    let (cert, key) = make_server_cert(dir.path(), "receivers-ca");
    let receiver = HttpsReceiver::start(dir.path(), &cert, &key);
    // The daemon's system roots: SSL_CERT_FILE, holding first a CA that did not sign the
    // receiver's certificate.
    let roots = write(dir.path(), "roots.pem", &other_ca);
    let config = config(
        dir.path(),
        &sandbox.base_url(),
        &format!(
            "url = \"https://127.0.0.1:{}/in\"\nsecret = \"{SECRET}\"\n",
            receiver.port
        ),
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[delivery]\nretry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]\n");
    std::fs::write(&config, text).unwrap();
    let roots_env = roots.to_str().unwrap();
    let daemon = crate::support::LoggedDaemon::start(
        &config,
        &[("SSL_CERT_FILE", roots_env), ("SSL_CERT_DIR", "")],
    );

    let refused = daemon
        .wait_for_line("Delivery failed; will retry.", Duration::from_secs(30))
        .await
        .expect("an attempt against an unknown issuer");
    assert!(refused.contains("certificate"), "{refused}");
    assert!(
        receiver.bodies().is_empty(),
        "sent over TLS it could not verify"
    );

    // The receiver's CA added to the system's roots, then a reload: trusted from then on.
    std::fs::write(&roots, format!("{other_ca}{receivers_ca}")).unwrap();
    daemon.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while receiver.bodies().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing delivered after the reload:\n{}",
            daemon.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let event: serde_json::Value = serde_json::from_str(&receiver.bodies()[0]).unwrap();
    assert_eq!(event["type"], "brief.created");
}
