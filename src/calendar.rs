//! The iCalendar feed of `/openings.ics`: past openings and the probable
//! ones of the coming week.
//!
//! Pure: openings from status changes, probable runs from the forecast, and
//! the RFC 5545 text (CRLF, lines folded at 75 octets, TEXT escaped), all
//! in UTC. The writer is our own: the `icalendar` crate lets the last piece
//! of a folded line reach 76 octets, and a feed this plain needs none of
//! its model.

use chrono::{DateTime, Duration, DurationRound, Timelike, Utc};
use chrono_tz::Tz;

use crate::clock::LocalTime;
use crate::presence::{Forecast, SLOTS};
use crate::record::StatusChange;

/// Days of forecast the feed looks ahead.
pub const AHEAD_DAYS: i64 = 7;
/// Least forecast of a half hour counted as probably open.
pub const PROBABLE: f64 = 0.5;

/// One opening: from the change that opened the room to the one that
/// closed it, or still going on (`end` unset), perhaps until a time
/// somebody said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub start: LocalTime,
    pub end: Option<LocalTime>,
    /// Until when an opening still going on stays open, as said.
    pub until: Option<LocalTime>,
}

/// The openings among `changes` (oldest first), with `before` the change
/// in force before the first of them. An opening lasts from the first
/// `open` to the next change that is not `open` (`closed`, or an old `away`).
pub fn openings(before: Option<&StatusChange>, changes: &[StatusChange]) -> Vec<Opening> {
    let mut found = Vec::new();
    let mut started = before.filter(|c| c.value.is_open()).map(|c| c.timestamp);
    for change in changes {
        match (started, change.value.is_open()) {
            (None, true) => started = Some(change.timestamp),
            (Some(start), false) => {
                found.push(Opening {
                    start,
                    end: Some(change.timestamp),
                    until: None,
                });
                started = None;
            }
            _ => {}
        }
    }
    if let Some(start) = started {
        // The newest change says until when, if anybody did.
        let until = changes.last().or(before).and_then(|c| c.until);
        found.push(Opening {
            start,
            end: None,
            until,
        });
    }
    found
}

/// A stored local time in UTC, read as the rest of bitsd reads it
/// ([`LocalTime::unix`]).
pub fn utc(time: LocalTime, tz: Tz) -> DateTime<Utc> {
    DateTime::from_timestamp(time.unix(tz), 0).unwrap_or_default()
}

/// The runs of consecutive half hours, over the [`AHEAD_DAYS`] days after
/// `now`, whose forecast is at least [`PROBABLE`]: `(start, end)` in UTC.
///
/// Half hours are stepped in UTC and looked up by their wall-clock time in
/// `tz`, so the forecast's slots keep their local time across a
/// daylight-saving change.
pub fn probable_runs(
    forecast: &Forecast,
    now: DateTime<Utc>,
    tz: Tz,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let half_hour = Duration::minutes(30);
    let floor = now.duration_trunc(half_hour).unwrap_or(now);
    let first = if floor == now { now } else { floor + half_hour };
    let mut runs = Vec::new();
    let mut run: Option<DateTime<Utc>> = None;
    let steps = AHEAD_DAYS * 48;
    for step in 0..=steps {
        let at = first + half_hour * step as i32;
        let probable = step < steps && {
            let local = at.with_timezone(&tz).naive_local();
            let day = chrono::Datelike::weekday(&local).num_days_from_monday() as usize;
            let slot = (local.hour() * 2 + local.minute() / 30) as usize;
            forecast.days[day][slot.min(SLOTS - 1)] >= PROBABLE
        };
        match (run, probable) {
            (None, true) => run = Some(at),
            (Some(start), false) => {
                runs.push((start, at));
                run = None;
            }
            _ => {}
        }
    }
    runs
}

/// What the feed is made of.
pub struct Feed<'a> {
    /// The space's name, for the summaries.
    pub space: &'a str,
    pub tz: Tz,
    /// The time of the request: the end of an opening in progress.
    pub now: DateTime<Utc>,
    pub openings: &'a [Opening],
    pub probable: &'a [(DateTime<Utc>, DateTime<Utc>)],
    /// When the forecast behind `probable` was made.
    pub forecast_made: DateTime<Utc>,
}

impl Feed<'_> {
    /// The whole `VCALENDAR`.
    ///
    /// Each event's `UID` follows from its kind, its start and the space, so
    /// it is the same on every request; its `DTSTAMP` is when what it says
    /// last changed (the closing, the request for an opening in progress,
    /// the forecast), so an unchanged feed has the same text.
    pub fn render(&self) -> String {
        let mut out = Writer(String::with_capacity(
            256 + 220 * (self.openings.len() + self.probable.len()),
        ));
        out.line("BEGIN", "VCALENDAR");
        out.line("VERSION", "2.0");
        out.line("PRODID", "-//bitsd//openings//EN");
        out.line("CALSCALE", "GREGORIAN");
        let name = escape_text(&format!("{} openings", self.space));
        out.line("NAME", &name);
        out.line("X-WR-CALNAME", &name);
        let slug = slug(self.space);
        let open = escape_text(&format!("{} open", self.space));
        for opening in self.openings {
            let start = utc(opening.start, self.tz);
            // Going on: until the time said, or for now until this request.
            let end = match opening.end {
                Some(end) => utc(end, self.tz),
                None => opening
                    .until
                    .map_or(self.now, |u| utc(u, self.tz).max(self.now)),
            }
            .max(start);
            out.event(&Event {
                uid: &format!("open-{}-{slug}@bitsd", stamp(start)),
                stamp: end,
                start,
                end,
                summary: &open,
                status: "CONFIRMED",
            });
        }
        let probably = escape_text(&format!("{} probably open", self.space));
        for &(start, end) in self.probable {
            out.event(&Event {
                uid: &format!("probably-open-{}-{slug}@bitsd", stamp(start)),
                stamp: self.forecast_made,
                start,
                end,
                summary: &probably,
                status: "TENTATIVE",
            });
        }
        out.line("END", "VCALENDAR");
        out.0
    }
}

/// One `VEVENT`; `summary` already escaped.
struct Event<'a> {
    uid: &'a str,
    stamp: DateTime<Utc>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    summary: &'a str,
    status: &'static str,
}

/// RFC 5545 content lines: CRLF after each, folded at 75 octets.
struct Writer(String);

impl Writer {
    fn event(&mut self, event: &Event<'_>) {
        self.line("BEGIN", "VEVENT");
        self.line("UID", event.uid);
        self.line("DTSTAMP", &stamp(event.stamp));
        self.line("DTSTART", &stamp(event.start));
        self.line("DTEND", &stamp(event.end));
        self.line("SUMMARY", event.summary);
        self.line("STATUS", event.status);
        self.line("TRANSP", "TRANSPARENT");
        self.line("END", "VEVENT");
    }

    /// `name:value`, folded: no physical line over 75 octets, a fold never
    /// inside a UTF-8 character, each continuation led by one space.
    fn line(&mut self, name: &str, value: &str) {
        const LIMIT: usize = 75;
        let out = &mut self.0;
        out.push_str(name);
        out.push(':');
        let mut used = name.len() + 1;
        for c in value.chars() {
            let width = c.len_utf8();
            if used + width > LIMIT {
                out.push_str("\r\n ");
                used = 1;
            }
            out.push(c);
            used += width;
        }
        out.push_str("\r\n");
    }
}

/// A TEXT value (RFC 5545 3.3.11): `\`, `;`, `,` and newlines escaped;
/// other control characters, which TEXT does not allow, left out.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ`.
fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The space's name as UID material: ASCII letters and digits, lower case,
/// every other run of characters one `-`.
fn slug(space: &str) -> String {
    let mut out = String::new();
    for c in space.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    if out.is_empty() {
        "space".into()
    } else {
        out.chars().take(64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ModifiedBy, StatusValue};

    fn at(s: &str) -> LocalTime {
        LocalTime::parse(s).unwrap()
    }

    fn change(s: &str, value: StatusValue) -> StatusChange {
        StatusChange {
            timestamp: at(s),
            value,
            modified_by: ModifiedBy::Bits,
            device: None,
            until: None,
            person: None,
        }
    }

    #[test]
    fn openings_from_changes() {
        use StatusValue::*;
        let changes = [
            change("2024-01-01 10:00:00", Open),
            change("2024-01-01 11:00:00", Open),
            change("2024-01-01 12:00:00", Closed),
            change("2024-01-01 13:00:00", Closed),
            change("2024-01-01 14:00:00", Open),
            change("2024-01-01 15:00:00", Away),
            change("2024-01-01 16:00:00", Open),
            // Members only ends an opening: the calendar counts `open` only.
            change("2024-01-01 17:00:00", Members),
            // Still open, until 22:30 as somebody said.
            StatusChange {
                until: Some(at("2024-01-01 22:30:00")),
                ..change("2024-01-01 18:00:00", Open)
            },
        ];
        let before = change("2023-12-31 22:00:00", Open);
        let found = openings(Some(&before), &changes);
        assert_eq!(
            found,
            [
                Opening {
                    start: at("2023-12-31 22:00:00"),
                    end: Some(at("2024-01-01 12:00:00")),
                    until: None
                },
                Opening {
                    start: at("2024-01-01 14:00:00"),
                    end: Some(at("2024-01-01 15:00:00")),
                    until: None
                },
                Opening {
                    start: at("2024-01-01 16:00:00"),
                    end: Some(at("2024-01-01 17:00:00")),
                    until: None
                },
                Opening {
                    start: at("2024-01-01 18:00:00"),
                    end: None,
                    until: Some(at("2024-01-01 22:30:00"))
                },
            ]
        );
        let closed_before = change("2023-12-31 22:00:00", Closed);
        assert_eq!(openings(Some(&closed_before), &changes[2..4]), []);
        assert_eq!(openings(None, &[]), []);
    }

    #[test]
    fn probable_runs_in_utc_across_a_daylight_saving_change() {
        // Sundays 01:00-04:00 local; Rome springs forward on 2024-03-31 at
        // 02:00 (01:00 UTC), so that night's run is two hours long in UTC.
        let mut forecast = Forecast::default();
        for slot in 2..8 {
            forecast.days[6][slot] = 0.75;
        }
        forecast.days[2][20] = 0.49;
        let now = "2024-03-28T12:10:00Z".parse::<DateTime<Utc>>().unwrap();
        let runs = probable_runs(&forecast, now, chrono_tz::Europe::Rome);
        let utc = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            runs,
            [(utc("2024-03-31T00:00:00Z"), utc("2024-03-31T02:00:00Z"))]
        );
        // A run that goes on past the week ends with it.
        let always = Forecast {
            days: [[1.0; SLOTS]; 7],
            ..Forecast::default()
        };
        let runs = probable_runs(&always, now, chrono_tz::UTC);
        assert_eq!(
            runs,
            [(utc("2024-03-28T12:30:00Z"), utc("2024-04-04T12:30:00Z"))]
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape_text("a\\b;c,d\ne\u{7}f\tg"),
            "a\\\\b\\;c\\,d\\nef\tg"
        );
    }

    #[test]
    fn lines_fold_at_75_octets_between_characters() {
        for value in [
            "x".repeat(200),
            "é".repeat(100),
            "🦀".repeat(60),
            "aé🦀".repeat(30),
        ] {
            let mut w = Writer(String::new());
            w.line("SUMMARY", &value);
            let text = w.0;
            assert!(text.ends_with("\r\n"));
            for line in text.split_terminator("\r\n") {
                assert!(line.len() <= 75, "{line:?}");
            }
            assert_eq!(text.replace("\r\n ", ""), format!("SUMMARY:{value}\r\n"));
        }
        // Exactly 75 octets stay on one line.
        let mut w = Writer(String::new());
        w.line("X", &"y".repeat(73));
        assert_eq!(w.0.matches("\r\n").count(), 1);
    }

    #[test]
    fn the_feed_is_folded_escaped_and_stable() {
        let space = "Laboratorio «Ünïcødé» di prova; con, virgole e \\ barre — 🦀🦀🦀 lunghissimo";
        let openings = [Opening {
            start: at("2024-10-27 01:30:00"),
            end: Some(at("2024-10-27 03:30:00")),
            until: None,
        }];
        let now = "2024-11-01T00:00:00Z".parse().unwrap();
        let feed = Feed {
            space,
            tz: chrono_tz::Europe::Rome,
            now,
            openings: &openings,
            probable: &[],
            forecast_made: now,
        };
        let text = feed.render();
        assert_eq!(text, feed.render());
        assert!(text.ends_with("END:VCALENDAR\r\n"));
        for line in text.split_terminator("\r\n") {
            assert!(line.len() <= 75, "{line:?} is {} octets", line.len());
            assert!(!line.contains('\n') && !line.contains('\r'));
        }
        // 01:30 CEST (+2) to 03:30 CET (+1), the autumn fold read as its earlier reading for the start.
        assert!(text.contains("DTSTART:20241026T233000Z\r\n"), "{text}");
        assert!(text.contains("DTEND:20241027T023000Z\r\n"), "{text}");
        let unfolded = text.replace("\r\n ", "");
        assert!(
            unfolded.contains(
                "SUMMARY:Laboratorio «Ünïcødé» di prova\\; con\\, virgole e \\\\ barre — 🦀🦀🦀 lunghissimo open\r\n"
            ),
            "{unfolded}"
        );
        assert!(unfolded.contains("UID:open-20241026T233000Z-laboratorio-n-c-d-di-prova-con-virgole-e-barre-lunghissimo@bitsd\r\n"), "{unfolded}");
    }

    #[test]
    fn an_opening_going_on_ends_when_it_was_said_to_or_now() {
        let render = |until: Option<&str>, now: &str| {
            let openings = [Opening {
                start: at("2024-11-01 18:00:00"),
                end: None,
                until: until.map(at),
            }];
            let now = now.parse().unwrap();
            Feed {
                space: "Lab",
                tz: chrono_tz::UTC,
                now,
                openings: &openings,
                probable: &[],
                forecast_made: now,
            }
            .render()
        };
        let said = render(Some("2024-11-01 22:30:00"), "2024-11-01T20:00:00Z");
        assert!(said.contains("DTEND:20241101T223000Z\r\n"), "{said}");
        // Past the time said and still open: it lasts until now.
        let past = render(Some("2024-11-01 22:30:00"), "2024-11-01T23:10:00Z");
        assert!(past.contains("DTEND:20241101T231000Z\r\n"), "{past}");
        let unsaid = render(None, "2024-11-01T20:00:00Z");
        assert!(unsaid.contains("DTEND:20241101T200000Z\r\n"), "{unsaid}");
    }
}
