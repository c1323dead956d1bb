//! A push service on this machine for the push runs: every subscription
//! of a run is one browser's, and the service counts what it is sent.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::process::Spawned;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike as _, ES256KeyPair};

/// The browser behind every subscription: one key pair, one secret.
pub struct Browser {
    pub secret: web_push_native::p256::SecretKey,
    pub auth: web_push_native::Auth,
    pub p256dh: String,
}

impl Browser {
    pub fn new() -> Browser {
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
pub struct Counts {
    pub taken: AtomicUsize,
    /// Microseconds since the run's start when the last message arrived.
    pub last_us: AtomicU64,
    /// Messages whose body did not decrypt to the expected title.
    pub wrong: AtomicUsize,
}

/// The push service: takes every `POST /push/<n>` with 201, decrypting one
/// body in a thousand to check it.
pub async fn push_service(
    browser: Arc<Browser>,
    counts: Arc<Counts>,
    epoch: Instant,
) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
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
    // A push service is on another machine: this one has threads of its
    // own below the priority of the run's clients, as bitsd's delivery is.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        .unwrap();
    std::thread::spawn(move || {
        lower_priority();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        })
    });
    addr
}

/// Sets this thread's nice value to 10, where bitsd's delivery runs when
/// started at 0, as the run starts it.
fn lower_priority() {
    // SAFETY: setpriority with this thread's own id changes its nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// Writes `n` subscriptions of `open` by `browser`, each a distinct
/// endpoint on `service`, to the database at `db` before bitsd starts: the
/// API takes 5 new subscriptions an hour from one address.
pub fn subscribe(db: &Path, n: usize, service: SocketAddr, browser: &Browser) {
    let conn = rusqlite::Connection::open(db).expect("bench database");
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
     INSERT INTO bitsd_push_subscription
         (endpoint, p256dh, auth, topics, lang, created, origin, delivered)
     SELECT ?2 || i, ?3, ?4, 'open', 'en', 0, 'http://127.0.0.1', 0 FROM n",
        rusqlite::params![
            n as i64,
            format!("http://{service}/push/"),
            browser.p256dh,
            URL_SAFE_NO_PAD.encode(browser.auth),
        ],
    )
    .expect("subscriptions");
}

/// A release bitsd pushing every opening (`push_quiet` 0) to `n`
/// subscriptions of `open` by one browser, on a push service of this
/// process; the service's times count from `epoch`.
pub struct Storm {
    pub bitsd: Spawned,
    pub browser: Arc<Browser>,
    pub counts: Arc<Counts>,
    _dir: tempfile::TempDir,
}

impl Storm {
    /// Starts it with `extra` options.
    pub async fn start(n: usize, epoch: Instant, extra: &[&str]) -> Storm {
        let browser = Arc::new(Browser::new());
        let counts = Arc::new(Counts::default());
        let service = push_service(browser.clone(), counts.clone(), epoch).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("bench.db");
        super::bootstrap(&db);
        subscribe(&db, n, service, &browser);
        let mut args = vec![
            "--timezone",
            "UTC",
            "--log-requests=false",
            "--push-allow-local",
            "--push-quiet",
            "0",
            "--push-contact",
            "mailto:bench@example.org",
        ];
        args.extend_from_slice(extra);
        Storm {
            bitsd: Spawned::start_with(&db, &args, "warn,bitsd=info"),
            browser,
            counts,
            _dir: dir,
        }
    }
}
