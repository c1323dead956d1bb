//! One connection to the broker, MQTT 3.1.1 over TCP or TLS: packets are
//! encoded into one buffer and written together, so a burst of samples
//! costs a few system calls rather than one each. The wire format is
//! `rumqttc`'s codec; the connection itself is ours, because the state is
//! sent again on every connection and nothing needs to outlive one. What
//! is read is bounded: a message over [`MAX_PAYLOAD`] is skipped as it
//! streams in, and the connection stays up.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::{self, QoS};
use rumqttc::tokio_rustls::{TlsConnector, rustls};
use rumqttc::{ConnectReturnCode, LastWill, Packet, PubAck, Publish, Subscribe};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::frame::{self, Head, Oversized};

/// Longest wait for the TCP and TLS handshakes and the broker's `CONNACK`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message payload read from the broker; a larger one is skipped
/// as it streams in, never held.
pub const MAX_PAYLOAD: usize = 64 << 10;
/// Largest packet read whole (its length after the fixed header): a
/// `PUBLISH` of [`MAX_PAYLOAD`] with the longest topic and a packet id. Any
/// other packet past it ends the connection.
const MAX_INCOMING: usize = MAX_PAYLOAD + 2 + u16::MAX as usize + 2;
/// Read at least this much at a time.
const READ_CHUNK: usize = 16 << 10;

/// How to reach the broker and what to tell it when connecting.
pub struct Dial {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS with this configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub client_id: String,
    pub login: Option<(String, String)>,
    pub keep_alive: Duration,
    /// Published by the broker when the connection ends without a
    /// `DISCONNECT`.
    pub will: LastWill,
}

/// Why a connection could not be made or was lost, in a few words.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot reach the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("the TLS host name {0:?} is not valid")]
    ServerName(String),
    #[error("no answer from the broker")]
    Timeout,
    #[error("the broker refused the connection: {0}")]
    Refused(&'static str),
    #[error("the broker closed the connection")]
    Closed,
    #[error("the broker sent a malformed packet: {0:?}")]
    Malformed(mqttbytes::Error),
    #[error("the broker answered the connection with {0}")]
    Unexpected(&'static str),
    #[error("the broker acknowledges nothing: {0} messages wait")]
    Stalled(usize),
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A connected session: what is read from the broker and what waits to be
/// written to it.
pub struct Session {
    pub reader: Reader,
    pub writer: Writer,
    /// Packet ids of `QoS 1` publishes the broker has not acknowledged.
    ids: PacketIds,
}

pub struct Reader {
    half: ReadHalf<Box<dyn Stream>>,
    buf: BytesMut,
    /// Bytes of an oversized payload still to arrive, dropped as they do.
    skip: usize,
}

/// What the broker sent.
pub enum Incoming {
    Packet(Packet),
    /// A `PUBLISH` whose payload is over [`MAX_PAYLOAD`]: its headers only,
    /// the payload is dropped as it arrives.
    Oversized(Oversized),
}

pub struct Writer {
    half: WriteHalf<Box<dyn Stream>>,
    /// Encoded packets not yet written.
    out: BytesMut,
    /// Written since the last flush (TLS may hold bytes until flushed).
    unflushed: bool,
}

impl Session {
    /// Connects, sends `CONNECT` (clean session, the last will) and waits for
    /// the broker's `CONNACK`.
    pub async fn connect(dial: &Dial) -> Result<Session, SessionError> {
        let timed = tokio::time::timeout(CONNECT_TIMEOUT, Self::handshake(dial));
        timed.await.map_err(|_| SessionError::Timeout)?
    }

    async fn handshake(dial: &Dial) -> Result<Session, SessionError> {
        let tcp = TcpStream::connect((dial.host.as_str(), dial.port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &dial.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(dial.host.clone())
                    .map_err(|_| SessionError::ServerName(dial.host.clone()))?;
                Box::new(
                    TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await?,
                )
            }
        };
        let (half, writer) = tokio::io::split(stream);
        let mut session = Session {
            reader: Reader {
                half,
                buf: BytesMut::with_capacity(READ_CHUNK),
                skip: 0,
            },
            writer: Writer {
                half: writer,
                out: BytesMut::with_capacity(READ_CHUNK),
                unflushed: false,
            },
            ids: PacketIds::new(),
        };
        let mut connect = rumqttc::Connect::new(dial.client_id.clone());
        connect.keep_alive = dial.keep_alive.as_secs().min(u16::MAX.into()) as u16;
        connect.clean_session = true;
        connect.last_will = Some(dial.will.clone());
        if let Some((user, password)) = &dial.login {
            connect.set_login(user.clone(), password.clone());
        }
        session.writer.encode(Packet::Connect(connect));
        session.writer.flush_all().await?;
        match session.reader.next().await? {
            Incoming::Packet(Packet::ConnAck(ack)) => match ack.code {
                ConnectReturnCode::Success => Ok(session),
                code => Err(SessionError::Refused(refusal(code))),
            },
            Incoming::Packet(other) => Err(SessionError::Unexpected(name(&other))),
            Incoming::Oversized(_) => Err(SessionError::Unexpected("PUBLISH")),
        }
    }

    /// Queues a retained `QoS 1` publish. Fails only when the broker has
    /// left every packet id unacknowledged.
    pub fn publish(&mut self, topic: &str, payload: Bytes) -> Result<(), SessionError> {
        let pkid = self.next_id()?;
        let mut publish = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
        publish.retain = true;
        publish.pkid = pkid;
        self.writer.encode(Packet::Publish(publish));
        Ok(())
    }

    /// Queues a `QoS 1` subscription to `filter`.
    pub fn subscribe(&mut self, filter: &str) -> Result<(), SessionError> {
        let pkid = self.next_id()?;
        let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
        subscribe.pkid = pkid;
        self.writer.encode(Packet::Subscribe(subscribe));
        Ok(())
    }

    /// A free packet id, or why there is none.
    fn next_id(&mut self) -> Result<u16, SessionError> {
        self.ids
            .take()
            .ok_or(SessionError::Stalled(self.ids.waiting))
    }

    /// The broker acknowledged `pkid`; false if it was not waiting.
    pub fn acknowledged(&mut self, pkid: u16) -> bool {
        self.ids.release(pkid)
    }

    /// Publishes and subscriptions the broker has not acknowledged.
    pub fn waiting(&self) -> usize {
        self.ids.waiting
    }
}

impl Reader {
    /// Reads what the broker sent so far (at least one byte); cancel-safe.
    pub async fn fill(&mut self) -> Result<(), SessionError> {
        self.buf.reserve(READ_CHUNK);
        match self.half.read_buf(&mut self.buf).await? {
            0 => Err(SessionError::Closed),
            _ => Ok(()),
        }
    }

    /// The next packet already read, if any. An oversized `PUBLISH` is
    /// returned once its headers are in; its payload is then dropped as it
    /// arrives, so the buffer never holds more than [`MAX_INCOMING`] and a
    /// read's worth.
    pub fn packet(&mut self) -> Result<Option<Incoming>, SessionError> {
        self.drop_skipped();
        if self.skip > 0 {
            return Ok(None);
        }
        match frame::head(&self.buf, MAX_PAYLOAD).map_err(SessionError::Malformed)? {
            Head::Partial => return Ok(None),
            Head::Oversized(publish) => {
                self.buf.advance(publish.headers);
                self.skip = publish.payload;
                self.drop_skipped();
                return Ok(Some(Incoming::Oversized(publish)));
            }
            Head::Whole => {}
        }
        match Packet::read(&mut self.buf, MAX_INCOMING) {
            Ok(packet) => Ok(Some(Incoming::Packet(packet))),
            Err(mqttbytes::Error::InsufficientBytes(more)) => {
                self.buf.reserve(more);
                Ok(None)
            }
            Err(e) => Err(SessionError::Malformed(e)),
        }
    }

    /// Drops what has arrived of a payload being skipped.
    fn drop_skipped(&mut self) {
        let here = self.skip.min(self.buf.len());
        self.buf.advance(here);
        self.skip -= here;
    }

    /// Waits for the next packet.
    async fn next(&mut self) -> Result<Incoming, SessionError> {
        loop {
            if let Some(packet) = self.packet()? {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }
}

impl Writer {
    fn encode(&mut self, packet: Packet) {
        // Our own packets: a document too large for MQTT's 256 MiB is
        // impossible, since the snapshot's documents are bounded far below.
        if let Err(e) = packet.write(&mut self.out, usize::MAX) {
            tracing::warn!("mqtt: cannot encode a {}: {e:?}", name(&packet));
        }
    }

    /// Queues the broker's acknowledgement of its `QoS 1` publish.
    pub fn acknowledge(&mut self, pkid: u16) {
        self.encode(Packet::PubAck(PubAck::new(pkid)));
    }

    pub fn ping(&mut self) {
        self.encode(Packet::PingReq);
    }

    pub fn disconnect(&mut self) {
        self.encode(Packet::Disconnect);
    }

    /// Bytes encoded and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Whether [`Writer::write_some`] has anything to do.
    pub fn busy(&self) -> bool {
        !self.out.is_empty() || self.unflushed
    }

    /// Writes what it can of the queued bytes, or flushes once all are
    /// written; cancel-safe (nothing is lost if another branch wins).
    pub async fn write_some(&mut self) -> Result<(), SessionError> {
        if self.out.is_empty() {
            self.half.flush().await?;
            self.unflushed = false;
        } else {
            if self.half.write_buf(&mut self.out).await? == 0 {
                return Err(SessionError::Closed);
            }
            self.unflushed = true;
        }
        Ok(())
    }

    /// Writes and flushes everything queued.
    pub async fn flush_all(&mut self) -> Result<(), SessionError> {
        while self.busy() {
            self.write_some().await?;
        }
        Ok(())
    }
}

/// Packet ids in use: 1 to 65535, handed out in turn, skipping those still
/// waiting for their acknowledgement.
struct PacketIds {
    used: Box<[u64; 1024]>,
    last: u16,
    waiting: usize,
}

impl PacketIds {
    fn new() -> PacketIds {
        PacketIds {
            used: Box::new([0; 1024]),
            last: 0,
            waiting: 0,
        }
    }

    fn take(&mut self) -> Option<u16> {
        if self.waiting >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.last = self.last.wrapping_add(1).max(1);
            let (word, bit) = (usize::from(self.last / 64), self.last % 64);
            if self.used[word] & (1 << bit) == 0 {
                self.used[word] |= 1 << bit;
                self.waiting += 1;
                return Some(self.last);
            }
        }
    }

    fn release(&mut self, pkid: u16) -> bool {
        let (word, bit) = (usize::from(pkid / 64), pkid % 64);
        let was = self.used[word] & (1 << bit) != 0;
        if was {
            self.used[word] &= !(1 << bit);
            self.waiting -= 1;
        }
        was
    }
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorised",
        ConnectReturnCode::BadClientId => "client id rejected",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::RefusedProtocolVersion => "protocol version 3.1.1 refused",
        ConnectReturnCode::Success => "refused",
    }
}

/// A packet's name, for log lines.
pub fn name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use rumqttc::mqttbytes::QoS;
    use rumqttc::{Packet, Publish};
    use tokio::io::AsyncWriteExt;

    use super::{Incoming, MAX_INCOMING, PacketIds, READ_CHUNK, Reader, Stream};

    #[tokio::test]
    async fn an_oversized_publish_is_skipped_in_bounded_memory() {
        let (ours, mut broker) = tokio::io::duplex(64 << 10);
        let (half, _writer) = tokio::io::split(Box::new(ours) as Box<dyn Stream>);
        let mut reader = Reader {
            half,
            buf: BytesMut::new(),
            skip: 0,
        };
        let huge = Bytes::from(vec![b'x'; 16 << 20]);
        let mut oversized = Publish::from_bytes("bits/set/message", QoS::AtLeastOnce, huge);
        oversized.pkid = 9;
        oversized.retain = true;
        let mut fine = Publish::new("bits/set/status", QoS::AtLeastOnce, "open");
        fine.pkid = 10;
        let mut sent = BytesMut::new();
        for packet in [
            Packet::Publish(oversized),
            Packet::Publish(fine),
            Packet::PingResp,
        ] {
            packet.write(&mut sent, usize::MAX).unwrap();
        }
        let sending = tokio::spawn(async move { broker.write_all(&sent).await.unwrap() });

        let mut got = Vec::new();
        let mut most = 0;
        loop {
            while let Some(incoming) = reader.packet().unwrap() {
                got.push(incoming);
            }
            if got.len() == 3 {
                break;
            }
            reader.fill().await.unwrap();
            most = most.max(reader.buf.capacity());
        }
        sending.await.unwrap();
        assert!(most <= MAX_INCOMING + READ_CHUNK, "held {most} bytes");
        let Incoming::Oversized(skipped) = &got[0] else {
            panic!("the huge PUBLISH is not skipped");
        };
        assert_eq!(skipped.topic, "bits/set/message");
        assert_eq!((skipped.pkid, skipped.retain), (9, true));
        assert_eq!(skipped.payload, 16 << 20);
        let Incoming::Packet(Packet::Publish(next)) = &got[1] else {
            panic!("the PUBLISH after it is lost");
        };
        assert_eq!(
            (next.topic.as_str(), &next.payload[..]),
            ("bits/set/status", &b"open"[..])
        );
        assert!(matches!(got[2], Incoming::Packet(Packet::PingResp)));
    }

    #[test]
    fn packet_ids_skip_those_still_waiting_and_never_use_zero() {
        let mut ids = PacketIds::new();
        let first = ids.take().unwrap();
        assert_eq!(first, 1);
        for _ in 2..=u16::MAX {
            ids.take().unwrap();
        }
        assert_eq!(ids.take(), None, "every id waits");
        assert!(ids.release(7));
        assert!(!ids.release(7), "released twice");
        assert_eq!(ids.take(), Some(7));
        assert!(ids.release(65535) && ids.release(3));
        assert_eq!(ids.take(), Some(65535));
        assert_eq!(ids.take(), Some(3), "wraps past 65535 to 1 and on");
    }
}
