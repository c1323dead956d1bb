//! The TLS device port (`control_tls_port`): registered devices from any
//! network, the same lines as the control port inside TLS (rustls), with
//! a certificate read again when its files change.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// Time between two looks at the certificate files' modification times.
const CERTIFICATE_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The server's TLS settings from `control_tls_cert` and `control_tls_key`.
fn acceptor(options: &Options) -> anyhow::Result<TlsAcceptor> {
    let (Some(cert), Some(key)) = (&options.control_tls_cert, &options.control_tls_key) else {
        anyhow::bail!("control_tls_port is set: control_tls_cert and control_tls_key are needed");
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let files = CertificateFiles {
        cert: cert.clone(),
        key: key.clone(),
        provider: provider.clone(),
        loaded: Mutex::new(Loaded::read(cert, key, &provider)?),
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(files));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate and key files, read again when they change (a renewal
/// by certbot, say) so that bitsd need not be restarted.
#[derive(Debug)]
struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    loaded: Mutex<Loaded>,
}

/// The certificate in use, and what the files were when it was read.
#[derive(Debug)]
struct Loaded {
    certified: Arc<CertifiedKey>,
    modified: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl Loaded {
    /// Reads both files; errors name the option at fault.
    fn read(
        cert: &Path,
        key: &Path,
        provider: &rustls::crypto::CryptoProvider,
    ) -> anyhow::Result<Loaded> {
        let modified = (modified(cert), modified(key));
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("control_tls_cert: {}: {e}", cert.display()))?;
        if chain.is_empty() {
            anyhow::bail!("control_tls_cert: {}: no certificate in it", cert.display());
        }
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| anyhow::anyhow!("control_tls_key: {}: {e}", key.display()))?;
        let certified = CertifiedKey::from_der(chain, private, provider)
            .context("control_tls_cert and control_tls_key do not make a certificate")?;
        Ok(Loaded {
            certified: Arc::new(certified),
            modified,
            checked: Instant::now(),
        })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl CertificateFiles {
    /// The certificate to show: read again when its files changed since
    /// they were last looked at, at most once a [`CERTIFICATE_CHECK_EVERY`].
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.checked.elapsed() >= CERTIFICATE_CHECK_EVERY {
            loaded.checked = Instant::now();
            let now = (modified(&self.cert), modified(&self.key));
            if now != loaded.modified {
                match Loaded::read(&self.cert, &self.key, &self.provider) {
                    Ok(fresh) => {
                        tracing::info!("control TLS: certificate read again");
                        *loaded = fresh;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "control TLS: {e:#}; still showing the certificate read before"
                        );
                        loaded.modified = now;
                    }
                }
            }
        }
        loaded.certified.clone()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a new certificate for `name` into `cert` and `key`.
    fn write_certificate(cert: &Path, key: &Path, name: &str) -> Vec<u8> {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(cert, made.cert.pem()).unwrap();
        std::fs::write(key, made.signing_key.serialize_pem()).unwrap();
        made.cert.der().to_vec()
    }

    #[test]
    fn a_renewed_certificate_is_shown_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let first = write_certificate(&cert, &key, "bits.example.org");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = CertificateFiles {
            loaded: Mutex::new(Loaded::read(&cert, &key, &provider).unwrap()),
            cert: cert.clone(),
            key: key.clone(),
            provider,
        };
        let shown = |files: &CertificateFiles| files.current().cert[0].to_vec();
        assert_eq!(shown(&files), first);
        let renewed = write_certificate(&cert, &key, "bits.example.org");
        let looked_at = |files: &CertificateFiles| {
            let mut loaded = files.loaded.lock().unwrap();
            loaded.checked -= CERTIFICATE_CHECK_EVERY;
            // Modification times may not tell two writes in a row apart.
            loaded.modified = (None, None);
        };
        assert_eq!(shown(&files), first, "not looked at again yet");
        looked_at(&files);
        assert_eq!(shown(&files), renewed);
        // A half-written renewal: the certificate read before stays.
        std::fs::write(&key, "not a key").unwrap();
        looked_at(&files);
        assert_eq!(shown(&files), renewed);
    }
}
