//! HubSpot's rate limits: how long a 429 asks to wait, and when the daily limit resets.
//! The daily limit resets at midnight in the account's time zone, which no header or error
//! body states; the connector reads the zone from the account's details and keeps it.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Days, FixedOffset, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::crm;
use crate::http::{self, MAX_WAIT};

/// The window of HubSpot's TEN_SECONDLY_ROLLING limit, for a 429 whose headers do not
/// say it (`X-HubSpot-RateLimit-Interval-Milliseconds`).
pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The widest offset a time zone has from UTC (UTC+14, UTC−12, with room): an account's
/// `utcOffsetMilliseconds` beyond it is not believed.
const MAX_OFFSET_MILLIS: i64 = 18 * 60 * 60 * 1000;

/// The account's time zone, as its details give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Zone {
    /// `US/Eastern`, `Europe/Berlin`: what the reason names.
    pub name: String,
    /// The offset in force when it was read. A daylight-saving change between then and
    /// the reset moves the retry by an hour at most, once, and the zone is read again
    /// every [`super::ZONE_FRESH_FOR`].
    pub offset: FixedOffset,
}

impl Zone {
    /// From `GET /account-info/v3/details`: `timeZone` and `utcOffsetMilliseconds` (or
    /// `utcOffset`, `-05:00`). `None` when neither offset is there or believable.
    pub fn from_details(details: &Value) -> Option<Self> {
        let name = details
            .get("timeZone")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|name| !name.is_empty() && name.len() <= 64)
            .unwrap_or("the account's time zone")
            .to_owned();
        let millis = details
            .get("utcOffsetMilliseconds")
            .and_then(Value::as_i64)
            .or_else(|| {
                details
                    .get("utcOffset")
                    .and_then(Value::as_str)
                    .and_then(offset_millis)
            })
            .filter(|millis| millis.abs() <= MAX_OFFSET_MILLIS)?;
        let offset = FixedOffset::east_opt(i32::try_from(millis / 1000).ok()?)?;
        Some(Self { name, offset })
    }
}

/// `-05:00` / `+05:30` as milliseconds.
fn offset_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => (1, text),
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let hours: i64 = hours.parse().ok()?;
    let minutes: i64 = minutes.parse().ok()?;
    (hours <= 18 && minutes < 60).then(|| sign * (hours * 3600 + minutes * 60) * 1000)
}

/// The next midnight after `now` in the zone of `offset`, as a UTC time.
pub(super) fn next_midnight(now: DateTime<Utc>, offset: FixedOffset) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&offset);
    let midnight = local
        .date_naive()
        .checked_add_days(Days::new(1))?
        .and_hms_opt(0, 0, 0)?
        .and_local_timezone(offset)
        .single()?;
    Some(midnight.with_timezone(&Utc))
}

/// How long a 429 asks to wait, and why, in words for the delivery's reason.
/// `Retry-After` first; else the policy HubSpot names: DAILY waits for the daily reset
/// (midnight in `zone`, or UTC when the zone is unknown), anything else one rolling
/// interval. Every wait is capped at [`MAX_WAIT`].
pub(super) fn rate_limit_wait(
    headers: &HeaderMap,
    body: &Value,
    zone: Option<&Zone>,
    now: DateTime<Utc>,
    clock: SystemTime,
) -> (Duration, String) {
    if let Some(wait) = http::retry_after(headers, clock) {
        return (
            wait,
            format!("it asked to wait {}s (Retry-After)", wait.as_secs()),
        );
    }
    let policy = body.get("policyName").and_then(Value::as_str).unwrap_or("");
    let daily_spent =
        crm::header_number(headers, "x-hubspot-ratelimit-daily-remaining") == Some(0.0);
    if policy.eq_ignore_ascii_case("DAILY") || (policy.is_empty() && daily_spent) {
        return daily_wait(zone, now);
    }
    let interval = crm::header_number(headers, "x-hubspot-ratelimit-interval-milliseconds")
        .map(|millis| Duration::from_millis(millis.min(MAX_WAIT.as_millis() as f64).ceil() as u64))
        .filter(|interval| !interval.is_zero())
        .unwrap_or(DEFAULT_INTERVAL)
        .min(MAX_WAIT);
    let limit = if policy.is_empty() {
        "the rolling limit"
    } else {
        policy
    };
    (
        interval,
        format!(
            "{limit} is used up; waiting one interval of {}ms",
            interval.as_millis()
        ),
    )
}

/// The wait until the daily limit resets, and the reason naming the time.
fn daily_wait(zone: Option<&Zone>, now: DateTime<Utc>) -> (Duration, String) {
    let utc = FixedOffset::east_opt(0).expect("zero is a valid offset");
    let (offset, zone_words) = match zone {
        Some(zone) => (zone.offset, format!("{} (UTC{})", zone.name, zone.offset)),
        None => (
            utc,
            "UTC, as the account's time zone could not be read (see the log)".to_owned(),
        ),
    };
    let Some(reset) = next_midnight(now, offset) else {
        return (
            MAX_WAIT,
            "the daily limit is used up; retrying in 24h".to_owned(),
        );
    };
    let wait = (reset - now).to_std().unwrap_or(MAX_WAIT).min(MAX_WAIT);
    let local = reset.with_timezone(&offset);
    (
        wait,
        format!(
            "the daily limit is used up; it resets at midnight in the account's time zone, \
             {zone_words}: retrying at {} there ({} UTC), in {}",
            local.format("%Y-%m-%d %H:%M"),
            reset.format("%Y-%m-%d %H:%M"),
            hours_minutes(wait)
        ),
    )
}

/// `3h 12m`, `45m`.
fn hours_minutes(wait: Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60);
    match (minutes / 60, minutes % 60) {
        (0, minutes) => format!("{minutes}m"),
        (hours, minutes) => format!("{hours}h {minutes}m"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_daily_reset_is_midnight_in_the_accounts_time_zone() {
        let zone = Zone::from_details(&json!({
            "portalId": 1, "timeZone": "US/Eastern", "utcOffset": "-05:00",
            "utcOffsetMilliseconds": -18_000_000,
        }))
        .unwrap();
        // 23:00 UTC is 18:00 in New York: six hours to go, not one.
        let (wait, reason) = daily_wait(Some(&zone), at("2026-04-01T23:00:00Z"));
        assert_eq!(wait, Duration::from_secs(6 * 3600));
        assert!(
            reason.contains("retrying at 2026-04-02 00:00 there (2026-04-02 05:00 UTC)"),
            "{reason}"
        );
        assert!(reason.contains("US/Eastern (UTC-05:00)"), "{reason}");
    }

    #[test]
    fn without_the_zone_the_daily_reset_is_midnight_utc_and_says_so() {
        let (wait, reason) = daily_wait(None, at("2026-04-01T23:59:30Z"));
        assert_eq!(wait, Duration::from_secs(30));
        assert!(reason.contains("could not be read"), "{reason}");
    }

    #[test]
    fn an_unbelievable_offset_is_not_used() {
        assert_eq!(
            Zone::from_details(&json!({"timeZone": "X", "utcOffsetMilliseconds": i64::MAX})),
            None
        );
        let zone = Zone::from_details(&json!({"timeZone": "Asia/Kolkata", "utcOffset": "+05:30"}));
        assert_eq!(zone.unwrap().offset, FixedOffset::east_opt(19_800).unwrap());
    }

    #[test]
    fn retry_after_wins_over_hubspots_policy_and_a_huge_interval_is_capped() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        headers.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            "10000".parse().unwrap(),
        );
        let body = json!({"policyName": "TEN_SECONDLY_ROLLING"});
        let (wait, _) = rate_limit_wait(&headers, &body, None, Utc::now(), SystemTime::now());
        assert_eq!(wait, Duration::from_secs(7));

        let (wait, _) = rate_limit_wait(
            &HeaderMap::new(),
            &json!({}),
            None,
            Utc::now(),
            SystemTime::now(),
        );
        assert_eq!(wait, DEFAULT_INTERVAL);

        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            "1e300".parse().unwrap(),
        );
        let (wait, _) = rate_limit_wait(&headers, &body, None, Utc::now(), SystemTime::now());
        assert_eq!(wait, MAX_WAIT);
    }
}
