//! What must hold for any input: shared by the fuzz targets and by the
//! regression test that replays the kept corpus (`tests/fuzz_corpus.rs`).

use bitsd::device::protocol::{
    Command, LineFramer, MAX_LINE, message_line, parse_line, status_line,
};

/// Device bytes: the framer stays bounded whatever the chunking, every line
/// parses without panicking, and what bitsd writes parses back the same.
pub fn protocol(data: &[u8]) {
    let _ = parse_line(data);
    // The first byte chooses the chunk size the bytes arrive in.
    let (chunk, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c).max(1), rest),
        None => (1, data),
    };
    let mut framer = LineFramer::new();
    'stream: for piece in body.chunks(chunk) {
        framer.extend(piece);
        loop {
            match framer.next_line() {
                Ok(Some(line)) => {
                    assert!(line.len() <= MAX_LINE);
                    if let Ok(command) = parse_line(&line) {
                        round_trip(&command);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'stream,
            }
        }
        assert!(
            framer.pending() <= MAX_LINE + chunk,
            "the framer holds too much"
        );
    }
}

fn round_trip(command: &Command) {
    match command {
        Command::Status(open) => {
            assert_eq!(
                parse_line(status_line(*open).as_bytes()),
                Ok(command.clone())
            );
        }
        Command::Message(text) => {
            assert_eq!(
                parse_line(message_line(text).as_bytes()),
                Ok(command.clone())
            );
        }
        Command::Temperature { value, .. } => {
            assert!(value.is_finite() && (-100.0..=200.0).contains(value));
        }
        _ => {}
    }
}

/// Markdown: rendering never panics, and with escaping on no script gets
/// through, neither as an element nor as a link.
pub fn markdown(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = bitsd::wiki::render(&text, false);
    let html = bitsd::wiki::render(&text, true).to_ascii_lowercase();
    assert!(!html.contains("<script"), "a script element got through");
    // Real tags start with `<`; escaped ones are text and harmless.
    for (at, _) in html.match_indices('<') {
        let tag = &html[at..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        for attribute in ["href=\"", "src=\""] {
            if let Some(start) = tag.find(attribute) {
                let value: String = tag[start + attribute.len()..]
                    .chars()
                    .take(16)
                    .filter(|c| !c.is_whitespace())
                    .collect();
                assert!(
                    !value.starts_with("javascript:") && !value.starts_with("vbscript:"),
                    "a script link got through: {tag}"
                );
            }
        }
    }
}
