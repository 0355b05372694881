//! Cron schedules: 5-field crontab, or 6 fields whose first is seconds, parsed at load
//! time with croner (crontab semantics: weekday 1-5 is Monday to Friday).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer};

#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(format!(
                "{text:?} has {fields} fields; write 5 (\"*/5 * * * *\") or 6 with seconds first (\"*/10 * * * * *\")"
            ));
        }
        // croner takes a stray comma as a list with nothing in it: a field that matches no
        // value, which made a schedule that never fires and took seconds to say so.
        if let Some((index, _)) = text
            .split_whitespace()
            .enumerate()
            .find(|(_, field)| field.split(',').any(str::is_empty))
        {
            return Err(format!(
                "{text:?}: field {} has an empty item (a stray comma); list values as \"1,15,30\"",
                index + 1
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(text).map_err(|error| {
            format!("{text:?} is not a valid cron schedule ({error}); e.g. \"*/5 * * * *\"")
        })?;
        let schedule = Self {
            text: text.to_owned(),
            cron,
        };
        // Without years a schedule that fires once fires for ever; one that cannot fire
        // (the 30th of February) would leave its source silently idle.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!(
                "{text:?} never fires (no date matches it, e.g. the 30th of February); check the day and month fields"
            ));
        }
        Ok(schedule)
    }

    /// The first time strictly after `after` that the schedule fires.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crontab_weekdays_one_to_five_are_monday_to_friday() {
        let schedule = Schedule::parse("0 9 * * 1-5").unwrap();
        // Saturday 2026-11-28 → next is Monday 2026-11-30 09:00.
        let saturday = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = schedule.next_after(saturday).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-30T09:00:00+00:00");
    }

    #[test]
    fn six_fields_take_seconds_first() {
        let schedule = Schedule::parse("*/10 * * * * *").unwrap();
        let start = DateTime::parse_from_rfc3339("2026-11-28T12:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            schedule.next_after(start).unwrap().to_rfc3339(),
            "2026-11-28T12:00:10+00:00"
        );
    }

    #[test]
    fn seven_fields_and_nonsense_are_rejected_with_an_example() {
        assert!(
            Schedule::parse("0 0 * * * * 2027")
                .unwrap_err()
                .contains("fields")
        );
        assert!(Schedule::parse("61 * * * *").unwrap_err().contains("e.g."));
    }

    #[test]
    fn a_stray_comma_or_an_impossible_date_is_rejected_at_once() {
        // Found by the config_load fuzz target: croner accepted these, and finding that
        // the first never fires took seconds (15 s in a debug build).
        let error = Schedule::parse(", * 4 3 * 4").unwrap_err();
        assert!(error.contains("field 1 has an empty item"), "{error}");
        assert!(
            Schedule::parse("0 9 1,,15 * *")
                .unwrap_err()
                .contains("field 3")
        );
        let error = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(error.contains("never fires"), "{error}");
        assert!(Schedule::parse("0 0 29 2 *").is_ok(), "leap days do come");
    }
}
