//! Telling the service manager how bitsd is doing (`sd_notify`): `READY=1`
//! once it serves, `STOPPING=1` when it begins to shut down. Nothing is
//! sent unless the service manager named a socket in `NOTIFY_SOCKET`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use crate::report::io_cause;

/// The variable through which the service manager names its socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sent once the listeners are bound, the database open and the state loaded.
pub const READY: &str = "READY=1";

/// Sent when shutdown begins.
pub const STOPPING: &str = "STOPPING=1";

/// Tells the service manager `state`, if bitsd runs under one; a failure is
/// logged, never fatal.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    match send(&socket, state) {
        Ok(()) => tracing::debug!("told the service manager {state}"),
        Err(e) => tracing::warn!(
            "cannot tell the service manager {state} through {}: {}",
            socket.to_string_lossy(),
            io_cause(&e)
        ),
    }
}

/// Sends `state` as one datagram to `socket`: an absolute path, or an
/// abstract socket name written with a leading `@`.
pub fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    match socket.as_bytes() {
        [b'@', name @ ..] => connect_abstract(&datagram, name)?,
        [b'/', ..] => datagram.connect(Path::new(socket))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path or an abstract socket name",
            ));
        }
    }
    let sent = datagram.send(state.as_bytes())?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the message was cut short",
        ));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn connect_abstract(datagram: &UnixDatagram, name: &[u8]) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt as _;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt as _;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    datagram.connect_addr(&address)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn connect_abstract(_: &UnixDatagram, _: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(listener: &UnixDatagram) -> String {
        let mut buffer = [0u8; 256];
        let n = listener.recv(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), READY).unwrap();
        assert_eq!(received(&listener), "READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("bitsd-test-{}-{}", std::process::id(), line!());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        send(OsStr::new(&format!("@{name}")), STOPPING).unwrap();
        assert_eq!(received(&listener), "STOPPING=1");
    }

    #[test]
    fn refuses_a_relative_name_and_a_missing_socket() {
        let err = send(OsStr::new("notify"), READY).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let dir = tempfile::tempdir().unwrap();
        let err = send(dir.path().join("none").as_os_str(), READY).unwrap_err();
        assert_eq!(io_cause(&err), "no such file or directory");
    }
}
