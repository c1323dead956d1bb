//! Times as every page writes them: the time of day and how long ago (or
//! how long until), with the date when it is not today, e.g. "18:02 (3
//! hours ago)", "Tue 1 Dec, 18:02 (5 days ago)". The page script
//! (`assets/app.js`, `moment`) writes the same from the same [`TimeWords`].

use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::Serialize;

use super::fill;
use crate::clock::LocalTime;

/// The words of times, in one language.
#[derive(Debug, Serialize)]
pub struct TimeWords {
    /// Monday first, short.
    pub weekdays: [&'static str; 7],
    /// January first, short.
    pub months: [&'static str; 12],
    /// A day of this year: `{weekday}`, `{day}` (no leading zero), `{month}`.
    pub date: &'static str,
    /// A day of another year: the same and `{year}`.
    pub date_year: &'static str,
    /// `{date}` and `{time}` (`HH:MM`) of a day that is not today.
    pub dated: &'static str,
    /// `{time}` (with its date when not today) and `{ago}`, how long ago or
    /// until.
    pub moment: &'static str,
    /// Less than a minute either way.
    pub just_now: &'static str,
    pub minute_ago: &'static str,
    /// `{count}` minutes, two or more; and so on.
    pub minutes_ago: &'static str,
    pub hour_ago: &'static str,
    pub hours_ago: &'static str,
    pub day_ago: &'static str,
    pub days_ago: &'static str,
    pub in_minute: &'static str,
    /// `{count}` minutes from now, two or more; and so on.
    pub in_minutes: &'static str,
    pub in_hour: &'static str,
    pub in_hours: &'static str,
    pub in_day: &'static str,
    pub in_days: &'static str,
    /// A duration under a minute.
    pub under_a_minute: &'static str,
    /// `{count}` minutes of a duration; hours; days.
    pub span_minutes: &'static str,
    pub span_hours: &'static str,
    pub span_days: &'static str,
}

/// A time for a page: its text and its ISO value for `<time datetime>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moment {
    /// Local time in the configured zone, `YYYY-MM-DDTHH:MM:SS`.
    pub iso: String,
    pub text: String,
}

impl Moment {
    /// `at` as read `now`.
    pub fn new(words: &TimeWords, at: &LocalTime, now: &LocalTime) -> Moment {
        Moment {
            iso: iso(at),
            text: moment(words, at, now),
        }
    }

    /// `at` as read `now`, with its date even when it is today.
    pub fn dated(words: &TimeWords, at: &LocalTime, now: &LocalTime) -> Moment {
        Moment {
            iso: iso(at),
            text: with_ago(words, &dated_time(words, &at.0, &now.0), at, now),
        }
    }
}

/// Whole seconds from `at`, taken to the second as the JSON carries it
/// (and so the script), to `now`.
fn seconds_between(at: &LocalTime, now: &LocalTime) -> i64 {
    let at = at.0.with_nanosecond(0).unwrap_or(at.0);
    (now.0 - at).num_seconds()
}

/// `at` as `<time datetime>` takes it: a local date and time.
pub fn iso(at: &LocalTime) -> String {
    at.0.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// `at` read `now`: "18:02 (3 hours ago)", or with its date when it is
/// another day, and its year when another year.
pub fn moment(words: &TimeWords, at: &LocalTime, now: &LocalTime) -> String {
    let time = if at.0.date() == now.0.date() {
        at.0.format("%H:%M").to_string()
    } else {
        dated_time(words, &at.0, &now.0)
    };
    with_ago(words, &time, at, now)
}

/// `time`, the text of `at`, followed by how long before `now` it was.
fn with_ago(words: &TimeWords, time: &str, at: &LocalTime, now: &LocalTime) -> String {
    let ago = ago(words, seconds_between(at, now));
    fill(words.moment, &[("time", time), ("ago", &ago)])
}

/// The date and time of day of `at`: "Tue 1 Dec, 18:02".
fn dated_time(words: &TimeWords, at: &NaiveDateTime, now: &NaiveDateTime) -> String {
    let time = at.format("%H:%M").to_string();
    fill(
        words.dated,
        &[("date", &date(words, at, now)), ("time", &time)],
    )
}

/// The day of `at`, with its year unless it is the year of `now`.
pub fn date(words: &TimeWords, at: &NaiveDateTime, now: &NaiveDateTime) -> String {
    let phrase = if at.year() == now.year() {
        words.date
    } else {
        words.date_year
    };
    fill(
        phrase,
        &[
            (
                "weekday",
                words.weekdays[at.weekday().num_days_from_monday() as usize],
            ),
            ("day", &at.day().to_string()),
            ("month", words.months[at.month0() as usize]),
            ("year", &at.year().to_string()),
        ],
    )
}

/// How long ago, `seconds` before now (whole minutes, hours, days, rounded
/// down), or, for a negative `seconds`, how long from now (rounded up);
/// "just now" within a minute either way.
pub fn ago(words: &TimeWords, seconds: i64) -> String {
    if seconds.abs() < 60 {
        return words.just_now.to_string();
    }
    let future = seconds < 0;
    let s = seconds.abs();
    let unit = match s {
        s if s < 3600 => 60,
        s if s < 86_400 => 3600,
        _ => 86_400,
    };
    let count = if future {
        (s + unit - 1) / unit
    } else {
        s / unit
    };
    // Rounded up, 59.5 minutes from now reads as an hour.
    let (unit, count) = match (unit, count) {
        (60, 60) => (3600, 1),
        (3600, 24) => (86_400, 1),
        other => other,
    };
    let (one, many) = match (future, unit) {
        (false, 60) => (words.minute_ago, words.minutes_ago),
        (false, 3600) => (words.hour_ago, words.hours_ago),
        (false, _) => (words.day_ago, words.days_ago),
        (true, 60) => (words.in_minute, words.in_minutes),
        (true, 3600) => (words.in_hour, words.in_hours),
        (true, _) => (words.in_day, words.in_days),
    };
    if count == 1 {
        one.to_string()
    } else {
        fill(many, &[("count", &count.to_string())])
    }
}

/// A duration of `seconds`: "40 min", "2 h 15 min", "3 d 2 h" (the two
/// largest units, rounded down).
pub fn duration(words: &TimeWords, seconds: i64) -> String {
    let minutes = seconds.max(0) / 60;
    let part = |phrase: &str, count: i64| fill(phrase, &[("count", &count.to_string())]);
    let (big, small) = match minutes {
        0 => return words.under_a_minute.to_string(),
        m if m < 60 => return part(words.span_minutes, m),
        m if m < 24 * 60 => (part(words.span_hours, m / 60), (words.span_minutes, m % 60)),
        m => (
            part(words.span_days, m / (24 * 60)),
            (words.span_hours, m / 60 % 24),
        ),
    };
    match small {
        (_, 0) => big,
        (phrase, count) => format!("{big} {}", part(phrase, count)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words::{Lang, of};

    fn at(text: &str) -> LocalTime {
        LocalTime::parse(text).unwrap()
    }

    #[test]
    fn a_time_reads_with_how_long_ago_and_its_date_when_not_today() {
        let now = at("2026-12-06 21:05:00");
        let en = &of(Lang::En).times;
        let it = &of(Lang::It).times;
        for (when, english, italian) in [
            (
                "2026-12-06 18:02:59",
                "18:02 (3 hours ago)",
                "18:02 (3 ore fa)",
            ),
            ("2026-12-06 21:04:30", "21:04 (just now)", "21:04 (adesso)"),
            (
                "2026-12-06 20:50:00",
                "20:50 (15 minutes ago)",
                "20:50 (15 minuti fa)",
            ),
            (
                "2026-12-06 20:04:00",
                "20:04 (1 hour ago)",
                "20:04 (1 ora fa)",
            ),
            (
                "2026-12-05 23:30:00",
                "Sat 5 Dec, 23:30 (21 hours ago)",
                "sab 5 dic, 23:30 (21 ore fa)",
            ),
            (
                "2026-12-01 18:02:00",
                "Tue 1 Dec, 18:02 (5 days ago)",
                "mar 1 dic, 18:02 (5 giorni fa)",
            ),
            (
                "2026-12-05 21:00:00",
                "Sat 5 Dec, 21:00 (1 day ago)",
                "sab 5 dic, 21:00 (1 giorno fa)",
            ),
            (
                "2025-12-31 09:05:00",
                "Wed 31 Dec 2025, 09:05 (340 days ago)",
                "mer 31 dic 2025, 09:05 (340 giorni fa)",
            ),
            (
                "2026-12-06 21:20:00",
                "21:20 (in 15 minutes)",
                "21:20 (tra 15 minuti)",
            ),
            ("2026-12-06 21:05:30", "21:05 (just now)", "21:05 (adesso)"),
            (
                "2026-12-07 09:00:00",
                "Mon 7 Dec, 09:00 (in 12 hours)",
                "lun 7 dic, 09:00 (tra 12 ore)",
            ),
            (
                "2027-01-06 10:00:00",
                "Wed 6 Jan 2027, 10:00 (in 31 days)",
                "mer 6 gen 2027, 10:00 (tra 31 giorni)",
            ),
        ] {
            assert_eq!(moment(en, &at(when), &now), english, "{when}");
            assert_eq!(moment(it, &at(when), &now), italian, "{when}");
        }
    }

    #[test]
    fn how_long_ago_and_until() {
        let en = &of(Lang::En).times;
        let it = &of(Lang::It).times;
        for (seconds, english, italian) in [
            (-5, "just now", "adesso"),
            (59, "just now", "adesso"),
            (60, "1 minute ago", "1 minuto fa"),
            (3599, "59 minutes ago", "59 minuti fa"),
            (7300, "2 hours ago", "2 ore fa"),
            (86_400, "1 day ago", "1 giorno fa"),
            (3 * 86_400 + 5, "3 days ago", "3 giorni fa"),
            (-60, "in 1 minute", "tra 1 minuto"),
            (-899, "in 15 minutes", "tra 15 minuti"),
            (-900, "in 15 minutes", "tra 15 minuti"),
            (-3590, "in 1 hour", "tra 1 ora"),
            (-7200, "in 2 hours", "tra 2 ore"),
            (-86_000, "in 1 day", "tra 1 giorno"),
            (-2 * 86_400, "in 2 days", "tra 2 giorni"),
        ] {
            assert_eq!(ago(en, seconds), english, "{seconds}");
            assert_eq!(ago(it, seconds), italian, "{seconds}");
        }
    }

    #[test]
    fn durations_in_the_two_largest_units() {
        let en = &of(Lang::En).times;
        let it = &of(Lang::It).times;
        // (`_` for the no-break space within each unit)
        for (seconds, english, italian) in [
            (20, "under a minute", "meno di un minuto"),
            (40 * 60 + 59, "40_min", "40_min"),
            (2 * 3600, "2_h", "2_h"),
            (2 * 3600 + 15 * 60 + 30, "2_h 15_min", "2_h 15_min"),
            (3 * 86_400 + 2 * 3600 + 59, "3_d 2_h", "3_g 2_h"),
            (86_400 + 60, "1_d", "1_g"),
        ] {
            assert_eq!(
                duration(en, seconds),
                english.replace('_', "\u{a0}"),
                "{seconds}"
            );
            assert_eq!(
                duration(it, seconds),
                italian.replace('_', "\u{a0}"),
                "{seconds}"
            );
        }
    }

    #[test]
    fn a_dated_time_has_its_date_also_today() {
        let now = at("2026-12-06 21:05:00");
        let m = Moment::dated(&of(Lang::It).times, &at("2026-12-06 18:02:00"), &now);
        assert_eq!(m.text, "dom 6 dic, 18:02 (3 ore fa)");
    }

    #[test]
    fn the_iso_value_is_a_local_date_and_time() {
        let m = Moment::new(
            &of(Lang::En).times,
            &at("2026-12-01 18:02:07.250"),
            &at("2026-12-01 18:30:00"),
        );
        assert_eq!(m.iso, "2026-12-01T18:02:07");
        assert_eq!(m.text, "18:02 (27 minutes ago)");
    }
}
