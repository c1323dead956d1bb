//! Accepting the device and moving its bytes; parsing is in `protocol`.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::link::Attachment;
use super::protocol::{Command, LineFramer, MAX_LINE, parse_line};
use crate::config::Allowlist;
use crate::event::StatusValue;
use crate::net::Listener;
use crate::state::{Event, Origin, State};

/// Who may be the device and how it proves it.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub allow: Allowlist,
    pub token: Option<String>,
    /// Silence after which the device is disconnected; `None` waits forever.
    pub idle_timeout: Option<Duration>,
}

/// Accepts device connections until `shutdown`.
pub async fn serve(
    listener: Listener,
    state: State,
    settings: DeviceSettings,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let settings = Arc::new(settings);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener, &settings) => accepted,
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
        tracing::info!("device connected from {peer}");
        let attachment = state.device().attach(&shutdown);
        let state = state.clone();
        let settings = settings.clone();
        tracker.spawn(async move {
            let id = attachment.id;
            let reason = match stream {
                Stream::Tcp(s) => connection(s, &peer, &state, &settings, attachment).await,
                Stream::Unix(s) => connection(s, &peer, &state, &settings, attachment).await,
            };
            state.device().detach(id);
            tracing::info!("device {peer} disconnected: {reason}");
        });
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
) -> std::io::Result<Option<(Stream, String)>> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            if !settings.allow.allows(peer.ip()) {
                tracing::warn!(
                    "control: refused {}: not in control_remote_address",
                    peer.ip()
                );
                return Ok(None);
            }
            let _ = stream.set_nodelay(true);
            Ok(Some((Stream::Tcp(stream), peer.to_string())))
        }
        // File permissions guard a unix socket: every peer is accepted.
        Listener::Unix(l, path) => {
            let (stream, _) = l.accept().await?;
            Ok(Some((
                Stream::Unix(stream),
                format!("unix:{}", path.display()),
            )))
        }
    }
}

/// Serves one device until it leaves, is replaced or the server stops.
/// Returns why the connection ended.
async fn connection<S>(
    stream: S,
    peer: &str,
    state: &State,
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
            tracing::debug!("to device {peer}: {line}");
            let mut bytes = line.into_bytes();
            bytes.push(b'\n');
            if let Err(e) = writer.write_all(&bytes).await {
                return format!("write failed: {e}");
            }
        }
        "link closed".to_string()
    };
    let read = async {
        let mut framer = LineFramer::new();
        let mut authenticated = settings.token.is_none();
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
                if !authenticated {
                    match check_auth(&line, settings.token.as_deref().unwrap_or_default()) {
                        Ok(()) => {
                            authenticated = true;
                            tracing::info!("device {peer} authenticated");
                            continue;
                        }
                        Err(why) => {
                            tracing::warn!("device {peer}: {why}; closing");
                            return why.to_string();
                        }
                    }
                }
                if let Err(why) = handle_line(&line, peer, state).await {
                    return why;
                }
            }
            framer.buffer().reserve(MAX_LINE);
            let read = reader.read_buf(framer.buffer());
            let read = match settings.idle_timeout {
                Some(limit) => match tokio::time::timeout(limit, read).await {
                    Ok(read) => read,
                    Err(_) => {
                        tracing::warn!("device {peer}: silent for {limit:?}; closing");
                        return format!("silent for {limit:?}");
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
async fn handle_line(line: &[u8], peer: &str, state: &State) -> Result<(), String> {
    let command = match parse_line(line) {
        Ok(command) => command,
        Err(super::protocol::ParseError::Empty) => return Ok(()),
        Err(reason) => {
            tracing::warn!("device {peer}: line skipped: {reason}");
            return Ok(());
        }
    };
    tracing::debug!("from device {peer}: {command:?}");
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
        Command::Message(text) => Event::Message { author: None, text },
        Command::Enter(id) => Event::Enter(id),
        Command::Leave(id) => Event::Leave(id),
        Command::Sound(id) => {
            state.device().send(format!("sound {id}"));
            return Ok(());
        }
        Command::Auth(_) => {
            tracing::debug!("device {peer}: auth line ignored (already accepted)");
            return Ok(());
        }
    };
    state
        .submit(event)
        .await
        .map_err(|e| format!("state stopped: {e}"))
}
