//! How long to wait before trying again, written once for the daemon and the connectors:
//! exponential backoff with a cap, full jitter, ±N % jitter, a wait a server asked for
//! clamped to a cap, and the one `Retry-After` reader (docs/architecture.md, section 4).
//!
//! It lives in the connectors crate because both sides need it and the daemon already
//! depends on this crate; nothing here knows about a connector.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Exponential backoff: `first`, doubling after every failure, never beyond `cap` (nor
/// below `first`: a cap set under the first step does not shorten it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Self { first, cap }
    }

    /// The wait before retry number `retry` (0 is the first retry): `first × 2^retry`,
    /// capped. Saturates instead of overflowing, however many failures came before.
    pub fn step(&self, retry: u32) -> Duration {
        self.first
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.cap.max(self.first))
    }

    /// [`Backoff::step`] with [`full_jitter`].
    pub fn full_jitter(&self, retry: u32) -> Duration {
        full_jitter(self.step(retry))
    }
}

/// A number a server put in a header (`10000`, `2`, `1.5`, a Unix time), for the Clairo
/// limiter and the CRMs alike: `None` unless it is finite; a negative one reads as 0. A
/// server that went over its own count says so with a negative Remaining, which means
/// none left (wait for the reset), and a negative time to the reset means it has passed.
pub fn header_number(text: &str) -> Option<f64> {
    // Exact for every integer below 2^53, which covers any sound count or reset (Unix
    // milliseconds included); beyond that only the number's size matters.
    let value = text.trim().parse::<f64>().ok()?;
    value.is_finite().then_some(value.max(0.0))
}

/// "Full jitter": uniformly anywhere from zero to `step`, so that many clients failing
/// together do not retry together.
pub fn full_jitter(step: Duration) -> Duration {
    let nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// A random factor in `[1 - fraction, 1 + fraction]`, for [`scaled_within`].
pub fn jitter_factor(fraction: f64) -> f64 {
    rand::rng().random_range((1.0 - fraction)..=(1.0 + fraction))
}

/// `wait` times `factor`, the factor first clamped to `[1 - fraction, 1 + fraction]`: the
/// pure half of a ±N % jitter, so a caller's schedule can be tested with chosen factors.
pub fn scaled_within(wait: Duration, factor: f64, fraction: f64) -> Duration {
    wait.mul_f64(factor.clamp(1.0 - fraction, 1.0 + fraction))
}

/// `wait` moved randomly by up to ±`fraction` (0.2 for ±20 %), so that things that
/// failed together do not all come back at the same instant.
pub fn jittered(wait: Duration, fraction: f64) -> Duration {
    scaled_within(wait, jitter_factor(fraction), fraction)
}

/// A wait of `seconds` as a server gave it (any number, NaN included), as a duration in
/// `0..=cap`: a server's number is checked before any arithmetic, and no answer can make
/// a wait longer than the caller's cap.
pub fn clamped_seconds(seconds: f64, cap: Duration) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        Duration::ZERO
    } else if seconds >= cap.as_secs_f64() {
        cap
    } else {
        Duration::from_secs_f64(seconds)
    }
}

/// The `Retry-After` of `headers`, read by [`parse_retry_after`]; uncapped.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, now)
}

/// A `Retry-After` value: delay-seconds, or an HTTP date (IMF-fixdate, RFC 850 or asctime,
/// RFC 9110 section 5.6.7) read against `now` (the server's `Date` when the caller trusts it
/// more than this host's clock).
///
/// Left uncapped (up to what a `Duration` holds, a huge number saturating) so that a caller
/// can report an absurd one; every caller caps it. Some servers send a fraction ("1.5"),
/// which is honoured. Nothing usable is `None`, the caller's own backoff then applying: a
/// value that is neither form, a negative number, or a date already past (which names no
/// wait; a clock a little off ours must not turn it into a burst of retries).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
    }
    http_date(value)?.duration_since(now).ok()
}

/// An HTTP date (`Date`, `Retry-After`) in any of its three forms: IMF-fixdate
/// ("Sun, 06 Nov 1994 08:49:37 GMT"), RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT") and
/// asctime ("Sun Nov  6 08:49:37 1994").
pub fn http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn now() -> SystemTime {
        httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap()
    }

    #[test]
    fn header_numbers_are_finite_and_a_negative_one_reads_as_zero() {
        assert_eq!(header_number(" 12.5 "), Some(12.5));
        assert_eq!(header_number("-1"), Some(0.0));
        for bad in ["nan", "inf", "-inf", "1e400", "0x10", ""] {
            assert_eq!(header_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_reads_all_three_http_date_forms() {
        let two_minutes = Some(Duration::from_secs(120));
        for date in [
            "Wed, 21 Oct 2026 07:30:00 GMT",
            "Wednesday, 21-Oct-26 07:30:00 GMT",
            "Wed Oct 21 07:30:00 2026",
        ] {
            assert_eq!(parse_retry_after(date, now()), two_minutes, "{date}");
        }
    }

    #[test]
    fn retry_after_reads_delay_seconds_and_tolerates_a_fraction() {
        assert_eq!(parse_retry_after("3", now()), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn a_huge_retry_after_saturates_instead_of_overflowing() {
        for huge in ["99999999999999999999999", "1e308"] {
            assert_eq!(
                parse_retry_after(huge, now()),
                Some(Duration::MAX),
                "{huge}"
            );
        }
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()),
            Some(
                httpdate::parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT")
                    .unwrap()
                    .duration_since(now())
                    .unwrap()
            )
        );
    }

    #[test]
    fn garbage_a_negative_number_or_a_past_date_names_no_wait() {
        for value in [
            "",
            "soon",
            "nan",
            "inf",
            "-1",
            "0x10",
            "Wed, 21 Oct 2026 07:00:00 GMT",
            "Wed, 21 Oct 2026 07:30:00 +0100",
            "Thu, 21 Oct 2026 07:30:00 GMT, again",
        ] {
            assert_eq!(parse_retry_after(value, now()), None, "{value}");
        }
    }

    #[test]
    fn retry_after_is_read_from_the_headers_when_present() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now()), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now()), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_bytes(b"\xff7").unwrap());
        assert_eq!(retry_after(&headers, now()), None);
    }

    #[test]
    fn backoff_steps_double_up_to_the_cap_and_never_overflow() {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(backoff.step(0), Duration::from_millis(500));
        assert_eq!(backoff.step(3), Duration::from_secs(4));
        assert_eq!(backoff.step(6), Duration::from_secs(30));
        assert_eq!(backoff.step(30), Duration::from_secs(30));
        assert_eq!(backoff.step(u32::MAX), Duration::from_secs(30));
        let inverted = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(inverted.step(4), Duration::from_secs(5));
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_step() {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        for retry in 0..10 {
            assert!(backoff.full_jitter(retry) <= backoff.step(retry));
        }
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
        // Beyond u64 nanoseconds (584 years) it is still a wait, not a panic.
        let _ = full_jitter(Duration::MAX);
    }

    #[test]
    fn plus_minus_jitter_stays_within_its_fraction() {
        let wait = Duration::from_secs(100);
        for _ in 0..1000 {
            let factor = jitter_factor(0.2);
            assert!((0.8..=1.2).contains(&factor), "{factor}");
            let moved = jittered(wait, 0.2);
            assert!(moved >= Duration::from_secs(80) && moved <= Duration::from_secs(120));
        }
        assert_eq!(scaled_within(wait, 9.0, 0.2), Duration::from_secs(120));
        assert_eq!(scaled_within(wait, -9.0, 0.2), Duration::from_secs(80));
    }

    #[test]
    fn a_server_wait_is_clamped_to_the_cap_and_never_negative() {
        let cap = Duration::from_secs(65);
        assert_eq!(clamped_seconds(1.5, cap), Duration::from_millis(1500));
        assert_eq!(clamped_seconds(1e300, cap), cap);
        assert_eq!(clamped_seconds(f64::INFINITY, cap), cap);
        assert_eq!(clamped_seconds(-3.0, cap), Duration::ZERO);
        assert_eq!(clamped_seconds(f64::NAN, cap), Duration::ZERO);
    }
}
