//! Hostile and broken clients: each gets a bounded, logged answer and the
//! server keeps working for everybody else.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{PATIENCE, Spawned, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_silent_device_is_disconnected() {
    let server = TestServer::start_with(&["--control-idle-timeout", "1"]).await;
    let mut silent = server.device().await;
    silent.closed().await;
    // A device that talks stays.
    let mut device = server.device().await;
    for _ in 0..4 {
        device.send("temperature 0 20.0").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    server.status_from(&mut device, "1").await;
}

#[tokio::test]
async fn a_mebibyte_without_newline_closes_only_that_device() {
    let (server, mut device) = TestServer::start_with_device().await;
    let junk = vec![b'x'; 1024 * 1024];
    let _ = device.send_raw(&junk).await;
    device.closed().await;
    let mut next = server.device().await;
    server.status_from(&mut next, "1").await;
}

#[tokio::test]
async fn a_thousand_connections_from_a_refused_address() {
    let server = TestServer::start_with(&["--control-remote-address", "10.9.8.7"]).await;
    for _ in 0..10 {
        server.refused_devices(100).await;
    }
    assert_eq!(server.text("/status").await, "0");
    assert_eq!(server.text("/healthz").await, "ok\n");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = TestServer::start_with(&["--mac-update-password", "x"]).await;
    let big = "a".repeat(200 * 1024);
    let response = server
        .post_form("/macupdate", &[("password", "x"), ("macs", big.as_str())])
        .await;
    assert_eq!(response.status(), 413);

    // The same body sent in chunks, with no length announced.
    let mut stream = tokio::net::TcpStream::connect(server.web_addr())
        .await
        .unwrap();
    let head = "POST /macupdate HTTP/1.1\r\nHost: bitsd\r\n\
        Content-Type: application/x-www-form-urlencoded\r\n\
        Transfer-Encoding: chunked\r\n\r\n";
    let _ = stream.write_all(head.as_bytes()).await;
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "a".repeat(16 * 1024));
    for _ in 0..5 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    assert_eq!(server.text("/healthz").await, "ok\n");
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let server = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(server.web_addr())
        .await
        .unwrap();
    stream.write_all(b"GET /status HTTP/1.1\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut closed = false;
    // One header byte every half second; the server gives 10 s for headers.
    while started.elapsed() < Duration::from_secs(20) {
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                closed = true; // an error response, then the close
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "the connection was still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(server.text("/status").await, "0");
}

/// Sends a request on `stream` and reads the response head, waiting up to
/// `patience` for it.
async fn request(stream: &mut tokio::net::TcpStream, patience: Duration) -> String {
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(patience, stream.read(&mut buf))
        .await
        .expect("a response in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn the_connection_cap_holds_new_clients_until_a_place_frees() {
    let server = TestServer::start_with(&["--web-max-connections", "5"]).await;
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(server.web_addr())
            .await
            .unwrap();
        assert!(request(&mut s, PATIENCE).await.starts_with("HTTP/1.1 200"));
        open.push(s);
    }
    let request = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut waiting = common::connect_and_send(server.web_addr(), request).await;
    let mut buf = vec![0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(700), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the sixth connection is not served while five are open"
    );
    drop(open.pop());
    let n = tokio::time::timeout(PATIENCE, waiting.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn script_in_names_and_messages_is_always_escaped() {
    let server = TestServer::start().await;
    let evil = "<script>alert(1)</script>";
    // usermanage refuses such a name now; an older database may hold one.
    let db = rusqlite::Connection::open(&server.db).unwrap();
    db.execute(
        r#"INSERT INTO "User" (name, password) VALUES (?1, ?2)"#,
        [evil, &bitsd::auth::hash_password("pw")],
    )
    .unwrap();
    drop(db);
    let mut device = server.device().await;
    device.send("enter 2").await;
    device.send_message(evil).await;
    server
        .wait_for_data("the message", |d| d["message"].is_object())
        .await;
    let home = server.text("/").await;
    assert!(!home.contains(evil), "homepage");
    let data = server.json("/data").await;
    assert_eq!(
        data["message"]["value"],
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    );
    // Old clients insert the author as HTML too.
    let mut session = common::member::Session::new(&server);
    assert_eq!(session.login(evil, "pw", "/message").await.status(), 303);
    let xsrf = session.cookie("_xsrf").unwrap();
    let sent = session
        .post("/message", &[("_xsrf", &xsrf), ("msgtext", "hi")])
        .await;
    assert_eq!(sent.status(), 303);
    let data = server
        .wait_for_data("the member's message", |d| d["message"]["value"] == "hi")
        .await;
    assert_eq!(
        data["message"]["user"],
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    );
    let home = server.text("/").await;
    assert!(!home.contains(evil), "homepage");
    let log = server.text("/log").await;
    assert!(!log.contains("<script>alert"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_reach_the_cap_and_are_cut_off() {
    // 10,000, or as many as this machine's file descriptor limit allows
    // (bitsd, a child process, has a limit of its own).
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let idle_count = (limit.saturating_sub(500) as usize).min(10_000);
    if idle_count < 10_000 {
        eprintln!("file descriptor limit {limit}: {idle_count} idle connections instead of 10,000");
    }
    assert!(
        idle_count >= 1_000,
        "file descriptor limit {limit} is too low"
    );
    let dir = tempfile::tempdir().unwrap();
    let cap = idle_count.to_string();
    let bitsd = Spawned::start_with(
        &dir.path().join("bitsd.db"),
        &[
            "--web-max-connections",
            &cap,
            "--web-max-connections-per-address",
            &cap,
        ],
        "info",
    );
    let before = bitsd.rss_kib();

    // Connections that never send a byte, opened a few hundred at a time.
    // Until its first byte a connection holds no buffers (about 2 KiB each).
    let mut idle = Vec::with_capacity(idle_count);
    while idle.len() < idle_count {
        let batch = (idle.len()..idle_count.min(idle.len() + 500))
            .map(|_| tokio::net::TcpStream::connect(bitsd.web));
        for stream in futures_util::future::join_all(batch).await {
            idle.push(stream.unwrap());
        }
    }
    let warning = bitsd
        .wait_for_log("connections open (web_max_connections)", PATIENCE)
        .await;
    assert!(
        warning.contains(&format!("web: {idle_count} connections")),
        "{warning}"
    );
    let held = bitsd.rss_kib();
    let per_connection = held.saturating_sub(before) as f64 / idle_count as f64;
    assert!(
        per_connection < 6.0,
        "{per_connection:.1} KiB per idle connection ({before} KiB before, {held} KiB with them)"
    );

    // A member arriving now waits for a place, and gets one when the idle
    // connections run out of time for their headers.
    let mut member = tokio::net::TcpStream::connect(bitsd.web).await.unwrap();
    let started = tokio::time::Instant::now();
    let head = request(&mut member, Duration::from_secs(30)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(started.elapsed() > Duration::from_secs(2), "the cap held");

    // Every idle connection was closed by the server.
    let closing = idle.into_iter().map(|mut stream| async move {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await,
            Ok(Ok(_) | Err(_))
        )
    });
    let closed = futures_util::future::join_all(closing).await;
    assert_eq!(closed.iter().filter(|c| **c).count(), idle_count);
    assert_eq!(bitsd.log_lines("connections open").len(), 1, "said once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_never_reads_through_ten_thousand_events() {
    const EVENTS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let bitsd = Spawned::start(&dir.path().join("bitsd.db"));
    let ws_url = format!("ws://{}/ws", bitsd.web);

    // The stalled client reads its snapshot, then nothing, with a small
    // receive buffer so the server's side fills at once.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(bitsd.web).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(ws_url.as_str(), stream)
        .await
        .unwrap();
    common::ws_next_text(&mut stalled).await;
    let (mut reader, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    common::ws_next_text(&mut reader).await;
    let before = bitsd.rss_kib();

    // 10,000 messages of 3,000 characters (30 MB of broadcast JSON), as
    // fast as the device can send them.
    // A device message holds at most 1,000 characters; each `<` is four
    // in the JSON (`&lt;`), so a message is still 3,000 characters there.
    let filler = "<".repeat((3000 - 6) / 4);
    let mut device = tokio::net::TcpStream::connect(bitsd.control).await.unwrap();
    let sending = tokio::spawn(async move {
        for i in 0..EVENTS {
            let line = format!("message {}\n", common::b64(&format!("{i:05} {filler}")));
            device.write_all(line.as_bytes()).await.unwrap();
        }
        device
    });
    let peak = Arc::new(AtomicU64::new(before));
    let pid = bitsd.child.id();
    let sampling = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(common::rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // The reading client gets every event, in order.
    let mut halfway = 0;
    for i in 0..EVENTS {
        let event: serde_json::Value =
            serde_json::from_str(&common::ws_next_text(&mut reader).await).unwrap();
        let text = event["message"]["value"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(&format!("{i:05} ")),
            "event {i}: {}",
            &text[..text.len().min(12)]
        );
        if i + 1 == EVENTS / 2 {
            halfway = peak.load(Ordering::Relaxed);
        }
    }
    let _device = sending.await.unwrap();
    sampling.abort();
    let peak = peak.load(Ordering::Relaxed);
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "bitsd grew by {grown} KiB while broadcasting 30 MB to a client that does not read"
    );
    // What it holds is bounded (the writer's budget for message text, the
    // shared ring of recent changes), so the second 5,000 events (15 MB of
    // JSON) add nothing but the allocator's noise: a new thread's arena is
    // a MiB or two, holding even a fifth of those events would be 3 MB more.
    let second_half = peak.saturating_sub(halfway);
    assert!(
        second_half < 2560,
        "{second_half} KiB more after 5,000 events ({halfway} KiB at 5,000, {peak} KiB at 10,000)"
    );

    // When it reads again it is given a snapshot in place of what it
    // missed, and ends on the current state.
    let mut snapshots = 0;
    loop {
        let event: serde_json::Value =
            serde_json::from_str(&common::ws_next_text(&mut stalled).await).unwrap();
        snapshots += usize::from(event.get("version").is_some());
        let text = event["message"]["value"].as_str().unwrap_or_default();
        if text.starts_with(&format!("{:05} ", EVENTS - 1)) {
            break;
        }
    }
    assert!(
        snapshots >= 1,
        "the stalled client lagged and was resynchronised"
    );
}
