//! An error with its causes on one line, for log lines and messages.

use std::error::Error;
use std::fmt;

/// Shows an error and each of its sources in turn, `outer: inner: root`,
/// so every cause appears once.
pub struct Report<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_once() {
        let e = Outer(std::io::Error::other("root"));
        assert_eq!(Report(&e).to_string(), "outer: root");
        let io = std::io::Error::other("alone");
        assert_eq!(Report(&io).to_string(), "alone");
    }
}
