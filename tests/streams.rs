//! Long-lived connections (websockets, event streams) against their own
//! cap: however many addresses open them, requests are still served and a
//! stream too many gets a 503 with `Retry-After`, never a hang.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{PATIENCE, TestServer, tcp_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

/// How long "at once" may take on a busy machine.
const AT_ONCE: Duration = Duration::from_secs(5);

/// A stream held open (its connection, whatever kind), or the head of the
/// answer that refused it.
enum Opened {
    Held { _connection: Box<dyn Send> },
    Refused(String),
}

/// Opens an event stream from `from` with the extra header lines
/// `headers`; held once its first event arrived.
async fn events(from: &str, to: SocketAddr, headers: &str) -> Opened {
    let mut stream = common::request_events_from(from, to, headers).await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if text.contains("data:") {
            return Opened::Held {
                _connection: Box::new(stream),
            };
        }
        if let Some((head, _)) = text.split_once("\r\n\r\n")
            && !head.starts_with("HTTP/1.1 200")
        {
            return Opened::Refused(head.to_string());
        }
        let n = tokio::time::timeout(AT_ONCE, stream.read(&mut buf))
            .await
            .expect("an answer at once")
            .unwrap();
        if n == 0 {
            return Opened::Refused(text);
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Opens a websocket from `from`; held once its first message arrived.
async fn websocket(from: &str, to: SocketAddr) -> Opened {
    let stream = tcp_from(from, to).await;
    let handshake = tokio_tungstenite::client_async(format!("ws://{to}/ws"), stream);
    match tokio::time::timeout(AT_ONCE, handshake)
        .await
        .expect("an answer at once")
    {
        Ok((mut ws, _)) => {
            common::ws_next_text(&mut ws).await;
            Opened::Held {
                _connection: Box::new(ws),
            }
        }
        Err(tungstenite::Error::Http(response)) => {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Opened::Refused(format!(
                "HTTP/1.1 {}\r\nretry-after: {retry}",
                response.status()
            ))
        }
        Err(e) => Opened::Refused(e.to_string()),
    }
}

/// `GET path` on a fresh connection from `from`, answered at once.
async fn get_from(from: &str, to: SocketAddr, path: &str) -> String {
    let mut stream = tcp_from(from, to).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(AT_ONCE, stream.read_to_end(&mut response))
        .await
        .unwrap_or_else(|_| panic!("GET {path} answered at once"))
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_from_many_addresses_leave_requests_served() {
    // Five addresses, each within its own limit of 8, would fill all 40
    // connections with streams; streams stop at 20.
    let server = TestServer::start_with(&[
        "--web-max-connections",
        "40",
        "--web-max-streams",
        "20",
        "--web-max-connections-per-address",
        "8",
    ])
    .await;
    let web = server.web_addr();
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for address in 2..=6 {
        let from = format!("127.0.0.{address}");
        for n in 0..8 {
            let opened = if n % 2 == 0 {
                events(&from, web, "").await
            } else {
                websocket(&from, web).await
            };
            match opened {
                Opened::Refused(head) => refused.push(head),
                stream => held.push(stream),
            }
        }
    }
    assert_eq!(held.len(), 20, "streams held; refused: {refused:?}");
    assert_eq!(refused.len(), 20);
    for head in &refused {
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 10"),
            "{head}"
        );
    }
    assert_eq!(server.metric("bitsd_web_streams").await, 20.0);
    assert_eq!(server.metric("bitsd_web_streams_refused_total").await, 20.0);

    // A bystander from a new address is served at once.
    for path in ["/status", "/data", "/"] {
        let answer = get_from("127.0.0.7", web, path).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
    // A stream that closes gives its place to the next one.
    held.truncate(19);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match events("127.0.0.7", web, "").await {
            Opened::Refused(head) => {
                assert!(head.starts_with("HTTP/1.1 503"), "{head}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the place was not freed"
                );
                tokio::task::yield_now().await;
            }
            stream => {
                held.push(stream);
                break;
            }
        }
    }
}

#[tokio::test]
async fn an_ipv6_48_holds_four_times_an_address() {
    let server = TestServer::start_with(&common::PROXIED_TWO_PER_ADDRESS).await;
    let web = server.web_addr();
    let from = |net: &str| format!("X-Forwarded-For: {net}\r\n");
    // Four /64s of 2001:db8:7::/48, two streams each: the /48's 8.
    let mut held = Vec::new();
    for subnet in 0..4 {
        for _ in 0..2 {
            match events("127.0.0.1", web, &from(&format!("2001:db8:7:{subnet}::1"))).await {
                Opened::Refused(head) => panic!("refused within the limits: {head}"),
                stream => held.push(stream),
            }
        }
    }
    // A fifth /64 of the same /48 is refused at once; another /48 is not.
    match events("127.0.0.1", web, &from("2001:db8:7:ff::1")).await {
        Opened::Refused(head) => assert!(head.starts_with("HTTP/1.1 429"), "{head}"),
        _ => panic!("a ninth stream in one /48"),
    }
    let other = server
        .get_with("/status", &[(common::X_FORWARDED_FOR, "2001:db8:8::1")])
        .await;
    assert_eq!(other.status(), 200);
    assert_eq!(
        server
            .metric("bitsd_web_connections_refused_per_address_total")
            .await,
        1.0
    );
}
