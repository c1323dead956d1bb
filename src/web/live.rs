//! Live push: `/ws` (websocket) and `/events` (Server-Sent Events).
//!
//! Both send the `/data` snapshot first, then each committed change as it is
//! broadcast, and `{"device_offline_since": ...}` when that changes. The broadcast channel is the only queue: a client that falls
//! behind it is resynchronised with a fresh snapshot instead of the changes it
//! missed, so a slow client costs no memory and never delays the others.
//! `frame` encodes the websocket frame headers, so a payload is sent as it is.

mod frame;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tower_http::set_header::SetResponseHeaderLayer;

use super::App;
use super::places::{StreamPlace, Streams};
use crate::state::{Changes, State};

/// Interval between pings; a client silent for two intervals is dropped.
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// Keep-alive comment interval on `/events`.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// Largest message a websocket client may send (it has nothing to say).
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// How long a close frame may take to go out on shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);

pub fn router() -> Router<App> {
    Router::new().route("/ws", get(websocket)).route(
        "/events",
        get(events).layer(SetResponseHeaderLayer::overriding(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        )),
    )
}

/// Counts a live client for as long as it lives.
struct Live(Gauge);

impl Live {
    fn new(gauge: &Gauge) -> Live {
        gauge.inc();
        Live(gauge.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a client is sent next.
enum Next {
    Change(Bytes),
    Snapshot(Bytes),
    Ping,
    Closed,
}

/// A client's position in the stream of changes.
struct Follower {
    state: State,
    changes: tokio::sync::broadcast::Receiver<Changes>,
    /// The commit being sent and how many of its changes are sent.
    commit: Option<(Changes, usize)>,
    /// The snapshot version the client has; older changes are skipped.
    version: u64,
    /// The device's absence, told as it changes (not a stored change).
    device_offline: watch::Receiver<Bytes>,
}

impl Follower {
    /// Subscribes, then takes the snapshot the client starts from.
    fn start(state: &State) -> (Follower, Bytes) {
        let changes = state.subscribe();
        let mut device_offline = state.device_offline();
        device_offline.mark_unchanged();
        let snapshot = state.snapshot();
        let follower = Follower {
            state: state.clone(),
            changes,
            commit: None,
            version: snapshot.version,
            device_offline,
        };
        (follower, snapshot.data_json.clone())
    }

    async fn next(&mut self) -> Next {
        loop {
            if let Some((commit, sent)) = &mut self.commit {
                if let Some(p) = commit.get(*sent) {
                    *sent += 1;
                    if p.seq > self.version {
                        self.version = p.seq;
                        return Next::Change(p.json.clone());
                    }
                    continue;
                }
                self.commit = None;
            }
            let received = tokio::select! {
                received = self.changes.recv() => received,
                Ok(()) = self.device_offline.changed() => {
                    return Next::Change(self.device_offline.borrow_and_update().clone());
                }
            };
            match received {
                Ok(commit) => self.commit = Some((commit, 0)),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!("live client missed {missed} commits; sending a snapshot");
                    let snapshot = self.state.snapshot();
                    self.version = snapshot.version;
                    return Next::Snapshot(snapshot.data_json.clone());
                }
                Err(RecvError::Closed) => return Next::Closed,
            }
        }
    }
}

/// The websocket handshake, done here rather than by a framework extractor
/// so the connection's raw stream stays reachable (see [`frame::write_text`]).
async fn websocket(AxumState(app): AxumState<App>, mut request: Request) -> Response {
    let (upgrade, place) = match Upgrade::with_place(&app, &mut request) {
        Ok(checked) => checked,
        Err(refused) => return refused.into_response(),
    };
    upgrade.serve(&app.clone(), place, move |io| async move {
        let _live = Live::new(&app.metrics.websocket_clients);
        serve_websocket(io, &app).await;
    })
}

/// A websocket upgrade request, checked: what its answer needs, and the
/// connection it becomes.
pub(super) struct Upgrade {
    accept: String,
    on_upgrade: hyper::upgrade::OnUpgrade,
    slot: Option<super::places::ConnectionSlot>,
}

impl Upgrade {
    /// Checks the handshake's headers, then takes one of the
    /// `web_max_streams` places for the stream it becomes.
    pub(super) fn with_place(
        app: &App,
        request: &mut Request,
    ) -> Result<(Upgrade, StreamPlace), super::Error> {
        let upgrade = Upgrade::check(request)?;
        Ok((upgrade, Streams::take(app)?))
    }

    /// Checks the handshake's headers (version 13 only).
    fn check(request: &mut Request) -> Result<Upgrade, super::Error> {
        let path = request.uri().path().to_string();
        let headers = request.headers();
        let has_token = |name: header::HeaderName, token: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
            return Err(super::Error::BadRequest(format!(
                "{path} needs a websocket upgrade"
            )));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            return Err(super::Error::WebsocketVersion);
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(super::Error::BadRequest(
                "Sec-WebSocket-Key is missing".into(),
            ));
        };
        let accept = derive_accept_key(key.as_bytes());
        let Some(on_upgrade) = request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
        else {
            return Err(super::Error::BadRequest(
                "this connection cannot be upgraded".into(),
            ));
        };
        let slot = request
            .extensions()
            .get::<super::places::ConnectionSlot>()
            .cloned();
        Ok(Upgrade {
            accept,
            on_upgrade,
            slot,
        })
    }

    /// Answers `101` and, once the connection is upgraded, runs `serve` on
    /// it in a task of its own that holds its places (the connection's,
    /// the stream's `place`, and shutdown's wait for it) until it ends.
    pub(super) fn serve<F>(
        self,
        app: &App,
        place: StreamPlace,
        serve: impl FnOnce(Io) -> F + Send + 'static,
    ) -> Response
    where
        F: Future<Output = ()> + Send,
    {
        let token = app.tracker.token();
        let (on_upgrade, slot) = (self.on_upgrade, self.slot);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
                Err(e) => {
                    tracing::debug!("websocket upgrade failed: {}", crate::report::Report(&e))
                }
            }
            drop((token, slot, place));
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&self.accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

pub(super) type Io = TokioIo<hyper::upgrade::Upgraded>;

/// Buffers of one connection: clients only send pongs and a close, and every
/// large message (a snapshot) is written around the library's buffer.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

async fn serve_websocket(mut io: Io, app: &App) {
    let shutdown = app.shutdown.cancelled();
    tokio::pin!(shutdown);
    let (mut follower, snapshot) = Follower::start(&app.state);
    let sent = tokio::select! {
        sent = frame::write_text(&mut io, &snapshot) => sent.is_ok(),
        _ = &mut shutdown => false,
    };
    if !sent {
        return;
    }
    let mut socket =
        WebSocketStream::from_raw_socket(io, Role::Server, Some(websocket_config())).await;
    let mut pings = app.pings.subscribe();
    let mut awaiting_pong = false;
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => {
                let close = Message::Close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "server shutting down".into(),
                }));
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(close)).await;
                return;
            }
            next = follower.next() => next,
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Pong(_))) => {
                    awaiting_pong = false;
                    continue;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Pings are answered by the library; text and binary are ignored.
                Some(Ok(_)) => continue,
            },
            tick = pings.recv() => {
                if tick.is_err() {
                    continue;
                }
                if awaiting_pong {
                    tracing::debug!("websocket client did not answer a ping; closing");
                    return;
                }
                awaiting_pong = true;
                Next::Ping
            }
        };
        let sent = tokio::select! {
            sent = deliver(&mut socket, next) => sent,
            _ = &mut shutdown => Err(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Sends one item to a client.
async fn deliver(socket: &mut WebSocketStream<Io>, next: Next) -> Result<(), ()> {
    match next {
        Next::Change(json) => {
            let text = Utf8Bytes::try_from(json).map_err(|_| ())?;
            socket.send(Message::Text(text)).await.map_err(|_| ())
        }
        // Written around the library's buffer, whose capacity would otherwise
        // stay at the size of the largest message for the life of the
        // connection. Its flush writes out every queued message and pong, so
        // the stream is then at a frame boundary.
        Next::Snapshot(json) => {
            socket.flush().await.map_err(|_| ())?;
            frame::write_text(socket.get_mut(), &json)
                .await
                .map_err(|_| ())
        }
        Next::Ping => socket
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(|_| ()),
        Next::Closed => Err(()),
    }
}

async fn events(AxumState(app): AxumState<App>, request: Request) -> Response {
    let place = match Streams::take(&app) {
        Ok(place) => place,
        Err(refused) => return refused.into_response(),
    };
    let (follower, snapshot) = Follower::start(&app.state);
    // The stream keeps the connection's places for as long as it lasts.
    let slot = request
        .extensions()
        .get::<super::places::ConnectionSlot>()
        .cloned();
    let live = Arc::new(SseClient {
        _counted: Live::new(&app.metrics.sse_clients),
        _slot: slot,
        _place: place,
    });
    let stream = sse_stream(follower, snapshot, app.shutdown.clone(), live);
    // nginx holds a proxied body in its buffers unless told otherwise.
    (
        [("x-accel-buffering", "no")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEPALIVE).text("keep-alive")),
    )
        .into_response()
}

/// What an event stream holds while it lasts: its place in the metrics and
/// its connection's places.
struct SseClient {
    _counted: Live,
    _slot: Option<super::places::ConnectionSlot>,
    _place: StreamPlace,
}

fn sse_stream(
    follower: Follower,
    snapshot: Bytes,
    shutdown: tokio_util::sync::CancellationToken,
    live: Arc<SseClient>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let first = Some(snapshot);
    futures_util::stream::unfold(
        (follower, first, shutdown, live),
        |(mut follower, first, shutdown, live)| async move {
            let json = match first {
                Some(snapshot) => snapshot,
                None => tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    next = follower.next() => match next {
                        Next::Change(json) | Next::Snapshot(json) => json,
                        Next::Ping | Next::Closed => return None,
                    },
                },
            };
            let event = SseEvent::default().data(String::from_utf8_lossy(&json));
            Some((Ok(event), (follower, None, shutdown, live)))
        },
    )
}
