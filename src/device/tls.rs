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

use super::lines::{StreamLines, StreamSink};
use super::listener::keep_alive;
use super::pairing::Transport;
use super::session::{self, AUTH_TIMEOUT, Devices, Peer, Start};
use crate::config::Options;
use crate::limits::AddressKey;

/// The TLS port's listener and the certificate it shows.
pub struct TlsPort {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsPort {
    /// The port bound on `listener`, showing the certificate of
    /// `control_tls_cert` and `control_tls_key`. Errors name the option at
    /// fault.
    pub fn new(listener: TcpListener, options: &Options) -> anyhow::Result<TlsPort> {
        let acceptor = acceptor(options)?;
        Ok(TlsPort { listener, acceptor })
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
                tracing::warn!("control TLS: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        keep_alive(&stream, &address);
        let peer = Peer {
            label: address.to_string(),
            address: Some(AddressKey::from(address.ip())),
            transport: Transport::Tls,
        };
        let waiting = devices.enter_waiting_room(&peer);
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
                        tracing::debug!("control TLS: handshake with {} failed: {e}", peer.label);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("control TLS: no handshake from {} within {AUTH_TIMEOUT:?}", peer.label);
                        return;
                    }
                },
            };
            let (read, write) = tokio::io::split(stream);
            let (lines, sink) = (StreamLines::new(read), StreamSink(write));
            let start = Start::Prove { waiting };
            if let Some(reason) = session::run(lines, sink, &peer, start, &devices).await {
                tracing::info!("device {} disconnected: {reason}", peer.label);
            }
        });
        // Under a flood of connections, let the new one start its handshake
        // before accepting the next.
        tokio::task::yield_now().await;
    }
}
