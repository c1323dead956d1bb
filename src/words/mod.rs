//! Every word of the pages, in each language, in one typed table: a
//! language that lacks a message does not compile. The homepage's words and
//! thresholds serve both renderers: the server fills the page with them, and
//! the page script, which keeps the page live, reads the same table as JSON
//! from the page (`#home-words`).
//!
//! Phrases name their parts in braces (`{time}`), filled by [`fill`] here
//! and by the script's `fill`, so a translation may put them in any order.
//! The tables themselves: `en` (English) and `it` (Italian), one for each
//! [`Lang`].

mod en;
mod it;

use std::sync::LazyLock;

use serde::Serialize;

use crate::clock::LocalTime;
use crate::state::HISTORY_SAMPLES;

/// A language the pages speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    It,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::It];

    /// Its ISO 639-1 code, as in `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::It => "it",
        }
    }

    /// The language of a code, in any case.
    pub fn from_code(code: &str) -> Option<Lang> {
        Lang::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(code))
    }
}

/// The words of every page in one language.
#[derive(Debug, Serialize)]
pub struct Words {
    pub layout: LayoutWords,
    pub home: HomeWords,
    pub log: LogWords,
    pub login: LoginWords,
    pub admin: AdminWords,
    pub message: MessageWords,
    pub not_found: NotFoundWords,
    pub heat_map: HeatMapWords,
}

/// The forecast's heat map.
#[derive(Debug, Serialize)]
pub struct HeatMapWords {
    pub title: &'static str,
    /// Monday first, short.
    pub days: [&'static str; 7],
    /// The ends of the legend's scale.
    pub never: &'static str,
    pub always: &'static str,
}

/// The frame around every page.
#[derive(Debug, Serialize)]
pub struct LayoutWords {
    /// `{page}` after the `{space}`'s name, in the window's title.
    pub title: &'static str,
    pub nav: &'static str,
    pub history: &'static str,
    pub about: &'static str,
    pub members: &'static str,
    /// The link to the other language, in that language.
    pub other_language: &'static str,
    /// What the installed app is, in its manifest.
    pub app_description: &'static str,
}

#[derive(Debug, Serialize)]
pub struct LogWords {
    pub title: &'static str,
    pub none: &'static str,
    /// `{first}`–`{last}` of `{total}`.
    pub range: &'static str,
    pub when: &'static str,
    pub status: &'static str,
    pub by: &'static str,
    pub open: &'static str,
    pub closed: &'static str,
    pub away: &'static str,
    pub by_device: &'static str,
    pub by_web: &'static str,
    pub pages: &'static str,
    pub newer: &'static str,
    pub older: &'static str,
}

#[derive(Debug, Serialize)]
pub struct LoginWords {
    pub title: &'static str,
    pub user_name: &'static str,
    pub password: &'static str,
    pub submit: &'static str,
    pub wrong: &'static str,
    /// `{seconds}` to wait.
    pub too_many: &'static str,
    pub too_many_at_once: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AdminWords {
    pub title: &'static str,
    /// `{user}`, in bold.
    pub logged_in_as: &'static str,
    pub send_message: &'static str,
    pub log_out: &'static str,
    pub open: &'static str,
    pub closed: &'static str,
    /// `{time}` of the last change.
    pub since: &'static str,
    pub open_room: &'static str,
    pub close_room: &'static str,
    pub present: &'static str,
    pub nobody: &'static str,
    /// `{count}` people in the room, hidden members left out.
    pub people: &'static str,
    /// `{count}` of them who are not named.
    pub not_named: &'static str,
    pub visibility: &'static str,
    pub hidden: &'static str,
    pub counted: &'static str,
    pub named: &'static str,
    pub save: &'static str,
    pub devices: &'static str,
    /// `{count}` devices registered, of `{max}`.
    pub device_count: &'static str,
    pub no_devices: &'static str,
    pub connected: &'static str,
    /// `{time}` a device was last connected, or `never`.
    pub last_contact: &'static str,
    pub never: &'static str,
    /// How it was connected: `{transport}` from `{address}`.
    pub via: &'static str,
    /// `{time}` its key was made.
    pub key_since: &'static str,
    /// `{time}` its key was revoked.
    pub revoked: &'static str,
    pub not_claimed: &'static str,
    /// `{time}` its claim code expires.
    pub code_until: &'static str,
    pub code_expired: &'static str,
    pub new_code: &'static str,
    pub revoke: &'static str,
    pub delete: &'static str,
    pub device_name: &'static str,
    pub name_rule: &'static str,
    pub add_device: &'static str,
    /// The claim code of `{device}`, in bold.
    pub claim_code_for: &'static str,
    /// `{time}` the code expires.
    pub claim_valid: &'static str,
    /// What to do with the code: `{command}`, marked up, is the word
    /// `claim` the device sends before it.
    pub claim_how: &'static str,
}

#[derive(Debug, Serialize)]
pub struct MessageWords {
    pub title: &'static str,
    /// `{user}`, in bold.
    pub shown_to: &'static str,
    pub admin: &'static str,
    pub sent: &'static str,
    /// `{max}` characters.
    pub label: &'static str,
    pub send: &'static str,
    pub empty: &'static str,
    /// `{count}` characters written, `{max}` allowed.
    pub too_long: &'static str,
    /// `{seconds}` to wait.
    pub too_many: &'static str,
}

#[derive(Debug, Serialize)]
pub struct NotFoundWords {
    pub title: &'static str,
    /// Before, between and after the links to the homepage and the about
    /// page.
    pub before: &'static str,
    pub homepage: &'static str,
    pub between: &'static str,
    pub about: &'static str,
    pub after: &'static str,
}

/// The words of `lang`.
pub fn of(lang: Lang) -> &'static Words {
    match lang {
        Lang::En => &en::WORDS,
        Lang::It => &it::WORDS,
    }
}

/// A stored time as the homepage's `date` phrase of `words` writes it.
pub fn when(words: &HomeWords, at: &LocalTime) -> String {
    dated(words, &at.display(), 19)
}

/// `shown` (`YYYY-MM-DD HH:MM:SS`, as the script reads it from `/data`)
/// in the `date` phrase, its time cut at `end` (16 for `HH:MM`).
fn dated(words: &HomeWords, shown: &str, end: usize) -> String {
    fill(
        words.date,
        &[
            ("year", &shown[..4]),
            ("month", &shown[5..7]),
            ("day", &shown[8..10]),
            ("time", &shown[11..end]),
        ],
    )
}

/// The words of the homepage in one language.
#[derive(Debug, Serialize)]
pub struct HomeWords {
    /// The window's title, after the `{space}`'s name.
    pub title_open: &'static str,
    pub title_closed: &'static str,
    /// Before any status is recorded, likewise.
    pub title_unknown: &'static str,
    pub status_open: &'static str,
    pub status_closed: &'static str,
    pub status_unknown: &'static str,
    /// `{time}` of the last change (`HH:MM`), `{ago}` how long
    /// ago (see [`ago`]), `{by}` one of the two below; a change of today.
    pub since: &'static str,
    /// The same for a change of an earlier day (`{time}` with its date).
    pub since_before: &'static str,
    pub just_now: &'static str,
    pub minute_ago: &'static str,
    /// `{count}` minutes, two or more; and so on.
    pub minutes_ago: &'static str,
    pub hour_ago: &'static str,
    pub hours_ago: &'static str,
    pub day_ago: &'static str,
    pub days_ago: &'static str,
    pub by_device: &'static str,
    pub by_web: &'static str,
    pub no_status: &'static str,
    /// `{time}` (`HH:MM`) the device that set the status left, today.
    pub device_offline: &'static str,
    /// The same on an earlier day (`{time}` with its date).
    pub device_offline_before: &'static str,
    /// Shown until the script starts.
    pub needs_script: &'static str,
    pub connecting: &'static str,
    pub live: &'static str,
    pub offline: &'static str,
    /// `{time}` the page last heard from the server, `{ago}` how long ago.
    pub offline_since: &'static str,
    /// `{count}` people in the room, hidden members left out.
    pub people: &'static str,
    pub temperature: &'static str,
    pub no_samples: &'static str,
    /// `{sensor}` number.
    pub sensor: &'static str,
    /// `{value}` with [`Thresholds::decimals`] decimals.
    pub degrees: &'static str,
    /// Between the whole and the decimal part of a number.
    pub decimal_point: &'static str,
    /// A time: `{year}`, `{month}`, `{day}` (two digits each, four for the
    /// year) and `{time}` (`HH:MM:SS`).
    pub date: &'static str,
    pub rising: TrendWords,
    pub falling: TrendWords,
    pub steady: TrendWords,
    /// The chart before the script draws it.
    pub chart_empty: &'static str,
    /// `{count}` samples, from `{min}` to `{max}` degrees.
    pub chart: &'static str,
    /// `{value}` of a grid line, in whole degrees.
    pub chart_tick: &'static str,
    pub last_message: &'static str,
    pub no_messages: &'static str,
    pub forecast_title: &'static str,
    pub forecast_alt: &'static str,
    pub history_link: &'static str,
    pub blind_palette: &'static str,
    pub standard_colours: &'static str,
    pub blind_page: &'static str,
}

/// How a trend is shown: an arrow, and words for screen readers.
#[derive(Debug, Serialize)]
pub struct TrendWords {
    pub arrow: &'static str,
    pub words: &'static str,
}

/// The numbers both renderers decide by, the same in every language.
#[derive(Debug, Serialize)]
pub struct Thresholds {
    /// A sensor is rising or falling when its last two samples differ by
    /// more than this (°C).
    pub trend_step: f64,
    /// Decimals of a temperature.
    pub decimals: usize,
    /// Samples the page keeps for the chart, as many as `/data` sends.
    pub history: usize,
}

pub const THRESHOLDS: Thresholds = Thresholds {
    trend_step: 0.05,
    decimals: 1,
    history: HISTORY_SAMPLES,
};

/// Which way a sensor goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    Rising,
    Falling,
    Steady,
}

impl Thresholds {
    /// The trend from the sample `before` to the `last` one, if there are two.
    pub fn trend(&self, last: f64, before: Option<f64>) -> Trend {
        match before {
            Some(before) if last - before > self.trend_step => Trend::Rising,
            Some(before) if before - last > self.trend_step => Trend::Falling,
            _ => Trend::Steady,
        }
    }

    /// A temperature with [`Thresholds::decimals`] decimals and `point`
    /// between the whole and the decimals, as the script's `toFixed` writes
    /// it: to the nearest, halves away from zero (Rust's formatting alone
    /// would take the even neighbour of an exact half).
    pub fn fixed(&self, value: f64, point: &str) -> String {
        let decimals = self.decimals;
        // JavaScript writes no sign on zero.
        let value = if value == 0.0 { 0.0 } else { value };
        let scale = 10f64.powi(decimals as i32);
        let scaled = value * scale;
        // Only an exact product can be an exact half.
        let exact = value.mul_add(scale, -scaled) == 0.0;
        let text = if exact && (scaled - scaled.trunc()).abs() == 0.5 {
            format!("{:.decimals$}", scaled.round() / scale)
        } else {
            format!("{value:.decimals$}")
        };
        if point == "." {
            text
        } else {
            text.replace('.', point)
        }
    }
}

impl HomeWords {
    pub fn trend(&self, trend: Trend) -> &TrendWords {
        match trend {
            Trend::Rising => &self.rising,
            Trend::Falling => &self.falling,
            Trend::Steady => &self.steady,
        }
    }
}

/// What the page script reads from `#home-words`.
#[derive(Serialize)]
struct ScriptTable {
    words: &'static HomeWords,
    thresholds: &'static Thresholds,
}

fn table_json(lang: Lang) -> String {
    let table = ScriptTable {
        words: &of(lang).home,
        thresholds: &THRESHOLDS,
    };
    serde_json::to_string(&table)
        .expect("the table serialises")
        .replace('<', "\\u003c")
}

static ENGLISH_JSON: LazyLock<String> = LazyLock::new(|| table_json(Lang::En));
static ITALIAN_JSON: LazyLock<String> = LazyLock::new(|| table_json(Lang::It));

/// The homepage table of `lang` as JSON, safe inside a script element.
pub fn script_json(lang: Lang) -> &'static str {
    match lang {
        Lang::En => &ENGLISH_JSON,
        Lang::It => &ITALIAN_JSON,
    }
}

/// How long ago something happened, `seconds` before now: "just now"
/// under a minute, then whole minutes, hours, days (rounded down).
pub fn ago(words: &HomeWords, seconds: i64) -> String {
    let (one, many, count) = match seconds.max(0) {
        s if s < 60 => return words.just_now.to_string(),
        s if s < 3600 => (words.minute_ago, words.minutes_ago, s / 60),
        s if s < 86_400 => (words.hour_ago, words.hours_ago, s / 3600),
        s => (words.day_ago, words.days_ago, s / 86_400),
    };
    if count == 1 {
        one.to_string()
    } else {
        fill(many, &[("count", &count.to_string())])
    }
}

/// "Since" a change `at`, `now`: its time on the day of `now`, else with
/// its date; how long ago; `by` whom.
pub fn since(words: &HomeWords, at: &LocalTime, now: &LocalTime, by: &str) -> String {
    let shown = at.display();
    let today = at.0.date() == now.0.date();
    let time = if today {
        shown[11..16].to_string()
    } else {
        dated(words, &shown, 16)
    };
    let phrase = if today {
        words.since
    } else {
        words.since_before
    };
    let ago = ago(words, (now.0 - at.0).num_seconds());
    fill(phrase, &[("time", &time), ("ago", &ago), ("by", by)])
}

/// That the device has been offline `since`, `now`: its time on the day
/// of `now`, else with its date.
pub fn device_offline(words: &HomeWords, since: &LocalTime, now: &LocalTime) -> String {
    let shown = since.display();
    let (phrase, time) = if since.0.date() == now.0.date() {
        (words.device_offline, shown[11..16].to_string())
    } else {
        (words.device_offline_before, dated(words, &shown, 16))
    };
    fill(phrase, &[("time", &time)])
}

/// The text of `phrase` before and after its part `{name}`, for a part
/// that the page marks up (`Logged in as <strong>ada</strong>`); all of it
/// before when the phrase lacks the part.
pub fn around<'a>(phrase: &'a str, name: &str) -> (&'a str, &'a str) {
    let part = format!("{{{name}}}");
    match phrase.split_once(&part) {
        Some((before, after)) => (before, after),
        None => (phrase, ""),
    }
}

/// `phrase` with each `{name}` replaced by its value in `parts`; unknown
/// names are left as they are. One pass, as the script's `fill` does, so a
/// value is never filled in turn.
pub fn fill(phrase: &str, parts: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(phrase.len() + 32);
    let mut rest = phrase;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let value = (name_len > 0 && after[name_len..].starts_with('}'))
            .then(|| parts.iter().find(|(name, _)| *name == &after[..name_len]))
            .flatten();
        match value {
            Some((_, value)) => {
                out.push_str(value);
                rest = &after[name_len + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Each message of one language, by its path in the table.
    fn messages(lang: Lang) -> BTreeMap<String, String> {
        fn walk(path: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
            match value {
                serde_json::Value::Object(fields) => {
                    for (name, value) in fields {
                        walk(&format!("{path}.{name}"), value, out);
                    }
                }
                serde_json::Value::String(text) => {
                    out.insert(path.to_string(), text.clone());
                }
                serde_json::Value::Array(items) => {
                    for (i, value) in items.iter().enumerate() {
                        walk(&format!("{path}.{i}"), value, out);
                    }
                }
                other => panic!("{path} is {other}"),
            }
        }
        let mut out = BTreeMap::new();
        walk("", &serde_json::to_value(of(lang)).unwrap(), &mut out);
        out
    }

    /// The names of the parts of `phrase`, sorted.
    fn parts(phrase: &str) -> Vec<&str> {
        let mut names: Vec<&str> = phrase
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn every_language_has_every_message_with_the_same_parts() {
        let english = messages(Lang::En);
        assert!(english.len() > 80, "{}", english.len());
        for lang in Lang::ALL {
            let words = messages(lang);
            assert_eq!(
                words.keys().collect::<Vec<_>>(),
                english.keys().collect::<Vec<_>>()
            );
            for (key, text) in &words {
                assert!(!text.trim().is_empty(), "{lang:?} {key} is empty");
                assert_eq!(parts(text), parts(&english[key]), "{lang:?} {key}");
            }
        }
        // Translated, not copied: only names, symbols and units may repeat.
        let italian = messages(Lang::It);
        let same = english.iter().filter(|(k, v)| italian[*k] == **v).count();
        assert!(
            same * 5 < english.len(),
            "{same} of {} the same",
            english.len()
        );
    }

    #[test]
    fn a_marked_up_part_splits_its_phrase() {
        assert_eq!(around("Logged in as {user}", "user"), ("Logged in as ", ""));
        assert_eq!(
            around("Accesso come {user}.", "user"),
            ("Accesso come ", ".")
        );
        assert_eq!(around("no part", "user"), ("no part", ""));
    }

    #[test]
    fn since_reads_as_a_time_and_how_long_ago() {
        let words = &of(Lang::En).home;
        let now = LocalTime::parse("2026-11-30 20:05:00").unwrap();
        let today = LocalTime::parse("2026-11-30 18:02:59").unwrap();
        let before = LocalTime::parse("2026-11-28 09:30:00").unwrap();
        let italian = &of(Lang::It).home;
        assert_eq!(
            since(words, &today, &now, "the device"),
            "since 18:02, 2 hours ago, set by the device"
        );
        assert_eq!(
            since(words, &before, &now, "the device"),
            "since 2026-11-28 09:30, 2 days ago, set by the device"
        );
        assert_eq!(
            since(italian, &today, &now, "dal dispositivo"),
            "dalle 18:02 (2 ore fa), segnalato dal dispositivo"
        );
        assert_eq!(
            since(italian, &before, &now, "dal dispositivo"),
            "dal 28/11/2026 09:30 (2 giorni fa), segnalato dal dispositivo"
        );
        for (seconds, en, it) in [
            (-5, "just now", "adesso"),
            (59, "just now", "adesso"),
            (60, "1 minute ago", "1 minuto fa"),
            (3599, "59 minutes ago", "59 minuti fa"),
            (7300, "2 hours ago", "2 ore fa"),
            (86_400, "1 day ago", "1 giorno fa"),
            (3 * 86_400 + 5, "3 days ago", "3 giorni fa"),
        ] {
            assert_eq!(ago(words, seconds), en);
            assert_eq!(ago(italian, seconds), it);
        }
    }

    #[test]
    fn times_follow_the_language() {
        let at = LocalTime::parse("2026-11-30 18:02:07").unwrap();
        assert_eq!(when(&of(Lang::En).home, &at), "2026-11-30 18:02:07");
        assert_eq!(when(&of(Lang::It).home, &at), "30/11/2026 18:02:07");
    }

    #[test]
    fn phrases_are_filled_once_by_name() {
        assert_eq!(
            fill(
                en::WORDS.home.since,
                &[("by", "the device"), ("ago", "just now"), ("time", "18:02")]
            ),
            "since 18:02, just now, set by the device"
        );
        assert_eq!(fill("{a}{b}", &[("a", "{b}"), ("b", "x")]), "{b}x");
        assert_eq!(fill("{{a}} {} {c} {", &[("a", "1")]), "{1} {} {c} {");
        assert_eq!(fill("no parts", &[("a", "1")]), "no parts");
    }

    #[test]
    fn temperatures_round_as_the_script_does() {
        // (value, what JavaScript's toFixed(1) gives)
        for (value, expected) in [
            (20.25, "20.3"),
            (20.75, "20.8"),
            (-0.25, "-0.3"),
            (22.0, "22.0"),
            (20.15, "20.1"),
            (20.35, "20.4"),
            (1.45, "1.4"),
            (0.05, "0.1"),
            (-7.0, "-7.0"),
            (199.99, "200.0"),
            (-0.0, "0.0"),
            (-0.04, "-0.0"),
        ] {
            assert_eq!(THRESHOLDS.fixed(value, "."), expected, "{value}");
        }
        assert_eq!(THRESHOLDS.fixed(-20.25, ","), "-20,3");
    }

    #[test]
    fn trends_past_the_step() {
        let t = &THRESHOLDS;
        assert_eq!(t.trend(21.0, None), Trend::Steady);
        assert_eq!(t.trend(21.0, Some(20.5)), Trend::Rising);
        assert_eq!(t.trend(20.5, Some(21.0)), Trend::Falling);
        assert_eq!(t.trend(21.04, Some(21.0)), Trend::Steady);
        assert_eq!(t.trend(20.0, Some(20.04)), Trend::Steady);
        assert_eq!(t.trend(21.0, Some(21.0)), Trend::Steady);
    }

    #[test]
    fn the_script_reads_only_words_of_the_table() {
        let table: serde_json::Value = serde_json::from_str(script_json(Lang::It)).unwrap();
        let script = include_str!("../../assets/app.js");
        for (prefix, section) in [("WORDS.", "words"), ("THRESHOLDS.", "thresholds")] {
            let keys = table[section].as_object().unwrap();
            let used: Vec<&str> = script
                .match_indices(prefix)
                .filter(|(at, _)| {
                    !script[..*at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                })
                .map(|(at, _)| {
                    let name = &script[at + prefix.len()..];
                    let end = name
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(name.len());
                    &name[..end]
                })
                .collect();
            assert!(!used.is_empty(), "app.js reads no {section}");
            for name in used {
                assert!(keys.contains_key(name), "app.js reads {prefix}{name}");
            }
        }
        assert!(!script_json(Lang::En).contains('<'));
    }
}
