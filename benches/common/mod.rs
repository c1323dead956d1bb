//! What the load runs share: the release bitsd as a child, the device, raw
//! websocket clients and the flood measurement; `fanout` measures events
//! reaching many websocket clients, `transports` floods over each device
//! transport.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub mod fanout;
#[path = "../../tests/common/process.rs"]
pub mod process;
pub mod push;
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
    // Every client of a run comes from 127.0.0.1, and holds a stream.
    let mut args = vec![
        "--timezone",
        "UTC",
        "--web-max-connections-per-address",
        "100000",
        "--web-max-streams",
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
