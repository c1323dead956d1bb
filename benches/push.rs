//! Push run, by `make bench-push` (and `make bench`): Web Push to many
//! subscribers from the release `bitsd`.
//!
//! 1. BENCH_SUBSCRIBERS (10,000) subscriptions of `open`, each a distinct
//!    endpoint on one local push service that answers 201, written to the
//!    database before bitsd starts; then rounds of `status 0` and
//!    `status 1` on the device port (`push_quiet = 0`, so every opening is
//!    pushed): the time from the `status 1` line to the last delivery,
//!    bitsd's RSS before, at its peak and after, and its CPU a message.
//!    The service decrypts the first message of each round and checks its
//!    title, so the run measures real messages.
//! 2. What encrypting one message costs (RFC 8291, as bitsd does it), in
//!    this process.
//!
//! Settings: BENCH_SUBSCRIBERS (10000), BENCH_ROUNDS (5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::io::AsyncWriteExt as _;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike as _, ES256KeyPair};

mod common;
use common::process::Spawned;
use common::{DEADLINE, PeakRss, cpu_ms, median, setting};

fn main() {
    let Some(runtime) = common::start_run("push", "bench-push") else {
        return;
    };
    runtime.block_on(run(
        setting("BENCH_SUBSCRIBERS", 10_000),
        setting("BENCH_ROUNDS", 5),
    ));
}

/// The browser behind every subscription: one key pair, one secret.
struct Browser {
    secret: web_push_native::p256::SecretKey,
    auth: web_push_native::Auth,
    p256dh: String,
}

impl Browser {
    fn new() -> Browser {
        let pair = ES256KeyPair::generate();
        let secret = web_push_native::p256::SecretKey::from_slice(&pair.to_bytes()).unwrap();
        let public = pair.public_key().public_key().to_bytes_uncompressed();
        Browser {
            secret,
            auth: web_push_native::Auth::clone_from_slice(&rand::random::<[u8; 16]>()),
            p256dh: URL_SAFE_NO_PAD.encode(public),
        }
    }
}

/// What the push service counted.
#[derive(Default)]
struct Counts {
    taken: AtomicUsize,
    /// Microseconds since the run's start when the last message arrived.
    last_us: AtomicU64,
    /// Messages whose body did not decrypt to the expected title.
    wrong: AtomicUsize,
}

async fn run(subscribers: usize, rounds: usize) {
    let browser = Arc::new(Browser::new());
    let counts = Arc::new(Counts::default());
    let epoch = Instant::now();
    let service = push_service(browser.clone(), counts.clone(), epoch).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    common::bootstrap(&db);
    // The API takes 5 new subscriptions an hour from one address: the run
    // writes them as the API would have.
    let conn = rusqlite::Connection::open(&db).expect("bench database");
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO bitsd_push_subscription
             (endpoint, p256dh, auth, topics, lang, created, origin, delivered)
         SELECT ?2 || i, ?3, ?4, 'open', 'en', 0, 'http://127.0.0.1', 0 FROM n",
        rusqlite::params![
            subscribers as i64,
            format!("http://{service}/push/"),
            browser.p256dh,
            URL_SAFE_NO_PAD.encode(browser.auth),
        ],
    )
    .expect("subscriptions");
    drop(conn);
    let bitsd = Spawned::start_with(
        &db,
        &[
            "--timezone",
            "UTC",
            "--push-allow-local",
            "--push-quiet",
            "0",
            "--push-contact",
            "mailto:bench@example.org",
        ],
        "warn,bitsd=info",
    );
    let mut device = tokio::net::TcpStream::connect(bitsd.control)
        .await
        .expect("device port");

    println!(
        "## {subscribers} subscribers of `open`: from `status 1` to the last delivery ({rounds} rounds, median)\n"
    );
    let mut times = Vec::new();
    let mut cpus = Vec::new();
    let (mut before_first, mut peak_all, mut after_last) = (0, 0, 0);
    for round in 0..rounds {
        device.write_all(b"status 0\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let expected = subscribers * (round + 1);
        let before = bitsd.rss_kib();
        let peak = PeakRss::start(bitsd.child.id(), before);
        let cpu = cpu_ms(bitsd.child.id());
        let sent = epoch.elapsed();
        device.write_all(b"status 1\n").await.unwrap();
        let waited = tokio::time::timeout(DEADLINE, async {
            while counts.taken.load(Ordering::Relaxed) < expected {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let peak = peak.stop().await;
        if waited.is_err() {
            println!(
                "- round {round}: {} of {subscribers} delivered within {DEADLINE:?}",
                counts.taken.load(Ordering::Relaxed) - subscribers * round
            );
            continue;
        }
        let last = Duration::from_micros(counts.last_us.load(Ordering::Relaxed));
        let took = last.saturating_sub(sent);
        // Until bitsd has recorded them all and is quiet again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu = cpu_ms(bitsd.child.id()) - cpu;
        let after = bitsd.rss_kib();
        println!(
            "- round {round}: {:.0} ms, bitsd CPU {:.0} ms ({:.1} µs a message), RSS {before} KiB before, {peak} KiB peak, {after} KiB after",
            took.as_secs_f64() * 1000.0,
            cpu,
            cpu * 1000.0 / subscribers as f64
        );
        if round == 0 {
            before_first = before;
        }
        peak_all = peak_all.max(peak);
        after_last = after;
        times.push(took.as_secs_f64() * 1000.0);
        cpus.push(cpu * 1000.0 / subscribers as f64);
    }
    let shown: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
    println!();
    println!(
        "| subscribers | to the last delivery (median) | runs (ms) | bitsd CPU a message | RSS before | peak | after | wrong messages |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    println!(
        "| {subscribers} | {:.0} ms | {} | {:.1} µs | {before_first} KiB | {peak_all} KiB | {after_last} KiB | {} |",
        median(&mut times.clone()),
        shown.join(", "),
        median(&mut cpus),
        counts.wrong.load(Ordering::Relaxed)
    );
    println!();
    encryption_cost(&browser);
}

/// The push service: takes every `POST /push/<n>` with 201, decrypting the
/// first body of each round (one in `every`) to check it.
async fn push_service(browser: Arc<Browser>, counts: Arc<Counts>, epoch: Instant) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/push/{n}",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (browser, counts) = (browser.clone(), counts.clone());
            async move {
                let n = counts.taken.fetch_add(1, Ordering::Relaxed);
                counts
                    .last_us
                    .fetch_max(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
                if n % 1000 == 0 {
                    let plain =
                        web_push_native::decrypt(body.to_vec(), &browser.secret, &browser.auth);
                    let title = plain
                        .ok()
                        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
                        .and_then(|v| v["title"].as_str().map(str::to_string));
                    if title.as_deref() != Some("BITS is open") {
                        counts.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
                axum::http::StatusCode::CREATED
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Encrypts a notification's payload for one browser, many times.
fn encryption_cost(browser: &Browser) {
    let key = browser.secret.public_key();
    let payload = br#"{"title":"Our Hackerspace is open","body":"Opened at 18:30","url":"/","tag":"status","timestamp":1765046400000}"#;
    let n = 2000;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..n {
            let body = web_push_native::encrypt(payload.to_vec(), &key, &browser.auth).unwrap();
            std::hint::black_box(body);
        }
        runs.push(started.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    let shown: Vec<String> = runs.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "## Encrypting one message (RFC 8291 aes128gcm, {} bytes, {n} a run, 5 runs)\n\n{:.1} µs median ({} µs)\n",
        payload.len(),
        median(&mut runs),
        shown.join(", ")
    );
}
