//! The TLS device port (`control_tls_port`): registered devices from any
//! network, the same lines as the control port inside TLS (rustls).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listener::keep_alive;
use super::pairing::Transport;
use super::session::{self, AUTH_TIMEOUT, Devices, Peer, Start, StreamLines, StreamSink};
use crate::config::Options;
use crate::limits::AddressKey;

/// The TLS port's listener and the certificate it shows, when
/// `control_tls_port` is set.
pub struct TlsPort {
    pub listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsPort {
    /// Reads the certificate and key and binds the port; `None` when
    /// `control_tls_port` is not set. Errors name the option at fault.
    pub async fn bind(options: &Options) -> anyhow::Result<Option<TlsPort>> {
        let Some(port) = options.control_tls_port else {
            return Ok(None);
        };
        let acceptor = acceptor(options)?;
        let address = SocketAddr::new(options.control_tls_address, port);
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }?;
        socket.set_reuseaddr(true)?;
        socket
            .bind(address)
            .with_context(|| format!("cannot listen for TLS devices on {address}"))?;
        let listener = socket
            .listen(1024)
            .with_context(|| format!("cannot listen for TLS devices on {address}"))?;
        Ok(Some(TlsPort { listener, acceptor }))
    }

    pub fn address(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The server's TLS settings from `control_tls_cert` and `control_tls_key`.
fn acceptor(options: &Options) -> anyhow::Result<TlsAcceptor> {
    let (Some(cert), Some(key)) = (&options.control_tls_cert, &options.control_tls_key) else {
        anyhow::bail!("control_tls_port is set: control_tls_cert and control_tls_key are needed");
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("control_tls_cert: {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("control_tls_cert: {}: no certificate in it", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("control_tls_key: {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .context("control_tls_cert and control_tls_key do not make a certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts devices on the TLS port until `shutdown`. A connection holds a
/// place among those waiting to authenticate from its handshake until its
/// first line, so strangers who hold handshakes open are bounded too.
pub async fn serve_tls(
    port: TlsPort,
    devices: Arc<Devices>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = port.listener.accept() => accepted,
        };
        let (stream, address) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("tls: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        keep_alive(&stream, &address);
        let peer = Peer {
            name: address.to_string(),
            key: Some(AddressKey::from(address.ip())),
            transport: Transport::Tls,
        };
        let waiting = devices.wait(&peer);
        let (devices, acceptor) = (devices.clone(), port.acceptor.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let handshake = tokio::time::timeout(AUTH_TIMEOUT, acceptor.accept(stream));
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = waiting.evicted() => return,
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!("tls: handshake with {} failed: {e}", peer.name);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("tls: no handshake from {} within {AUTH_TIMEOUT:?}", peer.name);
                        return;
                    }
                },
            };
            let (read, write) = tokio::io::split(stream);
            let (lines, sink) = (StreamLines::new(read), StreamSink(write));
            let start = Start::Prove { waiting };
            if let Some(reason) = session::run(lines, sink, &peer, start, &devices).await {
                tracing::info!("device {} disconnected: {reason}", peer.name);
            }
        });
    }
}
