//! Load generator for bitsd, run by `make bench`.
//!
//! Starts the release `bitsd` on a fresh seeded database (127.0.0.1 only) and
//! measures, in one run:
//! 1. `wrk` against `/status` and `/data`, side by side with a bare hyper
//!    handler returning `1` served from this process (rounds interleaved);
//! 2. a flood of temperature lines: durable samples a second, RSS before,
//!    peak and after;
//! 3. N websocket clients: connect rate (each gets its snapshot), RSS per
//!    client, and for each event sent on the device port the latency to every
//!    client (p50, p99, time until all received);
//! 4. on a second, fresh bitsd: N idle HTTP connections and their RSS.
//!
//! Settings come from the environment: BENCH_CLIENTS (10000), BENCH_EVENTS
//! (20), BENCH_ROUNDS (3), BENCH_WRK_SECONDS (10), BENCH_FLOOD (1000000).
//! Every wait is bounded; the run stops by itself.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[path = "../tests/common/process.rs"]
mod process;
use process::{Spawned, rss_kib};

/// Sensor ids mark the events whose latency is measured.
const FLOOD_END: u64 = 1_000_000;
const FANOUT_BASE: u64 = 2_000_000;
/// The longest any single wait may take.
const DEADLINE: Duration = Duration::from_secs(120);

struct Settings {
    clients: usize,
    events: usize,
    rounds: usize,
    wrk_seconds: u32,
    flood: usize,
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not,
    // and a load run is no test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load generator: run it with `make bench`");
        return;
    }
    let settings = Settings {
        clients: setting("BENCH_CLIENTS", 10_000),
        events: setting("BENCH_EVENTS", 20),
        rounds: setting("BENCH_ROUNDS", 3),
        wrk_seconds: setting("BENCH_WRK_SECONDS", 10) as u32,
        flood: setting("BENCH_FLOOD", 1_000_000),
    };
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    println!("# bitsd load run");
    println!();
    println!("- machine: {} cores, {}", cores(), memory());
    println!("- file descriptor limit of the generator: {limit}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(settings));
}

async fn run(settings: Settings) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bitsd = start_bitsd(dir.path());
    seed(&bitsd).await;
    let idle = bitsd.rss_kib();
    println!(
        "- bitsd idle RSS after seeding: {} KiB ({:.1} MB)",
        idle,
        idle as f64 / 1024.0
    );
    println!();

    wrk_phase(&bitsd, &settings).await;
    flood_phase(&bitsd, &settings).await;
    fanout_phase(&bitsd, &settings).await;
    drop(bitsd);
    // On a fresh bitsd: memory freed by the websocket clients would hide
    // what idle connections cost.
    let dir = tempfile::tempdir().expect("temp dir");
    idle_phase(&start_bitsd(dir.path()), &settings).await;
}

/// The release bitsd as a child process, on a bootstrapped database.
fn start_bitsd(dir: &std::path::Path) -> Spawned {
    let db = dir.join("bench.db");
    let root = env!("CARGO_MANIFEST_DIR");
    let (wiki, assets) = (format!("{root}/wiki"), format!("{root}/assets"));
    let paths = [
        "--wiki-path",
        wiki.as_str(),
        "--assets-path",
        assets.as_str(),
    ];
    let status = Command::new(env!("CARGO_BIN_EXE_bitsd"))
        .args(["--config", "/dev/null", "--db"])
        .arg(&db)
        .args(paths)
        .arg("bootstrap")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("bootstrap");
    assert!(status.success());
    let mut extra = paths.to_vec();
    // Every client of this run comes from 127.0.0.1.
    extra.extend([
        "--timezone",
        "UTC",
        "--web-max-connections-per-address",
        "100000",
    ]);
    Spawned::start_with(&db, &extra, "warn,bitsd=info")
}

/// CPU time (user + system) a process has used, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    (ticks(11) + ticks(12)) * 10.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("unknown memory".into(), |kb| {
            format!("{:.0} GiB", kb as f64 / 1048576.0)
        })
}

/// The device of the benchmark.
async fn device(bitsd: &Spawned) -> tokio::net::TcpStream {
    let stream = tokio::net::TcpStream::connect(bitsd.control)
        .await
        .expect("device connects");
    stream.set_nodelay(true).unwrap();
    stream
}

/// A status, a message and 100 temperature samples: the reference `/data`.
async fn seed(bitsd: &Spawned) {
    let mut dev = device(bitsd).await;
    let mut lines =
        String::from("status 1\nmessage U2VlIHlvdSBhdCB0aGUgbWVldGluZyB0b25pZ2h0IQ==\n");
    for i in 0..100 {
        lines.push_str(&format!(
            "temperature {} {}.{}\n",
            i % 3,
            18 + i % 5,
            i % 10
        ));
    }
    dev.write_all(lines.as_bytes()).await.unwrap();
    let started = Instant::now();
    loop {
        let body = http_get(bitsd.web, "/data").await;
        if body.matches("\"sensor\"").count() >= 101 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "seeding did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A bare hyper server answering `1`, on its own two-thread runtime.
fn bare_hyper() -> (SocketAddr, tokio::runtime::Runtime) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(bytes_one())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rt)
}

fn bytes_one() -> hyper::body::Bytes {
    hyper::body::Bytes::from_static(b"1")
}

/// Requests a second reported by one wrk run.
fn wrk(url: &str, seconds: u32) -> Option<f64> {
    let out = Command::new("wrk")
        .args(["-t2", "-c100", &format!("-d{seconds}s"), url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok());
    if text.contains("Non-2xx") {
        eprintln!("wrk saw errors on {url}:\n{text}");
    }
    rps
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

async fn wrk_phase(bitsd: &Spawned, settings: &Settings) {
    if Command::new("wrk").arg("-v").output().is_err() {
        println!("## HTTP throughput\n\nwrk is not installed (Debian package `wrk`); skipped.\n");
        return;
    }
    let (bare, runtime) = bare_hyper();
    let targets = [
        ("bare hyper `1`", format!("http://{bare}/")),
        ("bitsd `/status`", format!("http://{}/status", bitsd.web)),
        ("bitsd `/data`", format!("http://{}/data", bitsd.web)),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..settings.rounds {
        for (i, (_, url)) in targets.iter().enumerate() {
            let url = url.clone();
            let seconds = settings.wrk_seconds;
            if let Ok(Some(rps)) = tokio::task::spawn_blocking(move || wrk(&url, seconds)).await {
                results[i].push(rps);
            }
        }
    }
    runtime.shutdown_background();
    println!(
        "## HTTP throughput (`wrk -t2 -c100 -d{}s`, {} interleaved rounds, median)\n",
        settings.wrk_seconds, settings.rounds
    );
    println!("| target | req/s (median) | runs | share of bare hyper |");
    println!("|---|---:|---|---:|");
    let bare_median = median(&mut results[0].clone());
    for (i, (name, _)) in targets.iter().enumerate() {
        let runs: Vec<String> = results[i].iter().map(|r| format!("{r:.0}")).collect();
        let m = median(&mut results[i]);
        println!(
            "| {name} | {m:.0} | {} | {:.0}% |",
            runs.join(", "),
            100.0 * m / bare_median
        );
    }
    let data = http_get(bitsd.web, "/data").await;
    let body = data.split("\r\n\r\n").nth(1).unwrap_or("");
    println!(
        "\n`/data` body: {} bytes, {} samples in `tempinthist`.\n",
        body.len(),
        body.matches("\"sensor\"").count() - 1
    );
}

/// Connects a websocket client with a small read buffer.
async fn ws_connect(
    addr: SocketAddr,
) -> Option<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/ws"),
        stream,
        Some(config),
    )
    .await
    .ok()?;
    Some(ws)
}

/// Header and payload length of the unmasked frame at the start of `bytes`,
/// once the header is complete.
fn frame_header(bytes: &[u8]) -> Option<(usize, usize)> {
    let second = *bytes.get(1)? & 0x7f;
    match second {
        126 => Some((
            4,
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
        )),
        127 => Some((
            10,
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
        )),
        n => Some((2, n as usize)),
    }
}

/// The sensor id in a `tempint` message, if any.
fn sensor_of(text: &str) -> Option<u64> {
    let rest = text.split("\"sensor\":").nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

async fn flood_phase(bitsd: &Spawned, settings: &Settings) {
    let mut watcher = ws_connect(bitsd.web).await.expect("watcher connects");
    watcher.next().await;
    let before = bitsd.rss_kib();
    let pid = bitsd.child.id();
    let peak = Arc::new(AtomicUsize::new(before as usize));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid) as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut dev = device(bitsd).await;
    let mut payload = String::with_capacity(settings.flood * 24);
    for i in 0..settings.flood {
        payload.push_str(&format!(
            "temperature {} {}.{}\n",
            i % 4,
            15 + i % 10,
            i % 10
        ));
    }
    payload.push_str(&format!("temperature {FLOOD_END} 20.0\n"));
    let started = Instant::now();
    dev.write_all(payload.as_bytes()).await.unwrap();
    let written = started.elapsed();
    let done = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(message)) = watcher.next().await {
            if let Message::Text(text) = message
                && sensor_of(&text) == Some(FLOOD_END)
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = bitsd.rss_kib();
    println!("## Flood of temperature lines from the device\n");
    if !done {
        println!("The flood did not complete within {DEADLINE:?}.\n");
        return;
    }
    let n = settings.flood + 1;
    println!(
        "| samples | written in | committed and broadcast in | durable samples/s | RSS before | peak | after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.0} ms | {:.0} ms | {:.0} | {} KiB | {} KiB | {} KiB |\n",
        written.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 1000.0,
        n as f64 / elapsed.as_secs_f64(),
        before,
        peak.load(Ordering::Relaxed),
        after
    );
}

async fn fanout_phase(bitsd: &Spawned, settings: &Settings) {
    let n = settings.clients;
    let rss_before = bitsd.rss_kib();
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel::<(u64, Instant)>();
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<bool>();
    let gate = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (gate, arrivals_tx, ready_tx, addr) = (
            gate.clone(),
            arrivals_tx.clone(),
            ready_tx.clone(),
            bitsd.web,
        );
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let Some(mut ws) = ws_connect(addr).await else {
                let _ = ready_tx.send(false);
                return;
            };
            let first = ws.next().await;
            drop(permit);
            let _ = ready_tx.send(matches!(first, Some(Ok(Message::Text(_)))));
            // From here on the client parses the frames itself (server frames
            // are unmasked) and only looks for event markers, which keeps the
            // generator's CPU use small: it shares the machine with bitsd.
            let mut stream = ws.into_inner();
            let mut buf: Vec<u8> = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                use tokio::io::AsyncReadExt;
                let n = match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let at = Instant::now();
                buf.extend_from_slice(&chunk[..n]);
                let mut start = 0;
                while let Some((header, len)) = frame_header(&buf[start..]) {
                    if buf.len() - start < header + len {
                        break;
                    }
                    let payload = &buf[start + header..start + header + len];
                    if let Some(sensor) = sensor_of(&String::from_utf8_lossy(payload))
                        && sensor >= FANOUT_BASE
                    {
                        let _ = arrivals_tx.send((sensor - FANOUT_BASE, at));
                    }
                    start += header + len;
                }
                buf.drain(..start);
            }
        }));
    }
    drop(arrivals_tx);
    let mut connected = 0;
    let mut failed = 0;
    while connected + failed < n {
        match tokio::time::timeout(DEADLINE, ready.recv()).await {
            Ok(Some(true)) => connected += 1,
            Ok(Some(false)) => failed += 1,
            _ => break,
        }
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = bitsd.rss_kib();
    println!("## {n} websocket clients\n");
    println!(
        "- connected: {connected} (failed {failed}) in {:.2} s: {:.0} clients/s, each with its snapshot",
        connect_time.as_secs_f64(),
        connected as f64 / connect_time.as_secs_f64()
    );
    println!(
        "- bitsd RSS: {rss_before} KiB before, {rss_after} KiB with the clients idle: {:.2} KiB per client",
        (rss_after.saturating_sub(rss_before)) as f64 / connected.max(1) as f64
    );

    let mut dev = device(bitsd).await;
    let (server_cpu, generator_cpu) = (cpu_ms(bitsd.child.id()), cpu_ms(std::process::id()));
    let mut firsts = Vec::new();
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut alls = Vec::new();
    let mut incomplete = 0;
    for event in 0..settings.events as u64 {
        let line = format!("temperature {} 20.0\n", FANOUT_BASE + event);
        let t0 = Instant::now();
        dev.write_all(line.as_bytes()).await.unwrap();
        let mut latencies = Vec::with_capacity(connected);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while latencies.len() < connected {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((e, at))) if e == event => {
                    latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0)
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if latencies.len() < connected {
            incomplete += 1;
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        let pick =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        if !latencies.is_empty() {
            firsts.push(latencies[0]);
            p50s.push(pick(0.5));
            p99s.push(pick(0.99));
            alls.push(*latencies.last().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "- {} events, one every 200 ms (median over events): first client {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, last client {:.1} ms{}",
        settings.events,
        median(&mut firsts),
        median(&mut p50s),
        median(&mut p99s),
        median(&mut alls),
        if incomplete > 0 {
            format!(" ({incomplete} events did not reach every client)")
        } else {
            String::new()
        }
    );
    println!(
        "- CPU time over the events: bitsd {:.0} ms, this generator {:.0} ms",
        cpu_ms(bitsd.child.id()) - server_cpu,
        cpu_ms(std::process::id()) - generator_cpu
    );
    let mut sorted_all = alls.clone();
    sorted_all.sort_by(|a, b| a.total_cmp(b));
    println!(
        "- time until all received, per event (ms): min {:.1}, max {:.1}\n",
        sorted_all.first().copied().unwrap_or(f64::NAN),
        sorted_all.last().copied().unwrap_or(f64::NAN)
    );
    for task in tasks {
        task.abort();
    }
    let _ = std::io::stdout().flush();
}

/// N HTTP connections that never send a byte: what each costs bitsd while
/// it waits (at most 10 s) for a request.
async fn idle_phase(bitsd: &Spawned, settings: &Settings) {
    let n = settings.clients;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = bitsd.rss_kib();
    let started = Instant::now();
    let mut idle = Vec::with_capacity(n);
    while idle.len() < n {
        let batch =
            (0..(n - idle.len()).min(500)).map(|_| tokio::net::TcpStream::connect(bitsd.web));
        for stream in futures_util::future::join_all(batch).await {
            match stream {
                Ok(stream) => idle.push(stream),
                Err(e) => {
                    println!("- idle connection failed: {e}");
                    return;
                }
            }
        }
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = bitsd.rss_kib();
    println!(
        "## {n} idle HTTP connections
"
    );
    println!(
        "- opened in {:.2} s; bitsd RSS {rss_before} KiB before, {rss_after} KiB with them open: {:.2} KiB per connection\n",
        opened.as_secs_f64(),
        rss_after.saturating_sub(rss_before) as f64 / n as f64
    );
    let _ = std::io::stdout().flush();
}
