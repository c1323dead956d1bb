//! Wall-clock time in the configured zone, the timestamp text formats, and
//! unix time (`unix_seconds`, `unix_time`).
//!
//! The original server stored naive local times as text; so does bitsd, with
//! microseconds. Reading accepts the older forms without a fraction.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Storage format: `YYYY-MM-DD HH:MM:SS.ffffff`, local time.
const STORED: &str = "%Y-%m-%d %H:%M:%S%.6f";
/// Display format used in JSON and pages: `YYYY-MM-DD HH:MM:SS`.
const DISPLAY: &str = "%Y-%m-%d %H:%M:%S";

/// Now, in whole unix seconds (sessions' creation and expiry).
pub fn unix_seconds() -> i64 {
    unix_time() as i64
}

/// Now, in unix seconds with their fraction (the outbox's times).
pub fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A naive local time in the configured zone, as stored in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime(pub NaiveDateTime);

impl LocalTime {
    /// The text stored in the database.
    pub fn stored(&self) -> String {
        self.0.format(STORED).to_string()
    }

    /// The next `time` of day after this one: today's, or tomorrow's when
    /// today's is not later.
    pub fn next_at(&self, time: chrono::NaiveTime) -> LocalTime {
        let today = self.0.date().and_time(time);
        if today > self.0 {
            LocalTime(today)
        } else {
            LocalTime(today + chrono::Duration::days(1))
        }
    }

    /// The text shown to clients.
    pub fn display(&self) -> String {
        self.0.format(DISPLAY).to_string()
    }

    /// Parses a stored timestamp: `YYYY-MM-DD HH:MM:SS[.f]`, also with a `T`.
    pub fn parse(text: &str) -> Option<LocalTime> {
        let text = text.trim();
        [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(LocalTime)
    }

    /// Seconds since the epoch, reading the time in `tz` (the earlier of two
    /// readings in a daylight-saving fold, the moment after a gap).
    pub fn unix(&self, tz: Tz) -> i64 {
        match tz.from_local_datetime(&self.0) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.timestamp(),
            LocalResult::None => tz
                .from_local_datetime(&(self.0 + chrono::Duration::hours(1)))
                .earliest()
                .map_or_else(|| self.0.and_utc().timestamp(), |t| t.timestamp()),
        }
    }
}

/// The clock of the configured zone.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    tz: Tz,
}

impl Clock {
    pub fn new(tz: Tz) -> Self {
        Clock { tz }
    }

    pub fn zone(&self) -> Tz {
        self.tz
    }

    /// The current local time.
    pub fn now(&self) -> LocalTime {
        self.at(Utc::now())
    }

    /// `instant` as local time in the zone.
    pub fn at(&self, instant: DateTime<Utc>) -> LocalTime {
        LocalTime(instant.with_timezone(&self.tz).naive_local())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_old_and_new_forms() {
        let cases = [
            ("2013-05-01 18:00:00", "2013-05-01 18:00:00.000000"),
            ("2013-05-01 18:00:00.5", "2013-05-01 18:00:00.500000"),
            ("2013-05-01 18:00:00.123456", "2013-05-01 18:00:00.123456"),
            ("2013-05-01T18:00:00", "2013-05-01 18:00:00.000000"),
            ("2013-05-01 18:00", "2013-05-01 18:00:00.000000"),
        ];
        for (input, stored) in cases {
            let t = LocalTime::parse(input).unwrap_or_else(|| panic!("{input}"));
            assert_eq!(t.stored(), stored);
            assert_eq!(t.display(), &stored[..19]);
        }
        assert!(LocalTime::parse("yesterday").is_none());
        assert!(LocalTime::parse("2013-13-01 18:00:00").is_none());
    }

    #[test]
    fn local_time_in_zone() {
        let clock = Clock::new(chrono_tz::Europe::Rome);
        let instant = Utc.with_ymd_and_hms(2024, 7, 1, 12, 0, 0).unwrap();
        let local = clock.at(instant);
        assert_eq!(local.display(), "2024-07-01 14:00:00");
        assert_eq!(local.unix(chrono_tz::Europe::Rome), instant.timestamp());
        // 02:30 on the spring-forward day does not exist in Rome.
        let gap = LocalTime::parse("2024-03-31 02:30:00").unwrap();
        let after = LocalTime::parse("2024-03-31 03:30:00").unwrap();
        assert_eq!(
            gap.unix(chrono_tz::Europe::Rome),
            after.unix(chrono_tz::Europe::Rome)
        );
    }
}
