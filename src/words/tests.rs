//! The tables of both languages and the phrases filled from them.

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

/// The text of a "since" phrase.
fn since_text(words: &Words, at: &LocalTime, now: &LocalTime, by: &str) -> String {
    let AroundTime { before, at, after } = since(words, at, now, by);
    format!("{before}{}{after}", at.text)
}

#[test]
fn since_reads_as_a_time_and_how_long_ago() {
    let words = of(Lang::En);
    let now = LocalTime::parse("2026-11-30 20:05:00").unwrap();
    let today = LocalTime::parse("2026-11-30 18:02:59").unwrap();
    let before = LocalTime::parse("2026-11-28 09:30:00").unwrap();
    let italian = of(Lang::It);
    assert_eq!(
        since_text(words, &today, &now, "the device"),
        "since 18:02 (2 hours ago), set by the device"
    );
    assert_eq!(
        since_text(words, &before, &now, "the device"),
        "since Sat 28 Nov, 09:30 (2 days ago), set by the device"
    );
    assert_eq!(
        since_text(italian, &today, &now, "dal dispositivo"),
        "dalle 18:02 (2 ore fa), segnalato dal dispositivo"
    );
    assert_eq!(
        since_text(italian, &before, &now, "dal dispositivo"),
        "dal sab 28 nov, 09:30 (2 giorni fa), segnalato dal dispositivo"
    );
    // /admin's "since" takes "dalle" before a time of day, "dal" a date.
    let admin = |words, at| {
        let AroundTime { before, at, after } = admin_since(words, at, &now);
        format!("{before}{}{after}", at.text)
    };
    assert_eq!(admin(italian, &today), "dalle 18:02 (2 ore fa)");
    assert_eq!(
        admin(italian, &before),
        "dal sab 28 nov, 09:30 (2 giorni fa)"
    );
    assert_eq!(admin(words, &today), "since 18:02 (2 hours ago)");
}

#[test]
fn phrases_are_filled_once_by_name() {
    assert_eq!(
        fill(
            en::WORDS.home.since,
            &[("by", "the device"), ("time", "18:02 (just now)")]
        ),
        "since 18:02 (just now), set by the device"
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
fn the_scripts_read_only_words_of_the_table() {
    let table: serde_json::Value = serde_json::from_str(script_json(Lang::It)).unwrap();
    let scripts = [
        ("app.js", include_str!("../../assets/app.js")),
        ("notify.js", include_str!("../../assets/notify.js")),
    ];
    for (file, script) in scripts {
        for (prefix, section) in [
            ("WORDS.", "words"),
            ("TIMES.", "times"),
            ("THRESHOLDS.", "thresholds"),
            ("SENSORS.", "sensors"),
        ] {
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
            if file == "app.js" {
                assert!(!used.is_empty(), "app.js reads no {section}");
            }
            for name in used {
                assert!(keys.contains_key(name), "{file} reads {prefix}{name}");
            }
        }
    }
    // Every word of the notifications control is shown, by the page or
    // its script.
    let page = include_str!("../../templates/home.html");
    for key in table["words"].as_object().unwrap().keys() {
        if key.starts_with("notify_") {
            assert!(
                scripts[1].1.contains(&format!("WORDS.{key}"))
                    || page.contains(&format!("words.{key} ")),
                "{key} is never shown"
            );
        }
    }
    assert!(!script_json(Lang::En).contains('<'));
}
