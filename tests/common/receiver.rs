//! A webhook receiver on a real socket: it records every request (method,
//! path, headers, body) and answers as the test scripts it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PATIENCE;

/// A request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn delivery(&self) -> String {
        self.header("x-bits-delivery")
            .unwrap_or_default()
            .to_string()
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, body `ok`.
    Status(u16),
    /// This status with `Retry-After: value`.
    RetryAfter(u16, &'static str),
    /// 200, after a wait.
    Slow(Duration),
    /// This status and body.
    Body(u16, &'static str),
}

#[derive(Default)]
struct Shared {
    recorded: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on a free loopback port.
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// A receiver on `addr` (a port a stopped receiver had).
    pub async fn start_on(addr: SocketAddr) -> Receiver {
        Self::serve(addr, Arc::default()).await
    }

    async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let state = shared.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = state.clone();
                async move { answer(&shared, method, uri, headers, body).await }
            },
        );
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .unwrap();
        });
        Receiver {
            addr,
            shared,
            stop,
            task: Some(task),
        }
    }

    /// `http://addr`, followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers for the next requests, in order; 200 once they are used.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        self.wait_for_within(n, PATIENCE).await
    }

    pub async fn wait_for_within(&self, n: usize, patience: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + patience;
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "{} request(s) after {patience:?}, expected {n}: {requests:?}",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening: connections to the port are refused from now on.
    pub async fn stop(mut self) -> SocketAddr {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(PATIENCE, task).await;
        }
        self.addr
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(
    shared: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = shared.script.lock().unwrap().pop_front();
    shared.recorded.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |p| p.to_string()),
        headers,
        body,
        at: Instant::now(),
    });
    let status = |code: u16| StatusCode::from_u16(code).unwrap();
    match reply.unwrap_or(Reply::Status(200)) {
        Reply::Status(code) => (status(code), "ok").into_response(),
        Reply::Body(code, body) => (status(code), body).into_response(),
        Reply::RetryAfter(code, value) => {
            (status(code), [("retry-after", value)], "slow down").into_response()
        }
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            (StatusCode::OK, "ok").into_response()
        }
    }
}
