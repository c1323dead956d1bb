//! The homepage's words and thresholds, in one table for both renderers: the
//! server fills the page with it, and the page script, which keeps the page
//! live, reads the same table as JSON from the page (`#home-words`).
//!
//! Phrases name their parts in braces (`{time}`), filled by [`fill`] here
//! and by the script's `fill`, so a translation may put them in any order.

use std::sync::LazyLock;

use serde::Serialize;

use crate::state::HISTORY_SAMPLES;

/// The words of the homepage in one language.
#[derive(Debug, Serialize)]
pub struct HomeWords {
    pub title_open: &'static str,
    pub title_closed: &'static str,
    pub status_open: &'static str,
    pub status_closed: &'static str,
    /// `{time}` of the last change, `{by}` one of the two below.
    pub since: &'static str,
    pub by_device: &'static str,
    pub by_web: &'static str,
    pub no_status: &'static str,
    /// Shown until the script starts.
    pub needs_script: &'static str,
    pub connecting: &'static str,
    /// `{transport}`: websocket, events or polling.
    pub live: &'static str,
    pub offline: &'static str,
    /// `{time}` the page last heard from the server.
    pub offline_since: &'static str,
    /// `{count}` people in the room, hidden members left out.
    pub people: &'static str,
    pub temperature: &'static str,
    pub no_samples: &'static str,
    /// `{sensor}` number.
    pub sensor: &'static str,
    /// `{value}` with [`Thresholds::decimals`] decimals.
    pub degrees: &'static str,
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

pub const ENGLISH: HomeWords = HomeWords {
    title_open: "BITS · open",
    title_closed: "BITS · closed",
    status_open: "The room is open",
    status_closed: "The room is closed",
    since: "since {time}, set by {by}",
    by_device: "the device",
    by_web: "a member, on the web",
    no_status: "No status has been recorded yet.",
    needs_script: "Live updates need JavaScript; this page shows the state when it was loaded.",
    connecting: "Connecting…",
    live: "Live ({transport})",
    offline: "Offline, reconnecting…",
    offline_since: "Offline, reconnecting… Data from {time}.",
    people: "People in the room: {count}",
    temperature: "Temperature",
    no_samples: "No samples yet.",
    sensor: "Sensor {sensor}",
    degrees: "{value} °C",
    rising: TrendWords {
        arrow: "↑",
        words: "rising",
    },
    falling: TrendWords {
        arrow: "↓",
        words: "falling",
    },
    steady: TrendWords {
        arrow: "→",
        words: "steady",
    },
    chart_empty: "Recent temperatures",
    chart: "Temperature of the last {count} samples, {min} to {max} °C",
    chart_tick: "{value}°",
    last_message: "Last message",
    no_messages: "No messages yet.",
    forecast_title: "When is it usually open?",
    forecast_alt: "Heat map of how likely the room is open at each half hour of the week, \
        from the last weeks' history",
    history_link: "Full history of openings",
    blind_palette: "Colour-blind palette",
    standard_colours: "Standard colours",
    blind_page: "Colour-blind page",
};

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

    /// A temperature with [`Thresholds::decimals`] decimals, as the script's
    /// `toFixed` writes it: to the nearest, halves away from zero (Rust's
    /// formatting alone would take the even neighbour of an exact half).
    pub fn fixed(&self, value: f64) -> String {
        let decimals = self.decimals;
        // JavaScript writes no sign on zero.
        let value = if value == 0.0 { 0.0 } else { value };
        let scale = 10f64.powi(decimals as i32);
        let scaled = value * scale;
        // Only an exact product can be an exact half.
        let exact = value.mul_add(scale, -scaled) == 0.0;
        if exact && (scaled - scaled.trunc()).abs() == 0.5 {
            format!("{:.decimals$}", scaled.round() / scale)
        } else {
            format!("{value:.decimals$}")
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

static ENGLISH_JSON: LazyLock<String> = LazyLock::new(|| {
    let table = ScriptTable {
        words: &ENGLISH,
        thresholds: &THRESHOLDS,
    };
    serde_json::to_string(&table)
        .expect("the table serialises")
        .replace('<', "\\u003c")
});

/// The table as JSON, safe inside a script element.
pub fn script_json() -> &'static str {
    &ENGLISH_JSON
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
    use super::*;

    #[test]
    fn phrases_are_filled_once_by_name() {
        assert_eq!(
            fill(ENGLISH.since, &[("by", "the device"), ("time", "18:02")]),
            "since 18:02, set by the device"
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
            assert_eq!(THRESHOLDS.fixed(value), expected, "{value}");
        }
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
        let table: serde_json::Value = serde_json::from_str(script_json()).unwrap();
        let script = include_str!("../../../assets/app.js");
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
        assert!(!script_json().contains('<'));
    }
}
