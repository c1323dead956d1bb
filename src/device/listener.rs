//! The control port: accepting the device over plain TCP or a unix socket.
//! What a connection then does is in `session`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lines::{StreamLines, StreamSink};
use super::pairing::Transport;
use super::session::{self, Devices, Peer, Start};
use crate::config::{Allowlist, Config};
use crate::limits::AddressKey;
use crate::net::Listener;

/// Idle time before the first keepalive probe, then the time between
/// probes and how many go unanswered before the link is dropped: a device
/// that vanished is noticed within two minutes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 5;

/// Accepts device connections on the control port until `shutdown`.
pub fn serve(
    listener: Listener,
    config: &Config,
    devices: Arc<Devices>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> impl Future<Output = ()> + Send + use<> {
    let allow = config.options.control_remote_address.clone();
    let token = config.options.control_token.is_some();
    serve_with(listener, allow, token, devices, shutdown, tracker)
}

async fn serve_with(
    listener: Listener,
    allow: Allowlist,
    token: bool,
    devices: Arc<Devices>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener, &allow, &devices) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(Some(conn)) => conn,
            Ok(None) => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("control: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let start = if token {
            Start::Prove {
                waiting: devices.enter_waiting_room(&peer),
            }
        } else {
            Start::Original
        };
        let devices = devices.clone();
        tracker.spawn(async move {
            let reason = match stream {
                Stream::Tcp(s) => {
                    let (read, write) = s.into_split();
                    let (lines, sink) = (StreamLines::new(read), StreamSink(write));
                    session::run(lines, sink, &peer, start, &devices).await
                }
                Stream::Unix(s) => {
                    let (read, write) = s.into_split();
                    let (lines, sink) = (StreamLines::new(read), StreamSink(write));
                    session::run(lines, sink, &peer, start, &devices).await
                }
            };
            if let Some(reason) = reason {
                tracing::info!("device {} disconnected: {reason}", peer.label);
            }
        });
        // Under a flood of connections, let the new one read the `auth`
        // line that is often there already before accepting the next:
        // otherwise it may be evicted before it is ever read.
        if token {
            tokio::task::yield_now().await;
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Accepts one connection; `None` when the peer is not allowed.
async fn accept(
    listener: &Listener,
    allow: &Allowlist,
    devices: &Devices,
) -> std::io::Result<Option<(Stream, Peer)>> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            let address = Some(AddressKey::from(peer.ip()));
            if !allow.allows(peer.ip()) {
                if let Some(held) = devices.may_warn(address) {
                    tracing::warn!(
                        "control: refused {}: not in control_remote_address{held}",
                        peer.ip()
                    );
                }
                return Ok(None);
            }
            keep_alive(&stream, &peer);
            let label = peer.to_string();
            let transport = Transport::Tcp;
            Ok(Some((
                Stream::Tcp(stream),
                Peer {
                    label,
                    address,
                    transport,
                },
            )))
        }
        // File permissions guard a unix socket: every peer is accepted.
        Listener::Unix(l, path) => {
            let (stream, _) = l.accept().await?;
            let label = format!("unix:{}", path.display());
            let transport = Transport::Unix;
            let peer = Peer {
                label,
                address: None,
                transport,
            };
            Ok(Some((Stream::Unix(stream), peer)))
        }
    }
}

/// Turns off Nagle and turns on TCP keepalive for a device's connection.
pub(super) fn keep_alive(stream: &tokio::net::TcpStream, peer: &std::net::SocketAddr) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::warn!("control: cannot turn on TCP keepalive for {peer}: {e}");
    }
}
