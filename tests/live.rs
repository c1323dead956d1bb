//! Live push over real websocket and SSE connections.

mod common;

use std::time::Duration;

use common::{PATIENCE, TestServer};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(server: &TestServer) -> Ws {
    connect_with_buffer(server, None).await
}

/// A websocket client; `recv_buffer` shrinks its socket's receive buffer.
async fn connect_with_buffer(server: &TestServer, recv_buffer: Option<u32>) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(server.web_addr()).await.unwrap();
    let url = format!("ws://{}/ws", server.web_addr());
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws
}

/// The next text message as JSON.
async fn next_json(ws: &mut Ws) -> serde_json::Value {
    serde_json::from_str(&common::ws_next_text(ws).await).unwrap()
}

#[tokio::test]
async fn websocket_gets_the_snapshot_then_each_event_in_order() {
    let (server, mut device) = TestServer::start_with_device().await;
    device.send("temperature 0 20.5").await;
    server
        .wait_for_data("the sample", |d| d["tempint"].is_object())
        .await;

    let mut ws = connect(&server).await;
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot, server.json("/data").await);

    device.send_all(&["status 1", "temperature 1 21.25"]).await;
    device.send_message("on my way <3").await;
    device.send("status 1").await; // a repeat: not broadcast
    device.send("status 0").await;

    let status = next_json(&mut ws).await;
    assert_eq!(status["status"]["value"], "open");
    assert_eq!(status["status"]["modifiedby"], "BITS");
    let temp = next_json(&mut ws).await;
    assert_eq!(temp["tempint"]["value"], 21.25);
    assert_eq!(temp["tempint"]["sensor"], 1);
    let message = next_json(&mut ws).await;
    assert_eq!(message["message"]["value"], "on my way &lt;3");
    assert_eq!(message["message"]["user"], "BITS");
    let closed = next_json(&mut ws).await;
    assert_eq!(closed["status"]["value"], "closed");
    assert_eq!(closed.as_object().unwrap().len(), 1, "{closed}");
}

/// Reads SSE `data:` payloads from a raw HTTP connection.
struct SseClient {
    reader: BufReader<tokio::net::TcpStream>,
}

impl SseClient {
    async fn connect(server: &TestServer) -> SseClient {
        let request = b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        let stream = common::connect_and_send(server.web_addr(), request).await;
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("content-type: text/event-stream"), "{head}");
        assert!(lower.contains("access-control-allow-origin: *"), "{head}");
        assert!(lower.contains("x-accel-buffering: no"), "{head}");
        SseClient { reader }
    }

    async fn next_json(&mut self) -> serde_json::Value {
        loop {
            let line = common::next_line(&mut self.reader, "an event").await;
            let line = line.expect("stream ended");
            // Chunked encoding: payload lines start with `data:`.
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return serde_json::from_str(data).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn sse_gets_the_same_messages() {
    let server = TestServer::start().await;
    let mut sse = SseClient::connect(&server).await;
    assert_eq!(sse.next_json().await, serde_json::json!({"version": 3}));
    let mut device = server.device().await;
    device.send_all(&["status 1", "temperature 3 19.0"]).await;
    assert_eq!(sse.next_json().await["status"]["value"], "open");
    assert_eq!(sse.next_json().await["tempint"]["sensor"], 3);
}

#[tokio::test]
async fn event_streams_first_or_later_on_a_connection_read_alike() {
    let server = TestServer::start().await;
    // A real HTTP client decodes the chunks of a connection's first request
    // (written by bitsd itself) and of a later one (written by hyper).
    let client = reqwest::Client::new();
    let status = client.get(server.url("/status")).send().await.unwrap();
    assert_eq!(status.text().await.unwrap(), "0");
    let later = client.get(server.url("/events")).send().await.unwrap();
    let first = reqwest::Client::new()
        .get(server.url("/events"))
        .send()
        .await
        .unwrap();
    for response in [&first, &later] {
        assert_eq!(response.status(), 200);
        let h = response.headers();
        assert_eq!(h["content-type"], "text/event-stream");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(h.contains_key("date"));
    }
    let mut streams = [first, later];
    let mut device = server.device().await;
    device.send("status 1").await;
    for stream in &mut streams {
        let mut seen = String::new();
        while !seen.contains("\"open\"") {
            let chunk = tokio::time::timeout(PATIENCE, stream.chunk())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("the stream goes on");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(seen.starts_with("data: {\"version\":3"), "{seen}");
    }
    wait_for_metric(&server, "bitsd_web_streams", 2.0).await;
    // A client that leaves gives its place back.
    drop(streams);
    wait_for_metric(&server, "bitsd_web_streams", 0.0).await;
}

#[tokio::test]
async fn five_hundred_clients_all_get_one_broadcast() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..500 {
        let mut ws = connect(&server).await;
        next_json(&mut ws).await;
        clients.push(ws);
    }
    let mut device = server.device().await;
    device.send("status 1").await;
    let results = futures_util::future::join_all(clients.iter_mut().map(next_json)).await;
    assert_eq!(results.len(), 500);
    for r in results {
        assert_eq!(r["status"]["value"], "open");
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_neither_delays_others_nor_loses_the_state() {
    let server = TestServer::start().await;
    let mut stalled = connect_with_buffer(&server, Some(4096)).await;
    next_json(&mut stalled).await;
    let mut reader = connect(&server).await;
    next_json(&mut reader).await;

    let mut device = server.device().await;
    // 900 `<` are 3,600 characters of JSON (`&lt;`): 4,000 messages are
    // more than the stream keeps for a follower that does not read.
    let filler = "<".repeat(900);
    let count = 4000;
    let sender = tokio::spawn(async move {
        for i in 0..count {
            device.send_message(&format!("{i} {filler}")).await;
        }
        device
    });
    // The reading client gets every event, in order, while the other stalls.
    for i in 0..count {
        let m = next_json(&mut reader).await;
        let text = m["message"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            text.starts_with(&format!("{i} ")),
            "event {i}: {}",
            &text[..text.len().min(20)]
        );
    }
    let _device = sender.await.unwrap();

    // When the stalled client reads again it is resynchronised with a
    // snapshot and ends on the current state.
    let mut resynced = false;
    let last = loop {
        let m = next_json(&mut stalled).await;
        if m.get("version").is_some() {
            resynced = true;
        }
        let text = m["message"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if text.starts_with(&format!("{} ", count - 1)) {
            break m;
        }
    };
    assert!(resynced, "a snapshot replaced the missed events");
    assert!(last.get("version").is_some() || last.get("message").is_some());
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let server = TestServer::start().await;
    let mut ws = connect(&server).await;
    next_json(&mut ws).await;
    let stopping = tokio::spawn(server.stop());
    let frame = loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = frame.expect("a close code");
    assert_eq!(u16::from(frame.code), 1001);
    let _dir = stopping.await.unwrap();
}

/// The value of a metric, by its name and labels as written.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn wait_for_metric(server: &TestServer, name: &str, value: f64) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = server.text("/metrics").await;
        if metric(&text, name) == value {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_count_clients_events_and_requests() {
    let server = TestServer::start().await;
    let text = server.text("/metrics").await;
    assert_eq!(metric(&text, "bitsd_websocket_clients"), 0.0);
    assert_eq!(
        metric(&text, "bitsd_device_connected{device=\"BITS\"}"),
        0.0
    );

    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(&server).await;
        next_json(&mut ws).await;
        sockets.push(ws);
    }
    let mut sse_a = SseClient::connect(&server).await;
    sse_a.next_json().await;
    let mut sse_b = SseClient::connect(&server).await;
    sse_b.next_json().await;
    let mut device = server.device().await;
    device
        .send_all(&["status 1", "temperature 0 20.0", "temperature 0 20.5"])
        .await;
    server
        .wait_for_data("two samples", |d| d["tempint"]["value"] == 20.5)
        .await;

    wait_for_metric(&server, "bitsd_websocket_clients", 3.0).await;
    wait_for_metric(&server, "bitsd_sse_clients", 2.0).await;
    let text = wait_for_metric(&server, "bitsd_device_connected{device=\"BITS\"}", 1.0).await;
    assert!(
        text.contains("bitsd_events_total{kind=\"status\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("bitsd_events_total{kind=\"tempint\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("bitsd_http_requests_total{route=\"/data\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("bitsd_db_commit_seconds_count"), "{text}");
    let lines = "bitsd_device_lines_total{device=\"BITS\",result=\"accepted\"}";
    assert_eq!(metric(&text, lines), 3.0);

    for mut ws in sockets.drain(..2) {
        ws.close(None).await.unwrap();
    }
    drop(sse_a);
    drop(device);
    wait_for_metric(&server, "bitsd_websocket_clients", 1.0).await;
    wait_for_metric(&server, "bitsd_sse_clients", 1.0).await;
    wait_for_metric(&server, "bitsd_device_connected{device=\"BITS\"}", 0.0).await;
    drop(sse_b);
    let _ = server.get("/status").await;
    wait_for_metric(&server, "bitsd_sse_clients", 0.0).await;
    let _ = server.get("/no/such/path").await;
    let text = server.text("/metrics").await;
    assert!(
        text.contains("bitsd_http_requests_total{route=\"unmatched\",status=\"404\"} 1"),
        "{text}"
    );
}
