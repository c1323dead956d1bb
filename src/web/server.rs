//! Accepting HTTP connections and serving them with hyper's HTTP/1 server.
//!
//! Owning the accept loop (instead of `axum::serve`) keeps the per-request
//! path short and puts the connection settings in one place: no Nagle delay,
//! a bounded kernel send buffer, a deadline for request headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncRead;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::App;
use super::client::{PeerAddr, Trust};
use super::event_stream::{self, Peekable};
use super::front::Front;
use super::places::{ConnectionSlot, refuse_crowded};
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

/// Serves `front` on `listener` until `shutdown`, then waits for requests in
/// flight (the caller bounds how long).
pub async fn serve(listener: Listener, app: App, front: Front, shutdown: CancellationToken) {
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
                let serve = connection(&http, stream, peer, slot, &front, &shutdown);
                connections.spawn(serve);
            }
            Ok(Accepted::Unix(stream)) => {
                let peer = PeerAddr(None);
                let slot = ConnectionSlot::new(slot, None);
                let serve = connection(&http, stream, peer, slot, &front, &shutdown);
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
trait Stream: AsyncRead + Peekable {
    /// Returns once a byte (or the end of the stream) can be read.
    fn first_byte(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

macro_rules! peekable_stream {
    ($stream:ty) => {
        impl Peekable for $stream {
            fn peek(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                // SAFETY: an initialised buffer seen as possibly uninitialised
                // bytes; `peek` only writes into it.
                let uninit =
                    unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
                self.try_io(tokio::io::Interest::READABLE, || {
                    socket2::SockRef::from(self).peek(uninit)
                })
            }

            fn read_now(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.try_read(buf)
            }

            async fn readable(&self) -> std::io::Result<()> {
                <$stream>::readable(self).await
            }
        }

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

peekable_stream!(tokio::net::TcpStream);
peekable_stream!(tokio::net::UnixStream);

/// One connection; on shutdown it finishes the request in flight and closes.
fn connection<I: Stream>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    peer: PeerAddr,
    slot: ConnectionSlot,
    front: &Front,
    shutdown: &CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let http = http.clone();
    // Shared with a websocket or event stream the request may become.
    let held = slot.clone();
    let front = front.for_connection(peer, slot);
    let shutdown = shutdown.clone();
    async move {
        // Until its first byte arrives a connection holds no buffers, so
        // idle connections cost little; it has HEADER_TIMEOUT to send it.
        let first_byte = tokio::select! {
            first = tokio::time::timeout(HEADER_TIMEOUT, io.first_byte()) => first,
            _ = shutdown.cancelled() => return,
        };
        if !matches!(first_byte, Ok(Ok(()))) {
            tracing::debug!(
                "connection closed: nothing sent within {} s",
                HEADER_TIMEOUT.as_secs()
            );
            return;
        }
        // An event stream as the first request is written without hyper's
        // buffers, which would otherwise stay for the stream's whole life.
        if let Some(request) = event_stream::take_request(&io) {
            event_stream::serve(io, request, &front, &shutdown).await;
            drop(held);
            return;
        }
        let service = hyper::service::service_fn(move |request| front.answer(request));
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        // On the heap: hyper's connection state is most of this future, and
        // an idle connection or an event stream should not carry its room.
        let mut connection = Box::pin(connection);
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

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
