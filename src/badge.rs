//! The status badge of `/badge.svg`: a label and `open` on green or
//! `closed` on red, in the flat two-part style READMEs use.
//!
//! Pure: the label's checks, the text widths (Verdana 11 px, from a table
//! of approximate advances) and the SVG.

use crate::escape::{is_noncharacter, xml_escape};

/// Most characters a `?label=` may have.
pub const MAX_LABEL: usize = 64;

const OPEN_COLOUR: &str = "#4c1";
const CLOSED_COLOUR: &str = "#e05d44";
const LABEL_COLOUR: &str = "#555";
/// Space on each side of a text, in pixels.
const PADDING: f64 = 6.0;

/// Why a `?label=` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label is empty")]
    Empty,
    #[error("label is over {MAX_LABEL} characters")]
    TooLong,
    #[error("label has a control character")]
    Control,
    #[error("label has a Unicode noncharacter (such as U+FFFE)")]
    Noncharacter,
    #[error("label is given more than once")]
    Repeated,
}

/// The `label` of a query string (form-encoded), checked; `None` when the
/// query names none. Other parameters (cache busters) are ignored.
pub fn label_of(query: Option<&str>) -> Result<Option<String>, LabelError> {
    let Some(query) = query else { return Ok(None) };
    let mut label = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "label" {
            continue;
        }
        if label.is_some() {
            return Err(LabelError::Repeated);
        }
        label = Some(check_label(&value)?.to_string());
    }
    Ok(label)
}

fn check_label(label: &str) -> Result<&str, LabelError> {
    if label.is_empty() {
        Err(LabelError::Empty)
    } else if label.chars().nth(MAX_LABEL).is_some() {
        Err(LabelError::TooLong)
    } else if label.chars().any(char::is_control) {
        Err(LabelError::Control)
    } else if label.chars().any(is_noncharacter) {
        Err(LabelError::Noncharacter)
    } else {
        Ok(label)
    }
}

/// The badge: `label` and `open` or `closed`.
pub fn svg(label: &str, open: bool) -> String {
    let (value, colour) = if open {
        ("open", OPEN_COLOUR)
    } else {
        ("closed", CLOSED_COLOUR)
    };
    let label_width = (text_width(label) + 2.0 * PADDING).round();
    let value_width = (text_width(value) + 2.0 * PADDING).round();
    let width = label_width + value_width;
    let label_x = label_width / 2.0;
    let value_x = label_width + value_width / 2.0;
    let label = xml_escape(label);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"20\" \
         role=\"img\" aria-label=\"{label}: {value}\"><title>{label}: {value}</title>\
         <linearGradient id=\"s\" x2=\"0\" y2=\"100%\"><stop offset=\"0\" stop-color=\"#bbb\" \
         stop-opacity=\".1\"/><stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>\
         <clipPath id=\"r\"><rect width=\"{width}\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>\
         <g clip-path=\"url(#r)\"><rect width=\"{label_width}\" height=\"20\" fill=\"{LABEL_COLOUR}\"/>\
         <rect x=\"{label_width}\" width=\"{value_width}\" height=\"20\" fill=\"{colour}\"/>\
         <rect width=\"{width}\" height=\"20\" fill=\"url(#s)\"/></g>\
         <g fill=\"#fff\" text-anchor=\"middle\" \
         font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" font-size=\"11\">\
         <text x=\"{label_x}\" y=\"15\" fill=\"#010101\" fill-opacity=\".3\">{label}</text>\
         <text x=\"{label_x}\" y=\"14\">{label}</text>\
         <text x=\"{value_x}\" y=\"15\" fill=\"#010101\" fill-opacity=\".3\">{value}</text>\
         <text x=\"{value_x}\" y=\"14\">{value}</text></g></svg>"
    )
}

/// The width of `text` in Verdana 11 px, approximately.
pub fn text_width(text: &str) -> f64 {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> f64 {
    match c {
        'i' | 'j' | 'l' | '\'' | '|' | '.' | ',' | ':' | ';' | '!' => 3.4,
        ' ' | 'I' | 'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '/' | '\\' | '-' => 4.6,
        'm' | 'w' | 'M' | 'W' | '@' | '%' => 10.5,
        'a'..='z' | '0'..='9' | '#' | '$' | '?' | '_' | '+' | '=' | '<' | '>' | '~' | '*' => 6.9,
        'A'..='Z' | '&' => 7.6,
        c if c.is_ascii() => 6.9,
        // Wide scripts and pictographs take about a square.
        '\u{1100}'..='\u{115f}'
        | '\u{2e80}'..='\u{a4cf}'
        | '\u{ac00}'..='\u{d7a3}'
        | '\u{f900}'..='\u{faff}'
        | '\u{fe30}'..='\u{fe4f}'
        | '\u{ff00}'..='\u{ff60}'
        | '\u{1f300}'..='\u{1faff}'
        | '\u{20000}'..='\u{3fffd}' => 11.0,
        _ => 7.2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_queries() {
        type Case<'a> = (Option<&'a str>, Result<Option<&'a str>, LabelError>);
        let cases: &[Case] = &[
            (None, Ok(None)),
            (Some(""), Ok(None)),
            (Some("v=2"), Ok(None)),
            (Some("label=Lab+42&v=2"), Ok(Some("Lab 42"))),
            (Some("label=%3Cscript%3E%26%22"), Ok(Some("<script>&\""))),
            (Some("label="), Err(LabelError::Empty)),
            (Some("label=a&label=b"), Err(LabelError::Repeated)),
            (Some("label=a%0Ab"), Err(LabelError::Control)),
            (Some("label=a%EF%BF%BEb"), Err(LabelError::Noncharacter)),
            (Some("label=%EF%BF%BF"), Err(LabelError::Noncharacter)),
            (Some("label=%EF%B7%90"), Err(LabelError::Noncharacter)),
            (Some("label=%F4%8F%BF%BF"), Err(LabelError::Noncharacter)),
            (Some("label=%EF%BF%BD"), Ok(Some("\u{fffd}"))),
        ];
        for (query, expected) in cases {
            let got = label_of(*query);
            let expected = expected.clone().map(|l| l.map(String::from));
            assert_eq!(got, expected, "{query:?}");
        }
        let longest = format!("label={}", "é".repeat(MAX_LABEL));
        assert_eq!(
            label_of(Some(&longest)).unwrap().unwrap().chars().count(),
            64
        );
        let over = format!("label={}", "é".repeat(MAX_LABEL + 1));
        assert_eq!(label_of(Some(&over)), Err(LabelError::TooLong));
    }

    #[test]
    fn the_badge_is_escaped_and_sized_by_its_text() {
        let open = svg("<script>\"x\" & 'y'", true);
        assert!(!open.contains("<script>"), "{open}");
        assert!(open.contains("&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;: open"));
        assert!(open.contains("fill=\"#4c1\""));
        let closed = svg("BITS", false);
        assert!(closed.contains(">closed</text>") && closed.contains("fill=\"#e05d44\""));
        let width = |s: &str| -> f64 {
            let w = s.split("width=\"").nth(1).unwrap();
            w[..w.find('"').unwrap()].parse().unwrap()
        };
        assert!(
            width(&svg("A much longer label than before", true))
                > width(&svg("BITS", true)) + 100.0
        );
        assert!(width(&svg("BITS", false)) > width(&svg("BITS", true)));
    }
}
