//! Log lines on standard error that never stop the server: a line that
//! cannot be written (the reader of stderr gone, the log's disk full) is
//! dropped and counted in [`LOG_LINES_DROPPED`], never a panic.
//!
//! A write to a closed pipe fails with `EPIPE` only because Rust ignores
//! `SIGPIPE` in every program it starts; nothing in bitsd changes that.

use std::fmt;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use crate::metrics::LOG_LINES_DROPPED;

/// Standard error as the log's writer: each line one attempt, dropped and
/// counted when it fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line<io::StderrLock<'static>>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(io::stderr().lock())
    }
}

/// One log line on its way to `W`; its writes never fail, whatever
/// became of the line.
#[derive(Debug)]
pub struct Line<W>(pub W);

impl<W: Write> Write for Line<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    /// The formatter hands over a whole line at once: one line, one count.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.0.write_all(bytes).is_err() {
            LOG_LINES_DROPPED.inc();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.0.flush().is_err() {
            LOG_LINES_DROPPED.inc();
        }
        Ok(())
    }
}

/// Writes `line` and a newline to standard error, or counts it as dropped:
/// for what the program prints itself (`eprintln!` panics when it fails).
pub fn eprint_line(line: fmt::Arguments<'_>) {
    let text = format!("{line}\n");
    let _ = Line(io::stderr().lock()).write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader is gone.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_that_cannot_be_written_is_dropped_and_counted() {
        let before = LOG_LINES_DROPPED.get();
        let mut line = Line(Closed);
        assert_eq!(line.write(b"one line\n").unwrap(), 9);
        line.write_all(b"another\n").unwrap();
        // Other tests may drop lines too: at least these two are counted.
        assert!(LOG_LINES_DROPPED.get() >= before + 2);
    }

    #[test]
    fn a_line_written_is_written_whole_and_not_counted() {
        let mut out = Vec::new();
        Line(&mut out).write_all(b"fine\n").unwrap();
        assert_eq!(out, b"fine\n");
    }
}
