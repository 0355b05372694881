//! The HTTP plumbing the webhook and CRM connectors share: how a client is built, how an
//! answer is read without letting it fill memory, how `Retry-After` is read, and how a
//! request that got no answer at all is told apart (passing or lasting).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use url::Url;

use crate::{BuildError, USER_AGENT, UrlError, retry, root_cause};

/// The longest wait a receiver's answer can impose (`Retry-After`, a CRM's rate-limit
/// reset). Beyond the retry schedule's longest step (24 hours), and beyond HubSpot's daily
/// reset, a request to wait is more likely a receiver's bug than a plan, and honouring it
/// would leave the delivery neither sent nor dead for that long.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Makes ring the process's TLS crypto provider, once; every HTTPS client (reqwest for
/// Clairo, webhooks and CRMs; lettre for SMTP) uses it. Call it before building a
/// `reqwest::Client`: reqwest is built without a provider of its own, so that only one
/// (ring, the smaller) is linked in.
pub fn install_crypto_provider() {
    // Losing a race to another caller installs the same provider: nothing to report.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The TLS settings every HTTPS client of the daemon uses (Clairo, webhooks, CRMs, chat):
/// TLS 1.2 and 1.3 with ring, HTTP/1.1, and the system's CA roots, read once and only when
/// a first HTTPS server is verified, then shared until [`reread_tls_roots`]. Left to
/// itself, reqwest reads and parses the system's roots (~150 certificates) into a store of
/// its own for every client it builds and keeps it for the client's life, HTTPS or not:
/// ~0.1 MiB each, one per connector (BENCHMARKS.md).
pub fn tls_config() -> rustls::ClientConfig {
    let mut shared = TLS_CONFIG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    shared
        .get_or_insert_with(|| {
            install_crypto_provider();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SystemRoots::new(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config
        })
        .clone()
}

/// Clients built from now on read the system's CA roots again (at their first HTTPS
/// server): a reload picks up a CA added since. Clients built before keep theirs.
pub fn reread_tls_roots() {
    *TLS_CONFIG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
}

static TLS_CONFIG: Mutex<Option<rustls::ClientConfig>> = Mutex::new(None);

/// Verifies servers against the system's CA roots (rustls-platform-verifier, as reqwest
/// would), loading them at the first server to verify. Signatures need no roots.
#[derive(Debug)]
pub(crate) struct SystemRoots {
    /// Which of the process's verifiers this is (each [`reread_tls_roots`] makes a new one).
    generation: u64,
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: OnceLock<Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

/// How many times [`SystemRoots`] loaded the system's roots in this process.
#[cfg(test)]
static ROOT_LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl SystemRoots {
    fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            provider,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                #[cfg(test)]
                ROOT_LOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let verifier = rustls_platform_verifier::Verifier::new(self.provider.clone());
                tracing::debug!(
                    generation = self.generation,
                    loaded = verifier.is_ok(),
                    "Read the system's CA roots."
                );
                verifier
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl rustls::client::danger::ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client sending clairo-sync's `User-Agent` and `headers` on every request, giving up
/// after `timeout` (connecting included), and never following a redirect: for a webhook
/// (Standard Webhooks) a redirect is a failure and the operator updates `url`; from a CRM
/// API it means `base_url` is wrong, and following it could carry the credential to
/// another host.
pub(crate) fn client(timeout: Duration, headers: HeaderMap) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config())
        .user_agent(USER_AGENT)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(BuildError::HttpClient)
}

/// Checks an http:// or https:// address. The address is never echoed: it may carry a
/// token in its path or query. `example` shows the operator what to write.
pub(crate) fn parse_url(text: &str, example: &'static str) -> Result<Url, UrlError> {
    let url = Url::parse(text).map_err(|error| UrlError::Invalid { error, example })?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        "http" | "https" => Err(UrlError::NoHost),
        other => Err(UrlError::Scheme(other.to_owned())),
    }
}

/// `host:port` of `url`: enough to say where, without a path or query that may hold a
/// token. `unnamed` stands in for an address without a host.
pub(crate) fn endpoint(url: &Url, unnamed: &str) -> String {
    let host = url.host_str().unwrap_or(unnamed);
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// `503 Service Unavailable`, or just the number for a status without a standard name.
pub(crate) fn describe(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// `Retry-After` (delay in seconds, or an HTTP date; see [`retry::parse_retry_after`]),
/// capped at [`MAX_WAIT`]. A date already past asks for no wait at all.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    retry::retry_after(headers, now).map(|wait| wait.min(MAX_WAIT))
}

/// The start of the response body, at most `limit` bytes, as text (invalid UTF-8
/// replaced); empty when the body is. A body that breaks off midway still shows what
/// arrived.
pub(crate) async fn read_body(mut response: reqwest::Response, limit: usize) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit - bytes.len();
        if chunk.len() >= room {
            bytes.extend_from_slice(&chunk[..room]);
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Why a request got no HTTP answer at all; each connector words it for its operator.
pub(crate) enum NoAnswer {
    /// Nothing came back within the client's timeout: passing.
    TimedOut,
    /// No connection could be made; the network or the receiver may recover: passing.
    Connect(String),
    /// The request could not even be built; trying again would fail the same way: lasting.
    Build(String),
    /// The request broke off on its way (a reset, TLS, the protocol): passing.
    Failed(String),
}

impl NoAnswer {
    /// Sorts a failed send; each variant but [`NoAnswer::TimedOut`] holds the error's
    /// [`root_cause`].
    pub(crate) fn of(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            return Self::TimedOut;
        }
        let cause = root_cause(error);
        if error.is_connect() {
            Self::Connect(cause)
        } else if error.is_builder() {
            Self::Build(cause)
        } else {
            Self::Failed(cause)
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn retry_after_accepts_seconds_or_an_http_date_and_is_capped() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(with("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            with("Wed, 21 Oct 2026 07:30:00 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(with("Wed, 21 Oct 2026 07:00:00 GMT"), None);
        assert_eq!(with("99999999"), Some(MAX_WAIT));
        assert_eq!(with("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}

#[cfg(test)]
mod tls_tests {
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    #[test]
    fn clients_read_no_roots_until_a_first_server_is_verified_and_then_once() {
        for _ in 0..3 {
            client(Duration::from_secs(1), HeaderMap::new()).unwrap();
        }
        assert_eq!(ROOT_LOADS.load(std::sync::atomic::Ordering::SeqCst), 0);

        let roots = SystemRoots::new(Arc::new(rustls::crypto::ring::default_provider()));
        let name = ServerName::try_from("example.com").unwrap();
        for _ in 0..2 {
            let error = roots
                .verify_server_cert(
                    &CertificateDer::from(vec![0x30, 0x00]),
                    &[],
                    &name,
                    &[],
                    UnixTime::now(),
                )
                .unwrap_err();
            // Not a certificate at all: refused, whatever the roots.
            assert!(
                matches!(error, rustls::Error::InvalidCertificate(_)),
                "{error:?}"
            );
        }
        assert_eq!(ROOT_LOADS.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn clients_share_one_verifier_until_the_roots_are_to_be_read_again() {
        // The config's Debug shows its verifier, whose generation names it.
        let generation = |config: &rustls::ClientConfig| {
            let text = format!("{config:?}");
            let at = text
                .find("generation: ")
                .expect("the verifier in the config's Debug");
            text[at..].split([',', ' ']).nth(1).unwrap().to_owned()
        };
        let first = generation(&tls_config());
        assert_eq!(first, generation(&tls_config()));
        reread_tls_roots();
        let after = tls_config();
        assert_ne!(first, generation(&after));
        assert_eq!(generation(&after), generation(&tls_config()));
        assert_eq!(after.alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
