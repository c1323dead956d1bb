//! `GET /device`: a registered device over a websocket on the web port, so
//! through the same proxy and port 443 as the browsers (SPEC 18). One text
//! message per line either way; the key as the first message (`auth <key>`
//! or `claim <code>`) or as `Authorization: Bearer <key>` on the upgrade.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State as AxumState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::client::Client;
use super::live::{Io, PING_EVERY, Upgrade};
use super::{App, Error};
use crate::device::{
    Devices, End, LineSink, LineSource, Paired, Peer, Refused, Start, Transport, protocol,
};
use crate::limits::AddressKey;

pub fn router() -> Router<App> {
    Router::new().route("/device", get(device))
}

/// The upgrade: checked like `/ws`'s, it takes one of the `web_max_streams`
/// places, then a place among the connections waiting to authenticate; a
/// key in `Authorization` is checked before it is answered.
async fn device(AxumState(app): AxumState<App>, client: Client, mut request: Request) -> Response {
    let peer = Peer {
        label: client.label(),
        address: client.ip.map(AddressKey::from),
        transport: Transport::Websocket,
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string);
    let (upgrade, place) = match Upgrade::with_place(&app, &mut request) {
        Ok(checked) => checked,
        Err(refused) => return refused.into_response(),
    };
    let devices = app.devices.clone();
    let start = match bearer {
        Some(key) => match check_bearer(&devices, &peer, key).await {
            Ok(paired) => Start::Proved(paired),
            Err(refused) => return refused.into_response(),
        },
        None => Start::Prove {
            waiting: devices.enter_waiting_room(&peer),
        },
    };
    upgrade.serve(&app, place, move |io| async move {
        let config = WebSocketConfig::default()
            .max_message_size(Some(protocol::MAX_LINE))
            .max_frame_size(Some(protocol::MAX_LINE));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (sink, stream) = socket.split();
        let awaiting_pong = Arc::new(AtomicBool::new(false));
        let lines = SocketLines {
            stream,
            awaiting_pong: awaiting_pong.clone(),
        };
        let sink = SocketSink {
            sink,
            awaiting_pong,
        };
        let ended = crate::device::run_session(lines, sink, &peer, start, &devices).await;
        if let Some(reason) = ended {
            tracing::info!("device {} disconnected: {reason}", peer.label);
        }
    })
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Checks the key of an `Authorization` header, at most once a second
/// per address like every key check; a refusal is logged at a bounded
/// rate.
async fn check_bearer(devices: &Devices, peer: &Peer, key: String) -> Result<Paired, Error> {
    if !devices.pairing().may_check(peer.address) {
        devices.refused(peer, &Refused::TooFast);
        return Err(Error::TooManyRequests(
            "one key check a second from an address; try again in a second".into(),
        ));
    }
    match devices.pairing().key(key).await {
        Ok(paired) => Ok(paired),
        Err(refused) => {
            devices.refused(peer, &refused);
            if refused.is_an_answer() {
                Err(Error::DeviceKey)
            } else {
                // Not a verdict on the key: the device tries again.
                Err(Error::TooManyRequests(format!(
                    "{refused}; try again in a second"
                )))
            }
        }
    }
}

/// A device's messages, each one line.
struct SocketLines {
    stream: SplitStream<WebSocketStream<Io>>,
    /// Set by the sink's ping, cleared by the device's pong.
    awaiting_pong: Arc<AtomicBool>,
}

impl LineSource for SocketLines {
    async fn next_line(&mut self) -> Result<BytesMut, End> {
        loop {
            let line = match self.stream.next().await {
                None | Some(Ok(Message::Close(_))) => return Err(End::Closed),
                Some(Ok(Message::Text(text))) => BytesMut::from(text.as_bytes()),
                Some(Ok(Message::Binary(bytes))) => BytesMut::from(&bytes[..]),
                Some(Ok(Message::Pong(_))) => {
                    self.awaiting_pong.store(false, Ordering::Relaxed);
                    continue;
                }
                // Pings are answered by the library.
                Some(Ok(_)) => continue,
                Some(Err(WsError::Capacity(_))) => return Err(End::TooLong),
                Some(Err(e)) => return Err(End::Failed(format!("read failed: {e}"))),
            };
            return Ok(without_line_end(line));
        }
    }
}

/// A message as a line: a device that ends its messages as it ends lines
/// on TCP (`\n`, `\r\n`) means the same.
fn without_line_end(mut line: BytesMut) -> BytesMut {
    if line.ends_with(b"\n") {
        line.truncate(line.len() - 1);
    }
    line
}

/// Lines to a device, one message each, with a ping every half minute so
/// that proxies keep a quiet connection open; a device that has not
/// answered the previous ping by the next is gone.
struct SocketSink {
    sink: SplitSink<WebSocketStream<Io>, Message>,
    awaiting_pong: Arc<AtomicBool>,
}

impl LineSink for SocketSink {
    const PING_EVERY: Option<Duration> = Some(PING_EVERY);

    async fn send_line(&mut self, line: String) -> Result<(), String> {
        self.sink
            .send(Message::Text(line.into()))
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    async fn ping(&mut self) -> Result<(), String> {
        if self.awaiting_pong.swap(true, Ordering::Relaxed) {
            return Err(format!(
                "no answer to a ping within {} s",
                PING_EVERY.as_secs()
            ));
        }
        self.sink
            .send(Message::Ping(bytes::Bytes::new()))
            .await
            .map_err(|e| format!("ping failed: {e}"))
    }

    async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}
