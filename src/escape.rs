//! Text made safe for where it goes: HTML (pages, and the JSON that old
//! clients insert as HTML), XML (the SVG images), and log lines (text a
//! client chose, cut and escaped).

use std::fmt;

/// Characters of client-chosen text shown in a log line.
const SHOWN_CHARS: usize = 64;

/// Escapes `&`, `<`, `>`, `"` and `'` as the original server did.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`html_escape`]: messages go to chats as written.
pub fn html_unescape(text: &str) -> String {
    const ENTITIES: [(&str, char); 5] = [
        ("&amp;", '&'),
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&quot;", '"'),
        ("&#39;", '\''),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match ENTITIES.iter().find(|(e, _)| rest.starts_with(e)) {
            Some((entity, c)) => {
                out.push(*c);
                rest = &rest[entity.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Unicode's noncharacters: U+FDD0 to U+FDEF and the last two code points of
/// every plane (U+FFFE, U+FFFF, U+1FFFE...). XML 1.0 refuses U+FFFE and
/// U+FFFF outright and discourages the rest.
pub fn is_noncharacter(c: char) -> bool {
    let c = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

/// `text` for XML character data and attribute values; control characters
/// and noncharacters (which XML 1.0 does not allow) left out.
pub fn xml_escape(text: &str) -> String {
    let kept: String = text
        .chars()
        .filter(|&c| !c.is_control() && !is_noncharacter(c))
        .collect();
    html_escape(&kept)
}

/// Client-chosen text as a log line shows it: quoted, at most
/// 64 characters (`SHOWN_CHARS`), control characters and quotes escaped.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        write_cut(f, self.0)?;
        f.write_str("\"")
    }
}

/// Client-chosen text as an error message shows it: [`Shown`] without the
/// quotes.
pub fn cut(text: &str) -> String {
    struct Cut<'a>(&'a str);
    impl fmt::Display for Cut<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_cut(f, self.0)
        }
    }
    Cut(text).to_string()
}

/// At most `SHOWN_CHARS` characters of `text`; control and invisible
/// characters, quotes and backslashes escaped.
fn write_cut(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    let mut chars = text.chars();
    for c in chars.by_ref().take(SHOWN_CHARS) {
        match c {
            '\'' => f.write_str("'")?,
            c => write!(f, "{}", c.escape_debug())?,
        }
    }
    if chars.next().is_some() {
        f.write_str("…")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_is_cut_and_escaped() {
        assert_eq!(Shown("alice").to_string(), "\"alice\"");
        assert_eq!(
            Shown("a\nb\x1b[31m\"c\\").to_string(),
            "\"a\\nb\\u{1b}[31m\\\"c\\\\\""
        );
        let long = "é".repeat(100);
        let shown = Shown(&long).to_string();
        assert_eq!(shown.chars().count(), SHOWN_CHARS + 3);
        assert!(shown.ends_with("…\""));
        assert_eq!(
            Shown(&"x".repeat(SHOWN_CHARS)).to_string().len(),
            SHOWN_CHARS + 2
        );
        assert_eq!(Shown("o'brien").to_string(), "\"o'brien\"");
        assert_eq!(cut("a\u{202e}b"), "a\\u{202e}b", "bidi override");
    }

    #[test]
    fn noncharacters_are_known() {
        for c in [
            '\u{fdd0}',
            '\u{fdef}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{1fffe}',
            '\u{10ffff}',
        ] {
            assert!(is_noncharacter(c), "{c:?}");
        }
        for c in [
            'a',
            '\u{fdcf}',
            '\u{fdf0}',
            '\u{fffd}',
            '\u{10000}',
            '\u{1fffd}',
        ] {
            assert!(!is_noncharacter(c), "{c:?}");
        }
        assert_eq!(xml_escape("a\u{fffe}b\u{7}c"), "abc");
    }

    #[test]
    fn html_round_trips() {
        let raw = "<a href=\"x\">o'neil & co</a>";
        assert_eq!(
            html_escape(raw),
            "&lt;a href=&quot;x&quot;&gt;o&#39;neil &amp; co&lt;/a&gt;"
        );
        assert_eq!(html_unescape(&html_escape(raw)), raw);
    }
}
