//! Accepting the device and moving its bytes; parsing is in `protocol`.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::link::{Attachment, DeviceLink};
use super::protocol::{Command, LineFramer, MAX_LINE, parse_line};
use super::waiting::{Ticket, Waiting};
use crate::config::{Allowlist, Config, Options};
use crate::escape::Shown;
use crate::limits::{AddressKey, HeldBack, QuietLog, Rate, RateLimiter};
use crate::net::Listener;
use crate::record::StatusValue;
use crate::state::{Event, Origin, State};

/// Who may be the device and how it proves it.
#[derive(Debug, Clone)]
struct DeviceSettings {
    allow: Allowlist,
    token: Option<String>,
    /// Silence after which the device is disconnected; `None` waits forever.
    idle_timeout: Option<Duration>,
}

impl DeviceSettings {
    fn of(options: &Options) -> DeviceSettings {
        DeviceSettings {
            allow: options.control_remote_address.clone(),
            token: options.control_token.clone(),
            idle_timeout: match options.control_idle_timeout {
                0 => None,
                seconds => Some(Duration::from_secs(seconds)),
            },
        }
    }
}

/// Time a connection has to send its `auth` line when a token is set.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections that may be waiting to authenticate at once, in all and
/// from one address; past them the oldest waiting one (of the newcomer's
/// address first) is closed to make room.
const AUTHENTICATING: usize = 32;
const AUTHENTICATING_PER_ADDRESS: usize = 4;
/// Idle time before the first keepalive probe, then the time between
/// probes and how many go unanswered before the link is dropped: a device
/// that vanished is noticed within two minutes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 5;

/// What the device listener remembers of strangers: bounded tables.
struct Guards {
    /// One token check a second per address.
    token_checks: RateLimiter<Option<AddressKey>>,
    /// One warning a minute per address, for refusals and wrong tokens...
    warnings: RateLimiter<Option<AddressKey>>,
    /// ...and a bounded number in all, however many addresses there are.
    all_warnings: QuietLog,
    /// Connections closed to make room for newer ones: a bounded number of
    /// lines, whoever churns.
    evictions: QuietLog,
    /// Connections authenticating, oldest first.
    waiting: Arc<Waiting>,
}

impl Guards {
    fn new() -> Guards {
        Guards {
            token_checks: RateLimiter::default(),
            warnings: RateLimiter::default(),
            all_warnings: QuietLog::default(),
            evictions: QuietLog::default(),
            waiting: Waiting::new(AUTHENTICATING, AUTHENTICATING_PER_ADDRESS),
        }
    }

    /// Whether a warning about `address` may be logged now: `Some` with
    /// the note on warnings held back in all.
    fn may_warn(&self, address: Option<AddressKey>) -> Option<HeldBack> {
        self.warnings
            .try_take(address, Rate::once_every(Duration::from_secs(60)))
            .ok()?;
        self.all_warnings.pass()
    }

    /// Places a connection among those waiting to authenticate, closing
    /// the oldest one (of its address first) when they are at their limit.
    fn wait(&self, peer: &Peer, link: &DeviceLink) -> Ticket {
        let (ticket, evicted) = self.waiting.enter(peer.key, peer.name.clone());
        if let Some(evicted) = evicted {
            link.metrics().device_waiting_evicted.inc();
            if let Some(held) = self.evictions.pass() {
                tracing::warn!(
                    "control: closed {evicted}: not authenticated yet, and the connections \
                     waiting to authenticate were at their limit; room made for {}{held}",
                    peer.name
                );
            }
        }
        ticket
    }
}

/// What a device connection talks to: the state its lines change, and the
/// link it becomes.
struct Ends {
    state: State,
    link: DeviceLink,
}

/// Accepts device connections until `shutdown`.
pub fn serve(
    listener: Listener,
    config: &Config,
    state: State,
    link: DeviceLink,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> impl Future<Output = ()> + Send + use<> {
    let settings = DeviceSettings::of(&config.options);
    serve_with(listener, settings, state, link, shutdown, tracker)
}

async fn serve_with(
    listener: Listener,
    settings: DeviceSettings,
    state: State,
    link: DeviceLink,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let settings = Arc::new(settings);
    let ends = Arc::new(Ends { state, link });
    let guards = Arc::new(Guards::new());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener, &settings, &guards) => accepted,
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
        let waiting = settings
            .token
            .as_ref()
            .map(|_| guards.wait(&peer, &ends.link));
        let authenticating = waiting.is_some();
        let (ends, settings, guards) = (ends.clone(), settings.clone(), guards.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let reason = match stream {
                Stream::Tcp(s) => {
                    run_device(s, &peer, &ends, &settings, &guards, waiting, &shutdown).await
                }
                Stream::Unix(s) => {
                    run_device(s, &peer, &ends, &settings, &guards, waiting, &shutdown).await
                }
            };
            if let Some(reason) = reason {
                tracing::info!("device {} disconnected: {reason}", peer.name);
            }
        });
        // Under a flood of connections, let the new one read the `auth`
        // line that is often there already before accepting the next:
        // otherwise it may be evicted before it is ever read.
        if authenticating {
            tokio::task::yield_now().await;
        }
    }
}

/// Who connected: for logs, and the address the limits count.
struct Peer {
    name: String,
    key: Option<AddressKey>,
}

/// Authenticates a connection when a token is set, then makes it the
/// device until it leaves. `None` when it never became the device (its
/// refusal is already logged, at a bounded rate). `waiting` is its place
/// among the connections authenticating, given up once its first line came.
async fn run_device<S>(
    mut stream: S,
    peer: &Peer,
    ends: &Ends,
    settings: &DeviceSettings,
    guards: &Guards,
    waiting: Option<Ticket>,
    shutdown: &CancellationToken,
) -> Option<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framer = LineFramer::new();
    if let Some(token) = &settings.token {
        let evicted = async {
            match &waiting {
                Some(ticket) => ticket.evicted().await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return None,
            // Logged, at a bounded rate, when it was evicted.
            _ = evicted => return None,
            outcome = tokio::time::timeout(AUTH_TIMEOUT, first_line(&mut stream, &mut framer)) => outcome,
        };
        if waiting.is_some_and(|ticket| !ticket.leave()) {
            return None;
        }
        let refused = match outcome {
            Err(_) => Some(format!("no auth line within {AUTH_TIMEOUT:?}")),
            Ok(None) => Some("closed before authenticating".to_string()),
            Ok(Some(line)) => {
                let limit = Rate::once_every(Duration::from_secs(1));
                if guards.token_checks.try_take(peer.key, limit).is_err() {
                    Some("a second token check within a second; not checked".to_string())
                } else {
                    check_auth(&line, token).err().map(str::to_string)
                }
            }
        };
        if let Some(why) = refused {
            if let Some(held) = guards.may_warn(peer.key) {
                tracing::warn!("control: closed {}: {why}{held}", peer.name);
            }
            return None;
        }
        tracing::info!("device {} authenticated", peer.name);
    }
    tracing::info!("device connected from {}", peer.name);
    let attachment = ends.link.attach(shutdown);
    let id = attachment.id;
    let reason = connection(stream, framer, &peer.name, ends, settings, attachment).await;
    ends.link.detach(id);
    Some(reason)
}

/// The first line of a connection; `None` when it ends or sends an
/// overlong line first. Bytes after the line stay in `framer`.
async fn first_line<S>(stream: &mut S, framer: &mut LineFramer) -> Option<bytes::BytesMut>
where
    S: AsyncRead + Unpin,
{
    loop {
        match framer.next_line() {
            Ok(Some(line)) => return Some(line),
            Ok(None) => {}
            Err(_) => return None,
        }
        framer.buffer().reserve(MAX_LINE);
        match stream.read_buf(framer.buffer()).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
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
    settings: &DeviceSettings,
    guards: &Guards,
) -> std::io::Result<Option<(Stream, Peer)>> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            let key = Some(AddressKey::from(peer.ip()));
            if !settings.allow.allows(peer.ip()) {
                if let Some(held) = guards.may_warn(key) {
                    tracing::warn!(
                        "control: refused {}: not in control_remote_address{held}",
                        peer.ip()
                    );
                }
                return Ok(None);
            }
            let _ = stream.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_PROBES);
            if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                tracing::warn!("control: cannot turn on TCP keepalive for {peer}: {e}");
            }
            let name = peer.to_string();
            Ok(Some((Stream::Tcp(stream), Peer { name, key })))
        }
        // File permissions guard a unix socket: every peer is accepted.
        Listener::Unix(l, path) => {
            let (stream, _) = l.accept().await?;
            let name = format!("unix:{}", path.display());
            let peer = Peer { name, key: None };
            Ok(Some((Stream::Unix(stream), peer)))
        }
    }
}

/// Serves one device until it leaves, is replaced or the server stops.
/// Returns why the connection ended.
async fn connection<S>(
    stream: S,
    mut framer: LineFramer,
    peer: &str,
    ends: &Ends,
    settings: &DeviceSettings,
    attachment: Attachment,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Attachment {
        mut outbox, cancel, ..
    } = attachment;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        while let Some(line) = outbox.recv().await {
            tracing::debug!("to device {peer}: {}", Shown(&line));
            let mut bytes = line.into_bytes();
            bytes.push(b'\n');
            if let Err(e) = writer.write_all(&bytes).await {
                return format!("write failed: {e}");
            }
        }
        "link closed".to_string()
    };
    let read = async {
        loop {
            loop {
                let line = match framer.next_line() {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("device {peer}: {e}; line discarded, closing");
                        return format!("line longer than {MAX_LINE} bytes");
                    }
                };
                if let Err(why) = handle_line(&line, peer, ends).await {
                    return why;
                }
            }
            framer.buffer().reserve(MAX_LINE);
            let read = reader.read_buf(framer.buffer());
            let read = match settings.idle_timeout {
                Some(limit) => match tokio::time::timeout(limit, read).await {
                    Ok(read) => read,
                    Err(_) => {
                        tracing::warn!("device {peer}: silent for {} s; closing", limit.as_secs());
                        return format!("silent for {} s", limit.as_secs());
                    }
                },
                None => read.await,
            };
            match read {
                Ok(0) if framer.pending() > 0 => {
                    tracing::warn!(
                        "device {peer}: unfinished line of {} bytes dropped",
                        framer.pending()
                    );
                    return "end of stream".to_string();
                }
                Ok(0) => return "end of stream".to_string(),
                Ok(_) => {}
                Err(e) => return format!("read failed: {e}"),
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => "replaced by a new device, or shutting down".to_string(),
        why = write => why,
        why = read => why,
    }
}

fn check_auth(line: &[u8], token: &str) -> Result<(), &'static str> {
    match parse_line(line) {
        Ok(Command::Auth(given)) if bool::from(given.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        Ok(Command::Auth(_)) => Err("wrong auth token"),
        _ => Err("first line is not `auth <token>`"),
    }
}

/// Turns one line into an event. An error ends the connection (the state
/// has stopped); a bad line is logged and skipped.
async fn handle_line(line: &[u8], peer: &str, ends: &Ends) -> Result<(), String> {
    let command = match parse_line(line) {
        Ok(command) => command,
        Err(super::protocol::ParseError::Empty) => return Ok(()),
        Err(reason) => {
            tracing::warn!("device {peer}: line skipped: {reason}");
            return Ok(());
        }
    };
    tracing::debug!(
        "from device {peer}: {}",
        Shown(&String::from_utf8_lossy(line))
    );
    let event = match command {
        Command::Status(open) => Event::Status {
            value: if open {
                StatusValue::Open
            } else {
                StatusValue::Closed
            },
            origin: Origin::Device,
        },
        Command::Temperature { sensor, value } => Event::Temperature { sensor, value },
        Command::Message(text) => Event::Message {
            author: None,
            text,
            origin: Origin::Device,
        },
        Command::Enter(id) => Event::Enter(id),
        Command::Leave(id) => Event::Leave(id),
        Command::Sound(id) => {
            ends.link.send(format!("sound {id}"));
            return Ok(());
        }
        Command::Auth(_) => {
            tracing::debug!("device {peer}: auth line ignored (already accepted)");
            return Ok(());
        }
    };
    ends.state
        .submit(event)
        .await
        .map_err(|e| format!("state stopped: {e}"))
}
