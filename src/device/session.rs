//! One device connection once accepted, whatever carries its lines
//! (`lines`): who it is (a token, a key, a claim code, or the original
//! device), then its lines to the state and the state's lines to it until
//! it leaves; and what every transport shares ([`Devices`]).

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::lines::{End, LineSink, LineSource, close};
use super::link::{Attachment, DeviceLink, Who};
use super::pairing::{Paired, Pairing, Refused, Transport};
use super::protocol::{self, Command, MAX_LINE, parse_line};
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

/// Who connected: for logs and the registry, and the address the limits
/// count.
pub struct Peer {
    /// The address as logs show it (with the port, when there is one).
    pub label: String,
    /// The address the per-address limits count; none on a unix socket.
    pub address: Option<AddressKey>,
    pub transport: Transport,
}

impl Peer {
    /// Its address without the port, as the registry shows it.
    fn registry_address(&self) -> String {
        match self.label.parse::<std::net::SocketAddr>() {
            Ok(address) => address.ip().to_string(),
            Err(_) => self.label.clone(),
        }
    }
}

/// Who may be a device and how it proves it: what every transport shares.
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
        let room = || Waiting::new(AUTHENTICATING, AUTHENTICATING_PER_ADDRESS);
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
            control_room: room(),
            tls_room: room(),
            websocket_room: room(),
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
    pub fn enter_waiting_room(&self, peer: &Peer) -> Ticket {
        let room = match peer.transport {
            Transport::Tcp | Transport::Unix => &self.control_room,
            Transport::Tls => &self.tls_room,
            Transport::Websocket => &self.websocket_room,
        };
        let (ticket, evicted) = room.enter(peer.address, peer.label.clone());
        if let Some(evicted) = evicted {
            self.link.metrics().device_waiting_evicted.inc();
            if let Some(held) = self.evictions.pass() {
                tracing::warn!(
                    "{}: closed {evicted}: not authenticated yet, and the connections \
                     waiting to authenticate were at their limit; room made for {}{held}",
                    peer.transport.log_prefix(),
                    peer.label
                );
            }
        }
        ticket
    }

    /// Logs (at a bounded rate) why `peer` was closed before it became a
    /// device.
    pub fn refused(&self, peer: &Peer, why: &dyn std::fmt::Display) {
        if let Some(held) = self.may_warn(peer.address) {
            tracing::warn!(
                "{}: closed {}: {why}{held}",
                peer.transport.log_prefix(),
                peer.label
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
    let paired = match start {
        Start::Proved(paired) => paired,
        Start::Original => Paired {
            who: Who::Original,
            new_key: None,
        },
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
                    let why = format!("no first line within {AUTH_TIMEOUT:?}");
                    devices.refused(peer, &why);
                    return None;
                }
                Ok(Err(_)) => {
                    devices.refused(peer, &"closed before authenticating");
                    return None;
                }
                Ok(Ok(line)) => line,
            };
            let proved = tokio::select! {
                _ = shutdown.cancelled() => return None,
                proved = prove(&line, peer, devices) => proved,
            };
            match proved {
                Ok(paired) => paired,
                Err(refused) => {
                    refuse(&mut sink, peer, devices, &refused).await;
                    return None;
                }
            }
        }
    };
    let Paired { who, new_key } = paired;
    if let Some(key) = new_key {
        // Before anything else, so the device reads its key first.
        deliver_key(&mut sink, &who, peer, &key).await.ok()?;
    }
    serve(lines, sink, peer, who, devices).await
}

/// Answers a refused first line with `error auth` (unless the check could
/// not be made: then the device's key is not in doubt), closes, and logs
/// why at a bounded rate.
async fn refuse<W: LineSink>(sink: &mut W, peer: &Peer, devices: &Devices, refused: &Refused) {
    if refused.is_an_answer() {
        let _ = sink.send_line(protocol::ERROR_AUTH.to_string()).await;
    }
    close(sink).await;
    devices.refused(peer, refused);
}

/// Sends a device the key it just claimed; the code is used up, so a key
/// that does not arrive needs a new code.
async fn deliver_key<W: LineSink>(
    sink: &mut W,
    who: &Who,
    peer: &Peer,
    key: &str,
) -> Result<(), String> {
    match sink.send_line(protocol::key_line(key)).await {
        Ok(()) => {
            tracing::info!("device {} claimed from {}", who.name(), peer.label);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(
                "device {} claimed from {}, but its key was not delivered ({e}): \
                 it needs a new claim code (bitsd device claim {})",
                who.name(),
                peer.label,
                who.name()
            );
            Err(format!("key not delivered: {e}"))
        }
    }
}

/// Checks a connection's first line: the control token (on the control
/// port only), a claim code or a key.
async fn prove(line: &[u8], peer: &Peer, devices: &Devices) -> Result<Paired, Refused> {
    let on_control_port = peer.transport.is_control_port();
    let wanted = if on_control_port {
        "first line is not `auth <token>`, `auth <key>` or `claim <code>`"
    } else {
        "first line is not `auth <key>` or `claim <code>`"
    };
    let command = match parse_line(line) {
        Ok(command @ (Command::Auth(_) | Command::Claim(_))) => command,
        _ => return Err(Refused::FirstLine(wanted)),
    };
    if !devices.pairing.may_check(peer.address) {
        return Err(Refused::TooFast);
    }
    match command {
        Command::Auth(given) => {
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
                Refused::Key if on_control_port && devices.token.is_some() => Refused::TokenOrKey,
                e => e,
            })
        }
        Command::Claim(code) => devices.pairing.claim(code).await,
        _ => Err(Refused::FirstLine(wanted)),
    }
}

/// Notes a registered device's connection in the registry, and logs it.
async fn note_connected(who: &Who, peer: &Peer, devices: &Devices) {
    if let Some(id) = who.registered_id() {
        let address = peer.registry_address();
        devices.pairing.connected(id, address, peer.transport).await;
    }
    tracing::info!("device {} connected from {}", who.name(), peer.label);
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
    note_connected(&who, peer, devices).await;
    // Skipped lines, logged at a bounded rate: a device with a leaked key
    // could otherwise fill the log.
    let skips = QuietLog::default();
    let reason = loop {
        let id = attachment.id;
        let Attachment {
            outbox,
            cancel,
            accepted,
            skipped,
            ..
        } = &mut attachment;
        let write = write_lines(&mut sink, outbox, &who);
        let read = async {
            let origin = who.origin();
            let counted = |accepted_line: bool| {
                if accepted_line {
                    accepted.inc();
                } else {
                    skipped.inc();
                }
            };
            if std::mem::take(&mut may_switch) {
                match tokio::time::timeout(AUTH_TIMEOUT, lines.next_line()).await {
                    Err(_) => devices.link.confirm(id),
                    Ok(Err(end)) => return Err(ended(end, &who, peer)),
                    Ok(Ok(line)) => {
                        if proves_registered(&line) {
                            return Ok(line);
                        }
                        devices.link.confirm(id);
                        counted(handle_line(&line, &who, &origin, devices, &skips).await?);
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
                                peer.label,
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
                counted(handle_line(&line, &who, &origin, devices, &skips).await?);
            }
        };
        let first = tokio::select! {
            _ = cancel.cancelled() => {
                break "replaced by a newer connection of the same device, its key ended, \
                       or shutting down"
                    .to_string();
            }
            Err(why) = write => break why,
            read = read => match read {
                Err(why) => break why,
                Ok(line) => line,
            },
        };
        // The first line of a connection taken for the original device
        // claims or proves a registered one: it becomes that device.
        let proved = tokio::select! {
            _ = devices.shutdown.cancelled() => break "shutting down".to_string(),
            proved = prove(&first, peer, devices) => proved,
        };
        match proved {
            Ok(paired) => {
                devices.link.detach(&who, attachment.id);
                if let Some(key) = &paired.new_key
                    && let Err(why) = deliver_key(&mut sink, &paired.who, peer, key).await
                {
                    break why;
                }
                who = paired.who;
                attachment = devices.link.attach(who.clone(), &devices.shutdown);
                note_connected(&who, peer, devices).await;
            }
            // What looked like a key is no key: the original daemon's own
            // token, on a port that has none, as it always was.
            Err(Refused::Key) if matches!(parse_line(&first), Ok(Command::Auth(_))) => {
                devices.link.confirm(id);
            }
            Err(refused) => {
                let why = refused.to_string();
                refuse(&mut sink, peer, devices, &refused).await;
                break why;
            }
        }
    };
    devices.link.detach(&who, attachment.id);
    close(&mut sink).await;
    if let Some(id) = who.registered_id()
        && !devices.link.connected_ids().contains(&id)
    {
        devices.pairing.disconnected(id).await;
    }
    Some(format!("{} ({})", reason, who.name()))
}

/// Writes the lines queued for the device `who` until the link closes or a
/// write fails, pinging on transports that need it.
async fn write_lines<W: LineSink>(
    sink: &mut W,
    outbox: &mut tokio::sync::mpsc::Receiver<String>,
    who: &Who,
) -> Result<(), String> {
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
            return Err("link closed".to_string());
        };
        tracing::debug!("to device {}: {}", who.name(), Shown(&line));
        sink.send_line(line).await?;
    }
}

/// Whether a first line on a port without a token is a registered
/// device's: a claim, or `auth` with what can be a key (43 characters of
/// base64url). The original daemon's `auth <token>` there is ignored, as
/// it always was (and one that happens to look like a key, once found to
/// be none).
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

/// Why the lines ended, logged when it was the device's fault.
fn ended(end: End, who: &Who, peer: &Peer) -> String {
    let peer = &peer.label;
    let name = who.name();
    match end {
        End::Closed => "end of stream".to_string(),
        End::Unfinished(bytes) => {
            tracing::warn!("device {name} ({peer}): unfinished line of {bytes} bytes dropped");
            "end of stream".to_string()
        }
        End::TooLong => {
            tracing::warn!(
                "device {name} ({peer}): line longer than {MAX_LINE} bytes; line discarded, closing"
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
    skips: &QuietLog,
) -> Result<bool, String> {
    let command = match parse_line(line) {
        Ok(command) => command,
        Err(protocol::ParseError::Empty) => return Ok(true),
        Err(reason) => {
            if let Some(held) = skips.pass() {
                tracing::warn!("device {}: line skipped: {reason}{held}", who.name());
            }
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
        Command::State(value) => Event::Status {
            value,
            origin: origin.clone(),
        },
        Command::Until(at) => Event::Until {
            at,
            origin: origin.clone(),
        },
        Command::Temperature { sensor, value } => Event::Temperature {
            sensor,
            value,
            device: origin.device().cloned(),
        },
        Command::Sensor {
            kind,
            sensor,
            value,
        } => Event::Sensor {
            kind,
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
