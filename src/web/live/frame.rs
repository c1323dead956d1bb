//! Websocket frames from server to client (RFC 6455 section 5.2): final,
//! unmasked, text. The header is encoded here, with no websocket library, so
//! a payload can go to the stream as it is, without being copied.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The longest header: two bytes, then a 64-bit payload length.
const MAX_HEADER: usize = 10;
/// FIN set, opcode 1 (text).
const FIN_TEXT: u8 = 0x81;
/// Length markers of the second byte: a 16-bit or a 64-bit length follows.
const LENGTH_16: u8 = 126;
const LENGTH_64: u8 = 127;

/// The header of a final, unmasked text frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextHeader {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl TextHeader {
    /// The header of a frame carrying `payload_len` bytes: the length in 7
    /// bits up to 125, else in 16 bits up to 65,535, else in 64 bits.
    pub fn new(payload_len: usize) -> TextHeader {
        let mut bytes = [0u8; MAX_HEADER];
        bytes[0] = FIN_TEXT;
        let len = if payload_len < usize::from(LENGTH_16) {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = LENGTH_16;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = LENGTH_64;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        TextHeader { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Writes `text` (UTF-8, as the caller guarantees) as one text frame, then
/// flushes. The stream must be at a frame boundary.
pub async fn write_text<W>(io: &mut W, text: &[u8]) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    io.write_all(TextHeader::new(text.len()).as_bytes()).await?;
    io.write_all(text).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    use super::*;

    const LENGTHS: [usize; 5] = [0, 125, 126, 65_535, 65_536];

    #[test]
    fn headers_by_length() {
        let cases: [(usize, &[u8]); 5] = [
            (0, &[0x81, 0]),
            (125, &[0x81, 125]),
            (126, &[0x81, 126, 0x00, 0x7e]),
            (65_535, &[0x81, 126, 0xff, 0xff]),
            (65_536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (len, expected) in cases {
            assert_eq!(TextHeader::new(len).as_bytes(), expected, "length {len}");
        }
        assert_eq!(
            TextHeader::new(u32::MAX as usize + 1).as_bytes(),
            [0x81, 127, 0, 0, 0, 1, 0, 0, 0, 0]
        );
    }

    /// A text of `len` bytes that differ, so a misplaced byte shows.
    fn text(len: usize) -> String {
        (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect()
    }

    #[tokio::test]
    async fn frames_written_are_read_back_by_a_websocket_client() {
        let (mut server, client) = tokio::io::duplex(4096);
        let writer = async move {
            for len in LENGTHS {
                write_text(&mut server, text(len).as_bytes()).await.unwrap();
            }
            server
        };
        let reader = async move {
            let config = WebSocketConfig::default().max_frame_size(Some(1 << 20));
            let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, Some(config)).await;
            let mut received = Vec::new();
            for _ in LENGTHS {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => received.push(t.to_string()),
                    other => panic!("expected a text message, got {other:?}"),
                }
            }
            received
        };
        let (_server, received) = tokio::join!(writer, reader);
        for (len, got) in LENGTHS.into_iter().zip(&received) {
            assert_eq!(got.len(), len);
            assert_eq!(*got, text(len), "length {len}");
        }
    }
}
