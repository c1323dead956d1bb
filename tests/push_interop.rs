//! Web Push against a push service written by others: the npm package
//! `web-push-testing` (pinned in `tests/npm`, installed by `make
//! test-deps`). It hands out subscriptions as a browser's push service
//! does, checks each request's VAPID token with `jsonwebtoken` and decrypts
//! its body with `http_ece`, Mozilla's implementation of RFC 8188, keeping
//! what decrypted for the test to read. A request it refuses is lost, so a
//! flaw in bitsd's encryption or signature fails here as well as in
//! `tests/push.rs`, whose push service is bitsd's own code.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Instant;

use common::{PATIENCE, TestServer, client_from};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `web-push-testing`'s server, on a free port, stopped when dropped.
struct WebPushTesting {
    child: Child,
    /// Kept open: a write to a closed pipe would end the server.
    _stdout: BufReader<ChildStdout>,
    url: String,
    http: reqwest::Client,
}

impl WebPushTesting {
    fn start() -> WebPushTesting {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/target/npm");
        let script = common::installed(
            "WEB_PUSH_TESTING",
            &[&format!(
                "{root}/node_modules/web-push-testing/src/bin/server.js"
            )],
            "web-push-testing (npm)",
        );
        // It takes a port number and cannot be given 0: a free one is
        // picked, and another if something took it meanwhile.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let mut child = Command::new("node")
                .arg(&script)
                .arg(port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("node starts web-push-testing");
            // It says so once it listens, or prints why not and exits.
            let mut line = String::new();
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            stdout.read_line(&mut line).unwrap();
            if line.contains("running on port") {
                return WebPushTesting {
                    child,
                    _stdout: stdout,
                    url: format!("http://localhost:{port}"),
                    http: reqwest::Client::new(),
                };
            }
            eprintln!("web-push-testing on port {port}: {line}");
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("web-push-testing did not start");
    }

    /// POSTs `body` to its `path`: the answer's `data`.
    async fn call(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        answer["data"].clone()
    }

    /// A browser's subscription for the server with `key`: the subscription
    /// as the browser hands it over, and its name here.
    async fn subscribe(&self, key: &str) -> (Value, String) {
        let data = self
            .call(
                "/subscribe",
                json!({"applicationServerKey": key, "userVisibleOnly": "true"}),
            )
            .await;
        let name = data["clientHash"].as_str().unwrap().to_string();
        let subscription = json!({"endpoint": data["endpoint"], "keys": data["keys"]});
        (subscription, name)
    }

    /// Waits until `count` messages to `name` were taken and decrypted.
    async fn wait_for(&self, name: &str, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let data = self
                .call("/get-notifications", json!({"clientHash": name}))
                .await;
            let messages: Vec<Value> = data["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| serde_json::from_str(m.as_str().unwrap()).unwrap())
                .collect();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "web-push-testing took {} of {count} messages",
                messages.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WebPushTesting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn web_push_testing_takes_and_decrypts_an_opening_and_a_message() {
    let service = WebPushTesting::start();
    let server =
        TestServer::start_configured("[spaceapi]\nspace = \"Lab\"\n", &["--push-allow-local"])
            .await;
    let key: Value = server.json("/push/key").await;
    let (subscription, name) = service.subscribe(key["publicKey"].as_str().unwrap()).await;
    let (bea, _) = service.subscribe(key["publicKey"].as_str().unwrap()).await;
    for (subscription, lang, from) in [
        (&subscription, "it", "127.0.4.1"),
        (&bea, "en", "127.0.4.2"),
    ] {
        let r = client_from(from)
            .post(server.url("/push/subscriptions"))
            .json(
                &json!({"subscription": subscription, "topics": ["open", "message"], "lang": lang}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    let mut device = server.device().await;
    device.send("status 1").await;
    let messages = service.wait_for(&name, 1).await;
    assert_eq!(messages[0]["title"], "Lab è aperta");
    assert_eq!(messages[0]["tag"], "status");
    assert_eq!(messages[0]["url"], "/");
    device.send_message("pizza alle otto").await;
    let messages = service.wait_for(&name, 2).await;
    assert_eq!(messages[1]["body"], "messaggio da BITS: pizza alle otto");
    assert_eq!(messages[1]["tag"], "message");
    server
        .wait_for_metric("bitsd_push_deliveries_total{result=\"delivered\"}", 4.0)
        .await;
}
