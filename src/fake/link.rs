//! The fake device's connection to bitsd, whatever carries its lines:
//! the control port (plain TCP), the TLS port, or the web's `/device`
//! websocket (`ws://`, or `wss://` through TLS), each line bounded as the
//! server bounds them.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::device::protocol::{LineFramer, MAX_LINE};

/// Where the fake device reaches bitsd.
#[derive(Debug, Clone, PartialEq)]
pub enum Dial {
    /// The control port, `HOST:PORT`, plain TCP.
    Control(String),
    /// The TLS device port, `HOST:PORT`.
    Tls(String),
    /// The web's device websocket, `ws://` or `wss://HOST[:PORT]/device`.
    Websocket(url::Url),
}

impl Dial {
    /// A `--url`: a websocket URL with a host.
    pub fn websocket(url: &str) -> anyhow::Result<Dial> {
        let parsed = url::Url::parse(url).with_context(|| format!("--url {url}"))?;
        if !matches!(parsed.scheme(), "ws" | "wss") || parsed.host_str().is_none() {
            anyhow::bail!("--url {url}: not a ws:// or wss:// URL with a host");
        }
        Ok(Dial::Websocket(parsed))
    }

    /// Whether the connection is encrypted, and so needs [`client_tls`].
    pub fn uses_tls(&self) -> bool {
        match self {
            Dial::Control(_) => false,
            Dial::Tls(_) => true,
            Dial::Websocket(url) => url.scheme() == "wss",
        }
    }
}

impl std::fmt::Display for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dial::Control(address) => write!(f, "{address}"),
            Dial::Tls(address) => write!(f, "{address} (TLS)"),
            Dial::Websocket(url) => write!(f, "{url}"),
        }
    }
}

/// TLS that checks bitsd's certificate against the certificates in `ca`
/// (PEM) when given, else against the system's authorities. There is no
/// way to turn the check off.
pub fn client_tls(ca: Option<&Path>) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("--ca {}: {e}", file.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                anyhow::bail!("--ca {}: no certificate in it", file.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                anyhow::bail!(
                    "no system certificate authorities found to check bitsd's certificate; \
                     give --ca FILE"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Whether `error` is bitsd's certificate failing the check, which no
/// second try mends.
pub fn bad_certificate(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let inside_io = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let tls = inside_io.or_else(|| cause.downcast_ref::<rustls::Error>());
        matches!(tls, Some(rustls::Error::InvalidCertificate(_)))
    })
}

/// A byte stream, plain or inside TLS.
trait Bytes: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Bytes for T {}

/// A connection to bitsd that carries lines.
pub struct Link(Carrier);

enum Carrier {
    /// Lines ended by `\n` on a byte stream (the control and TLS ports).
    Stream {
        stream: Box<dyn Bytes>,
        framer: LineFramer,
    },
    /// One text message per line.
    Websocket(Box<WebSocketStream<Box<dyn Bytes>>>),
}

impl Link {
    /// Connects to `dial`; `tls` is needed when [`Dial::uses_tls`].
    pub async fn connect(dial: &Dial, tls: Option<&TlsConnector>) -> anyhow::Result<Link> {
        match dial {
            Dial::Control(address) => Ok(Link::stream(Box::new(tcp(address).await?))),
            Dial::Tls(address) => {
                let host = address
                    .rsplit_once(':')
                    .map_or(address.as_str(), |(h, _)| h);
                let stream = encrypted(tcp(address).await?, host, tls).await?;
                Ok(Link::stream(stream))
            }
            Dial::Websocket(url) => {
                let host = url.host_str().unwrap_or_default();
                let port = url.port_or_known_default().unwrap_or(80);
                let tcp = tcp(&format!("{}:{port}", bracketed(host))).await?;
                let stream: Box<dyn Bytes> = match url.scheme() {
                    "wss" => encrypted(tcp, host, tls).await?,
                    _ => Box::new(tcp),
                };
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_LINE))
                    .max_frame_size(Some(MAX_LINE));
                let (socket, _) =
                    tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
                        .await
                        .with_context(|| format!("websocket handshake with {url}"))?;
                Ok(Link(Carrier::Websocket(Box::new(socket))))
            }
        }
    }

    fn stream(stream: Box<dyn Bytes>) -> Link {
        Link(Carrier::Stream {
            stream,
            framer: LineFramer::new(),
        })
    }

    /// Sends one line.
    pub async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        match &mut self.0 {
            Carrier::Stream { stream, .. } => {
                stream.write_all(format!("{line}\n").as_bytes()).await?;
                stream.flush().await?;
            }
            Carrier::Websocket(socket) => socket.send(Message::text(line)).await?,
        }
        Ok(())
    }

    /// The next line from bitsd, `None` once it has closed the connection.
    /// Safe to cancel: nothing read is lost.
    pub async fn recv(&mut self) -> anyhow::Result<Option<String>> {
        match &mut self.0 {
            Carrier::Stream { stream, framer } => loop {
                match framer.next_line() {
                    Ok(Some(line)) => return Ok(Some(text(&line))),
                    Ok(None) => {}
                    Err(overlong) => anyhow::bail!("bitsd sent a {overlong}"),
                }
                framer.buffer().reserve(MAX_LINE);
                if stream.read_buf(framer.buffer()).await? == 0 {
                    return Ok(None);
                }
            },
            Carrier::Websocket(socket) => loop {
                let line = match socket.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(Message::Text(line))) => text(line.as_bytes()),
                    Some(Ok(Message::Binary(line))) => text(&line),
                    // Pings are answered by the library.
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                };
                return Ok(Some(line));
            },
        }
    }
}

async fn tcp(address: &str) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `stream` inside TLS, bitsd's certificate checked for `host`.
async fn encrypted(
    stream: TcpStream,
    host: &str,
    tls: Option<&TlsConnector>,
) -> anyhow::Result<Box<dyn Bytes>> {
    let tls = tls.context("TLS is not set up")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("{host} is not a host name or address"))?;
    match tls.connect(name, stream).await {
        Ok(stream) => Ok(Box::new(stream)),
        Err(e) => {
            let e = anyhow::Error::from(e);
            match bad_certificate(&e) {
                true => {
                    Err(e.context(format!("TLS with {host}: its certificate failed the check")))
                }
                false => Err(e.context(format!("TLS with {host}"))),
            }
        }
    }
}

/// An IPv6 address in brackets, as `HOST:PORT` needs it.
fn bracketed(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// A line as text, its `\r` or `\n` end dropped.
fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls() {
        assert!(
            !Dial::websocket("ws://127.0.0.1:8080/device")
                .unwrap()
                .uses_tls()
        );
        assert!(
            Dial::websocket("wss://bits.example/device")
                .unwrap()
                .uses_tls()
        );
        for bad in ["http://x/device", "ws://", "127.0.0.1:8080", ""] {
            assert!(Dial::websocket(bad).is_err(), "{bad}");
        }
        assert!(Dial::Tls("h:1".into()).uses_tls());
        assert!(!Dial::Control("h:1".into()).uses_tls());
    }

    #[test]
    fn hosts_and_lines() {
        assert_eq!(bracketed("::1"), "[::1]");
        assert_eq!(bracketed("[::1]"), "[::1]");
        assert_eq!(bracketed("bits.example"), "bits.example");
        assert_eq!(text(b"key abc\r"), "key abc");
        assert_eq!(text(b"error auth\n"), "error auth");
    }
}
