//! Abuse run, by `make bench-abuse` (and `make bench`): what strangers can
//! take from the release `bitsd`, each phase on a fresh one (127.0.0.0/8
//! only; client sockets bound to different addresses act as many clients).
//!
//! 1. 1,000 simultaneous login attempts from one address: password hashes
//!    computed, bitsd's RSS before, at its peak and after, and `/status`
//!    latency (p50, p99) from another address meanwhile;
//! 2. 10,000 failed logins in a row from as many addresses: the same
//!    figures;
//! 3. one address opening event streams up to its limit and past it: the
//!    same figures, and how many were refused;
//! 4. device lockout: silent peers inside `control_remote_address` keep the
//!    places waiting to authenticate on the device port busy, reopening
//!    each connection as soon as it is closed, while the device reconnects
//!    over and over: the same figures, and how long the device took to get
//!    in (median and worst) and in how many tries;
//! 5. 16 addresses, each within its own limit, opening 1,024 event streams
//!    each, past `web_max_streams`: the same figures, `/status` asked on a
//!    new connection each time, and how many streams were refused;
//! 6. a member logging in once a second while 64 clients from ever new
//!    addresses send wrong passwords as fast as they are answered, from a
//!    browser that logged in before and from a new one: how many of the
//!    member's logins succeed, and how long they take.
//!
//! Settings: ABUSE_LOGINS (1000), ABUSE_FAILED (10000), ABUSE_EXTRA (500
//! connections past the limit), ABUSE_PEERS (256 silent peers, from 64
//! addresses), ABUSE_RECONNECTS (10), ABUSE_STREAM_ADDRESSES (16),
//! ABUSE_FLOOD_CLIENTS (64), and BENCH_PHASES
//! (`logins,failed,streams,device,crowd,flood`: the phases to run, e.g.
//! `device` alone).

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

#[path = "../tests/common/process.rs"]
mod process;
use process::{Spawned, rss_kib};

const XSRF: &str = "abcdefghijklmnopqrstuvwx";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("abuse run: run it with `make bench-abuse`");
        return;
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("# bitsd abuse run\n");
    println!(
        "| attack | password hashes | bitsd RSS before / peak / after (KiB) | growth (MB) | `/status` p50 / p99 from another address (ms) | answers |"
    );
    println!("|---|---:|---|---:|---|---|");
    let phases = std::env::var("BENCH_PHASES")
        .unwrap_or_else(|_| "logins,failed,streams,device,crowd,flood".into());
    let runs = |phase: &str| phases.split(',').any(|p| p.trim() == phase);
    runtime.block_on(async {
        if runs("logins") {
            simultaneous_logins(setting("ABUSE_LOGINS", 1000)).await;
        }
        if runs("failed") {
            failed_logins(setting("ABUSE_FAILED", 10_000)).await;
        }
        if runs("streams") {
            connections(setting("ABUSE_EXTRA", 500)).await;
        }
        if runs("device") {
            device_lockout(setting("ABUSE_PEERS", 256), setting("ABUSE_RECONNECTS", 10)).await;
        }
        if runs("crowd") {
            streams_from_many_addresses(setting("ABUSE_STREAM_ADDRESSES", 16)).await;
        }
        if runs("flood") {
            member_logins_in_a_flood(setting("ABUSE_FLOOD_CLIENTS", 64)).await;
        }
    });
}

/// A fresh release bitsd with one member, `alice`.
fn start(dir: &std::path::Path) -> Spawned {
    start_with(dir, &[])
}

/// [`start`] with `extra` options.
fn start_with(dir: &std::path::Path, extra: &[&str]) -> Spawned {
    let db = dir.join("abuse.db");
    let mut options = vec!["--timezone", "UTC"];
    options.extend_from_slice(extra);
    let bitsd = Spawned::start_with(&db, &options, "warn,bitsd=info");
    let mut add = Command::new(env!("CARGO_BIN_EXE_usermanage"))
        .args(["--config", "/dev/null", "--db"])
        .arg(&db)
        .args(["add", "alice", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("usermanage");
    {
        use std::io::Write;
        add.stdin.take().unwrap().write_all(b"right\n").unwrap();
    }
    assert!(add.wait().unwrap().success());
    bitsd
}

fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn attempt(client: &reqwest::Client, web: SocketAddr) -> u16 {
    let response = client
        .post(format!("http://{web}/login"))
        .header("Cookie", format!("_xsrf={XSRF}"))
        .form(&[
            ("username", "alice"),
            ("password", "wrong"),
            ("_xsrf", XSRF),
        ])
        .send()
        .await;
    match response {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Watches bitsd while an attack runs: its peak RSS, and `/status` asked
/// over and over from 127.0.0.250.
struct Watch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    latencies: tokio::task::JoinHandle<Vec<f64>>,
}

impl Watch {
    fn start(bitsd: &Spawned) -> Watch {
        Self::watching(bitsd, false)
    }

    /// The same, each `/status` on a new connection, as a newcomer's.
    fn start_fresh(bitsd: &Spawned) -> Watch {
        Self::watching(bitsd, true)
    }

    fn watching(bitsd: &Spawned, fresh: bool) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(bitsd.rss_kib()));
        let pid = bitsd.child.id();
        let (s, p) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let url = format!("http://{}/status", bitsd.web);
        let s = stop.clone();
        let latencies = tokio::spawn(async move {
            let from: IpAddr = "127.0.0.250".parse().unwrap();
            let client = match fresh {
                false => client_from(from),
                true => reqwest::Client::builder()
                    .local_address(from)
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap(),
            };
            let mut taken = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                taken.push(if ok { ms } else { f64::INFINITY });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            taken
        });
        Watch {
            stop,
            peak,
            latencies,
        }
    }

    async fn report(self, bitsd: &Spawned, attack: &str, before: u64, answers: String) {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = self.latencies.await.unwrap();
        // What stays once the attack is over.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = bitsd.rss_kib();
        let peak = self.peak.load(Ordering::Relaxed).max(after);
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        let hashes = metric(bitsd, "bitsd_password_checks_total").await;
        println!(
            "| {attack} | {hashes} | {before} / {peak} / {after} | {:.1} | {:.2} / {:.2} ({} requests) | {answers} |",
            (peak.saturating_sub(before)) as f64 / 1024.0,
            at(0.5),
            at(0.99),
            latencies.len()
        );
    }
}

async fn metric(bitsd: &Spawned, name: &str) -> String {
    let text = reqwest::get(format!("http://{}/metrics", bitsd.web))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn tally(statuses: &[u16]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} × {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn simultaneous_logins(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = start(dir.path());
    let before = bitsd.rss_kib();
    let watch = Watch::start(&bitsd);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = client_from("127.0.0.2".parse().unwrap());
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, barrier, web) = (client.clone(), barrier.clone(), bitsd.web);
            tokio::spawn(async move {
                barrier.wait().await;
                attempt(&client, web).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attack = format!("{n} simultaneous logins from one address");
    watch
        .report(&bitsd, &attack, before, tally(&statuses))
        .await;
}

async fn failed_logins(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = start(dir.path());
    let before = bitsd.rss_kib();
    let watch = Watch::start(&bitsd);
    let started = Instant::now();
    // In a row: two at a time, as many as are checked at once, each from
    // an address of its own.
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (next, web) = (next.clone(), bitsd.web);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        return statuses;
                    }
                    let from = IpAddr::from([
                        127,
                        1 + (i / 62_500) as u8,
                        (i / 250 % 250) as u8,
                        (i % 250 + 1) as u8,
                    ]);
                    statuses.push(attempt(&client_from(from), web).await);
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for w in workers {
        statuses.extend(w.await.unwrap());
    }
    let answers = format!(
        "{} in {:.0} s",
        tally(&statuses),
        started.elapsed().as_secs_f64()
    );
    watch
        .report(
            &bitsd,
            &format!("{n} failed logins in a row, from {n} addresses"),
            before,
            answers,
        )
        .await;
}

async fn connections(extra: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = start(dir.path());
    let limit = 1024;
    let before = bitsd.rss_kib();
    let watch = Watch::start(&bitsd);
    let mut held = Vec::new();
    for _ in 0..(limit + extra) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let Ok(mut stream): Result<TcpStream, _> = socket.connect(bitsd.web).await else {
            continue;
        };
        let _ = stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = metric(&bitsd, "bitsd_web_connections_refused_per_address_total").await;
    let streams = metric(&bitsd, "bitsd_sse_clients").await;
    let answers = format!("{streams} event streams held, {refused} connections refused");
    watch
        .report(
            &bitsd,
            &format!(
                "one address opens {} event streams (limit {limit})",
                limit + extra
            ),
            before,
            answers,
        )
        .await;
    drop(held);
}

/// A connection to `to` from the local address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// A stranger on the device port: a connection from `from` that never
/// speaks, opened again as soon as it is closed, until `stop`.
async fn silent_peer(
    from: IpAddr,
    to: SocketAddr,
    made: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let Ok(mut stream) = connect_from(from, to).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        made.fetch_add(1, Ordering::Relaxed);
        let mut byte = [0u8; 1];
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = stream.read(&mut byte) => {}
        }
    }
}

/// One try of the device: whether the `sound` it asked for after its
/// `auth` line came back, i.e. it became the device. The connection is
/// closed on return, as a device that reconnects would.
async fn device_try(to: SocketAddr, sound: usize) -> bool {
    let Ok(mut stream) = connect_from([127, 0, 0, 2].into(), to).await else {
        return false;
    };
    let lines = format!("auth s3cret\nsound {sound}\n");
    if stream.write_all(lines.as_bytes()).await.is_err() {
        return false;
    }
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(6), reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => line.trim_end() == format!("sound {sound}"),
        _ => false,
    }
}

async fn device_lockout(peers: usize, reconnects: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = start_with(
        dir.path(),
        &[
            "--control-token",
            "s3cret",
            "--control-remote-address",
            "127.0.0.0/8",
        ],
    );
    let before = bitsd.rss_kib();
    let watch = Watch::start(&bitsd);
    let made = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let addresses = peers.div_ceil(4).max(1);
    let churning: Vec<_> = (0..peers)
        .map(|i| {
            let a = i % addresses;
            let from = IpAddr::from([127, 0, 7 + (a / 250) as u8, (a % 250 + 1) as u8]);
            tokio::spawn(silent_peer(from, bitsd.control, made.clone(), stop.clone()))
        })
        .collect();
    // The places are taken once peers are being closed and come back.
    let started = Instant::now();
    while made.load(Ordering::Relaxed) < 2 * peers && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut waits = Vec::new();
    let mut tries = Vec::new();
    let mut locked_out = 0;
    for sound in 0..reconnects {
        // One token check a second per address: a device reconnecting
        // sooner would be refused unchecked.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let reconnecting = Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            if device_try(bitsd.control, sound).await {
                waits.push(reconnecting.elapsed().as_secs_f64() * 1000.0);
                tries.push(n);
                break;
            }
            if reconnecting.elapsed() > Duration::from_secs(30) {
                locked_out += 1;
                break;
            }
        }
    }
    let churned = made.load(Ordering::Relaxed);
    let attack_seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    for peer in churning {
        peer.await.unwrap();
    }
    waits.sort_by(f64::total_cmp);
    tries.sort();
    let evicted = metric(&bitsd, "bitsd_device_waiting_evicted_total").await;
    let logged = bitsd.log_lines("room made for").len();
    let got_in = match waits.len() {
        0 => "never got in".to_string(),
        n => format!(
            "in after {:.1} ms median, {:.1} ms worst, {} / {} tries",
            waits[n / 2],
            waits[n - 1],
            tries[n / 2],
            tries[n - 1]
        ),
    };
    let answers = format!(
        "device {got_in} ({} of {reconnects} reconnections, {locked_out} locked out 30 s); \
         peers opened {churned} connections in {attack_seconds:.0} s, {evicted} evicted, \
         {logged} eviction log lines",
        waits.len()
    );
    watch
        .report(
            &bitsd,
            &format!(
                "device lockout: {peers} silent peers from {addresses} addresses \
                 churn the device port"
            ),
            before,
            answers,
        )
        .await;
}

/// Opens an event stream from `from`; the status of its answer (0 when the
/// connection failed or closed) and the connection, held.
async fn open_stream(from: IpAddr, web: SocketAddr) -> (u16, Option<TcpStream>) {
    let Ok(mut stream) = connect_from(from, web).await else {
        return (0, None);
    };
    if stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return (0, None);
    }
    let mut head = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut head)).await;
    let status = match read {
        Ok(Ok(_)) => std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    (status, Some(stream))
}

async fn streams_from_many_addresses(addresses: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = start(dir.path());
    let per_address = 1024;
    let before = bitsd.rss_kib();
    let watch = Watch::start_fresh(&bitsd);
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for address in 0..addresses {
        let from = IpAddr::from([127, 0, 4, 1 + address as u8]);
        for _ in 0..per_address / 256 {
            let batch = (0..256).map(|_| open_stream(from, bitsd.web));
            for (status, stream) in futures_util::future::join_all(batch).await {
                statuses.push(status);
                held.extend(stream);
            }
        }
    }
    let streams = metric(&bitsd, "bitsd_web_streams").await;
    let refused = metric(&bitsd, "bitsd_web_streams_refused_total").await;
    let answers = format!(
        "{}; {streams} streams held, {refused} refused",
        tally(&statuses)
    );
    watch
        .report(
            &bitsd,
            &format!(
                "{addresses} addresses open {per_address} event streams each (web_max_streams 8192)"
            ),
            before,
            answers,
        )
        .await;
    drop(held);
}

async fn member_logins_in_a_flood(clients: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bitsd = start(dir.path());
    // Logged in once before the flood: the browser is known.
    let known = format!("; bitsd_known={}", known_cookie(&bitsd).await);
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, next, web) = (stop.clone(), next.clone(), bitsd.web);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let from = IpAddr::from([
                        127,
                        1 + (i / 62_500 % 100) as u8,
                        (i / 250 % 250) as u8,
                        (i % 250 + 1) as u8,
                    ]);
                    statuses.push(attempt(&client_from(from), web).await);
                }
                statuses
            })
        })
        .collect();
    // Two members, each once a second (the per-address limit) with the
    // right password, 30 times: alice from a browser she logged in with
    // before (it carries the known-browser cookie), alice again from a new
    // browser without it.
    let login = |from: &'static str, cookie: String| {
        let (web, member) = (bitsd.web, client_from(from.parse().unwrap()));
        async move {
            let started = Instant::now();
            let status = member
                .post(format!("http://{web}/login"))
                .header("Cookie", format!("_xsrf={XSRF}{cookie}"))
                .form(&[
                    ("username", "alice"),
                    ("password", "right"),
                    ("_xsrf", XSRF),
                ])
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            (status, started.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let (mut known_took, mut known_statuses) = (Vec::new(), Vec::new());
    let mut new_statuses = Vec::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let ((status, took), (other, _)) = tokio::join!(
            login("127.0.0.251", known.clone()),
            login("127.0.0.252", String::new())
        );
        known_took.push(took);
        known_statuses.push(status);
        new_statuses.push(other);
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for f in flood {
        statuses.extend(f.await.unwrap());
    }
    known_took.sort_by(f64::total_cmp);
    let at = |q: f64| known_took[((known_took.len() - 1) as f64 * q) as usize];
    println!(
        "| a member logs in once a second while {clients} clients flood /login from new addresses | {} | | | {:.0} / {:.0} (the member's logins from a known browser) | known browser: {}; new browser: {}; flood: {} |",
        metric(&bitsd, "bitsd_password_checks_total").await,
        at(0.5),
        at(0.99),
        tally(&known_statuses),
        tally(&new_statuses),
        tally(&statuses)
    );
}

/// The known-browser cookie of a right login as alice, before any flood.
async fn known_cookie(bitsd: &Spawned) -> String {
    let response = client_from("127.0.0.251".parse().unwrap())
        .post(format!("http://{}/login", bitsd.web))
        .header("Cookie", format!("_xsrf={XSRF}"))
        .form(&[
            ("username", "alice"),
            ("password", "right"),
            ("_xsrf", XSRF),
        ])
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("bitsd_known="))
        .and_then(|c| c.split(';').next())
        .expect("a right login sets bitsd_known")
        .to_string()
}
