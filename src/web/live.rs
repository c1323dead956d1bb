//! Live push: `/ws` (websocket) and `/events` (Server-Sent Events).
//!
//! Both send the `/data` snapshot first, then each committed change as it is
//! broadcast. The broadcast channel is the only queue: a client that falls
//! behind it is resynchronised with a fresh snapshot instead of the changes it
//! missed, so a slow client costs no memory and never delays the others.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast::error::RecvError;
use tower_http::set_header::SetResponseHeaderLayer;

use super::App;
use crate::state::{Published, State};

/// Interval between pings; a client silent for two intervals is dropped.
const PING_EVERY: Duration = Duration::from_secs(30);
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
    Closed,
}

/// A client's position in the stream of changes.
struct Follower {
    state: State,
    changes: tokio::sync::broadcast::Receiver<Published>,
    /// The snapshot version the client has; older changes are skipped.
    version: u64,
}

impl Follower {
    /// Subscribes, then takes the snapshot the client starts from.
    fn start(state: &State) -> (Follower, Bytes) {
        let changes = state.subscribe();
        let snapshot = state.snapshot();
        let follower = Follower {
            state: state.clone(),
            changes,
            version: snapshot.version,
        };
        (follower, snapshot.data_json.clone())
    }

    async fn next(&mut self) -> Next {
        loop {
            match self.changes.recv().await {
                Ok(p) if p.seq <= self.version => continue,
                Ok(p) => {
                    self.version = p.seq;
                    return Next::Change(p.json);
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!("live client missed {missed} changes; sending a snapshot");
                    let snapshot = self.state.snapshot();
                    self.version = snapshot.version;
                    return Next::Snapshot(snapshot.data_json.clone());
                }
                Err(RecvError::Closed) => return Next::Closed,
            }
        }
    }
}

async fn websocket(AxumState(app): AxumState<App>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        // Tungstenite's defaults reserve 128 KiB per connection; clients
        // only send pongs and a close.
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| {
            let token = app.tracker.token();
            async move {
                let _live = Live::new(&app.metrics.websocket_clients);
                serve_websocket(socket, &app).await;
                drop(token);
            }
        })
}

async fn serve_websocket(mut socket: WebSocket, app: &App) {
    let (mut follower, snapshot) = Follower::start(&app.state);
    if send(&mut socket, snapshot, app).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut awaiting_pong = false;
    loop {
        let text = tokio::select! {
            _ = app.shutdown.cancelled() => {
                let close = Message::Close(Some(CloseFrame {
                    code: close_code::AWAY,
                    reason: Utf8Bytes::from_static("server shutting down"),
                }));
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(close)).await;
                return;
            }
            next = follower.next() => match next {
                Next::Change(json) | Next::Snapshot(json) => json,
                Next::Closed => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Pong(_))) => {
                    awaiting_pong = false;
                    continue;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Pings are answered by the library; text and binary are ignored.
                Some(Ok(_)) => continue,
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    tracing::debug!("websocket client did not answer a ping; closing");
                    return;
                }
                awaiting_pong = true;
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if send(&mut socket, text, app).await.is_err() {
            return;
        }
    }
}

/// Sends one text message; gives up when the server is shutting down.
async fn send(socket: &mut WebSocket, json: Bytes, app: &App) -> Result<(), ()> {
    let Ok(text) = Utf8Bytes::try_from(json) else {
        tracing::error!("a live message is not UTF-8");
        return Err(());
    };
    tokio::select! {
        sent = socket.send(Message::Text(text)) => sent.map_err(|_| ()),
        _ = app.shutdown.cancelled() => Err(()),
    }
}

async fn events(AxumState(app): AxumState<App>) -> impl IntoResponse {
    let (follower, snapshot) = Follower::start(&app.state);
    let live = Arc::new(Live::new(&app.metrics.sse_clients));
    let stream = sse_stream(follower, snapshot, app.shutdown.clone(), live);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEPALIVE).text("keep-alive"))
}

fn sse_stream(
    follower: Follower,
    snapshot: Bytes,
    shutdown: tokio_util::sync::CancellationToken,
    live: Arc<Live>,
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
                        Next::Closed => return None,
                    },
                },
            };
            let event = SseEvent::default().data(String::from_utf8_lossy(&json));
            Some((Ok(event), (follower, None, shutdown, live)))
        },
    )
}
