//! Binding the listeners: the web's and the control port's, on TCP or on a
//! unix socket, and the TLS device port's, on TCP.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpSocket, UnixListener};

use crate::config::Config;
use crate::report::io_cause;

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Where a listener listens, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Listener {
    pub fn address(&self) -> io::Result<Address> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Address::Tcp),
            Listener::Unix(_, p) => Ok(Address::Unix(p.clone())),
        }
    }
}

/// The web and control listeners.
#[derive(Debug)]
pub struct Listeners {
    pub web: Listener,
    pub control: Listener,
    /// The TLS device port, when `control_tls_port` is set.
    pub control_tls: Option<TcpListener>,
}

impl Listeners {
    /// Binds the listeners as configured.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let o = &config.options;
        let web = match &o.web_usocket {
            Some(path) => bind_unix(path, config, "web").await?,
            None => bind_tcp(SocketAddr::new(o.web_address, o.web_port), "web").await?,
        };
        let control = match &o.control_local_usocket {
            Some(path) => bind_unix(path, config, "device").await?,
            None => {
                let addr = SocketAddr::new(o.control_local_address, o.control_local_port);
                bind_tcp(addr, "device").await?
            }
        };
        let control_tls = match o.control_tls_port {
            Some(port) => {
                let addr = SocketAddr::new(o.control_tls_address, port);
                match bind_tcp(addr, "TLS device").await? {
                    Listener::Tcp(listener) => Some(listener),
                    Listener::Unix(..) => unreachable!("bound on TCP"),
                }
            }
            None => None,
        };
        Ok(Listeners {
            web,
            control,
            control_tls,
        })
    }
}

/// Connections the kernel completes and queues before bitsd accepts them
/// (the system's `somaxconn` may lower it): room for every client
/// reconnecting at once after a restart.
const BACKLOG: u32 = 4096;

/// An I/O failure of `what`, in plain words.
fn failed(what: String) -> impl FnOnce(io::Error) -> anyhow::Error {
    move |e| anyhow::anyhow!("{what}: {}", io_cause(&e))
}

/// Binds `addr` for the `role` listener (web or device).
async fn bind_tcp(addr: SocketAddr, role: &str) -> anyhow::Result<Listener> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    let listener = listen().map_err(failed(format!("cannot listen on {addr} ({role})")))?;
    Ok(Listener::Tcp(listener))
}

/// Binds a unix socket, replacing a stale socket file left by a previous run
/// but never a live one or a file that is not a socket.
async fn bind_unix(path: &Path, config: &Config, role: &str) -> anyhow::Result<Listener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("{} is in use by another process", path.display());
        }
        std::fs::remove_file(path).map_err(failed(format!(
            "cannot remove the stale socket {}",
            path.display()
        )))?;
    }
    let listener = UnixListener::bind(path).map_err(failed(format!(
        "cannot listen on {} ({role})",
        path.display()
    )))?;
    let o = &config.options;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(o.usocket_mode))
        .map_err(failed(format!("cannot set the mode of {}", path.display())))?;
    if o.usocket_uid.is_some() || o.usocket_gid.is_some() {
        std::os::unix::fs::chown(path, o.usocket_uid, o.usocket_gid).map_err(failed(format!(
            "cannot set the owner of {}",
            path.display()
        )))?;
    }
    Ok(Listener::Unix(listener, path.to_path_buf()))
}
