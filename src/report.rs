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

/// An I/O error in plain words, without the `(os error N)` tail:
/// "permission denied", "no such file or directory", "address in use".
pub fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let plain = match e.kind() {
        ErrorKind::NotFound => "no such file or directory",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::AddrInUse => "the address is already in use",
        ErrorKind::AddrNotAvailable => "the address is not one of this machine's",
        ErrorKind::ReadOnlyFilesystem => "the file system is read-only",
        ErrorKind::StorageFull => "no space left on the device",
        ErrorKind::NotADirectory => "a part of the path is not a folder",
        ErrorKind::IsADirectory => "it is a folder",
        _ => {
            let text = e.to_string();
            return match text.rfind(" (os error ") {
                Some(at) => lower_first(&text[..at]),
                None => text,
            };
        }
    };
    plain.to_string()
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_causes_in_plain_words() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            io_cause(&Error::from(ErrorKind::PermissionDenied)),
            "permission denied"
        );
        assert_eq!(
            io_cause(&Error::from_raw_os_error(libc::EADDRINUSE)),
            "the address is already in use"
        );
        assert_eq!(
            io_cause(&Error::from_raw_os_error(libc::EMFILE)),
            "too many open files"
        );
        assert_eq!(io_cause(&Error::other("odd")), "odd");
    }

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
