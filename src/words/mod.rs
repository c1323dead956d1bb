//! Every word of the pages, in each language, in one typed table: a
//! language that lacks a message does not compile. The homepage's words and
//! thresholds serve both renderers: the server fills the page with them, and
//! the page script, which keeps the page live, reads the same table as JSON
//! from the page (`#home-words`).
//!
//! Phrases name their parts in braces (`{time}`), filled by [`fill`] here
//! and by the script's `fill`, so a translation may put them in any order.
//! The tables themselves: `en` (English) and `it` (Italian), one for each
//! [`Lang`]; `times` writes a time the one way every page does.

mod en;
mod it;
mod times;

use std::sync::LazyLock;

use serde::Serialize;

use crate::clock::LocalTime;
use crate::state::HISTORY_SAMPLES;

pub use times::{Moment, TimeWords, ago, date, duration, iso, moment};

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
    pub times: TimeWords,
    /// The homepage's sensors beyond temperature.
    pub sensors: SensorWords,
    /// The notifications pushed to phones.
    pub push: PushWords,
}

/// What a push notification says, in the subscriber's language.
#[derive(Debug, Serialize)]
pub struct PushWords {
    /// The title when the room opens: `{space}`.
    pub open_title: &'static str,
    /// Its body: `{time}` it opened.
    pub open_body: &'static str,
    /// The body of a message: its `{user}` and `{text}`; the title is the
    /// space's name.
    pub message_body: &'static str,
}

/// The homepage's sensors beyond temperature: what each kind measures, and
/// its value with its unit.
#[derive(Debug, Serialize)]
pub struct SensorWords {
    pub title: &'static str,
    /// `{kind}` of sensor and its `{sensor}` name (or [`HomeWords::sensor`]).
    pub label: &'static str,
    pub humidity: &'static str,
    pub carbondioxide: &'static str,
    pub power_consumption: &'static str,
    pub barometer: &'static str,
    pub door_locked: &'static str,
    /// `{value}` of each unit, with [`Thresholds::sensor_decimals`] decimals.
    pub percent: &'static str,
    pub ppm: &'static str,
    pub watts: &'static str,
    pub hectopascals: &'static str,
    /// A door's lock, locked (`1`) or not (`0`).
    pub locked: &'static str,
    pub unlocked: &'static str,
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
    /// Two lines in place of a map without a week of history.
    pub not_enough: [&'static str; 2],
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
    /// Open for members only.
    pub members: &'static str,
    pub away: &'static str,
    pub by_device: &'static str,
    pub by_web: &'static str,
    pub pages: &'static str,
    pub newer: &'static str,
    pub older: &'static str,
    /// An opening that ended, lasting `{duration}`.
    pub open_for: &'static str,
    /// The opening in progress, `{duration}` so far.
    pub open_so_far: &'static str,
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
    /// Before any status is recorded.
    pub unknown: &'static str,
    /// Open for members only.
    pub members_open: &'static str,
    /// The button that opens the room for members only.
    pub members_room: &'static str,
    /// The field of the time the room stays open until, and its button.
    pub until_label: &'static str,
    pub until_set: &'static str,
    /// `{time}` of the last change, when it was today.
    pub since: &'static str,
    /// The same for a change of an earlier day.
    pub since_before: &'static str,
    /// `{person}`, the `named` member who made the last change.
    pub set_by: &'static str,
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

/// The words of the homepage in one language.
#[derive(Debug, Serialize)]
pub struct HomeWords {
    /// The window's title, after the `{space}`'s name.
    pub title_open: &'static str,
    pub title_closed: &'static str,
    /// Before any status is recorded, likewise.
    pub title_unknown: &'static str,
    /// Open for members only, likewise.
    pub title_members: &'static str,
    pub status_open: &'static str,
    pub status_closed: &'static str,
    pub status_unknown: &'static str,
    pub status_members: &'static str,
    /// `{time}` (`HH:MM`) until which the room stays open, as somebody said.
    pub open_until: &'static str,
    /// The same in its last [`CLOSING_SOON`] minutes.
    pub closing_soon: &'static str,
    /// `{time}` of the last change as [`moment`] writes it, `{by}` one of
    /// the two below; a change of today.
    pub since: &'static str,
    /// The same for a change of an earlier day.
    pub since_before: &'static str,
    pub by_device: &'static str,
    pub by_web: &'static str,
    pub no_status: &'static str,
    /// `{time}` the device that set the status left, as [`moment`] writes
    /// it, today.
    pub device_offline: &'static str,
    /// The same on an earlier day.
    pub device_offline_before: &'static str,
    /// Shown until the script starts.
    pub needs_script: &'static str,
    pub connecting: &'static str,
    pub live: &'static str,
    pub offline: &'static str,
    /// `{time}` the page last heard from the server, as [`moment`] writes it.
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
    /// The notifications control: its title, what one may be told of,
    /// and its buttons (to subscribe; to send a new choice once
    /// subscribed; to unsubscribe).
    pub notify_title: &'static str,
    pub notify_open: &'static str,
    pub notify_message: &'static str,
    pub notify_button: &'static str,
    pub notify_save: &'static str,
    pub notify_stop: &'static str,
    /// What this browser is told of: nothing; the room opening, new
    /// messages, both; something this page does not know.
    pub notify_off: &'static str,
    pub notify_on_open: &'static str,
    pub notify_on_message: &'static str,
    pub notify_on_both: &'static str,
    pub notify_on: &'static str,
    /// While the browser, its push service and bitsd answer.
    pub notify_busy: &'static str,
    /// Why it cannot be done: nothing ticked, notifications blocked or
    /// not allowed, a browser that needs the page on the home screen
    /// first (iPhone, iPad), a page not served over HTTPS, a browser
    /// without push, its push service out of reach, bitsd out of reach.
    pub notify_none_chosen: &'static str,
    pub notify_denied: &'static str,
    pub notify_dismissed: &'static str,
    pub notify_home_screen: &'static str,
    pub notify_insecure: &'static str,
    pub notify_unsupported: &'static str,
    pub notify_unreachable: &'static str,
    pub notify_offline: &'static str,
    /// bitsd said no, for `{reason}` (its own words, in English).
    pub notify_refused: &'static str,
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
    /// Decimals of a sensor's value beyond temperature.
    pub sensor_decimals: usize,
}

pub const THRESHOLDS: Thresholds = Thresholds {
    trend_step: 0.05,
    decimals: 1,
    history: HISTORY_SAMPLES,
    sensor_decimals: 0,
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
        fixed(value, self.decimals, point)
    }
}

/// `value` with `decimals` decimals and `point` between the whole and the
/// decimals, as the script's `toFixed` writes it (see [`Thresholds::fixed`]).
pub fn fixed(value: f64, decimals: usize, point: &str) -> String {
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
    times: &'static TimeWords,
    thresholds: &'static Thresholds,
    sensors: &'static SensorWords,
    /// [`CLOSING_SOON`].
    closing_soon_minutes: i64,
}

fn table_json(lang: Lang) -> String {
    let table = ScriptTable {
        words: &of(lang).home,
        times: &of(lang).times,
        thresholds: &THRESHOLDS,
        sensors: &of(lang).sensors,
        closing_soon_minutes: CLOSING_SOON,
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

/// A phrase around a time that the page marks up: "since ", the time,
/// ", set by the device".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AroundTime {
    pub before: String,
    pub at: Moment,
    pub after: String,
}

impl AroundTime {
    /// `today`'s phrase for a time `at` of the day of `now`, else
    /// `earlier`'s, with `{time}` as [`moment`] writes it and `parts`
    /// filled in around it.
    fn new(
        words: &Words,
        (today, earlier): (&str, &str),
        at: &LocalTime,
        now: &LocalTime,
        parts: &[(&str, &str)],
    ) -> AroundTime {
        let phrase = if at.0.date() == now.0.date() {
            today
        } else {
            earlier
        };
        let (before, after) = around(phrase, "time");
        AroundTime {
            before: fill(before, parts),
            at: Moment::new(&words.times, at, now),
            after: fill(after, parts),
        }
    }
}

/// "Since" a change `at`, read `now`, set `by` whom.
pub fn since(words: &Words, at: &LocalTime, now: &LocalTime, by: &str) -> AroundTime {
    let phrases = (words.home.since, words.home.since_before);
    AroundTime::new(words, phrases, at, now, &[("by", by)])
}

/// "Since" a change `at`, read `now`, on `/admin`.
pub fn admin_since(words: &Words, at: &LocalTime, now: &LocalTime) -> AroundTime {
    let phrases = (words.admin.since, words.admin.since_before);
    AroundTime::new(words, phrases, at, now, &[])
}

/// Minutes before the time the room was to stay open until in which the
/// homepage says it is closing soon.
pub const CLOSING_SOON: i64 = 15;

/// Until when the room stays open (`until`), read `now`: "Open until
/// 22:30", or in the last [`CLOSING_SOON`] minutes (and past them) "Closing
/// soon, at 22:30".
pub fn until(words: &HomeWords, until: &LocalTime, now: &LocalTime) -> String {
    let soon = (until.0 - now.0).num_minutes() < CLOSING_SOON;
    let phrase = if soon {
        words.closing_soon
    } else {
        words.open_until
    };
    fill(phrase, &[("time", &until.0.format("%H:%M").to_string())])
}

/// That the device has been offline `since`, read `now`.
pub fn device_offline(words: &Words, since: &LocalTime, now: &LocalTime) -> AroundTime {
    let phrases = (words.home.device_offline, words.home.device_offline_before);
    AroundTime::new(words, phrases, since, now, &[])
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
mod tests;
