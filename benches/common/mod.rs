//! What the load runs share: the release bitsd as a child, the device, raw
//! websocket clients, and the flood and fan-out measurements; `transports`
//! floods over each device transport.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[path = "../../tests/common/process.rs"]
pub mod process;
pub mod transports;
use process::{Spawned, rss_kib};

/// Sensor ids mark the events whose latency is measured.
pub const FLOOD_END: u64 = 1_000_000;
pub const FANOUT_BASE: u64 = 2_000_000;
/// The longest any single wait may take.
pub const DEADLINE: Duration = Duration::from_secs(120);

pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release bitsd as a child process, on a bootstrapped database, with
/// `extra` options.
pub fn start_bitsd(dir: &std::path::Path, extra: &[&str]) -> Spawned {
    let db = dir.join("bench.db");
    bootstrap(&db);
    // Every client of a run comes from 127.0.0.1.
    let mut args = vec![
        "--timezone",
        "UTC",
        "--web-max-connections-per-address",
        "100000",
    ];
    args.extend(extra);
    Spawned::start_with(&db, &args, "warn,bitsd=info")
}

/// The start of a run named `name` (`make target` runs it): outside
/// `cargo bench` none (a load run is no test); else the file descriptor
/// limit raised, the machine printed, and a runtime.
pub fn start_run(name: &str, target: &str) -> Option<tokio::runtime::Runtime> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{name} run: run it with `make {target}`");
        return None;
    }
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    println!("# bitsd {name} run");
    println!();
    println!("- machine: {} cores, {}", cores(), memory());
    println!("- file descriptor limit of the generator: {limit}");
    println!();
    Some(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime"),
    )
}

/// Prepares the database at `db` with `bitsd bootstrap`.
pub fn bootstrap(db: &std::path::Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_bitsd"))
        .args(["--config", "/dev/null", "--db"])
        .arg(db)
        .arg("bootstrap")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("bootstrap");
    assert!(status.success());
}

/// CPU time (user + system) a process has used, in milliseconds.
pub fn cpu_ms(pid: u32) -> f64 {
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

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn memory() -> String {
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

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

/// The device of the run.
pub async fn device(bitsd: &Spawned) -> tokio::net::TcpStream {
    let stream = tokio::net::TcpStream::connect(bitsd.control)
        .await
        .expect("device connects");
    stream.set_nodelay(true).unwrap();
    stream
}

/// A status, a message and 100 temperature samples: the reference `/data`.
pub async fn seed(bitsd: &Spawned) {
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

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Connects a websocket client with a small read buffer.
pub async fn ws_connect(
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
pub fn sensor_of(text: &str) -> Option<u64> {
    let rest = text.split("\"sensor\":").nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The flood's `i`th line: sensor `i % 4`, and a value from which the
/// sample's place among its sensor's samples reads back (`i / 4`, in units
/// of 0.0001 °C), so a subscriber can check it saw every one in order.
pub fn flood_line(i: usize) -> String {
    let k = i / 4;
    format!("temperature {} {}.{:04}\n", i % 4, k / 10_000, k % 10_000)
}

/// The place a flood value reads back as (see [`flood_line`]).
pub fn flood_place(value: f64) -> usize {
    (value * 10_000.0).round() as usize
}

/// What one flood of temperature lines came to.
#[derive(Clone)]
pub struct Flood {
    /// Samples sent, the end marker included.
    pub samples: usize,
    /// Until the last byte was written to the device socket.
    pub written: Duration,
    /// Until a websocket client saw the last sample: every one committed.
    pub elapsed: Duration,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
}

impl Flood {
    pub fn durable_per_second(&self) -> f64 {
        self.samples as f64 / self.elapsed.as_secs_f64()
    }
}

/// The highest RSS of a process, sampled every 20 ms until stopped.
pub struct PeakRss {
    peak: Arc<AtomicUsize>,
    sampling: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling process `pid`, whose RSS is `before` KiB now.
    pub fn start(pid: u32, before: u64) -> PeakRss {
        let peak = Arc::new(AtomicUsize::new(before as usize));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            tokio::spawn(async move {
                while sampling.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid) as usize, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        PeakRss {
            peak,
            sampling,
            sampler,
        }
    }

    /// Stops sampling: the peak, in KiB.
    pub async fn stop(self) -> u64 {
        self.sampling.store(false, Ordering::Relaxed);
        let _ = self.sampler.await;
        self.peak.load(Ordering::Relaxed) as u64
    }
}

/// Sends `count` flood lines and a marker on the device port; `None` if the
/// marker did not reach a websocket client in time.
pub async fn flood(bitsd: &Spawned, count: usize) -> Option<Flood> {
    flood_of(bitsd, count, flood_line).await
}

/// The `i`th line of a flood of mixed kinds: temperature, humidity, CO2 and
/// power in turn, each on four sensors, the values within each kind's range.
pub fn mixed_line(i: usize) -> String {
    let (sensor, k) = ((i / 4) % 4, i / 16);
    match i % 4 {
        0 => format!("temperature {sensor} {}.{:04}\n", k / 10_000, k % 10_000),
        1 => format!("sensor humidity {sensor} {}.{}\n", 30 + k % 40, k % 10),
        2 => format!("sensor carbondioxide {sensor} {}\n", 400 + k % 2000),
        _ => format!("sensor power_consumption {sensor} {}.5\n", k % 5000),
    }
}

/// Sends `count` lines made by `line` and a temperature marker on the
/// device port; `None` if the marker did not reach a websocket client in
/// time.
pub async fn flood_of(
    bitsd: &Spawned,
    count: usize,
    line: impl Fn(usize) -> String,
) -> Option<Flood> {
    let mut watcher = ws_connect(bitsd.web).await.expect("watcher connects");
    watcher.next().await;
    let before = bitsd.rss_kib();
    let pid = bitsd.child.id();
    let peak = PeakRss::start(pid, before);
    let mut dev = device(bitsd).await;
    let mut payload = String::with_capacity(count * 28);
    for i in 0..count {
        payload.push_str(&line(i));
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
    let rss_peak = peak.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.then(|| Flood {
        samples: count + 1,
        written,
        elapsed,
        rss_before: before,
        rss_peak,
        rss_after: bitsd.rss_kib(),
    })
}

/// What `n` websocket clients and events sent to them came to.
pub struct Fanout {
    pub clients: usize,
    pub connected: usize,
    pub failed: usize,
    pub connect_time: Duration,
    pub rss_before: u64,
    pub rss_idle: u64,
    /// Medians over the events, in ms: first client, p50, p99, last client.
    pub first: f64,
    pub p50: f64,
    pub p99: f64,
    pub last: f64,
    /// Per event, the time until every client had it (ms), sorted.
    pub alls: Vec<f64>,
    pub incomplete: usize,
    pub server_cpu_ms: f64,
    pub generator_cpu_ms: f64,
}

/// Connects `clients` websocket clients, then sends `events` temperature
/// samples one every 200 ms and measures when each client has each one.
pub async fn fanout(bitsd: &Spawned, clients: usize, events: usize) -> Fanout {
    let n = clients;
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
    let rss_idle = bitsd.rss_kib();

    let mut dev = device(bitsd).await;
    let (server_cpu, generator_cpu) = (cpu_ms(bitsd.child.id()), cpu_ms(std::process::id()));
    let mut firsts = Vec::new();
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut alls = Vec::new();
    let mut incomplete = 0;
    for event in 0..events as u64 {
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
    let server_cpu_ms = cpu_ms(bitsd.child.id()) - server_cpu;
    let generator_cpu_ms = cpu_ms(std::process::id()) - generator_cpu;
    for task in tasks {
        task.abort();
    }
    alls.sort_by(|a, b| a.total_cmp(b));
    Fanout {
        clients: n,
        connected,
        failed,
        connect_time,
        rss_before,
        rss_idle,
        first: median(&mut firsts),
        p50: median(&mut p50s),
        p99: median(&mut p99s),
        last: median(&mut alls.clone()),
        alls,
        incomplete,
        server_cpu_ms,
        generator_cpu_ms,
    }
}
