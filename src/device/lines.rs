//! A device's lines, whatever carries them: a byte stream (TCP, TLS, a
//! unix socket) framed into lines, or a websocket's messages (`web`'s
//! `/device`), each read as a [`LineSource`] and written as a [`LineSink`].

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{LineFramer, MAX_LINE};

/// Why a connection ended, or how its lines stopped.
#[derive(Debug)]
pub enum End {
    /// The peer closed it.
    Closed,
    /// It closed in the middle of a line of this many bytes.
    Unfinished(usize),
    /// A line (or message) over [`MAX_LINE`] bytes.
    TooLong,
    /// Reading failed, for the reason given.
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
pub async fn close<W: LineSink>(sink: &mut W) {
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
