//! A browser's push service on a real socket, and the browsers behind it:
//! each subscriber has a P-256 key pair and an auth secret of its own, and
//! the service takes a message only as a real one would, with a VAPID
//! signature (RFC 8292) by the server's published key for this very
//! origin, then decrypts it (RFC 8291) as the browser would.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio_util::sync::CancellationToken;
use web_push_native::jwt_simple::algorithms::{
    ECDSAP256PublicKeyLike as _, ES256KeyPair, ES256PublicKey,
};
use web_push_native::jwt_simple::claims::NoCustomClaims;
use web_push_native::jwt_simple::common::VerificationOptions;

use super::PATIENCE;

/// A message the service took, decrypted.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub subscriber: String,
    pub headers: HeaderMap,
    pub payload: serde_json::Value,
    pub at: Instant,
}

impl Delivered {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A browser: its private key and auth secret.
struct Browser {
    secret: web_push_native::p256::SecretKey,
    auth: [u8; 16],
}

#[derive(Default)]
struct Shared {
    browsers: Mutex<HashMap<String, Browser>>,
    /// The server's VAPID public key, as `/push/key` gives it.
    server_key: Mutex<String>,
    delivered: Mutex<Vec<Delivered>>,
    /// Requests refused, with why.
    refused: Mutex<Vec<String>>,
    /// Answers scripted per subscriber, used in order before taking.
    script: Mutex<HashMap<String, VecDeque<u16>>>,
    /// Subscribers whose requests are never answered.
    hanging: Mutex<Vec<String>>,
    /// Requests that arrived, answered or not.
    arrived: std::sync::atomic::AtomicUsize,
}

pub struct PushService {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl PushService {
    pub async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/push/{id}", axum::routing::post(take))
            .with_state((shared.clone(), addr));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .unwrap();
        });
        PushService { addr, shared, stop }
    }

    /// Takes messages signed by `key` (`/push/key`'s `publicKey`) only.
    pub fn trust(&self, key: &str) {
        *self.shared.server_key.lock().unwrap() = key.to_string();
    }

    /// A new browser `name`: the subscription it would send, with `topics`
    /// and `lang`.
    pub fn subscription(&self, name: &str, topics: &[&str], lang: &str) -> serde_json::Value {
        let pair = ES256KeyPair::generate();
        let secret = web_push_native::p256::SecretKey::from_slice(&pair.to_bytes()).unwrap();
        let public = pair.public_key().public_key().to_bytes_uncompressed();
        let auth: [u8; 16] = rand::random();
        self.shared
            .browsers
            .lock()
            .unwrap()
            .insert(name.to_string(), Browser { secret, auth });
        serde_json::json!({
            "subscription": {
                "endpoint": self.endpoint(name),
                "keys": {"p256dh": URL_SAFE_NO_PAD.encode(public), "auth": URL_SAFE_NO_PAD.encode(auth)},
            },
            "topics": topics,
            "lang": lang,
        })
    }

    pub fn endpoint(&self, name: &str) -> String {
        format!("http://{}/push/{name}", self.addr)
    }

    /// Answers `statuses` to `name`'s next requests, before taking them.
    pub fn script(&self, name: &str, statuses: &[u16]) {
        self.shared
            .script
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .extend(statuses);
    }

    /// Never answers `name`'s requests: a push service that hangs.
    pub fn hang(&self, name: &str) {
        self.shared.hanging.lock().unwrap().push(name.to_string());
    }

    /// Requests that arrived, answered or not.
    pub fn arrived(&self) -> usize {
        self.shared
            .arrived
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` requests arrived, answered or not.
    pub async fn wait_for_arrivals(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.arrived() < n {
            assert!(
                Instant::now() < deadline,
                "{} request(s), expected {n}",
                self.arrived()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.delivered.lock().unwrap().clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.shared.refused.lock().unwrap().clone()
    }

    /// What `name` received, oldest first.
    pub fn to(&self, name: &str) -> Vec<Delivered> {
        self.delivered()
            .into_iter()
            .filter(|d| d.subscriber == name)
            .collect()
    }

    /// Waits until `n` messages were taken in all; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Delivered> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let delivered = self.delivered();
            if delivered.len() >= n {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "{} message(s) taken, expected {n}; refused: {:?}",
                delivered.len(),
                self.refused()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn take(
    State((shared, addr)): State<(Arc<Shared>, SocketAddr)>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    shared
        .arrived
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if shared.hanging.lock().unwrap().contains(&name) {
        std::future::pending::<()>().await;
    }
    let scripted = shared
        .script
        .lock()
        .unwrap()
        .get_mut(&name)
        .and_then(VecDeque::pop_front);
    if let Some(status) = scripted {
        return StatusCode::from_u16(status).unwrap();
    }
    match check(&shared, addr, &name, &headers, &body) {
        Ok(payload) => {
            shared.delivered.lock().unwrap().push(Delivered {
                subscriber: name,
                headers,
                payload,
                at: Instant::now(),
            });
            StatusCode::CREATED
        }
        Err((status, why)) => {
            shared
                .refused
                .lock()
                .unwrap()
                .push(format!("{name}: {why}"));
            status
        }
    }
}

/// What a push service and then the browser check: the VAPID header, the
/// encoding, and that the body decrypts.
fn check(
    shared: &Shared,
    addr: SocketAddr,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, (StatusCode, String)> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let refuse = |status: StatusCode, why: &str| Err((status, why.to_string()));
    if header("content-encoding") != "aes128gcm" {
        return refuse(StatusCode::BAD_REQUEST, "not aes128gcm");
    }
    if header("ttl").parse::<u64>().is_err() {
        return refuse(StatusCode::BAD_REQUEST, "no TTL");
    }
    let Some(vapid) = header("authorization").strip_prefix("vapid ") else {
        return refuse(StatusCode::UNAUTHORIZED, "no vapid authorization");
    };
    let mut token = "";
    let mut key = "";
    for part in vapid.split(',') {
        let part = part.trim();
        if let Some(t) = part.strip_prefix("t=") {
            token = t;
        } else if let Some(k) = part.strip_prefix("k=") {
            key = k;
        }
    }
    if key != *shared.server_key.lock().unwrap() {
        return refuse(StatusCode::FORBIDDEN, "k is not the server's key");
    }
    let public = URL_SAFE_NO_PAD.decode(key).unwrap_or_default();
    let Ok(public) = ES256PublicKey::from_bytes(&public) else {
        return refuse(StatusCode::FORBIDDEN, "k is no P-256 key");
    };
    let origin = format!("http://{addr}");
    let options = VerificationOptions {
        allowed_audiences: Some([origin].into_iter().collect()),
        ..Default::default()
    };
    let claims = match public.verify_token::<NoCustomClaims>(token, Some(options)) {
        Ok(claims) => claims,
        Err(e) => return refuse(StatusCode::FORBIDDEN, &format!("bad VAPID token: {e}")),
    };
    let Some(expires) = claims.expires_at else {
        return refuse(StatusCode::FORBIDDEN, "no exp");
    };
    let now = web_push_native::jwt_simple::prelude::Clock::now_since_epoch();
    if expires.as_secs() > now.as_secs() + 24 * 3600 {
        return refuse(StatusCode::FORBIDDEN, "exp more than 24 hours ahead");
    }
    if claims.subject.is_none() {
        return refuse(StatusCode::FORBIDDEN, "no sub");
    }
    let browsers = shared.browsers.lock().unwrap();
    let Some(browser) = browsers.get(name) else {
        return refuse(StatusCode::GONE, "no such subscription");
    };
    let auth = web_push_native::Auth::clone_from_slice(&browser.auth);
    let plain = web_push_native::decrypt(body.to_vec(), &browser.secret, &auth)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("does not decrypt: {e}")))?;
    serde_json::from_slice(&plain).map_err(|e| (StatusCode::BAD_REQUEST, format!("not JSON: {e}")))
}
