//! One device connection once accepted, whatever carries its lines (a
//! byte stream, a websocket): who it is (a token, a key, a claim code, or
//! the original device), then its lines to the state and the state's lines
//! to it until it leaves.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::link::{Attachment, DeviceLink, Who};
use super::pairing::{Paired, Pairing, Refused, Transport};
use super::protocol::{self, Command, LineFramer, MAX_LINE, parse_line};
use super::waiting::{Ticket, Waiting};
use crate::config::Options;
use crate::escape::Shown;
use crate::limits::{AddressKey, HeldBack, QuietLog, RateLimiter};
use crate::record::StatusValue;
use crate::state::{Event, Origin, State};

/// Time a connection has to send its first line when it must prove who it
/// is (a token is set, or it is not on the control port).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections that may be waiting to authenticate at once on one
/// transport, in all and from one address; past them the oldest waiting
/// one (of the newcomer's address first) is closed to make room.
const AUTHENTICATING: usize = 32;
const AUTHENTICATING_PER_ADDRESS: usize = 4;

/// Why a connection ended, or how its lines stopped.
#[derive(Debug)]
pub enum End {
    /// The peer closed it.
    Closed,
    /// It closed in the middle of a line of this many bytes.
    Unfinished(usize),
    /// A line (or message) over [`MAX_LINE`] bytes.
    TooLong,
    Failed(String),
}

/// The lines a device sends, whatever carries them.
pub trait LineSource: Send {
    /// The next line, without its end.
    fn next_line(&mut self) -> impl Future<Output = Result<BytesMut, End>> + Send;
}

/// Where the lines for a device go.
pub trait LineSink: Send {
    /// Time between pings, for a transport that a proxy closes when it is
    /// quiet; none for byte streams, which TCP keepalive watches.
    const PING_EVERY: Option<Duration> = None;

    fn send_line(&mut self, line: String) -> impl Future<Output = Result<(), String>> + Send;

    /// Sends a ping, when the transport has them.
    fn ping(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Ends the connection as the transport ends one (a TLS close_notify,
    /// a websocket close frame).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Time a connection's ending may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);

/// Ends `sink`, within [`CLOSE_TIMEOUT`].
async fn close<W: LineSink>(sink: &mut W) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}

/// Lines framed on a byte stream (TCP, TLS, a unix socket).
pub struct StreamLines<R> {
    reader: R,
    framer: LineFramer,
}

impl<R> StreamLines<R> {
    pub fn new(reader: R) -> StreamLines<R> {
        StreamLines {
            reader,
            framer: LineFramer::new(),
        }
    }
}

impl<R: AsyncRead + Unpin + Send> LineSource for StreamLines<R> {
    async fn next_line(&mut self) -> Result<BytesMut, End> {
        loop {
            match self.framer.next_line() {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => {}
                Err(_) => return Err(End::TooLong),
            }
            self.framer.buffer().reserve(MAX_LINE);
            match self.reader.read_buf(self.framer.buffer()).await {
                Ok(0) if self.framer.pending() > 0 => {
                    return Err(End::Unfinished(self.framer.pending()));
                }
                Ok(0) => return Err(End::Closed),
                Ok(_) => {}
                Err(e) => return Err(End::Failed(format!("read failed: {e}"))),
            }
        }
    }
}

/// Lines written to a byte stream, each ended by `\n`.
pub struct StreamSink<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> LineSink for StreamSink<W> {
    async fn send_line(&mut self, line: String) -> Result<(), String> {
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        self.0
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// Who connected: for logs and the registry, and the address the limits
/// count.
pub struct Peer {
    pub name: String,
    pub key: Option<AddressKey>,
    pub transport: Transport,
}

impl Peer {
    /// Its address without the port, as the registry shows it.
    fn address(&self) -> String {
        match self.name.parse::<std::net::SocketAddr>() {
            Ok(address) => address.ip().to_string(),
            Err(_) => self.name.clone(),
        }
    }
}

/// Who may be the device and how it proves it: what every transport shares.
pub struct Devices {
    state: State,
    link: DeviceLink,
    pairing: Pairing,
    token: Option<String>,
    /// Silence after which a device is disconnected; `None` waits forever.
    idle_timeout: Option<Duration>,
    shutdown: CancellationToken,
    /// One warning a minute per address, for refusals...
    warnings: RateLimiter<Option<AddressKey>>,
    /// ...and a bounded number in all, however many addresses there are.
    all_warnings: QuietLog,
    /// Connections closed to make room for newer ones: a bounded number of
    /// lines, whoever churns.
    evictions: QuietLog,
    /// The connections waiting to authenticate, apart on each transport so
    /// strangers on one cannot push out a device on another.
    control_room: Arc<Waiting>,
    tls_room: Arc<Waiting>,
    websocket_room: Arc<Waiting>,
}

impl Devices {
    pub fn new(
        options: &Options,
        state: State,
        link: DeviceLink,
        pairing: Pairing,
        shutdown: CancellationToken,
    ) -> Arc<Devices> {
        Arc::new(Devices {
            state,
            link,
            pairing,
            token: options.control_token.clone(),
            idle_timeout: match options.control_idle_timeout {
                0 => None,
                seconds => Some(Duration::from_secs(seconds)),
            },
            shutdown,
            warnings: RateLimiter::default(),
            all_warnings: QuietLog::default(),
            evictions: QuietLog::default(),
            control_room: Waiting::new(AUTHENTICATING, AUTHENTICATING_PER_ADDRESS),
            tls_room: Waiting::new(AUTHENTICATING, AUTHENTICATING_PER_ADDRESS),
            websocket_room: Waiting::new(AUTHENTICATING, AUTHENTICATING_PER_ADDRESS),
        })
    }

    /// The connected devices.
    pub fn link(&self) -> &DeviceLink {
        &self.link
    }

    /// The claim and key checks.
    pub fn pairing(&self) -> &Pairing {
        &self.pairing
    }

    /// Whether a warning about `address` may be logged now: `Some` with
    /// the note on warnings held back in all.
    pub fn may_warn(&self, address: Option<AddressKey>) -> Option<HeldBack> {
        let minute = crate::limits::Rate::once_every(Duration::from_secs(60));
        self.warnings.try_take(address, minute).ok()?;
        self.all_warnings.pass()
    }

    /// Places a connection among those of its transport waiting to
    /// authenticate, closing the oldest one (of its address first) at
    /// their limit.
    pub fn wait(&self, peer: &Peer) -> Ticket {
        let room = match peer.transport {
            Transport::Tcp | Transport::Unix => &self.control_room,
            Transport::Tls => &self.tls_room,
            Transport::Websocket => &self.websocket_room,
        };
        let (ticket, evicted) = room.enter(peer.key, peer.name.clone());
        if let Some(evicted) = evicted {
            self.link.metrics().device_waiting_evicted.inc();
            if let Some(held) = self.evictions.pass() {
                tracing::warn!(
                    "{}: closed {evicted}: not authenticated yet, and the connections \
                     waiting to authenticate were at their limit; room made for {}{held}",
                    peer.transport.port(),
                    peer.name
                );
            }
        }
        ticket
    }

    /// Logs (at a bounded rate) why `peer` was closed before it became a
    /// device.
    fn refused(&self, peer: &Peer, why: &str) {
        if let Some(held) = self.may_warn(peer.key) {
            tracing::warn!(
                "{}: closed {}: {why}{held}",
                peer.transport.port(),
                peer.name
            );
        }
    }
}

/// What a connection is before its first line.
pub enum Start {
    /// It must prove who it is with its first line; `waiting` is its place
    /// among the connections authenticating.
    Prove { waiting: Ticket },
    /// The original device on a control port without a token: it is the
    /// device at once, unless its first line is a claim or a key.
    Original,
    /// Proved already (a websocket's `Authorization` header).
    Proved(Paired),
}

/// Serves one device connection until it ends; `None` when it never became
/// a device (its refusal is already logged, at a bounded rate).
pub async fn run<R: LineSource, W: LineSink>(
    mut lines: R,
    mut sink: W,
    peer: &Peer,
    start: Start,
    devices: &Devices,
) -> Option<String> {
    let shutdown = &devices.shutdown;
    let (who, new_key) = match start {
        Start::Proved(paired) => (paired.who, paired.new_key),
        Start::Original => (Who::Original, None),
        Start::Prove { waiting } => {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return None,
                // Logged, at a bounded rate, when it was evicted.
                _ = waiting.evicted() => return None,
                outcome = tokio::time::timeout(AUTH_TIMEOUT, lines.next_line()) => outcome,
            };
            if !waiting.leave() {
                return None;
            }
            let line = match outcome {
                Err(_) => {
                    devices.refused(peer, &format!("no first line within {AUTH_TIMEOUT:?}"));
                    return None;
                }
                Ok(Err(_)) => {
                    devices.refused(peer, "closed before authenticating");
                    return None;
                }
                Ok(Ok(line)) => line,
            };
            match prove(&line, peer, devices).await {
                Ok(paired) => (paired.who, paired.new_key),
                Err(why) => {
                    let _ = sink.send_line(protocol::ERROR_AUTH.to_string()).await;
                    close(&mut sink).await;
                    devices.refused(peer, &why);
                    return None;
                }
            }
        }
    };
    if let Some(key) = new_key {
        // Before anything else, so the device reads its key first.
        if let Err(e) = sink.send_line(protocol::key_line(&key)).await {
            return Some(format!("key not delivered: {e}"));
        }
        tracing::info!("device {} claimed from {}", who.name(), peer.name);
    }
    serve(lines, sink, peer, who, devices).await
}

/// Checks a connection's first line: the control token (plain TCP only), a
/// claim code or a key.
async fn prove(line: &[u8], peer: &Peer, devices: &Devices) -> Result<Paired, String> {
    let command = parse_line(line).map_err(|_| first_line_wanted(peer))?;
    if !matches!(command, Command::Auth(_) | Command::Claim(_)) {
        return Err(first_line_wanted(peer));
    }
    if !devices.pairing.may_check(peer.key) {
        return Err(Refused::TooFast.to_string());
    }
    match command {
        Command::Auth(given) => {
            let on_control_port = matches!(peer.transport, Transport::Tcp | Transport::Unix);
            if on_control_port
                && let Some(token) = &devices.token
                && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
            {
                return Ok(Paired {
                    who: Who::Original,
                    new_key: None,
                });
            }
            devices.pairing.key(given).await.map_err(|e| match e {
                // The words the original used for a wrong token.
                Refused::Key if on_control_port && devices.token.is_some() => {
                    "wrong auth token or device key".to_string()
                }
                e => e.to_string(),
            })
        }
        Command::Claim(code) => devices.pairing.claim(code).await.map_err(|e| e.to_string()),
        _ => unreachable!("matched above"),
    }
}

fn first_line_wanted(peer: &Peer) -> String {
    match peer.transport {
        Transport::Tcp | Transport::Unix => {
            "first line is not `auth <token>`, `auth <key>` or `claim <code>`".to_string()
        }
        Transport::Tls | Transport::Websocket => {
            "first line is not `auth <key>` or `claim <code>`".to_string()
        }
    }
}

/// Makes the connection the device `who` until it leaves, is replaced, its
/// key ends or the server stops. Returns why it ended.
async fn serve<R: LineSource, W: LineSink>(
    mut lines: R,
    mut sink: W,
    peer: &Peer,
    mut who: Who,
    devices: &Devices,
) -> Option<String> {
    // On a control port without a token the original device needs no
    // first line, and a registered one proves itself with its first: until
    // that line comes (or a while without one), the connection hears the
    // devices' lines but replaces no original device's connection.
    let mut may_switch = who == Who::Original && devices.token.is_none();
    let mut attachment = if may_switch {
        devices.link.attach_candidate(&devices.shutdown)
    } else {
        devices.link.attach(who.clone(), &devices.shutdown)
    };
    let mut registered = registered_id(&who);
    if let Some(id) = registered {
        let pairing = &devices.pairing;
        pairing.connected(id, peer.address(), peer.transport).await;
    }
    tracing::info!("device {} connected from {}", who.name(), peer.name);
    let reason = loop {
        let id = attachment.id;
        let Attachment {
            outbox,
            cancel,
            accepted,
            skipped,
            ..
        } = &mut attachment;
        let write = async {
            let mut pings = W::PING_EVERY
                .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
            loop {
                let ping = async {
                    match &mut pings {
                        Some(pings) => pings.tick().await,
                        None => std::future::pending().await,
                    }
                };
                let line = tokio::select! {
                    line = outbox.recv() => line,
                    _ = ping => {
                        sink.ping().await?;
                        continue;
                    }
                };
                let Some(line) = line else {
                    return Err::<(), String>("link closed".to_string());
                };
                tracing::debug!("to device {}: {}", who.name(), Shown(&line));
                sink.send_line(line).await?;
            }
        };
        let read = async {
            let origin = who.origin();
            if std::mem::take(&mut may_switch) {
                match tokio::time::timeout(AUTH_TIMEOUT, lines.next_line()).await {
                    Err(_) => devices.link.confirm(id),
                    Ok(Err(end)) => return Err(ended(end, &who, peer)),
                    Ok(Ok(line)) => {
                        if proves_registered(&line) {
                            return Ok(line);
                        }
                        devices.link.confirm(id);
                        match handle_line(&line, &who, &origin, devices).await? {
                            true => accepted.inc(),
                            false => skipped.inc(),
                        };
                    }
                }
            }
            loop {
                let next = match devices.idle_timeout {
                    Some(limit) => match tokio::time::timeout(limit, lines.next_line()).await {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::warn!(
                                "device {} ({}): silent for {} s; closing",
                                who.name(),
                                peer.name,
                                limit.as_secs()
                            );
                            return Err(format!("silent for {} s", limit.as_secs()));
                        }
                    },
                    None => lines.next_line().await,
                };
                let line = match next {
                    Ok(line) => line,
                    Err(end) => return Err(ended(end, &who, peer)),
                };
                match handle_line(&line, &who, &origin, devices).await? {
                    true => accepted.inc(),
                    false => skipped.inc(),
                };
            }
        };
        let switch = tokio::select! {
            _ = cancel.cancelled() => {
                break "replaced by a new connection, its key ended, or shutting down".to_string();
            }
            Err(why) = write => break why,
            read = read => match read {
                Err(why) => break why,
                Ok(line) => line,
            },
        };
        // The first line of a connection taken for the original device
        // claims or proves a registered one: it becomes that device.
        match prove(&switch, peer, devices).await {
            Ok(paired) => {
                devices.link.detach(&who, attachment.id);
                if let Some(key) = paired.new_key
                    && let Err(e) = sink.send_line(protocol::key_line(&key)).await
                {
                    break format!("key not delivered: {e}");
                }
                who = paired.who;
                attachment = devices.link.attach(who.clone(), &devices.shutdown);
                registered = registered_id(&who);
                if let Some(id) = registered {
                    let pairing = &devices.pairing;
                    pairing.connected(id, peer.address(), peer.transport).await;
                }
                tracing::info!("device {} connected from {}", who.name(), peer.name);
            }
            Err(why) => {
                let _ = sink.send_line(protocol::ERROR_AUTH.to_string()).await;
                devices.refused(peer, &why);
                break why;
            }
        }
    };
    devices.link.detach(&who, attachment.id);
    close(&mut sink).await;
    if let Some(id) = registered
        && !devices.link.connected_ids().contains(&id)
    {
        devices.pairing.disconnected(id).await;
    }
    Some(format!("{} ({})", reason, who.name()))
}

/// Whether a first line on a port without a token is a registered
/// device's: a claim, or `auth` with what can be a key (43 characters of
/// base64url). The original daemon's `auth <token>` there is ignored, as
/// it always was.
fn proves_registered(line: &[u8]) -> bool {
    match parse_line(line) {
        Ok(Command::Claim(_)) => true,
        Ok(Command::Auth(given)) => {
            given.len() == 43
                && given
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        _ => false,
    }
}

fn registered_id(who: &Who) -> Option<i64> {
    match who {
        Who::Original => None,
        Who::Registered { id, .. } => Some(*id),
    }
}

/// Why the lines ended, logged when it was the device's fault.
fn ended(end: End, who: &Who, peer: &Peer) -> String {
    let name = who.name();
    match end {
        End::Closed => "end of stream".to_string(),
        End::Unfinished(bytes) => {
            tracing::warn!(
                "device {name} ({}): unfinished line of {bytes} bytes dropped",
                peer.name
            );
            "end of stream".to_string()
        }
        End::TooLong => {
            tracing::warn!(
                "device {name} ({}): line longer than {MAX_LINE} bytes; line discarded, closing",
                peer.name
            );
            format!("line longer than {MAX_LINE} bytes")
        }
        End::Failed(why) => why,
    }
}

/// Turns one line into an event: true when it was accepted, false when it
/// was skipped (logged with the reason). An error ends the connection (the
/// state has stopped).
async fn handle_line(
    line: &[u8],
    who: &Who,
    origin: &Origin,
    devices: &Devices,
) -> Result<bool, String> {
    let command = match parse_line(line) {
        Ok(command) => command,
        Err(protocol::ParseError::Empty) => return Ok(true),
        Err(reason) => {
            tracing::warn!("device {}: line skipped: {reason}", who.name());
            return Ok(false);
        }
    };
    tracing::debug!(
        "from device {}: {}",
        who.name(),
        Shown(&String::from_utf8_lossy(line))
    );
    let event = match command {
        Command::Status(open) => Event::Status {
            value: if open {
                StatusValue::Open
            } else {
                StatusValue::Closed
            },
            origin: origin.clone(),
        },
        Command::Temperature { sensor, value } => Event::Temperature {
            sensor,
            value,
            device: origin.device().cloned(),
        },
        Command::Message(text) => Event::Message {
            author: None,
            text,
            origin: origin.clone(),
        },
        Command::Enter(id) => Event::Enter(id),
        Command::Leave(id) => Event::Leave(id),
        Command::Sound(id) => {
            devices.link.send(format!("sound {id}"));
            return Ok(true);
        }
        Command::Auth(_) | Command::Claim(_) => {
            tracing::debug!(
                "device {}: auth or claim line ignored (already accepted)",
                who.name()
            );
            return Ok(false);
        }
    };
    devices
        .state
        .submit(event)
        .await
        .map(|()| true)
        .map_err(|e| format!("state stopped: {e}"))
}
