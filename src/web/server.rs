//! Accepting HTTP connections and serving them with hyper's HTTP/1 server.
//!
//! Owning the accept loop (instead of `axum::serve`) keeps the per-request
//! path short and puts the connection settings in one place: no Nagle delay,
//! a bounded kernel send buffer, a deadline for request headers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use futures_util::future::Either;

use super::client::{Client, PeerAddr, Trust};
use super::{App, api};
use crate::limits::{AddressHold, AddressKey};
use crate::net::Listener;

/// Kernel send buffer of each connection: a client that stops reading holds
/// kilobytes, not the megabytes autotuning would allow.
const SEND_BUFFER: usize = 64 * 1024;
/// Time a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) read into memory.
const MAX_HEAD: usize = 16 * 1024;
/// Least time between two warnings that the connection cap is reached.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` until `shutdown`, then waits for requests in
/// flight (the caller bounds how long).
pub async fn serve(listener: Listener, app: App, router: Router, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    let max = app.config.options.web_max_connections as usize;
    let slots = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let mut last_warning: Option<tokio::time::Instant> = None;
    let proxied = Trust::of(&app.config.options) != Trust::Peer;
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's
        // backlog until one of ours closes.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Said once a minute at most, however often the cap is hit.
                if last_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                    tracing::warn!(
                        "web: {max} connections open (web_max_connections); new ones wait until one closes"
                    );
                    last_warning = Some(tokio::time::Instant::now());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                // Behind a proxy every connection comes from the proxy: the
                // client's address is known, and counted, per request.
                let hold = match proxied {
                    true => None,
                    false => match app.per_address.hold(peer.ip()) {
                        Some(hold) => Some(hold),
                        None => {
                            refuse_crowded(&app, peer.ip());
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
                let peer = PeerAddr(Some(peer));
                let slot = ConnectionSlot::new(slot, hold);
                let serve = connection(&http, stream, peer, slot, &app, &router, &shutdown);
                connections.spawn(serve);
            }
            Ok(Accepted::Unix(stream)) => {
                let peer = PeerAddr(None);
                let slot = ConnectionSlot::new(slot, None);
                let serve = connection(&http, stream, peer, slot, &app, &router, &shutdown);
                connections.spawn(serve);
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("web: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.close();
    connections.wait().await;
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// A stream that can wait for its first byte without reading it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Returns once a byte (or the end of the stream) can be read.
    fn first_byte(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

macro_rules! first_byte_by_peeking {
    ($stream:ty) => {
        impl Stream for $stream {
            async fn first_byte(&self) -> std::io::Result<()> {
                // Readiness can be reported spuriously; peeking tells.
                let mut byte = [std::mem::MaybeUninit::uninit()];
                loop {
                    self.readable().await?;
                    let peeked = self.try_io(tokio::io::Interest::READABLE, || {
                        socket2::SockRef::from(self).peek(&mut byte)
                    });
                    match peeked {
                        Ok(_) => return Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    };
}

first_byte_by_peeking!(tokio::net::TcpStream);
first_byte_by_peeking!(tokio::net::UnixStream);

/// Closes a connection whose address holds all it may, and says so (at a
/// bounded rate).
fn refuse_crowded(app: &App, ip: IpAddr) {
    app.metrics.connections_refused.inc();
    if let Some(held) = app.quiet.connections.pass() {
        tracing::warn!(
            "web: refused a connection from {}: it holds {} (web_max_connections_per_address){held}",
            AddressKey::from(ip),
            app.config.options.web_max_connections_per_address
        );
    }
}

/// One connection; on shutdown it finishes the request in flight and closes.
fn connection<I: Stream>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    peer: PeerAddr,
    slot: ConnectionSlot,
    app: &App,
    router: &Router,
    shutdown: &CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let (http, app, router) = (http.clone(), app.clone(), router.clone());
    let trust = Trust::of(&app.config.options);
    let proxied = trust != Trust::Peer;
    // Shared with a websocket or event stream the request may become.
    let held = slot.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let mut slot = slot.clone();
        if proxied {
            // This request holds a place of its client's address.
            let client = Client::resolve(peer.0, request.headers(), trust);
            if let Some(ip) = client.ip {
                match app.per_address.hold(ip) {
                    Some(hold) => slot.hold = Some(Arc::new(hold)),
                    None => {
                        refuse_crowded(&app, ip);
                        let response = super::Error::TooManyConnections.into_response();
                        return Either::Left(std::future::ready(Ok(response)));
                    }
                }
            }
        }
        let (method, uri, headers) = (request.method(), request.uri(), request.headers());
        if let Some(response) = api::hot_path(&app, method, uri, headers, peer) {
            return Either::Left(std::future::ready(Ok(response)));
        }
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(slot);
        let mut router = router.clone();
        Either::Right(tower::Service::call(&mut router, request.map(Body::new)))
    });
    let shutdown = shutdown.clone();
    async move {
        // Until its first byte arrives a connection holds no buffers, so
        // idle connections cost little; it has HEADER_TIMEOUT to send it.
        let first_byte = tokio::select! {
            first = tokio::time::timeout(HEADER_TIMEOUT, io.first_byte()) => first,
            _ = shutdown.cancelled() => return,
        };
        if !matches!(first_byte, Ok(Ok(()))) {
            tracing::debug!("connection closed: nothing sent within {HEADER_TIMEOUT:?}");
            return;
        }
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            tracing::debug!("connection ended: {}", crate::report::Report(&e));
        }
        drop(held);
    }
}

/// One of the `web_max_connections` places and of its address's
/// `web_max_connections_per_address`, held for as long as the connection
/// (or the websocket or event stream it became) lives.
#[derive(Clone)]
pub struct ConnectionSlot {
    _permit: Arc<OwnedSemaphorePermit>,
    hold: Option<Arc<AddressHold>>,
}

impl ConnectionSlot {
    fn new(permit: OwnedSemaphorePermit, hold: Option<AddressHold>) -> ConnectionSlot {
        ConnectionSlot {
            _permit: Arc::new(permit),
            hold: hold.map(Arc::new),
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
