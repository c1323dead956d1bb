//! Strangers trying to take what belongs to everyone: password checks,
//! connections, log space, the device link, forms from other sites. Client
//! sockets bound to different 127.x.y.z addresses let one test be many
//! clients.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::member::{add_user, add_user_to};
use common::{PATIENCE, Spawned, TestServer, client_from, tcp_from};
use reqwest::header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An `_xsrf` cookie and field that match: anybody can send such a pair.
const XSRF: &str = "abcdefghijklmnopqrstuvwx";

/// One login attempt as a script would send it; status and body.
async fn attempt(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut request = client
        .post(format!("{url}/login"))
        .header(header::COOKIE, format!("_xsrf={XSRF}"))
        .form(&[("username", name), ("password", password), ("_xsrf", XSRF)]);
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn simultaneous_logins_from_one_address_cost_one_password_check() {
    let server = TestServer::start().await;
    add_user(&server, "alice", "right");
    let client = client_from("127.0.0.2");
    let url = server.url("");
    let attempts: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { attempt(&client, &url, "alice", "wrong", &[]).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.unwrap().0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 49);
    assert_eq!(server.metric("bitsd_password_checks_total").await, 1.0);
    // Another address is not held back.
    let (status, _) = attempt(&client_from("127.0.0.3"), &url, "alice", "right", &[]).await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn logins_from_many_addresses_queue_briefly_then_get_429() {
    let server = TestServer::start().await;
    add_user(&server, "bob", "right");
    let url = server.url("");
    let attempts: Vec<_> = (0..150)
        .map(|i| {
            let (client, url) = (client_from(&format!("127.0.1.{}", i + 1)), url.clone());
            tokio::spawn(async move { attempt(&client, &url, "bob", "wrong", &[]).await })
        })
        .collect();
    let (mut wrong, mut busy) = (0, 0);
    for a in attempts {
        match a.await.unwrap() {
            (401, _) => wrong += 1,
            (429, body) if body.contains("Too many logins at once") => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(wrong >= 2 + 16, "the checkers and the queue: {wrong}");
    assert!(busy > 0, "{wrong} checked, none refused");
    assert_eq!(
        server.metric("bitsd_password_checks_total").await,
        f64::from(wrong)
    );
}

#[tokio::test]
async fn long_names_and_passwords_are_refused_before_any_work() {
    let server = TestServer::start().await;
    let client = client_from("127.0.0.2");
    let url = server.url("");
    let (status, body) = attempt(&client, &url, &"n".repeat(65), "x", &[]).await;
    assert_eq!(status, 400);
    assert!(body.contains("longer than 64 characters"), "{body}");
    let (status, body) = attempt(&client, &url, "carol", &"p".repeat(1025), &[]).await;
    assert_eq!(status, 400);
    assert!(body.contains("longer than 1024 bytes"), "{body}");
    assert_eq!(server.metric("bitsd_password_checks_total").await, 0.0);
    // The longest allowed are checked (64 two-byte characters).
    let (status, _) = attempt(&client, &url, &"é".repeat(64), &"p".repeat(1024), &[]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn strangers_cannot_fill_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = Spawned::start_with(
        &dir.path().join("bitsd.db"),
        &["--log-requests=true"],
        "info",
    );
    let url = format!("http://{}", bitsd.web);
    let before = bitsd.log_bytes();
    // 2,000 attempts with 60 KB names, 16 at a time from 250 addresses.
    let long = "x".repeat(60 * 1024);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (url, long) = (url.clone(), long.clone());
        tasks.spawn(async move {
            for i in 0..125 {
                let from = format!("127.0.2.{}", (worker * 125 + i) % 250 + 1);
                let (status, _) = attempt(&client_from(&from), &url, &long, "x", &[]).await;
                assert_eq!(status, 400);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // And names that try to forge log lines, from one address and many.
    let forged = "eve\n2026-01-01 INFO admin logged in\x1b[2J";
    for i in 0..300 {
        let from = format!("127.0.3.{}", i % 3 + 1);
        attempt(&client_from(&from), &url, forged, "x", &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = bitsd.log_bytes() - before;
    assert!(grown < 1024 * 1024, "the log grew by {grown} bytes");
    let lines = bitsd.log_lines("");
    assert!(lines.iter().all(|l| l.len() < 400), "a long log line");
    assert!(!lines.iter().any(|l| l.contains('\x1b')), "a raw escape");
    let eve: Vec<_> = bitsd.log_lines("eve\\n2026");
    assert!(!eve.is_empty(), "the forged name is shown, escaped");
    assert!(eve.len() < 40, "{} lines about eve", eve.len());
}

/// Opens a websocket from `from`.
async fn websocket_from(
    from: &str,
    to: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = tcp_from(from, to).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{to}/ws"), stream)
        .await
        .unwrap();
    common::ws_next_text(&mut ws).await;
    ws
}

/// Opens an event stream from `from` with `headers`; returns once the
/// first event has arrived.
async fn events_from(from: &str, to: SocketAddr, headers: &str) -> TcpStream {
    let mut stream = common::request_events_from(from, to, headers).await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data:") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

/// Sends `GET /status` on `stream`; the response, or "" when the server
/// closed the connection without one.
async fn status_on(stream: &mut TcpStream) -> String {
    let _ = stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let server = TestServer::start_with(&["--web-max-connections-per-address", "3"]).await;
    let web = server.web_addr();
    let ws = websocket_from("127.0.0.2", web).await;
    let _sse = events_from("127.0.0.2", web, "").await;
    let _idle = tcp_from("127.0.0.2", web).await;
    assert_eq!(
        server
            .metric("bitsd_web_connections_refused_per_address_total")
            .await,
        0.0
    );

    let started = Instant::now();
    let mut fourth = tcp_from("127.0.0.2", web).await;
    assert_eq!(status_on(&mut fourth).await, "", "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(5), "closed at once");
    assert_eq!(
        server
            .metric("bitsd_web_connections_refused_per_address_total")
            .await,
        1.0
    );

    // Another address is served meanwhile.
    let mut other = tcp_from("127.0.0.3", web).await;
    assert!(status_on(&mut other).await.starts_with("HTTP/1.1 200"));
    // A place freed is a place to use.
    drop(ws);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut again = tcp_from("127.0.0.2", web).await;
        if status_on(&mut again).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the websocket's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn behind_a_proxy_each_client_address_is_counted() {
    let server = TestServer::start_with(&common::PROXIED_TWO_PER_ADDRESS).await;
    let web = server.web_addr();
    let client = "X-Forwarded-For: 203.0.113.5\r\n";
    let _a = events_from("127.0.0.1", web, client).await;
    let _b = events_from("127.0.0.1", web, client).await;
    for (forwarded, status) in [
        ("203.0.113.5", 429),
        ("203.0.113.6", 200),
        // The client's own entry on the left changes nothing.
        ("198.51.100.1, 203.0.113.5", 429),
    ] {
        let r = server
            .get_with("/status", &[(common::X_FORWARDED_FOR, forwarded)])
            .await;
        assert_eq!(r.status(), status, "{forwarded}");
    }
    assert_eq!(
        server
            .metric("bitsd_web_connections_refused_per_address_total")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408() {
    let server = TestServer::start().await;
    let mut stream = tcp_from("127.0.0.2", server.web_addr()).await;
    let head = "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=a";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("within 10 s"), "{response}");
    assert!(started.elapsed() >= Duration::from_secs(9));
}

#[tokio::test]
async fn posts_from_another_site_are_refused_whatever_their_xsrf() {
    let server = TestServer::start_with(&["--mac-update-password", "m"]).await;
    add_user(&server, "dave", "pw");
    let url = server.url("");
    let client = client_from("127.0.0.2");
    let own = format!("http://{}", server.web_addr());
    let (status, body) = attempt(
        &client,
        &url,
        "dave",
        "pw",
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("evil.example"), "{body}");
    let (status, _) = attempt(&client, &url, "dave", "pw", &[("Origin", "null")]).await;
    assert_eq!(status, 403);
    assert_eq!(server.metric("bitsd_password_checks_total").await, 0.0);
    let (status, _) = attempt(&client, &url, "dave", "pw", &[("Origin", &own)]).await;
    assert_eq!(status, 303, "the same origin");
    let (status, _) = attempt(&client, &url, "dave", "pw", &[]).await;
    assert_eq!(status, 303, "no Origin: judged by _xsrf");

    let mac = |origin: &'static str| {
        let mut r = client
            .post(format!("{url}/macupdate"))
            .form(&[("password", "m"), ("macs", "[]")]);
        if !origin.is_empty() {
            r = r.header("Origin", origin);
        }
        r.send()
    };
    assert_eq!(mac("https://evil.example").await.unwrap().status(), 403);
    assert_eq!(mac("").await.unwrap().status(), 200);
}

#[tokio::test]
async fn behind_a_proxy_the_origin_is_the_proxy_s() {
    let server = TestServer::start_with(&["--reverse-proxied"]).await;
    add_user(&server, "erin", "pw");
    let url = server.url("");
    let client = client_from("127.0.0.2");
    let proxied = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "bits.example"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    let with = |origin: &'static str| {
        let mut headers = proxied.to_vec();
        headers.push(("Origin", origin));
        headers
    };
    let (status, _) = attempt(&client, &url, "erin", "pw", &with("https://bits.example")).await;
    assert_eq!(status, 303);
    let (status, _) = attempt(&client, &url, "erin", "pw", &with("http://bits.example")).await;
    assert_eq!(status, 403, "another scheme");
}

#[tokio::test]
async fn macupdate_takes_five_wrong_passwords_a_minute() {
    let server = TestServer::start_with(&["--mac-update-password", "m"]).await;
    let update = |from: &str, password: &str| {
        client_from(from)
            .post(server.url("/macupdate"))
            .form(&[("password", password), ("macs", "[]")])
            .send()
    };
    for _ in 0..5 {
        assert_eq!(update("127.0.0.2", "guess").await.unwrap().status(), 403);
    }
    let r = update("127.0.0.2", "m").await.unwrap();
    assert_eq!(r.status(), 429, "unchecked, even the right one");
    assert!(r.text().await.unwrap().contains("too many wrong passwords"));
    assert_eq!(update("127.0.0.3", "m").await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_client_is_the_rightmost_forwarded_address() {
    for (hops, first, second) in [
        ("1", "1.1.1.1, 203.0.113.7", "2.2.2.2, 203.0.113.7"),
        (
            "2",
            "1.1.1.1, 203.0.113.8, 10.0.0.1",
            "2.2.2.2, 203.0.113.8, 10.0.0.2",
        ),
    ] {
        // One attempt a second per client, and per name and client one in
        // ten minutes: the second attempt tells whether bitsd saw the same
        // client, however long it takes to arrive.
        let server = TestServer::start_with(&[
            "--reverse-proxied",
            "--trusted-proxy-hops",
            hops,
            "--min-login-retry",
            "600",
        ])
        .await;
        let url = server.url("");
        let client = client_from("127.0.0.1");
        let forwarded = |value| [("X-Forwarded-For", value)];
        let (status, _) = attempt(&client, &url, "x", "y", &forwarded(first)).await;
        assert_eq!(status, 401);
        let (status, _) = attempt(&client, &url, "x", "y", &forwarded(second)).await;
        assert_eq!(status, 429, "hops {hops}: the same client");
        let (status, _) = attempt(&client, &url, "x", "y", &forwarded("203.0.113.99")).await;
        assert_eq!(status, 401, "hops {hops}: another client");
    }
}

#[tokio::test]
async fn static_files_follow_no_link_out_of_assets() {
    let assets = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(assets.path().join("style.css"), "body {}").unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let link = |target: &std::path::Path, name: &str| {
        std::os::unix::fs::symlink(target, assets.path().join(name)).unwrap();
    };
    link(&outside.path().join("secret.txt"), "secret.txt");
    link(outside.path(), "elsewhere");
    link(&assets.path().join("style.css"), "alias.css");
    let server = TestServer::start_with(&["--assets-path", assets.path().to_str().unwrap()]).await;
    for (path, expected) in [
        ("/static/style.css", 200),
        ("/static/alias.css", 200),
        ("/static/secret.txt", 404),
        ("/static/elsewhere/secret.txt", 404),
        ("/static/%65lsewhere/secret.txt", 404),
    ] {
        let r = server.get(path).await;
        assert_eq!(r.status(), expected, "{path}");
        if expected == 404 {
            assert!(!r.text().await.unwrap().contains("secret"), "{path}");
        }
    }
}

#[tokio::test]
async fn a_peer_that_has_not_authenticated_neither_displaces_nor_hears_the_device() {
    let server = TestServer::start_with(&common::DEVICE_TOKEN_S3CRET).await;
    let mut device = common::Device::connect_from("127.0.0.2", server.control_addr()).await;
    device.send_all(&["auth s3cret", "status 1"]).await;
    server.wait_for_status("1").await;

    let started = Instant::now();
    let mut silent = tcp_from("127.0.0.3", server.control_addr()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The device is still the device: its sound comes back to it.
    device.send("sound 4").await;
    assert_eq!(device.recv().await, "sound 4");
    let mut heard = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut heard))
        .await
        .expect("closed after the auth deadline")
        .ok();
    assert!(
        heard.is_empty(),
        "heard {:?}",
        String::from_utf8_lossy(&heard)
    );
    assert!(started.elapsed() >= Duration::from_secs(4), "it had 5 s");
    server.status_from(&mut device, "0").await;
}

/// bitsd as a child process in `dir`, with `control_token = "s3cret"` and
/// all of loopback allowed on the device port.
fn with_token(dir: &std::path::Path) -> Spawned {
    Spawned::start_with(&dir.join("bitsd.db"), &common::DEVICE_TOKEN_S3CRET, "info")
}

#[tokio::test]
async fn one_token_check_a_second_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = with_token(dir.path());
    let connect = |from: &'static str| common::Device::connect_from(from, bitsd.control);
    let status = || common::get_text(format!("http://{}/status", bitsd.web));
    let mut wrong = connect("127.0.0.2").await;
    wrong.send("auth guess").await;
    wrong.closed().await;
    // At once again, with the right token: closed unchecked.
    let mut fast = connect("127.0.0.2").await;
    fast.send_all(&["auth s3cret", "status 1"]).await;
    fast.closed().await;
    assert_eq!(status().await, "0");
    // Twenty more: the warning is said once a minute per address.
    for _ in 0..20 {
        let mut d = connect("127.0.0.2").await;
        d.send("auth guess").await;
        d.closed().await;
    }
    let warnings = bitsd.log_lines("control: closed 127.0.0.2");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // Another address is checked.
    let mut device = connect("127.0.0.4").await;
    device.send_all(&["auth s3cret", "status 1"]).await;
    let deadline = Instant::now() + PATIENCE;
    while status().await != "1" {
        assert!(Instant::now() < deadline, "the device was not accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_device_socket_has_tcp_keepalive() {
    let server = TestServer::start().await;
    let stream = TcpStream::connect(server.control_addr()).await.unwrap();
    let ours = stream.local_addr().unwrap();
    let mut device = common::Device::from_stream(stream);
    server.status_from(&mut device, "1").await;
    // The server's end: local = the control port, remote = our port.
    let hex_addr = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.octets()), a.port()),
        IpAddr::V6(_) => unreachable!(),
    };
    let (local, remote) = (hex_addr(server.control_addr()), hex_addr(ours));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let timer = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[1] == local && f[2] == remote)
        .map(|f| f[5].to_string())
        .unwrap_or_else(|| panic!("no socket {local} -> {remote} in\n{table}"));
    // `tr:when`: timer 2 is keepalive, `when` in hundredths of a second.
    let (kind, when) = timer.split_once(':').unwrap();
    assert_eq!(kind, "02", "keepalive timer: {timer}");
    let seconds = u64::from_str_radix(when, 16).unwrap() / 100;
    assert!(
        (50..=60).contains(&seconds),
        "first probe after {seconds} s"
    );
}

#[tokio::test]
async fn sensor_numbers_and_message_lengths_are_bounded() {
    let (server, mut device) = TestServer::start_with_device().await;
    device.send("temperature 2147483648 20").await;
    device.send_message(&"x".repeat(1001)).await;
    device.send("temperature 2147483647 21").await;
    device.send_message(&"y".repeat(1000)).await;
    let data = server
        .wait_for_data("the last message", |d| d.get("message").is_some())
        .await;
    assert_eq!(data["tempint"]["sensor"], 2147483647);
    assert_eq!(data["tempinthist"].as_array().unwrap().len(), 1);
    assert_eq!(data["message"]["value"], "y".repeat(1000));
}

/// A connection to `to` from the local address `from`, or why not (ports
/// run short while thousands churn).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    socket.connect(to).await
}

/// A stranger on the device port: a connection from `from` that never
/// speaks, opened again each time it is closed, until `stop`. Counts its
/// connections in `made`.
async fn silent_peer(
    from: String,
    to: SocketAddr,
    made: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
) {
    while !stop.is_cancelled() {
        let Ok(mut stream) = connect_from(&from, to).await else {
            tokio::task::yield_now().await;
            continue;
        };
        made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut byte = [0u8; 1];
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = stream.read(&mut byte) => {}
        }
    }
}

/// One try of the device from `from`: whether it got in, that is, the
/// `sound` it asked for after its `auth` line came back.
async fn device_gets_in(from: &str, to: SocketAddr, sound: u32) -> bool {
    use tokio::io::AsyncBufReadExt;
    let Ok(mut stream) = connect_from(from, to).await else {
        return false;
    };
    let lines = format!("auth s3cret\nsound {sound}\n");
    if stream.write_all(lines.as_bytes()).await.is_err() {
        return false;
    }
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    // Closed (evicted or refused), or still waiting past the auth deadline.
    match tokio::time::timeout(Duration::from_secs(6), reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => line.trim_end() == format!("sound {sound}"),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_keep_the_device_out() {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = with_token(dir.path());
    let started = Instant::now();
    // 48 silent peers from 12 addresses, for 32 places waiting to
    // authenticate (4 per address): more than fit, all reopening at once.
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let peers: Vec<_> = (0..48)
        .map(|i| {
            let from = format!("127.0.5.{}", i % 12 + 1);
            tokio::spawn(silent_peer(from, bitsd.control, made.clone(), stop.clone()))
        })
        .collect();
    // The places are full once peers are closed and come back.
    let deadline = Instant::now() + PATIENCE;
    while made.load(std::sync::atomic::Ordering::Relaxed) < 200 {
        assert!(
            Instant::now() < deadline,
            "the peers never filled the places"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The device reconnects five times (from addresses of its own, so the
    // one token check a second per address does not pace it).
    let mut tries_to_get_in = Vec::new();
    for attempt in 1..=5 {
        let from = format!("127.0.6.{attempt}");
        let mut tries = None;
        for t in 1..=3 {
            if device_gets_in(&from, bitsd.control, attempt).await {
                tries = Some(t);
                break;
            }
        }
        tries_to_get_in.push(tries);
    }
    let churned = made.load(std::sync::atomic::Ordering::Relaxed);
    stop.cancel();
    for peer in peers {
        peer.await.unwrap();
    }
    let got_in = tries_to_get_in.iter().flatten().count();
    assert_eq!(
        got_in, 5,
        "the device got in {got_in} times in 5, within 3 tries each \
         (tries per attempt: {tries_to_get_in:?}) while peers made {churned} connections"
    );
    let metrics = common::get_text(format!("http://{}/metrics", bitsd.web)).await;
    let evicted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bitsd_device_waiting_evicted_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no eviction count in {metrics}"));
    assert!(evicted >= 5, "{evicted} evictions counted");
    // Evictions are logged at a bounded rate: ten, then one every 6 s.
    let logged = bitsd.log_lines("room made for").len() as u64;
    let allowed = 10 + started.elapsed().as_secs() / 6 + 1;
    assert!(
        logged <= allowed,
        "{logged} eviction lines for {evicted} evictions"
    );
    assert!(logged >= 1, "evictions are logged");
}

#[tokio::test]
async fn a_long_message_nobody_hears_is_logged_cut() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let bitsd = Spawned::start_with(&db, &[], "info");
    add_user_to(&db, "alice", "right");
    let url = format!("http://{}", bitsd.web);
    let client = client_from("127.0.0.2");
    let login = client
        .post(format!("{url}/login"))
        .header(header::COOKIE, format!("_xsrf={XSRF}"))
        .form(&[
            ("username", "alice"),
            ("password", "right"),
            ("_xsrf", XSRF),
        ])
        .send()
        .await
        .unwrap();
    let token = login
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix("usertoken="))
        .map(|v| v.split(';').next().unwrap().to_string())
        .next()
        .unwrap_or_else(|| panic!("not logged in: {}", login.status()));
    // The longest message a member may post, with no device to hear it.
    let text = "ciao ".repeat(200);
    let posted = client
        .post(format!("{url}/message"))
        .header(header::COOKIE, format!("_xsrf={XSRF}; usertoken={token}"))
        .form(&[("msgtext", text.as_str()), ("_xsrf", XSRF)])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 303);
    let line = bitsd
        .wait_for_log("no device connected; not sent", PATIENCE)
        .await;
    assert!(line.len() < 250, "{} bytes: {line}", line.len());
    let shown = line.split("not sent: ").nth(1).unwrap();
    assert!(shown.starts_with("\"message Y2lhbyBj"), "{line}");
    assert!(shown.ends_with("…\""), "cut to 64 characters: {line}");
}
