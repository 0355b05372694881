//! A connector's pace (`[connectors.NAME] rate_limit = "N/s" | "N/m"`): at most N
//! deliveries start in any one-second or one-minute window, spaced evenly, so that a
//! first-start backfill does not flood a small SMTP relay or a chat channel.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// `N/s` or `N/m`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: NonZeroU32,
    /// One second or one minute.
    pub per: Duration,
}

impl RateLimit {
    /// The time between two starts: the window over N.
    pub fn spacing(&self) -> Duration {
        self.per / self.count.get()
    }
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let wrong = || {
            format!(
                "{text:?} is not a rate; write \"N/s\" or \"N/m\" (deliveries per second or per minute), e.g. \"5/s\" or \"30/m\""
            )
        };
        let (count, unit) = text.trim().split_once('/').ok_or_else(wrong)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(wrong()),
        };
        let count: u32 = count.trim().parse().map_err(|_| wrong())?;
        let count = NonZeroU32::new(count).ok_or_else(|| {
            format!(
                "{text:?} would never deliver anything; write at least \"1/m\", or remove `rate_limit` to deliver as fast as the receiver takes them"
            )
        })?;
        Ok(Self { count, per })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per == Duration::from_secs(1) {
            "s"
        } else {
            "m"
        };
        write!(f, "{}/{unit}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_and_per_minute_are_read_and_anything_else_is_refused() {
        let five: RateLimit = "5/s".parse().unwrap();
        assert_eq!(five.spacing(), Duration::from_millis(200));
        let thirty: RateLimit = " 30/m ".parse().unwrap();
        assert_eq!(thirty.spacing(), Duration::from_secs(2));
        assert_eq!(thirty.to_string(), "30/m");
        for wrong in ["5", "5/h", "5/sec", "/s", "x/s", "-1/s", "5/s/s", ""] {
            let error = wrong.parse::<RateLimit>().unwrap_err();
            assert!(
                error.contains("write \"N/s\" or \"N/m\""),
                "{wrong}: {error}"
            );
        }
        assert!(
            "0/s"
                .parse::<RateLimit>()
                .unwrap_err()
                .contains("never deliver")
        );
    }
}
