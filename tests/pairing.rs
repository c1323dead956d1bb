//! Registered devices on the device port, the TLS port and `/device`
//! (SPEC 18): claiming a key, proving it, several devices at once, the
//! changes they make carrying their names, revocation reaching a running
//! bitsd, and the bounds strangers meet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod common;

use bitsd::clock::unix_seconds;
use bitsd::store::Db;
use common::member::logged_in_member;
use common::{Device, PATIENCE, TestServer, bitsd_command, stdout_of, tcp_from};

/// Registers `name` on the server's database; its claim code.
fn add(server: &TestServer, name: &str) -> String {
    let mut db = Db::open(&server.db, false).unwrap();
    db.add_device(name, unix_seconds(), 900).unwrap().code
}

/// Options that let every local address (127.x.y.z) be a device, so that
/// each check can come from an address of its own (one a second each).
const ANY_LOCAL: [&str; 2] = ["--control-remote-address", "127.0.0.0/8"];

/// Claims with `code` on `device`: the key bitsd answers with.
async fn claim(device: &mut Device, code: &str) -> String {
    device.send(&format!("claim {code}")).await;
    let line = device.recv().await;
    let key = line
        .strip_prefix("key ")
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(key.len(), 43, "256 bits in unpadded base64url: {key}");
    key.to_string()
}

/// Waits until `/data` satisfies `check`.
async fn data_where(server: &TestServer, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    server.wait_for_data(what, check).await;
}

#[tokio::test]
async fn a_device_claims_its_key_then_proves_it_and_its_changes_carry_its_name() {
    let server = TestServer::start_with(&ANY_LOCAL).await;
    let code = add(&server, "door");
    let mut door = Device::connect_from("127.0.0.2", server.control_addr()).await;
    let key = claim(&mut door, &code).await;
    door.send_all(&["temperature 3 21.5", "status 1"]).await;
    door.send_message("from the door").await;
    data_where(&server, "the door's three changes", |d| {
        d["status"]["device"] == "door"
            && d["tempint"]["device"] == "door"
            && d["message"]["device"] == "door"
            && d["message"]["user"] == "BITS"
    })
    .await;
    let data = server.json("/data").await;
    assert_eq!(
        data["status"]["modifiedby"], "BITS",
        "as old clients know it"
    );
    // The history says who opened, and what the original device does is
    // marked as before (no `device`).
    let log = server.json("/log?format=json").await["log"].clone();
    assert_eq!(log[0]["device"], "door", "{log}");
    let mut original = Device::connect_from("127.0.0.3", server.control_addr()).await;
    original.send("status 0").await;
    server.wait_for_status("0").await;
    let log = server.json("/log?format=json").await["log"].clone();
    assert!(log[0].get("device").is_none(), "{log}");
    assert_eq!(log[1]["device"], "door", "{log}");
    let page = server.text("/log").await;
    assert!(page.contains("<td>device door</td>"), "{page}");

    // The key, on a new connection; the used code no longer works.
    drop(door);
    let mut door = Device::connect_from("127.0.0.4", server.control_addr()).await;
    door.send(&format!("auth {key}")).await;
    door.send("status 1").await;
    server.wait_for_status("1").await;
    // A registered device on a port without a token does not push the
    // original device out: it still hears what the door did.
    assert_eq!(original.recv().await, "status 1");
    let mut again = Device::connect_from("127.0.0.5", server.control_addr()).await;
    again.send(&format!("claim {code}")).await;
    assert_eq!(again.recv().await, "error auth");
    again.closed().await;
    // On a port without a token, what is no key is the original daemon's
    // token, as it always was: that connection is the original device.
    let mut daemon = Device::connect_from("127.0.0.6", server.control_addr()).await;
    daemon.send(&format!("auth {}", "A".repeat(43))).await;
    door.send("status 0").await;
    assert_eq!(daemon.recv().await, "status 0");

    // The original daemon's `auth <token>` on a port without a token is
    // ignored, as it always was.
    let mut daemon = Device::connect_from("127.0.0.9", server.control_addr()).await;
    daemon.send_all(&["auth an-old-token", "status 0"]).await;
    server.wait_for_status("0").await;

    let list = stdout_of(
        bitsd_command()
            .args(["--config", "/dev/null", "--db"])
            .arg(&server.db)
            .args(["device", "list"])
            .output()
            .unwrap(),
    );
    let line = list.lines().find(|l| l.starts_with("door")).unwrap();
    assert!(line.contains("connected"), "{list}");
    assert!(
        line.contains(" 127.0.0.4 ") && line.contains("tcp"),
        "{list}"
    );
}

#[tokio::test]
async fn a_second_check_within_a_second_from_one_address_is_not_made() {
    let server = TestServer::start_with(&common::DEVICE_TOKEN_S3CRET).await;
    let code = add(&server, "door");
    let mut first = Device::connect_from("127.0.0.7", server.control_addr()).await;
    first.send(&format!("auth {}", "B".repeat(43))).await;
    assert_eq!(first.recv().await, "error auth");
    // The right code, but too soon after the wrong key from that address.
    let mut second = Device::connect_from("127.0.0.7", server.control_addr()).await;
    second.send(&format!("claim {code}")).await;
    assert_eq!(second.recv().await, "error auth");
    second.closed().await;
    // From another address it is checked, and the code was not used up.
    let mut third = Device::connect_from("127.0.0.8", server.control_addr()).await;
    claim(&mut third, &code).await;
}

#[tokio::test]
async fn several_devices_at_once_each_told_of_what_the_others_did() {
    let token = "s3cret-token";
    let server =
        TestServer::start_with(&["--control-token", token, ANY_LOCAL[0], ANY_LOCAL[1]]).await;
    let mut original = Device::connect_from("127.0.1.1", server.control_addr()).await;
    original.send(&format!("auth {token}")).await;
    let mut door = Device::connect_from("127.0.1.2", server.control_addr()).await;
    let door_code = add(&server, "door");
    let door_key = claim(&mut door, &door_code).await;
    let mut display = Device::connect_from("127.0.1.3", server.control_addr()).await;
    let display_code = add(&server, "display");
    claim(&mut display, &display_code).await;
    wait_connected(&server, "door", 1.0).await;
    wait_connected(&server, "display", 1.0).await;
    wait_connected(&server, "BITS", 1.0).await;

    // A member opens the room: every device hears it.
    let mut ada = logged_in_member(&server, "ada", "/admin").await;
    ada.get("/admin").await;
    ada.submit("/admin", &[("status", "open")]).await;
    for device in [&mut original, &mut door, &mut display] {
        assert_eq!(device.recv().await, "status 1");
    }
    // The door closes it: the others hear it, the door does not (the next
    // thing it hears is the member's message).
    door.send("status 0").await;
    assert_eq!(original.recv().await, "status 0");
    assert_eq!(display.recv().await, "status 0");
    ada.get("/message").await;
    ada.submit("/message", &[("msgtext", "ciao")]).await;
    assert!(door.recv().await.starts_with("message "));

    // The door connects again with its key: the new connection replaces
    // its older one, and only that one.
    let mut door_again = Device::connect_from("127.0.1.4", server.control_addr()).await;
    door_again.send(&format!("auth {door_key}")).await;
    door.closed().await;
    door_again.send("status 1").await;
    assert!(original.recv().await.starts_with("message "));
    assert_eq!(original.recv().await, "status 1");
    assert!(display.recv().await.starts_with("message "));
    assert_eq!(display.recv().await, "status 1");
    let lines = server
        .metric("bitsd_device_lines_total{device=\"door\",result=\"accepted\"}")
        .await;
    assert_eq!(lines, 2.0);
}

async fn wait_connected(server: &TestServer, name: &str, value: f64) {
    let metric = format!("bitsd_device_connected{{device=\"{name}\"}}");
    let deadline = Instant::now() + PATIENCE;
    while server.metric(&metric).await != value {
        assert!(Instant::now() < deadline, "{metric} never {value}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_key_revoked_by_another_process_ends_its_connection_within_five_seconds() {
    let server = TestServer::start_with(&common::DEVICE_TOKEN_S3CRET).await;
    let code = add(&server, "door");
    let mut door = Device::connect_from("127.0.2.1", server.control_addr()).await;
    claim(&mut door, &code).await;
    let code = add(&server, "window");
    let mut window = Device::connect_from("127.0.2.2", server.control_addr()).await;
    let window_key = claim(&mut window, &code).await;
    wait_connected(&server, "window", 1.0).await;
    let cli = |args: &[&str]| {
        stdout_of(
            bitsd_command()
                .args(["--config", "/dev/null", "--db"])
                .arg(&server.db)
                .arg("device")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    for (args, device) in [
        (["revoke", "door"], &mut door),
        (["delete", "window"], &mut window),
    ] {
        let start = Instant::now();
        cli(&args);
        device.closed().await;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
    let mut window = Device::connect_from("127.0.2.3", server.control_addr()).await;
    window.send(&format!("auth {window_key}")).await;
    assert_eq!(window.recv().await, "error auth");
    let list = cli(&["list"]);
    assert!(list.contains("revoked"), "{list}");
    assert!(!list.contains("window"), "{list}");
}

/// A device's line link on any transport.
enum Link {
    Tls(Box<BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
    Ws(Box<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>),
}

impl Link {
    async fn send(&mut self, line: &str) {
        match self {
            Link::Tls(s) => s.write_all(format!("{line}\n").as_bytes()).await.unwrap(),
            Link::Ws(ws) => ws.send(Message::text(line)).await.unwrap(),
        }
    }

    /// The next line, or `None` when the server closed the link.
    async fn recv(&mut self) -> Option<String> {
        match self {
            Link::Tls(s) => {
                let mut line = String::new();
                let read = tokio::time::timeout(PATIENCE, s.read_line(&mut line));
                match read.await.expect("a line over TLS in time") {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(line.trim_end().to_string()),
                }
            }
            Link::Ws(ws) => loop {
                match tokio::time::timeout(PATIENCE, ws.next())
                    .await
                    .expect("in time")
                {
                    Some(Ok(Message::Text(text))) => return Some(text.to_string()),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => continue,
                }
            },
        }
    }
}

/// A certificate for 127.0.0.1 in `dir`; the options that make bitsd show
/// it on a TLS port, and the certificate to trust.
fn tls_options(dir: &std::path::Path) -> (Vec<String>, CertificateDer<'static>) {
    let tls = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, tls.cert.pem()).unwrap();
    std::fs::write(&key, tls.signing_key.serialize_pem()).unwrap();
    let options = [
        "--control-tls-port",
        "0",
        "--control-tls-address",
        "127.0.0.1",
        "--control-tls-cert",
        cert.to_str().unwrap(),
        "--control-tls-key",
        key.to_str().unwrap(),
    ];
    let options = options.iter().map(|s| s.to_string()).collect();
    (options, tls.cert.der().clone())
}

async fn tls_link(addr: SocketAddr, from: &str, trusted: &CertificateDer<'static>) -> Link {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tcp_from(from, addr).await;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("a TLS connection to bitsd");
    Link::Tls(Box::new(BufReader::new(tls)))
}

#[tokio::test]
async fn over_tls_a_device_claims_and_proves_its_key_and_strangers_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (options, trusted) = tls_options(dir.path());
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let server = TestServer::start_with(&options).await;
    let tls = server.control_tls.expect("the TLS port");
    let code = add(&server, "thermo");
    let mut thermo = tls_link(tls, "127.0.3.1", &trusted).await;
    thermo.send(&format!("claim {code}")).await;
    let key = thermo.recv().await.unwrap();
    let key = key.strip_prefix("key ").unwrap().to_string();
    thermo.send("temperature 1 19.5").await;
    data_where(&server, "the sample over TLS", |d| {
        d["tempint"]["device"] == "thermo" && d["tempint"]["value"] == 19.5
    })
    .await;
    drop(thermo);
    let mut thermo = tls_link(tls, "127.0.3.2", &trusted).await;
    thermo.send(&format!("auth {key}")).await;
    thermo.send("temperature 1 20.5").await;
    data_where(&server, "a sample after auth", |d| {
        d["tempint"]["value"] == 20.5
    })
    .await;
    // The control token is not a key on the TLS port, and the original
    // device's lines are refused there.
    let mut stranger = tls_link(tls, "127.0.3.3", &trusted).await;
    stranger.send("status 1").await;
    assert_eq!(stranger.recv().await.as_deref(), Some("error auth"));
    assert_eq!(stranger.recv().await, None);

    // Strangers who say nothing: at most four wait from one address, the
    // oldest closed first.
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(tls_link(tls, "127.0.3.9", &trusted).await);
    }
    assert_eq!(silent[0].recv().await, None, "the oldest gave way");
    assert!(server.metric("bitsd_device_waiting_evicted_total").await >= 1.0);
}

async fn ws_link(server: &TestServer, from: &str, bearer: Option<&str>) -> Result<Link, u16> {
    let mut request = server
        .url("/device")
        .replace("http", "ws")
        .into_client_request()
        .unwrap();
    if let Some(key) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    let tcp = tcp_from(from, server.web_addr()).await;
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, _)) => Ok(Link::Ws(Box::new(ws))),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn on_the_web_port_a_device_claims_proves_its_key_and_hears_the_members() {
    let server = TestServer::start().await;
    let code = add(&server, "keypad");
    let mut keypad = ws_link(&server, "127.0.4.1", None).await.unwrap();
    keypad.send(&format!("claim {code}")).await;
    let key = keypad.recv().await.unwrap();
    let key = key.strip_prefix("key ").unwrap().to_string();
    keypad.send("status 1").await;
    data_where(&server, "opened by the keypad", |d| {
        d["status"]["device"] == "keypad"
    })
    .await;
    let mut ada = logged_in_member(&server, "ada", "/admin").await;
    ada.get("/admin").await;
    ada.submit("/admin", &[("status", "closed")]).await;
    assert_eq!(keypad.recv().await.as_deref(), Some("status 0"));
    drop(keypad);

    // The key in the upgrade's header, from a new address (one check a
    // second each).
    let mut keypad = ws_link(&server, "127.0.4.2", Some(&key)).await.unwrap();
    keypad.send("status 1\n").await;
    server.wait_for_status("1").await;
    assert_eq!(
        ws_link(&server, "127.0.4.3", Some("wrong")).await.err(),
        Some(401)
    );
    let mut wrong = ws_link(&server, "127.0.4.4", None).await.unwrap();
    wrong.send("auth wrong").await;
    assert_eq!(wrong.recv().await.as_deref(), Some("error auth"));
    assert_eq!(wrong.recv().await, None);

    // A message over 4096 bytes ends the link.
    keypad.send(&format!("message {}", "A".repeat(5000))).await;
    assert_eq!(keypad.recv().await, None);

    // Strangers who say nothing: at most four wait from one address.
    let evicted = server.metric("bitsd_device_waiting_evicted_total").await;
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(ws_link(&server, "127.0.4.9", None).await.unwrap());
    }
    assert_eq!(silent[0].recv().await, None, "the oldest gave way");
    let now = server.metric("bitsd_device_waiting_evicted_total").await;
    assert_eq!(now, evicted + 1.0);
}
