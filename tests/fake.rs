//! `bitsd fake device` and `bitsd fake history` against a real server.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{PATIENCE, Spawned, TestServer, bitsd_command as bitsd, http_get, stdout_of};

/// Kills the child when the test ends, however it ends.
struct Kill(std::process::Child);

impl Kill {
    /// Starts `command`, its output kept from the test's.
    fn spawn(command: &mut Command) -> Kill {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Kill(child)
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_fake_device_brings_the_homepage_to_life() {
    let server = TestServer::start_with(&["--control-token", "demo"]).await;
    let _child = Kill::spawn(
        bitsd()
            .args(["--config", "/dev/null", "fake", "device", "--token", "demo"])
            .args(["--interval", "0.1", "--control"])
            .arg(server.control_addr().to_string()),
    );
    server.wait_for_status("1").await;
    let data = server
        .wait_for_data("samples from both sensors", |d| {
            d["tempinthist"].as_array().is_some_and(|h| {
                h.iter().any(|s| s["sensor"] == 0) && h.iter().any(|s| s["sensor"] == 1)
            })
        })
        .await;
    let value = data["tempint"]["value"].as_f64().unwrap();
    assert!((10.0..30.0).contains(&value), "{value}");
    let data = server
        .wait_for_data("a message", |d| d["message"].is_object())
        .await;
    assert_eq!(data["message"]["user"], "BITS");
}

/// Without `--control` and `--token`, the fake device dials the configured
/// device port with the configured token.
#[tokio::test]
async fn the_fake_device_follows_the_configured_port_and_token() {
    let server = TestServer::start_with(&["--control-token", "from-config"]).await;
    let port = server.control_addr().port().to_string();
    let _child = Kill::spawn(
        bitsd()
            .args(["--config", "/dev/null", "--control-local-port", &port])
            .env("BITSD_CONTROL_TOKEN", "from-config")
            .args(["fake", "device", "--interval", "0.1"]),
    );
    server.wait_for_status("1").await;
}

#[tokio::test]
async fn fake_history_fills_the_log_and_the_forecast() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let out = bitsd()
        .args(["--config", "/dev/null", "--timezone", "Europe/Rome", "--db"])
        .arg(&db)
        .args(["fake", "history", "--days", "21"])
        .output()
        .unwrap();
    let said = stdout_of(out);
    assert!(said.contains("21 past day(s) written"), "{said}");
    let server = TestServer::start_in(dir, db, &[]).await;
    let log = server.json("/log?format=json&limit=1000").await;
    let rows = log["log"].as_array().unwrap();
    assert!(rows.len() >= 20, "{} changes", rows.len());
    assert_eq!(rows[0]["value"], "closed", "the past ends closed");
    let forecast = server.json("/presence").await;
    let values: Vec<f64> = forecast["forecast"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let afternoon_weekdays: f64 = (0..5).map(|d| values[d * 48 + 34]).sum::<f64>() / 5.0;
    let night: f64 = (0..7).map(|d| values[d * 48 + 6]).sum::<f64>() / 7.0;
    assert!(
        afternoon_weekdays > 0.5,
        "weekday 17:00 is usually open: {afternoon_weekdays}"
    );
    assert_eq!(night, 0.0, "03:00 never is");
    let data = server.json("/data").await;
    assert_eq!(data["tempinthist"].as_array().unwrap().len(), 100);
}

/// A fake device whose standard output is read line by line.
struct Fake {
    child: Kill,
    stdout: mpsc::Receiver<String>,
}

impl Fake {
    /// `bitsd fake device ARGS`, a round of samples every 0.1 s.
    fn start(args: &[&str]) -> Fake {
        let mut child = Kill::spawn(
            bitsd()
                .args([
                    "--config",
                    "/dev/null",
                    "fake",
                    "device",
                    "--interval",
                    "0.1",
                ])
                .args(args),
        );
        let stdout = BufReader::new(child.0.stdout.take().unwrap());
        let (lines, stdout_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Fake {
            child,
            stdout: stdout_lines,
        }
    }

    /// The key a claim printed (`key: KEY`).
    fn key(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.stdout.recv_timeout(left) else {
                panic!("no `key: ` line within {PATIENCE:?}");
            };
            if let Some(key) = line.strip_prefix("key: ") {
                return key.to_string();
            }
        }
    }
}

/// `bitsd fake device ARGS` that has to end by itself: its exit code and
/// standard error.
fn ended(args: &[&str]) -> (Option<i32>, String) {
    // Its standard output is read until it ends.
    let mut fake = Fake::start(args);
    let child = &mut fake.child.0;
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{args:?} still runs");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

/// `bitsd fake device ARGS` ends with status 1 and the one line `said` on
/// standard error.
fn refused(args: &[&str], said: &str) {
    let (code, stderr) = ended(args);
    assert_eq!(code, Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr, format!("{said}\n"), "{args:?}");
}

/// `bitsd device add NAME` on `db`: the claim code it printed.
fn claim_code(db: &Path, name: &str) -> String {
    let added = stdout_of(
        bitsd()
            .args(["--config", "/dev/null", "--db"])
            .arg(db)
            .args(["device", "add", name])
            .output()
            .unwrap(),
    );
    added
        .lines()
        .find_map(|l| l.strip_prefix("claim code: "))
        .unwrap_or_else(|| panic!("no code in {added}"))
        .to_string()
}

/// The body of `GET path`.
fn body(web: SocketAddr, path: &str) -> String {
    let answer = http_get(web, path);
    assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    answer.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// Waits until `GET path` satisfies `check`.
fn wait_for(web: SocketAddr, path: &str, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = body(web, path);
        if check(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "no {what} in {path}: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `/metrics` says whether the device `name` is connected.
fn wait_connected(web: SocketAddr, name: &str, connected: bool) {
    let line = format!(
        "bitsd_device_connected{{device=\"{name}\"}} {}",
        u8::from(connected)
    );
    wait_for(web, "/metrics", &line, |text| {
        text.lines().any(|l| l == line)
    });
}

/// Over the transport `dial` names: a claim prints a key and the samples
/// reach `/data` as `door`'s; then the key works on its own; the used
/// code and a wrong key are refused with one line and status 1.
fn pairs_and_plays(server: &Spawned, db: &Path, dial: &[&str]) {
    let code = claim_code(db, "door");
    let claimed = Fake::start(&[dial, &["--claim", &code]].concat());
    let key = claimed.key();
    assert_eq!(key.len(), 43, "256 bits in base64url: {key}");
    let data: serde_json::Value = serde_json::from_str(&body(server.web, "/data")).unwrap();
    let from_door = |data: &serde_json::Value| {
        data["tempinthist"]
            .as_array()
            .is_some_and(|h| h.iter().any(|s| s["device"] == "door"))
    };
    if !from_door(&data) {
        wait_for(server.web, "/data", "sample from door", |text| {
            from_door(&serde_json::from_str(text).unwrap())
        });
    }
    drop(claimed);
    wait_connected(server.web, "door", false);

    let _again = Fake::start(&[dial, &["--key", &key]].concat());
    wait_connected(server.web, "door", true);
    let accepted = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("bitsd_device_lines_total{"))
            .filter(|l| l.contains("device=\"door\"") && l.contains("result=\"accepted\""))
            .find_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = accepted(&body(server.web, "/metrics"));
    wait_for(server.web, "/metrics", "more lines from door", |text| {
        accepted(text) > before
    });

    refused(
        &[dial, &["--claim", &code]].concat(),
        "bitsd refused the claim code: wrong, expired or already used",
    );
    // Shaped like a key: on a control port without a token, any other
    // `auth` line is the original daemon's, ignored as it always was.
    let wrong = "k".repeat(43);
    refused(
        &[dial, &["--key", &wrong]].concat(),
        "bitsd refused the key: wrong or revoked",
    );
}

#[test]
fn a_registered_fake_device_on_the_control_port() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    // With a token, as a port open to registered devices would have: on
    // a port without one, what is no key leaves a connection the original
    // device.
    let server = Spawned::start_with(&db, &common::DEVICE_TOKEN_S3CRET, "info");
    let control = server.control.to_string();
    pairs_and_plays(&server, &db, &["--control", &control]);
}

#[test]
fn a_registered_fake_device_on_the_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let server = Spawned::start(&db);
    let url = format!("ws://{}/device", server.web);
    pairs_and_plays(&server, &db, &["--url", &url]);
}

/// A certificate for 127.0.0.1 made for the test, and the files of its
/// PEM: (certificate, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// bitsd with its TLS device port on port 0, and that port.
fn with_tls_port(dir: &Path, db: &Path) -> (Spawned, SocketAddr, PathBuf) {
    let (cert, key) = certificate(dir);
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let server = Spawned::start_with(
        db,
        &[
            "--control-tls-port",
            "0",
            "--control-tls-address",
            "127.0.0.1",
            "--control-tls-cert",
            &cert_arg,
            "--control-tls-key",
            &key_arg,
        ],
        "info",
    );
    let port = server.logged_address("control TLS listening on ", PATIENCE);
    (server, port, cert)
}

#[test]
fn a_registered_fake_device_on_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let (server, tls, cert) = with_tls_port(dir.path(), &db);
    let (tls, ca) = (tls.to_string(), cert.display().to_string());
    pairs_and_plays(&server, &db, &["--tls", &tls, "--ca", &ca]);
}

/// A TLS proxy on loopback in front of `web`, with the certificate in
/// `cert` and `key` (PEM), as nginx stands before bitsd for `wss://`.
fn tls_proxy(web: SocketAddr, cert: &Path, key: &Path) -> SocketAddr {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    // Lives as long as the test process.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let mut server = tokio::net::TcpStream::connect(web).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
    });
    address
}

#[test]
fn a_registered_fake_device_on_the_websocket_through_tls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let server = Spawned::start(&db);
    let (cert, key) = certificate(dir.path());
    let url = format!("wss://{}/device", tls_proxy(server.web, &cert, &key));
    let ca = cert.display().to_string();
    pairs_and_plays(&server, &db, &["--url", &url, "--ca", &ca]);
}

/// Without `--ca`, a certificate that no authority of the system's signed
/// ends the fake device at once; it never claims.
#[test]
fn the_fake_device_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let (_server, tls, _) = with_tls_port(dir.path(), &db);
    let code = claim_code(&db, "door");
    let (status, stderr) = ended(&["--tls", &tls.to_string(), "--claim", &code]);
    assert_eq!(status, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    let list = stdout_of(
        bitsd()
            .args(["--config", "/dev/null", "--db"])
            .arg(&db)
            .args(["device", "list"])
            .output()
            .unwrap(),
    );
    assert!(list.contains("not claimed yet"), "{list}");
}
