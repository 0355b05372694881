//! The gate every `/api/v1` request passes, in the order the real service applies it:
//! auth → rate limit → injected faults (`fail_next`, `error_rate`) → latency → handler.
//! It also stamps the `X-RateLimit-*` headers and records the request in the stats.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;

use crate::clock::now_ms;
use crate::config::{Faults, SandboxConfig};
use crate::ids::{Rng, mix};
use crate::ratelimit::{FixedWindow, Verdict};
use crate::reply::{canned_message, error};
use crate::server::{App, lock};
use crate::stats::KeySuffix;

pub(crate) const MISSING_AUTH: &str =
    "Missing or invalid Authorization header. Use: Bearer clr_...";
pub(crate) const INVALID_KEY: &str = "Invalid API key";
pub(crate) const NO_PLAN: &str = "API access requires the Max plan";
pub(crate) const TOO_MANY: &str = "Too many requests — slow down";

/// How much of a refused request's body is read before answering. Reading it lets the
/// client finish sending and see our answer, instead of a reset connection mid-upload.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Salt so fault decisions don't replay the content generator's stream.
const FAULT_SALT: u64 = 0xFA17_5EED_0000_0002;

/// The rate-limit headers of one admitted (or throttled) request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateInfo {
    limit: u32,
    remaining: u32,
    reset_s: u64,
    retry_after_s: Option<u64>,
}

impl RateInfo {
    fn apply(self, headers: &mut HeaderMap) {
        headers.insert(LIMIT.clone(), HeaderValue::from(self.limit));
        headers.insert(REMAINING.clone(), HeaderValue::from(self.remaining));
        headers.insert(RESET.clone(), HeaderValue::from(self.reset_s));
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
}

/// What the gate decided about one request.
#[derive(Debug)]
pub(crate) enum Admission {
    Unauthorized(&'static str),
    NoPlan,
    Throttled(RateInfo),
    Inject(RateInfo, StatusCode),
    Pass(RateInfo, Duration),
}

/// Who may call, how often, and which faults to inject.
pub(crate) struct Gate {
    api_keys: HashSet<String>,
    no_plan_keys: HashSet<String>,
    limiter: FixedWindow,
    faults: Faults,
    fail_next: usize,
    fail_status: StatusCode,
    rng: Rng,
}

impl Gate {
    pub(crate) fn new(config: &SandboxConfig) -> Self {
        Self {
            api_keys: config.api_keys.iter().cloned().collect(),
            no_plan_keys: config.no_plan_keys.iter().cloned().collect(),
            limiter: FixedWindow::new(config.rate_limit, config.window),
            faults: config.faults.clone(),
            fail_next: 0,
            fail_status: StatusCode::INTERNAL_SERVER_ERROR,
            rng: Rng::new(mix(config.seed ^ FAULT_SALT)),
        }
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    pub(crate) fn fail_next(&mut self, count: usize, status: StatusCode) {
        self.fail_next = count;
        self.fail_status = status;
    }

    /// Also upgrades a no-plan key: its account now has the Max plan.
    pub(crate) fn add_api_key(&mut self, key: &str) {
        self.api_keys.insert(key.to_owned());
    }

    pub(crate) fn remove_api_key(&mut self, key: &str) {
        self.api_keys.remove(key);
        self.limiter.forget(key);
    }

    pub(crate) fn set_rate_limit(&mut self, limit: u32, window: Duration) {
        self.limiter.configure(limit, window);
    }

    pub(crate) fn admit(&mut self, authorization: Option<&HeaderValue>, now_ms: i64) -> Admission {
        let Some(key) = bearer_key(authorization) else {
            return Admission::Unauthorized(MISSING_AUTH);
        };
        if !self.api_keys.contains(key) {
            return if self.no_plan_keys.contains(key) {
                Admission::NoPlan
            } else {
                Admission::Unauthorized(INVALID_KEY)
            };
        }
        let limit = self.limiter.limit();
        let rate = match self.limiter.check(key, now_ms) {
            Verdict::Allowed { remaining, reset_s } => RateInfo {
                limit,
                remaining,
                reset_s,
                retry_after_s: None,
            },
            Verdict::Limited { reset_s, wait_ms } => {
                return Admission::Throttled(RateInfo {
                    limit,
                    remaining: 0,
                    reset_s,
                    retry_after_s: self.retry_after(wait_ms),
                });
            }
        };
        if self.fail_next > 0 {
            self.fail_next -= 1;
            let status = self.fail_status;
            let rate = RateInfo {
                retry_after_s: if status == StatusCode::TOO_MANY_REQUESTS {
                    self.retry_after(reset_s_to_wait(rate.reset_s, now_ms))
                } else {
                    None
                },
                ..rate
            };
            return Admission::Inject(rate, status);
        }
        if self.rng.chance(self.faults.error_rate) {
            return Admission::Inject(rate, StatusCode::INTERNAL_SERVER_ERROR);
        }
        Admission::Pass(rate, Duration::from_millis(self.faults.latency_ms))
    }

    fn retry_after(&self, wait_ms: u64) -> Option<u64> {
        // Whole seconds, rounded up and at least one, as the header's grammar demands.
        self.faults
            .retry_after
            .then(|| wait_ms.div_ceil(1000).max(1))
    }
}

/// The key of `Authorization: Bearer KEY`, if there is a non-empty one.
fn bearer_key(authorization: Option<&HeaderValue>) -> Option<&str> {
    authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

fn reset_s_to_wait(reset_s: u64, now_ms: i64) -> u64 {
    (reset_s * 1000).saturating_sub(now_ms.max(0) as u64)
}

/// The middleware: decides, answers or forwards, stamps headers, records.
pub(crate) async fn gate(State(app): State<App>, request: Request, next: Next) -> Response {
    let arrived_ms = now_ms();
    let endpoint = endpoint_of(request.method(), request.uri().path());
    let key = KeySuffix::of(bearer_key(request.headers().get(header::AUTHORIZATION)));
    let admission = lock(&app.gate).admit(request.headers().get(header::AUTHORIZATION), arrived_ms);
    let throttled = matches!(admission, Admission::Throttled(_));
    let response = match admission {
        Admission::Pass(rate, latency) => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut response = next.run(request).await;
            rate.apply(response.headers_mut());
            response
        }
        refused => {
            drain(request.into_body()).await;
            match refused {
                Admission::Unauthorized(message) => error(StatusCode::UNAUTHORIZED, message),
                Admission::NoPlan => error(StatusCode::FORBIDDEN, NO_PLAN),
                Admission::Throttled(rate) => {
                    let mut response = error(StatusCode::TOO_MANY_REQUESTS, TOO_MANY);
                    rate.apply(response.headers_mut());
                    response
                }
                Admission::Inject(rate, status) => {
                    let mut response = error(status, canned_message(status));
                    rate.apply(response.headers_mut());
                    response
                }
                Admission::Pass(..) => unreachable!("handled above"),
            }
        }
    };
    lock(&app.stats).record(
        arrived_ms.max(0) as u64,
        endpoint,
        response.status().as_u16(),
        throttled,
        key,
    );
    response
}

async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > DRAIN_LIMIT {
            break;
        }
    }
}

/// The route template a request addresses, for the stats. Computed from the path rather
/// than axum's matched route so that 401s and 429s (answered before routing) count too.
pub(crate) fn endpoint_of(method: &Method, path: &str) -> &'static str {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
    let first = segments.next().unwrap_or("");
    let second = segments.next();
    let rest = segments.next();
    if rest.is_some() || second == Some("") {
        return "OTHER";
    }
    match (method.as_str(), first, second.is_some()) {
        ("GET", "agents", false) => "GET /agents",
        ("GET", "conversations", false) => "GET /conversations",
        ("GET", "conversations", true) => "GET /conversations/{id}",
        ("GET", "briefs", false) => "GET /briefs",
        ("GET", "briefs", true) => "GET /briefs/{id}",
        ("POST", "chat", false) => "POST /chat",
        ("POST", "discover", false) => "POST /discover",
        ("POST", "meetings", false) => "POST /meetings",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_route_templates() {
        assert_eq!(endpoint_of(&Method::GET, "/agents"), "GET /agents");
        assert_eq!(
            endpoint_of(&Method::GET, "/api/v1/briefs/cm3x"),
            "GET /briefs/{id}"
        );
        assert_eq!(
            endpoint_of(&Method::GET, "/conversations/cm2x"),
            "GET /conversations/{id}"
        );
        assert_eq!(endpoint_of(&Method::POST, "/meetings"), "POST /meetings");
        assert_eq!(endpoint_of(&Method::POST, "/agents"), "OTHER");
        assert_eq!(endpoint_of(&Method::GET, "/briefs/"), "OTHER");
        assert_eq!(endpoint_of(&Method::GET, "/briefs/a/b"), "OTHER");
    }

    fn bearer(key: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap()
    }

    #[test]
    fn auth_comes_before_rate_limiting_and_faults_after() {
        let mut gate = Gate::new(&SandboxConfig {
            rate_limit: 1,
            ..SandboxConfig::default()
        });
        assert!(matches!(
            gate.admit(None, 0),
            Admission::Unauthorized(MISSING_AUTH)
        ));
        let basic = HeaderValue::from_static("Basic abc");
        assert!(matches!(
            gate.admit(Some(&basic), 0),
            Admission::Unauthorized(MISSING_AUTH)
        ));
        assert!(matches!(
            gate.admit(Some(&bearer("clr_nope")), 0),
            Admission::Unauthorized(INVALID_KEY)
        ));
        assert!(matches!(
            gate.admit(Some(&bearer("clr_sandbox_noplan")), 0),
            Admission::NoPlan
        ));
        gate.fail_next(1, StatusCode::BAD_GATEWAY);
        assert!(matches!(
            gate.admit(Some(&bearer("clr_sandbox_key")), 0),
            Admission::Inject(_, StatusCode::BAD_GATEWAY)
        ));
        // The injected failure consumed the only request in the window; fail_next is spent.
        assert!(matches!(
            gate.admit(Some(&bearer("clr_sandbox_key")), 1),
            Admission::Throttled(_)
        ));
    }
}
