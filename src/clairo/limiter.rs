// Over 500 lines: one idea, the pacing arithmetic and the headers it reads (tests: half).
//! One request budget for the whole process: every Clairo request waits here for its slot.
//!
//! Two limits apply, and a request goes when both allow it:
//! - the configured budget (`clairo.max_requests_per_minute`), spread evenly: request
//!   starts are at least `60 s / budget` apart;
//! - the server's own account, from the last response's `X-RateLimit-Remaining` and
//!   `X-RateLimit-Reset`: the requests left (less those still in flight, which the server
//!   may not have counted yet) are spread over the time to the reset, and when none are
//!   left the next request waits for the reset plus a little jitter.
//!
//! The window's length is never assumed: once a reset has passed, the next window is
//! presumed to hold `X-RateLimit-Limit` requests until a response says otherwise.
//!
//! The arithmetic lives in [`Pacing`], pure functions of the instants passed in, so it is
//! tested without sleeping; [`RateLimiter`] wraps it in a lock and a queue.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clairo_connectors::retry;
use reqwest::header::{HeaderMap, HeaderName};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

/// At most this much random delay is added to a wait for a reset, so that several
/// processes sharing the business's budget do not all fire at the same instant. Kept
/// small: it is lost throughput once per window.
pub const RESET_JITTER_MAX: Duration = Duration::from_millis(50);

/// The extra wait after a reset once a server has shown that its window outlives its
/// `X-RateLimit-Reset` (a header rounded down to whole seconds ends up to 1 s early).
pub const LATE_RESET_SLACK: Duration = Duration::from_millis(1100);

/// The longest wait any one answer can impose, through `X-RateLimit-Reset` or
/// `Retry-After`: one rate window. Clairo documents its limit as requests per minute, so a
/// window longer than a minute is nothing the API promises; a reset further off (a Unix
/// time in the year 5138, a `Retry-After` of three years) is the server's error, or this
/// host's clock is far off. Waiting it out would stop every Clairo request of the process
/// until a restart, so it is read as one window: the next request goes after a minute,
/// and a server that really is still limiting answers 429 again, which costs one request
/// (bounded by the client's throttled-retry limit).
///
/// Five seconds over the minute absorb a reset rounded up to whole seconds and a server
/// clock a little off ours, so a sound server is never cut short (nor logged).
pub const MAX_RESET_WAIT: Duration = Duration::from_secs(60 + 5);

/// The longest any request waits for its slot after one answer: [`MAX_RESET_WAIT`], plus
/// the slack and jitter the limiter adds to a reset.
pub const MAX_PACING_WAIT: Duration = MAX_RESET_WAIT
    .saturating_add(LATE_RESET_SLACK)
    .saturating_add(RESET_JITTER_MAX);

/// The most a late request is caught up on (see `Pacing::grant`): enough for the
/// timer's rounding, far too little to make a burst.
const CATCH_UP: Duration = Duration::from_millis(5);

/// How long the head of the queue waits for an in-flight response before deciding again
/// (only a safety net: every response wakes it).
const RESPONSE_WAIT_POLL: Duration = Duration::from_millis(250);

/// A server clock further off than this from ours (by its `Date` header) is trusted over
/// ours for reading `X-RateLimit-Reset`; below it, our finer-grained clock wins.
const CLOCK_SKEW_TOLERANCE_SECS: f64 = 2.0;

/// A `X-RateLimit-Reset` below this is read as seconds-from-now rather than a Unix time
/// (no Unix time that small is current; some APIs send the delta).
const RESET_DELTA_THRESHOLD: u64 = 1_000_000_000;

/// A `X-RateLimit-Reset` above this is read as Unix milliseconds.
const RESET_MILLIS_THRESHOLD: u64 = 100_000_000_000;

/// The process-wide limiter: create one, wrap it in an `Arc`, give it to every client.
pub struct RateLimiter {
    /// Requests wait their turn here, first come first served; the head of the queue
    /// sleeps until its slot while holding it, so the others need not compute anything.
    queue: tokio::sync::Mutex<()>,
    pacing: Mutex<Pacing>,
    /// Wakes the head of the queue when its wait may have changed: a response arrived,
    /// a request ended, the budget was changed.
    changed: Notify,
    /// Whether a wait beyond [`MAX_RESET_WAIT`] was logged: a broken server sends it on
    /// every answer, and one line says all there is to say.
    warned_beyond_window: AtomicBool,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("pacing", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(max_requests_per_minute: u32) -> Self {
        Self {
            queue: tokio::sync::Mutex::new(()),
            pacing: Mutex::new(Pacing::new(max_requests_per_minute)),
            changed: Notify::new(),
            warned_beyond_window: AtomicBool::new(false),
        }
    }

    /// Changes the configured budget (a config reload); waiting requests re-pace at once.
    pub fn set_budget(&self, per_minute: u32) {
        self.lock().set_budget(per_minute);
        self.changed.notify_waiters();
    }

    pub fn budget(&self) -> u32 {
        self.lock().budget
    }

    /// Requests the server has left in its window, by this process's estimate (the last
    /// `X-RateLimit-Remaining`, less what was sent since); `None` before any response.
    pub fn remaining_estimate(&self) -> Option<i64> {
        self.lock().window.as_ref().map(|window| window.remaining)
    }

    /// Waits for this request's slot. Hold the permit until the response has arrived and
    /// been [observed](Permit::observe): while held, the request counts as in flight.
    pub async fn acquire(&self) -> Permit<'_> {
        let _turn = self.queue.lock().await;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before deciding, so a response arriving meanwhile still wakes us.
            notified.as_mut().enable();
            let decision = {
                let mut pacing = self.lock();
                let now = Instant::now();
                match pacing.decide(now) {
                    Decision::Go => {
                        let epoch = pacing.grant(now);
                        return Permit {
                            limiter: self,
                            epoch,
                        };
                    }
                    waiting => waiting,
                }
            };
            match decision {
                Decision::WaitUntil(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = &mut notified => {}
                    }
                }
                Decision::WaitForResponse => {
                    tokio::select! {
                        () = tokio::time::sleep(RESPONSE_WAIT_POLL) => {}
                        () = &mut notified => {}
                    }
                }
                Decision::Go => unreachable!("handled above"),
            }
        }
    }

    /// Logs, the first time only, an answer asking for a wait beyond one window.
    fn warn_if_beyond_window(&self, headers: &RateLimitHeaders, local_unix: f64) {
        let Some((header, seconds)) = headers.beyond_window(local_unix) else {
            return;
        };
        if self.warned_beyond_window.swap(true, Ordering::Relaxed) {
            return;
        }
        warn!(
            header,
            seconds_away = whole_u64(seconds),
            waited_s = MAX_RESET_WAIT.as_secs(),
            "Clairo answered with a rate-limit wait more than one rate window away, which the API does not do (a server error, or this host's clock is far off); waiting one window instead. Logged once: later answers like it are treated the same way."
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pacing> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.pacing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request's slot. Dropping it ends the request's time in flight.
#[must_use = "a permit counts its request as in flight until dropped"]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
    epoch: u64,
}

impl Permit<'_> {
    /// Feeds a response's rate-limit headers to the limiter.
    pub fn observe(&self, headers: &RateLimitHeaders) {
        let now = Instant::now();
        let local_unix = unix_now();
        self.limiter.warn_if_beyond_window(headers, local_unix);
        let observation = headers.observation(now, local_unix);
        let jitter = random_jitter();
        self.limiter
            .lock()
            .observe(now, &observation, self.epoch, jitter);
        self.limiter.changed.notify_waiters();
    }

    /// A 429: every request of the process pauses until `Retry-After` when sent, else
    /// until the reset, else for `fallback`; plus jitter. Returns the wait as applied.
    pub fn throttled(&self, headers: &RateLimitHeaders, fallback: Duration) -> Duration {
        let jitter = random_jitter();
        let now = Instant::now();
        let local_unix = unix_now();
        self.limiter.warn_if_beyond_window(headers, local_unix);
        let mut pacing = self.limiter.lock();
        let wait = throttle_wait(headers, local_unix, pacing.reset_slack, fallback);
        pacing.throttled(now, later(now, wait), jitter);
        drop(pacing);
        self.limiter.changed.notify_waiters();
        wait.saturating_add(jitter)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.lock().release();
        self.limiter.changed.notify_waiters();
    }
}

/// The rate-limit headers of one response, as sent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateLimitHeaders {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// `X-RateLimit-Reset` as sent (documented as Unix seconds).
    pub reset: Option<u64>,
    pub retry_after: Option<Duration>,
    /// The server's clock (`Date`), in Unix seconds.
    pub date: Option<f64>,
}

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

impl RateLimitHeaders {
    /// Reads the headers as sent. Nothing here trusts a number: each is checked to be
    /// finite and in range before any arithmetic, and a value that is not a number is
    /// ignored as if absent.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
        let date = text(&reqwest::header::DATE)
            .and_then(retry::http_date)
            .and_then(|date| date.duration_since(UNIX_EPOCH).ok())
            .map(|since_epoch| since_epoch.as_secs_f64());
        // A `Retry-After` date is read against the server's clock when it sent one, so a
        // clock of ours that is off does not stretch or shorten the wait. Kept uncapped
        // so that an absurd one can be reported; every use caps it.
        let server_now = date.map_or_else(SystemTime::now, |date| {
            UNIX_EPOCH + Duration::from_secs_f64(date)
        });
        let retry_after = text(&reqwest::header::RETRY_AFTER)
            .and_then(|value| retry::parse_retry_after(value, server_now));
        Self {
            limit: text(&LIMIT).and_then(retry::header_number).map(whole_u32),
            remaining: text(&REMAINING)
                .and_then(retry::header_number)
                .map(whole_u32),
            reset: text(&RESET).and_then(retry::header_number).map(whole_u64),
            retry_after,
            date,
        }
    }

    /// How long until the reset, by the server's clock when ours is clearly off; never
    /// more than [`MAX_RESET_WAIT`].
    pub fn until_reset(&self, local_unix: f64) -> Option<Duration> {
        self.seconds_to_reset(local_unix).map(capped_wait)
    }

    /// The `Retry-After` to honour: never more than [`MAX_RESET_WAIT`].
    pub fn retry_after_capped(&self) -> Option<Duration> {
        self.retry_after.map(|wait| wait.min(MAX_RESET_WAIT))
    }

    /// The header asking for a wait beyond [`MAX_RESET_WAIT`], and how many seconds it asked.
    pub fn beyond_window(&self, local_unix: f64) -> Option<(&'static str, f64)> {
        if let Some(wait) = self.retry_after
            && wait > MAX_RESET_WAIT
        {
            return Some(("Retry-After", wait.as_secs_f64()));
        }
        match self.seconds_to_reset(local_unix) {
            Some(seconds) if seconds > MAX_RESET_WAIT.as_secs_f64() => {
                Some(("X-RateLimit-Reset", seconds))
            }
            _ => None,
        }
    }

    /// Seconds from now to the reset as the header says, unbounded (may be negative).
    fn seconds_to_reset(&self, local_unix: f64) -> Option<f64> {
        let reset = self.reset?;
        let now_unix = match self.date {
            Some(date) if (date - local_unix).abs() > CLOCK_SKEW_TOLERANCE_SECS => date,
            _ => local_unix,
        };
        // u64 to f64 rounds above 2^53, which no sound reset reaches; it cannot overflow.
        Some(if reset < RESET_DELTA_THRESHOLD {
            reset as f64
        } else if reset > RESET_MILLIS_THRESHOLD {
            reset as f64 / 1000.0 - now_unix
        } else {
            reset as f64 - now_unix
        })
    }

    pub(crate) fn observation(&self, now: Instant, local_unix: f64) -> Observation {
        let until_reset = self.until_reset(local_unix);
        let capped = self
            .seconds_to_reset(local_unix)
            .is_some_and(|seconds| seconds > MAX_RESET_WAIT.as_secs_f64());
        Observation {
            limit: self.limit,
            remaining: self.remaining,
            // The window's identity: the reset as an absolute Unix second. A reset read as
            // one window is identified by where that window ends, so the sound answers
            // that follow are seen as newer windows, not as older ones to ignore.
            window_id: self.reset.map(|reset| {
                if capped {
                    whole_u64((local_unix + MAX_RESET_WAIT.as_secs_f64()).round())
                } else if reset < RESET_DELTA_THRESHOLD {
                    whole_u64((local_unix + reset as f64).round())
                } else if reset > RESET_MILLIS_THRESHOLD {
                    reset / 1000
                } else {
                    reset
                }
            }),
            reset_at: until_reset.and_then(|until| now.checked_add(until)),
        }
    }
}

/// `value` (finite or not) as a whole number in range: NaN and negatives are 0, anything
/// above `u64::MAX` is `u64::MAX`.
fn whole_u64(value: f64) -> u64 {
    // 2^64 is exactly representable; every finite f64 below it converts without loss of range.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if value.is_nan() || value <= 0.0 {
        0
    } else if value >= LIMIT {
        u64::MAX
    } else {
        value as u64
    }
}

fn whole_u32(value: f64) -> u32 {
    u32::try_from(whole_u64(value)).unwrap_or(u32::MAX)
}

/// A wait of `seconds` (any f64) as a duration in `0..=MAX_RESET_WAIT`.
fn capped_wait(seconds: f64) -> Duration {
    retry::clamped_seconds(seconds, MAX_RESET_WAIT)
}

/// How long a 429 holds every request: `Retry-After` when sent, else until the reset
/// (plus the slack the server has shown it needs), else `fallback`; never more than one
/// window (and the slack).
fn throttle_wait(
    headers: &RateLimitHeaders,
    local_unix: f64,
    reset_slack: Duration,
    fallback: Duration,
) -> Duration {
    match (
        headers.retry_after_capped(),
        headers.until_reset(local_unix),
    ) {
        (Some(retry_after), _) => retry_after,
        (None, Some(until_reset)) => until_reset.saturating_add(reset_slack),
        (None, None) => fallback.min(MAX_RESET_WAIT),
    }
}

/// One answer fed to [`wait_after_answers`]: its headers, and whether it was a 429.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Answered {
    pub headers: RateLimitHeaders,
    pub throttled: bool,
}

/// How long the next request waits for its slot after `answers`, each answering a request
/// sent just before it, by the limiter's own arithmetic (no sleeping, the worst jitter,
/// a budget that never holds a request back). The fuzz target `rate_limit_headers` drives
/// it: whatever the headers, it must not panic and never return more than
/// [`MAX_PACING_WAIT`].
pub fn wait_after_answers(answers: &[Answered], local_unix: f64) -> Duration {
    let start = Instant::now();
    let mut pacing = Pacing::new(u32::MAX);
    let mut now = start;
    let mut last_answer = start;
    for answer in answers {
        now = next_slot(&mut pacing, now);
        let epoch = pacing.grant(now);
        if answer.throttled {
            let wait = throttle_wait(
                &answer.headers,
                local_unix,
                pacing.reset_slack,
                MAX_RESET_WAIT,
            );
            pacing.throttled(now, later(now, wait), RESET_JITTER_MAX);
        } else {
            let observation = answer.headers.observation(now, local_unix);
            pacing.observe(now, &observation, epoch, RESET_JITTER_MAX);
        }
        pacing.release();
        last_answer = now;
    }
    next_slot(&mut pacing, last_answer).saturating_duration_since(last_answer)
}

/// When `decide` next says go, from `now` on; a wait for a response counts as going (in
/// the simulation nothing is in flight, so the limiter would send a probe).
fn next_slot(pacing: &mut Pacing, mut now: Instant) -> Instant {
    // Each step moves to a later instant or returns; a few cover every chain of waits
    // (spacing, then the window's reset, then the spread).
    for _ in 0..8 {
        match pacing.decide(now) {
            Decision::Go | Decision::WaitForResponse => return now,
            Decision::WaitUntil(until) if until > now => now = until,
            Decision::WaitUntil(_) => return now,
        }
    }
    now
}

/// `at + by`, or `at` in the (theoretical) case the clock cannot represent the sum.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by).unwrap_or(at)
}

/// A response's rate-limit account, in this process's clock.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Observation {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// Tells windows apart: the same for every response of one server window.
    pub window_id: Option<u64>,
    pub reset_at: Option<Instant>,
}

/// What the head of the queue does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Go,
    WaitUntil(Instant),
    /// The window is used up and its reset unknown: a response will tell.
    WaitForResponse,
}

/// The server's window as this process believes it to be.
#[derive(Clone, Debug, PartialEq)]
struct Window {
    limit: Option<u32>,
    id: Option<u64>,
    /// When the server says the window ends; `None` once presumed over.
    reset_at: Option<Instant>,
    /// When this process takes the window to be over: `reset_at` plus slack and jitter.
    resume_at: Option<Instant>,
    /// Requests left: the server's last `Remaining`, less requests granted since and
    /// less those in flight when it was read (the server may not have counted them).
    remaining: i64,
    /// Presumed a fresh window after a reset, not yet described by a response.
    presumed: bool,
}

/// The pacing arithmetic: every method takes the current instant, none sleeps.
#[derive(Debug)]
pub(crate) struct Pacing {
    budget: u32,
    min_spacing: Duration,
    last_grant: Option<Instant>,
    in_flight: u32,
    window: Option<Window>,
    /// Counts presumed resets; a permit remembers the epoch it was granted in.
    epoch: u64,
    /// Added to each reset: zero until the server shows its windows outlive the header.
    reset_slack: Duration,
}

impl Pacing {
    pub(crate) fn new(budget: u32) -> Self {
        let mut pacing = Self {
            budget: 0,
            min_spacing: Duration::ZERO,
            last_grant: None,
            in_flight: 0,
            window: None,
            epoch: 0,
            reset_slack: Duration::ZERO,
        };
        pacing.set_budget(budget);
        pacing
    }

    pub(crate) fn set_budget(&mut self, per_minute: u32) {
        self.budget = per_minute.max(1);
        self.min_spacing = min_spacing(self.budget);
    }

    pub(crate) fn decide(&mut self, now: Instant) -> Decision {
        if let Some(last) = self.last_grant {
            let next = last + self.min_spacing;
            if now < next {
                return Decision::WaitUntil(next);
            }
        }
        let in_flight = self.in_flight;
        let Some(window) = self.window.as_mut() else {
            return Decision::Go;
        };
        if window.resume_at.is_some_and(|resume| now >= resume) {
            // The reset has passed: presume a full window until a response describes it.
            // Requests still in flight may land in it; count them against it.
            window.remaining = window.limit.map_or(1, i64::from) - i64::from(in_flight);
            window.reset_at = None;
            window.resume_at = None;
            window.presumed = true;
            self.epoch += 1;
        }
        if window.remaining <= 0 {
            return match window.resume_at {
                Some(resume) => Decision::WaitUntil(resume),
                None if in_flight > 0 => Decision::WaitForResponse,
                // Nothing in flight to learn from: one request probes the window.
                None => Decision::Go,
            };
        }
        if let (Some(reset), Some(last)) = (window.reset_at, self.last_grant)
            && reset > last
        {
            let left = u32::try_from(window.remaining).unwrap_or(u32::MAX);
            let next = last + (reset - last) / left;
            if now < next {
                return Decision::WaitUntil(next);
            }
        }
        Decision::Go
    }

    /// Records a request as sent now; returns the epoch its permit carries.
    pub(crate) fn grant(&mut self, now: Instant) -> u64 {
        // The slot is the scheduled one, not the moment the timer fired: the runtime wakes a
        // little late (its timer rounds up to the millisecond), and measuring the next gap
        // from the late wake-up would lose that much on every request — 10% of a
        // 6,000/minute budget. A request later than CATCH_UP is not caught up on, so an idle
        // spell never turns into a burst.
        let slot = match self.last_grant {
            Some(last) => {
                let catch_up = (self.min_spacing / 4).min(CATCH_UP);
                (last + self.min_spacing)
                    .max(now.checked_sub(catch_up).unwrap_or(now))
                    .min(now)
            }
            None => now,
        };
        self.last_grant = Some(slot);
        self.in_flight += 1;
        if let Some(window) = self.window.as_mut() {
            window.remaining -= 1;
        }
        self.epoch
    }

    pub(crate) fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A response arrived for a request granted in `epoch`, still counted in flight.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        observation: &Observation,
        epoch: u64,
        jitter: Duration,
    ) {
        let Some(remaining) = observation.remaining else {
            return;
        };
        let others_in_flight = i64::from(self.in_flight.saturating_sub(1));
        let estimate = i64::from(remaining) - others_in_flight;
        let mut fresh = Window {
            limit: observation.limit,
            id: observation.window_id,
            reset_at: observation.reset_at,
            resume_at: None,
            remaining: estimate,
            presumed: false,
        };
        let Some(window) = self.window.as_mut() else {
            fresh.resume_at = fresh
                .reset_at
                .map(|reset| later(reset, self.reset_slack.saturating_add(jitter)));
            self.window = Some(fresh);
            return;
        };
        let (has_ids, newer) = match (observation.window_id, window.id) {
            (Some(new), Some(old)) if new < old => return, // an answer from an older window
            (Some(new), Some(old)) => (true, new > old),
            _ => (false, false),
        };
        if window.presumed {
            if !newer && epoch < self.epoch {
                return; // sent before the reset we presumed: says nothing about the new window
            }
            if has_ids && !newer {
                // Sent after we took the window to be over, and the server still counts it:
                // its windows end later than its Reset header says. Wait longer from now on.
                self.reset_slack = LATE_RESET_SLACK;
                fresh.reset_at = fresh.reset_at.map(|reset| reset.max(now));
            }
        } else if has_ids && !newer {
            // The same window: answers may arrive out of order, so keep the lowest count.
            window.remaining = window.remaining.min(estimate);
            window.limit = observation.limit.or(window.limit);
            return;
        }
        // A new window, or a server that sends no Reset: its latest answer is the truth.
        fresh.limit = fresh.limit.or(window.limit);
        fresh.resume_at = fresh
            .reset_at
            .map(|reset| later(reset, self.reset_slack.saturating_add(jitter)));
        *window = fresh;
    }

    /// A 429: nothing goes until `until` (plus jitter), whatever the estimate said.
    pub(crate) fn throttled(&mut self, now: Instant, until: Instant, jitter: Duration) {
        let until = until.max(now);
        let window = self.window.get_or_insert(Window {
            limit: None,
            id: None,
            reset_at: None,
            resume_at: None,
            remaining: 0,
            presumed: false,
        });
        window.remaining = 0;
        window.presumed = false;
        window.reset_at = Some(until);
        window.resume_at = Some(later(until, jitter));
    }
}

/// The least time between two request starts under a per-minute budget.
pub(crate) fn min_spacing(per_minute: u32) -> Duration {
    // Rounded up: rounding down would let budget + 1 starts fit in one minute.
    Duration::from_nanos(60_000_000_000u64.div_ceil(u64::from(per_minute.max(1))))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

fn random_jitter() -> Duration {
    retry::full_jitter(RESET_JITTER_MAX)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const NO_JITTER: Duration = Duration::ZERO;

    fn observation(remaining: u32, reset_at: Instant, window_id: u64) -> Observation {
        Observation {
            limit: Some(10),
            remaining: Some(remaining),
            window_id: Some(window_id),
            reset_at: Some(reset_at),
        }
    }

    /// Grants as many requests as `decide` allows at `now`.
    fn grant_all(pacing: &mut Pacing, now: Instant) -> u32 {
        let mut granted = 0;
        while pacing.decide(now) == Decision::Go {
            pacing.grant(now);
            granted += 1;
            assert!(granted < 10_000, "no limit applied");
        }
        granted
    }

    #[test]
    fn the_budget_spreads_requests_evenly_over_the_minute() {
        assert_eq!(min_spacing(1000), 60 * MS);
        assert_eq!(min_spacing(0), Duration::from_secs(60));
        let start = Instant::now();
        let mut pacing = Pacing::new(600);
        assert_eq!(pacing.decide(start), Decision::Go);
        pacing.grant(start);
        assert_eq!(pacing.decide(start), Decision::WaitUntil(start + 100 * MS));
        assert_eq!(pacing.decide(start + 100 * MS), Decision::Go);
        pacing.set_budget(6000);
        assert_eq!(pacing.decide(start + 10 * MS), Decision::Go);
    }

    #[test]
    fn the_remaining_requests_are_spread_over_the_time_to_the_reset() {
        let start = Instant::now();
        let mut pacing = Pacing::new(60_000); // 1 ms apart: the server's account governs
        pacing.grant(start);
        pacing.observe(start, &observation(4, start + 2000 * MS, 100), 0, NO_JITTER);
        pacing.release();
        // 4 left over 2 s: one every 500 ms.
        assert_eq!(
            pacing.decide(start + MS),
            Decision::WaitUntil(start + 500 * MS)
        );
        assert_eq!(pacing.decide(start + 500 * MS), Decision::Go);
    }

    #[test]
    fn requests_in_flight_count_against_what_the_server_reports_left() {
        let start = Instant::now();
        let mut pacing = Pacing::new(60_000);
        for _ in 0..3 {
            pacing.grant(start);
        }
        // The first answer says 5 left; the two others in flight may not be counted yet.
        pacing.observe(start, &observation(5, start + 1000 * MS, 100), 0, NO_JITTER);
        pacing.release();
        assert_eq!(pacing.remaining_estimate(), Some(3));
        // A later answer in the same window cannot raise the estimate.
        pacing.observe(start, &observation(5, start + 1000 * MS, 100), 0, NO_JITTER);
        pacing.release();
        assert_eq!(pacing.remaining_estimate(), Some(3));
    }

    #[test]
    fn a_used_up_window_waits_for_its_reset_plus_jitter_then_presumes_a_full_one() {
        let start = Instant::now();
        let mut pacing = Pacing::new(60_000);
        let reset = start + 1500 * MS;
        pacing.grant(start);
        pacing.observe(start, &observation(0, reset, 100), 0, 20 * MS);
        pacing.release();
        assert_eq!(
            pacing.decide(start + MS),
            Decision::WaitUntil(reset + 20 * MS)
        );
        assert_eq!(pacing.decide(reset), Decision::WaitUntil(reset + 20 * MS));
        // After the reset the full limit (10) is available at the budget's pace.
        let after = reset + 20 * MS;
        let mut granted = 0;
        let mut now = after;
        while granted < 10 {
            assert_eq!(pacing.decide(now), Decision::Go, "request {granted}");
            pacing.grant(now);
            granted += 1;
            now += MS;
        }
        // The eleventh must wait for an answer describing the new window.
        assert_eq!(pacing.decide(now), Decision::WaitForResponse);
    }

    #[test]
    fn a_window_is_never_assumed_to_last_a_minute() {
        // A 2-second window of 3: after the reset, three more go at once, not a minute later.
        let start = Instant::now();
        let mut pacing = Pacing::new(60_000);
        let mut obs = observation(0, start + 2000 * MS, 100);
        obs.limit = Some(3);
        pacing.grant(start);
        pacing.observe(start, &obs, 0, NO_JITTER);
        pacing.release();
        let after = start + 2000 * MS;
        assert_eq!(pacing.decide(after - MS), Decision::WaitUntil(after));
        assert_eq!(grant_all(&mut pacing, after), 1); // then 1 ms spacing applies
        assert_eq!(pacing.decide(after + MS), Decision::Go);
    }

    #[test]
    fn an_answer_from_the_previous_window_does_not_shrink_the_new_one() {
        let start = Instant::now();
        let mut pacing = Pacing::new(60_000);
        let reset = start + 1000 * MS;
        let old_epoch = pacing.grant(start); // in flight across the reset
        pacing.grant(start);
        pacing.observe(start, &observation(0, reset, 100), 0, NO_JITTER);
        pacing.release();
        assert_eq!(pacing.decide(reset), Decision::Go); // presumed: 10 - 1 in flight
        pacing.grant(reset);
        // The old request's answer arrives late, from the old window.
        pacing.observe(reset, &observation(0, reset, 100), old_epoch, NO_JITTER);
        pacing.release();
        assert_eq!(pacing.remaining_estimate(), Some(8));
        // A newer window's answer is taken as it is.
        pacing.observe(reset, &observation(8, reset + 1000 * MS, 101), 1, NO_JITTER);
        pacing.release();
        assert_eq!(pacing.remaining_estimate(), Some(8));
        assert_eq!(pacing.in_flight, 0);
    }

    #[test]
    fn a_server_whose_window_outlives_its_reset_header_is_given_more_slack() {
        let start = Instant::now();
        let mut pacing = Pacing::new(60_000);
        let reset = start + 1000 * MS;
        pacing.grant(start);
        pacing.observe(start, &observation(0, reset, 100), 0, NO_JITTER);
        pacing.release();
        assert_eq!(pacing.decide(reset), Decision::Go);
        let epoch = pacing.grant(reset);
        // Granted after the presumed reset, yet the server answers from the old window.
        pacing.observe(reset + MS, &observation(0, reset, 100), epoch, NO_JITTER);
        pacing.release();
        assert_eq!(pacing.reset_slack, LATE_RESET_SLACK);
        let resume = reset + MS + LATE_RESET_SLACK;
        assert_eq!(pacing.decide(reset + 2 * MS), Decision::WaitUntil(resume));
    }

    #[test]
    fn a_429_pauses_everything_until_the_time_it_names() {
        let start = Instant::now();
        let mut pacing = Pacing::new(60_000);
        pacing.grant(start);
        pacing.throttled(start, start + 3000 * MS, 10 * MS);
        pacing.release();
        assert_eq!(
            pacing.decide(start + MS),
            Decision::WaitUntil(start + 3010 * MS)
        );
        assert_eq!(pacing.decide(start + 3010 * MS), Decision::Go);
    }

    #[test]
    fn rate_limit_headers_are_read_in_every_documented_form() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", HeaderValue::from_static("1000"));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("998"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1800000030"));
        headers.insert("retry-after", HeaderValue::from_static("7"));
        let parsed = RateLimitHeaders::from_headers(&headers);
        assert_eq!(parsed.limit, Some(1000));
        assert_eq!(parsed.remaining, Some(998));
        assert_eq!(parsed.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(
            parsed.until_reset(1_800_000_000.0),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parsed.until_reset(1_800_000_100.0), Some(Duration::ZERO));

        // A server clock far from ours wins (its Date header), a near one does not.
        let skewed = RateLimitHeaders {
            date: Some(1_799_999_990.0),
            ..parsed
        };
        assert_eq!(
            skewed.until_reset(1_800_000_000.0),
            Some(Duration::from_secs(40))
        );
        let near = RateLimitHeaders {
            date: Some(1_800_000_001.0),
            ..parsed
        };
        assert_eq!(
            near.until_reset(1_800_000_000.0),
            Some(Duration::from_secs(30))
        );

        // Milliseconds and a seconds-from-now delta are recognised too.
        let millis = RateLimitHeaders {
            reset: Some(1_800_000_030_500),
            ..parsed
        };
        assert_eq!(
            millis.until_reset(1_800_000_000.0),
            Some(Duration::from_millis(30_500))
        );
        let delta = RateLimitHeaders {
            reset: Some(12),
            ..parsed
        };
        assert_eq!(
            delta.until_reset(1_800_000_000.0),
            Some(Duration::from_secs(12))
        );
    }

    #[test]
    fn a_retry_after_date_is_read_against_the_server_clock() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "date",
            HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT"),
        );
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2026 07:28:05 GMT"),
        );
        let parsed = RateLimitHeaders::from_headers(&headers);
        assert_eq!(parsed.retry_after, Some(Duration::from_secs(5)));
        assert_eq!(
            RateLimitHeaders::from_headers(&HeaderMap::new()),
            RateLimitHeaders::default()
        );
    }

    #[test]
    fn a_window_identity_is_the_absolute_reset_second() {
        let now = Instant::now();
        let headers = RateLimitHeaders {
            remaining: Some(3),
            reset: Some(1_800_000_030),
            ..RateLimitHeaders::default()
        };
        let observed = headers.observation(now, 1_800_000_000.25);
        assert_eq!(observed.window_id, Some(1_800_000_030));
        assert_eq!(observed.reset_at, Some(now + Duration::from_millis(29_750)));
    }

    #[test]
    fn a_reset_or_retry_after_far_in_the_future_is_read_as_one_window() {
        let local = 1_800_000_000.0;
        for reset in [
            "99999999999",
            "99999999999999",
            "999999999",
            "1e300",
            "18446744073709551616",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            headers.insert("x-ratelimit-reset", HeaderValue::from_str(reset).unwrap());
            let parsed = RateLimitHeaders::from_headers(&headers);
            assert_eq!(parsed.until_reset(local), Some(MAX_RESET_WAIT), "{reset}");
            assert_eq!(
                parsed.beyond_window(local).map(|(header, _)| header),
                Some("X-RateLimit-Reset"),
                "{reset}"
            );
            let answered = Answered {
                headers: parsed,
                throttled: false,
            };
            assert!(wait_after_answers(&[answered], local) <= MAX_PACING_WAIT);
        }
        for retry_after in ["99999999", "1e308", "Fri, 01 Jan 9999 00:00:00 GMT"] {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", HeaderValue::from_str(retry_after).unwrap());
            let parsed = RateLimitHeaders::from_headers(&headers);
            assert_eq!(
                parsed.retry_after_capped(),
                Some(MAX_RESET_WAIT),
                "{retry_after}"
            );
            let answered = Answered {
                headers: parsed,
                throttled: true,
            };
            let wait = wait_after_answers(&[answered], local);
            assert!(
                wait >= MAX_RESET_WAIT && wait <= MAX_PACING_WAIT,
                "{wait:?}"
            );
        }
        // A sound reset is neither cut short nor reported.
        let sound = RateLimitHeaders {
            reset: Some(1_800_000_060),
            remaining: Some(0),
            ..RateLimitHeaders::default()
        };
        assert_eq!(sound.until_reset(local), Some(Duration::from_secs(60)));
        assert_eq!(sound.beyond_window(local), None);
    }

    #[test]
    fn answers_after_an_absurd_reset_are_read_as_newer_windows() {
        let start = Instant::now();
        let local = 1_800_000_000.0;
        let mut pacing = Pacing::new(60_000);
        let absurd = RateLimitHeaders {
            limit: Some(10),
            remaining: Some(0),
            reset: Some(99_999_999_999),
            ..RateLimitHeaders::default()
        };
        pacing.grant(start);
        pacing.observe(start, &absurd.observation(start, local), 0, NO_JITTER);
        pacing.release();
        let resume = start + MAX_RESET_WAIT;
        assert_eq!(pacing.decide(start + MS), Decision::WaitUntil(resume));
        // After the window, a sound answer describes the window as it is.
        let epoch = pacing.grant(resume);
        let later_local = local + MAX_RESET_WAIT.as_secs_f64();
        let sound = RateLimitHeaders {
            limit: Some(10),
            remaining: Some(7),
            reset: Some(1_800_000_100),
            ..RateLimitHeaders::default()
        };
        pacing.observe(
            resume,
            &sound.observation(resume, later_local),
            epoch,
            NO_JITTER,
        );
        pacing.release();
        assert_eq!(pacing.remaining_estimate(), Some(7));
    }

    #[test]
    fn header_numbers_out_of_every_range_never_panic() {
        for value in [
            "nan", "inf", "-inf", "-1", "1e400", "0x10", "", " 12.5 ", "-0",
        ] {
            let mut headers = HeaderMap::new();
            for name in [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "retry-after",
            ] {
                headers.insert(name, HeaderValue::from_str(value).unwrap());
            }
            let parsed = RateLimitHeaders::from_headers(&headers);
            for local in [f64::NAN, -1e300, 0.0, 1_800_000_000.0, 1e300] {
                for throttled in [false, true] {
                    let answered = Answered {
                        headers: parsed,
                        throttled,
                    };
                    assert!(wait_after_answers(&[answered, answered], local) <= MAX_PACING_WAIT);
                }
            }
        }
    }

    impl Pacing {
        fn remaining_estimate(&self) -> Option<i64> {
            self.window.as_ref().map(|window| window.remaining)
        }
    }
}

/// Properties of the pacing arithmetic over arbitrary budgets, windows and requests in
/// flight: simulated time, no sleeping.
#[cfg(test)]
mod pacing_properties {
    use proptest::prelude::*;

    use super::*;

    /// What the first response of a simulation says, and what was in flight when it came.
    #[derive(Clone, Debug)]
    struct Window {
        budget: u32,
        limit: Option<u32>,
        remaining: u32,
        reset: Duration,
        /// Requests in flight when the response came, the answered one included.
        in_flight: u32,
        jitter: Duration,
    }

    fn window() -> impl Strategy<Value = Window> {
        (
            // Small budgets too, where the budget rather than the window sets the pace.
            prop_oneof![1u32..=100, 1u32..=2_000, 1u32..=100_000],
            proptest::option::of(1u32..=2_000),
            0u32..=2_000,
            (0u64..=120_000).prop_map(Duration::from_millis),
            1u32..=16,
            (0u64..=50).prop_map(Duration::from_millis),
        )
            .prop_map(
                |(budget, limit, remaining, reset, in_flight, jitter)| Window {
                    budget,
                    limit,
                    remaining,
                    reset,
                    in_flight,
                    jitter,
                },
            )
    }

    /// Pacing after `in_flight` requests went out at `start` and the first answer described
    /// `window`; that answer's permit is released, the others stay in flight.
    fn after_first_answer(window: &Window, start: Instant) -> Pacing {
        let mut pacing = Pacing::new(window.budget);
        for _ in 0..window.in_flight {
            pacing.grant(start);
        }
        let observation = Observation {
            limit: window.limit,
            remaining: Some(window.remaining),
            window_id: Some(1_800_000_000),
            reset_at: Some(start + window.reset),
        };
        pacing.observe(start, &observation, 0, window.jitter);
        pacing.release();
        pacing
    }

    /// Takes every slot `decide` gives until `until`, jumping to each time it names;
    /// returns the grant instants. Stops when it must wait for a response.
    fn grants_until(pacing: &mut Pacing, start: Instant, until: Instant) -> Vec<Instant> {
        let mut now = start;
        let mut grants = Vec::new();
        // Every step either grants or moves time forward; this bounds the loop anyway.
        for _ in 0..20_000 {
            if now >= until {
                break;
            }
            match pacing.decide(now) {
                Decision::Go => {
                    pacing.grant(now);
                    grants.push(now);
                }
                Decision::WaitUntil(next) => {
                    assert!(next > now, "a wait must move time forward");
                    now = next;
                }
                Decision::WaitForResponse => break,
            }
        }
        grants
    }

    /// A header value as a broken server might send it: sound numbers, huge ones,
    /// fractions, negatives, words and dates.
    fn header_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            (0u64..=200).prop_map(|n| n.to_string()),
            (1_799_999_000u64..=1_800_010_000).prop_map(|n| n.to_string()),
            Just("Fri, 01 Jan 9999 00:00:00 GMT".to_owned()),
            "[ -~]{0,24}",
        ]
    }

    fn answered() -> impl Strategy<Value = Answered> {
        (
            proptest::collection::vec(proptest::option::of(header_text()), 4),
            any::<bool>(),
        )
            .prop_map(|(values, throttled)| {
                let mut headers = HeaderMap::new();
                let names = [
                    "x-ratelimit-limit",
                    "x-ratelimit-remaining",
                    "x-ratelimit-reset",
                    "retry-after",
                ];
                for (name, value) in names.iter().zip(values) {
                    if let Some(value) =
                        value.and_then(|v| reqwest::header::HeaderValue::from_str(&v).ok())
                    {
                        headers.insert(*name, value);
                    }
                }
                Answered {
                    headers: RateLimitHeaders::from_headers(&headers),
                    throttled,
                }
            })
    }

    proptest! {
        #[test]
        fn no_more_than_remaining_start_before_the_reset(window in window()) {
            let start = Instant::now();
            let reset = start + window.reset;
            let mut pacing = after_first_answer(&window, start);
            let grants = grants_until(&mut pacing, start, reset + window.jitter);
            let before_reset = grants.iter().filter(|at| **at < reset).count() as u64;
            // The server may not have counted the others in flight yet: they are owed too.
            let allowed = u64::from(window.remaining).saturating_sub(u64::from(window.in_flight - 1));
            prop_assert!(
                before_reset <= allowed,
                "{} started before the reset, {} allowed", before_reset, allowed
            );
        }

        #[test]
        fn starts_never_exceed_the_budget_per_minute(window in window()) {
            let start = Instant::now();
            let mut pacing = after_first_answer(&window, start);
            let grants = grants_until(&mut pacing, start, start + window.reset + window.jitter);
            let spacing = min_spacing(window.budget);
            // The spacing is 60 s / budget rounded down to the nanosecond, so `budget + 1`
            // starts may span up to `budget` nanoseconds less than a minute.
            let minute = Duration::from_secs(60) - Duration::from_nanos(u64::from(window.budget));
            let mut previous = start; // the requests in flight went out at `start`
            for (index, at) in grants.iter().enumerate() {
                prop_assert!(*at - previous >= spacing, "start {} came {:?} after the one before", index, *at - previous);
                previous = *at;
                if let Some(later) = grants.get(index + window.budget as usize) {
                    prop_assert!(*later - *at >= minute, "{} starts within {:?}", window.budget + 1, *later - *at);
                }
            }
        }

        #[test]
        fn no_answer_makes_a_request_wait_longer_than_one_window(
            answers in proptest::collection::vec(answered(), 1..4),
            local_unix in prop_oneof![Just(1_800_000_000.0), any::<f64>()],
        ) {
            let wait = wait_after_answers(&answers, local_unix);
            prop_assert!(wait <= MAX_PACING_WAIT, "waited {:?}", wait);
        }

        #[test]
        fn once_the_reset_has_passed_the_next_request_goes(window in window()) {
            let start = Instant::now();
            let reset = start + window.reset;
            let mut pacing = after_first_answer(&window, start);
            let grants = grants_until(&mut pacing, start, reset);
            // Every request has been answered (without rate-limit headers) by the reset.
            for _ in 0..(window.in_flight - 1) as usize + grants.len() {
                pacing.release();
            }
            let last = grants.last().copied().unwrap_or(start);
            let after = (reset + window.jitter).max(last + min_spacing(window.budget));
            prop_assert_eq!(pacing.decide(after), Decision::Go);
        }
    }
}
