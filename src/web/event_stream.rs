//! `GET /events` as a connection's first request, answered without hyper.
//!
//! hyper keeps two 8 KiB buffers for the life of every connection, which for
//! an event stream that lasts hours is most of what it costs: 8,192 streams
//! would hold 130 MB in buffers that carry a few hundred bytes a minute.
//! When a connection's first bytes are a whole `GET /events` request, the
//! request goes through [`Front`] like any other (limits, metrics, access
//! log, headers), and its answer is written here, straight from the body's
//! frames to the socket, in HTTP/1.1 chunked encoding.

use std::io;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Version, header};
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::front::Front;

/// Most bytes looked at for the request head; a longer one goes to hyper.
const PEEKED: usize = 4096;
/// Most header lines read from a head.
const HEADERS: usize = 64;

/// What the direct path needs of a connection: a look at its first bytes,
/// reads that never wait, and knowing when the peer is gone.
pub trait Peekable: AsyncWrite + Unpin + Send + 'static {
    /// Copies what has arrived into `buf` without consuming it.
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Reads what has arrived, without waiting.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Returns once something (or the end) can be read.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// The first request of a connection, taken off it, when it is a whole
/// HTTP/1.1 `GET /events` (with or without a query); `None` leaves every
/// byte for hyper.
pub fn take_request<S: Peekable>(io: &S) -> Option<Request<Empty<Bytes>>> {
    let mut buf = [0u8; PEEKED];
    let peeked = io.peek(&mut buf).ok()?;
    let mut headers = [httparse::EMPTY_HEADER; HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(&buf[..peeked]).ok()? else {
        return None;
    };
    let path = parsed.path?;
    let events = path == "/events" || path.starts_with("/events?");
    if parsed.method != Some("GET") || parsed.version != Some(1) || !events {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(Version::HTTP_11)
        .body(Empty::new())
        .ok()?;
    let map = request.headers_mut();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        map.append(name, value);
    }
    // A body, or another request behind this one, is hyper's to handle.
    let has_body =
        map.contains_key(header::CONTENT_LENGTH) || map.contains_key(header::TRANSFER_ENCODING);
    if has_body || head_len != peeked {
        return None;
    }
    // What was peeked has arrived: reading it takes no wait.
    let mut taken = 0;
    while taken < head_len {
        match io.read_now(&mut buf[taken..head_len]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => taken += n,
        }
    }
    Some(request)
}

/// Answers `request` through `front` and writes the answer to `io`; an event
/// stream lasts until its body ends, the peer leaves, or `shutdown`.
pub async fn serve<S: Peekable>(
    mut io: S,
    request: Request<Empty<Bytes>>,
    front: &Front,
    shutdown: &CancellationToken,
) {
    let response = match front.answer(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        // A refusal or an error: written whole, then the connection closes.
        let (parts, body) = response.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return;
        };
        let head = head(&Response::from_parts(parts, ()), Some(body.len()));
        let _ = io.write_all_buf(&mut head.chain(body)).await;
        let _ = io.shutdown().await;
        return;
    }
    let (parts, mut body) = response.into_parts();
    let head = head(&Response::from_parts(parts, ()), None);
    if io.write_all(&head).await.is_err() {
        return;
    }
    drop(head);
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    if write_chunk(&mut io, data).await.is_err() {
                        return;
                    }
                }
                Some(Err(_)) => return,
                None => {
                    let _ = io.write_all(b"0\r\n\r\n").await;
                    return;
                }
            },
            readable = io.readable() => {
                if readable.is_err() || peer_gone(&io) {
                    return;
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Whether the peer closed its side; what else it sends is dropped (it has
/// nothing to say on an event stream).
fn peer_gone<S: Peekable>(io: &S) -> bool {
    let mut sink = [0u8; 256];
    match io.read_now(&mut sink) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

/// One chunk: its length in hex, the data, and the line end, in one write
/// where the socket takes it.
async fn write_chunk<S: AsyncWrite + Unpin>(io: &mut S, data: Bytes) -> io::Result<()> {
    let size = format!("{:x}\r\n", data.len());
    let mut chunk = size.as_bytes().chain(data).chain(&b"\r\n"[..]);
    io.write_all_buf(&mut chunk).await
}

/// The status line and headers of `response`: with `length`, a whole body
/// and the connection's end; without, a chunked stream.
fn head(response: &Response<()>, length: Option<usize>) -> Bytes {
    let status = response.status();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(&mut out, response.headers());
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
    match length {
        Some(length) => {
            out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
            out.extend_from_slice(b"connection: close\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Every header but those this writer sets itself.
fn write_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        let own = [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
            header::DATE,
        ];
        if own.contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}
