//! Wall-clock time as the API shows it: unix milliseconds inside, RFC 3339 outside.

use chrono::{DateTime, SecondsFormat};

/// Now, in unix milliseconds. Wall time (not `Instant`) because `X-RateLimit-Reset` and
/// `createdAt` are wall-clock values that clients compare with their own clocks.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `2026-04-01T14:30:00.000Z`: millisecond precision, like JavaScript's `toISOString`, so
/// two updates within one second still read as different `updatedAt` values.
pub(crate) fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_render_like_javascript() {
        assert_eq!(
            super::rfc3339(1_775_053_800_000),
            "2026-04-01T14:30:00.000Z"
        );
    }
}
