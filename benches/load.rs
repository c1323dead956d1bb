//! Load generator for bitsd, run by `make bench`.
//!
//! Starts the release `bitsd` on a database holding a year of history
//! (`bitsd fake history`), seeded with a status, a message and samples
//! (127.0.0.1 only), and measures, in one run:
//! 1. `wrk` against `/status`, `/data`, `/badge.svg` and `/openings.ics`,
//!    side by side with a bare hyper handler returning `1` served from this
//!    process (rounds interleaved), and the time of one request at a time;
//! 2. a flood of temperature lines: durable samples a second, RSS before,
//!    peak and after;
//! 3. N websocket clients: connect rate (each gets its snapshot), RSS per
//!    client, and for each event sent on the device port the latency to every
//!    client (p50, p99, time until all received);
//! 4. on a second, fresh bitsd: N idle HTTP connections and their RSS;
//! 5. on a third, fresh bitsd with its TLS port on: the flood over plain TCP
//!    (the original device, and a registered one), TLS and the `/device`
//!    websocket (registered devices), and over four registered devices at
//!    once, rounds interleaved;
//! 6. the other sensors: on a fresh bitsd, floods of mixed kinds
//!    (temperature, humidity, CO2, power) against temperature only, rounds
//!    interleaved; and `wrk` on `/data` of a bitsd with five more kinds of
//!    four sensors each against one seeded as before, side by side.
//!
//! Settings come from the environment: BENCH_CLIENTS (10000), BENCH_EVENTS
//! (20), BENCH_ROUNDS (3), BENCH_WRK_SECONDS (10), BENCH_FLOOD (1000000),
//! BENCH_HISTORY_DAYS (365), and BENCH_PHASES
//! (`wrk,flood,fanout,idle,transports,sensors`: the phases to run, e.g.
//! `wrk` alone).
//! Every wait is bounded; the run stops by itself.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::process::Spawned;
use common::transports::{self, Club, Transport};
use common::{cores, http_get, median, memory, seed, setting, start_bitsd};

struct Settings {
    clients: usize,
    events: usize,
    rounds: usize,
    wrk_seconds: u32,
    flood: usize,
    history_days: usize,
    phases: String,
}

impl Settings {
    fn runs(&self, phase: &str) -> bool {
        self.phases.split(',').any(|p| p.trim() == phase)
    }
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
        history_days: setting("BENCH_HISTORY_DAYS", 365),
        phases: std::env::var("BENCH_PHASES")
            .unwrap_or_else(|_| "wrk,flood,fanout,idle,transports,sensors".into()),
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
    let fresh_only = ["transports", "sensors"];
    if settings
        .phases
        .split(',')
        .all(|p| fresh_only.contains(&p.trim()))
    {
        // No history and no seeded bitsd for these alone.
        if settings.runs("transports") {
            transports_phase(&settings).await;
        }
        if settings.runs("sensors") {
            sensors_phase(&settings).await;
        }
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    if settings.history_days > 0 {
        let made = Command::new(env!("CARGO_BIN_EXE_bitsd"))
            .args(["--config", "/dev/null", "--timezone", "UTC", "--db"])
            .arg(dir.path().join("bench.db"))
            .args(["fake", "history", "--days"])
            .arg(settings.history_days.to_string())
            .stderr(std::process::Stdio::null())
            .output()
            .expect("fake history");
        assert!(made.status.success(), "fake history failed");
        println!(
            "- history: {}",
            String::from_utf8_lossy(&made.stdout).trim()
        );
    }
    let bitsd = start_bitsd(dir.path(), &[]);
    seed(&bitsd).await;
    let idle = bitsd.rss_kib();
    println!(
        "- bitsd idle RSS after seeding: {} KiB ({:.1} MB)",
        idle,
        idle as f64 / 1024.0
    );
    println!();

    if settings.runs("wrk") {
        wrk_phase(&bitsd, &settings).await;
    }
    if settings.runs("flood") {
        flood_phase(&bitsd, &settings).await;
    }
    if settings.runs("fanout") {
        fanout_phase(&bitsd, &settings).await;
    }
    drop(bitsd);
    if settings.runs("idle") {
        // On a fresh bitsd: memory freed by the websocket clients would hide
        // what idle connections cost.
        let dir = tempfile::tempdir().expect("temp dir");
        idle_phase(&start_bitsd(dir.path(), &[]), &settings).await;
    }
    if settings.runs("transports") {
        transports_phase(&settings).await;
    }
    if settings.runs("sensors") {
        sensors_phase(&settings).await;
    }
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

/// Requests a second and mean latency (ms) reported by one wrk run.
fn wrk(url: &str, seconds: u32) -> Option<(f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t2", "-c100", &format!("-d{seconds}s"), url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok());
    let latency = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Latency"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(wrk_ms);
    if text.contains("Non-2xx") {
        eprintln!("wrk saw errors on {url}:\n{text}");
    }
    Some((rps?, latency.unwrap_or(f64::NAN)))
}

/// A wrk duration (`512.00us`, `1.20ms`, `2.00s`) in milliseconds.
fn wrk_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1000.0),
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
}

/// The median time of `n` requests made one after another, each on a new
/// connection, in milliseconds.
async fn serial_ms(addr: SocketAddr, path: &str, n: usize) -> f64 {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer = http_get(addr, path).await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer:.200}");
    }
    median(&mut times)
}

async fn wrk_phase(bitsd: &Spawned, settings: &Settings) {
    if Command::new("wrk").arg("-v").output().is_err() {
        println!("## HTTP throughput\n\nwrk is not installed (Debian package `wrk`); skipped.\n");
        return;
    }
    let (bare, runtime) = bare_hyper();
    let targets = [
        ("bare hyper `1`", format!("http://{bare}/"), "/"),
        (
            "bitsd `/status`",
            format!("http://{}/status", bitsd.web),
            "/status",
        ),
        (
            "bitsd `/data`",
            format!("http://{}/data", bitsd.web),
            "/data",
        ),
        (
            "bitsd `/badge.svg`",
            format!("http://{}/badge.svg", bitsd.web),
            "/badge.svg",
        ),
        (
            "bitsd `/openings.ics`",
            format!("http://{}/openings.ics", bitsd.web),
            "/openings.ics",
        ),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..settings.rounds {
        for (i, (_, url, _)) in targets.iter().enumerate() {
            let url = url.clone();
            let seconds = settings.wrk_seconds;
            if let Ok(Some((rps, latency))) =
                tokio::task::spawn_blocking(move || wrk(&url, seconds)).await
            {
                results[i].push(rps);
                latencies[i].push(latency);
            }
        }
    }
    runtime.shutdown_background();
    let mut serial = vec![f64::NAN];
    for (_, _, path) in &targets[1..] {
        serial.push(serial_ms(bitsd.web, path, 200).await);
    }
    println!(
        "## HTTP throughput (`wrk -t2 -c100 -d{}s`, {} interleaved rounds, median)\n",
        settings.wrk_seconds, settings.rounds
    );
    println!(
        "| target | req/s (median) | runs | share of bare hyper | share of `/status` | wrk mean latency | one request at a time |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|");
    let bare_median = median(&mut results[0].clone());
    let status_median = median(&mut results[1].clone());
    for (i, (name, _, _)) in targets.iter().enumerate() {
        let runs: Vec<String> = results[i].iter().map(|r| format!("{r:.0}")).collect();
        let m = median(&mut results[i]);
        let latency = median(&mut latencies[i]);
        let one = if serial[i].is_nan() {
            "-".to_string()
        } else {
            format!("{:.2} ms", serial[i])
        };
        println!(
            "| {name} | {m:.0} | {} | {:.0}% | {:.0}% | {latency:.2} ms | {one} |",
            runs.join(", "),
            100.0 * m / bare_median,
            100.0 * m / status_median,
        );
    }
    let data = http_get(bitsd.web, "/data").await;
    let body = data.split("\r\n\r\n").nth(1).unwrap_or("");
    println!(
        "\n`/data` body: {} bytes, {} samples in `tempinthist`.",
        body.len(),
        body.matches("\"sensor\"").count() - 1
    );
    let feed = http_get(bitsd.web, "/openings.ics").await;
    let feed = feed.split("\r\n\r\n").nth(1).unwrap_or("");
    println!(
        "`/openings.ics` body: {} bytes, {} events ({} tentative); `/badge.svg` body: {} bytes.\n",
        feed.len(),
        feed.matches("BEGIN:VEVENT").count(),
        feed.matches("STATUS:TENTATIVE").count(),
        http_get(bitsd.web, "/badge.svg")
            .await
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .len()
    );
}

async fn flood_phase(bitsd: &Spawned, settings: &Settings) {
    let flood = common::flood(bitsd, settings.flood).await;
    println!("## Flood of temperature lines from the device\n");
    let Some(f) = flood else {
        println!(
            "The flood did not complete within {:?}.\n",
            common::DEADLINE
        );
        return;
    };
    println!(
        "| samples | written in | committed and broadcast in | durable samples/s | RSS before | peak | after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} ms | {:.0} ms | {:.0} | {} KiB | {} KiB | {} KiB |\n",
        f.samples,
        f.written.as_secs_f64() * 1000.0,
        f.elapsed.as_secs_f64() * 1000.0,
        f.durable_per_second(),
        f.rss_before,
        f.rss_peak,
        f.rss_after
    );
}

async fn fanout_phase(bitsd: &Spawned, settings: &Settings) {
    let f = common::fanout::fanout(bitsd, settings.clients, settings.events).await;
    println!("## {} websocket clients\n", f.clients);
    println!(
        "- connected: {} (failed {}) in {:.2} s: {:.0} clients/s, each with its snapshot",
        f.connected,
        f.failed,
        f.connect_time.as_secs_f64(),
        f.connected as f64 / f.connect_time.as_secs_f64()
    );
    println!(
        "- bitsd RSS: {} KiB before, {} KiB with the clients idle: {:.2} KiB per client",
        f.rss_before,
        f.rss_idle,
        (f.rss_idle.saturating_sub(f.rss_before)) as f64 / f.connected.max(1) as f64
    );
    println!(
        "- {} events, one every 200 ms (median over events): first client {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, last client {:.1} ms{}",
        settings.events,
        f.first,
        f.p50,
        f.p99,
        f.last,
        if f.incomplete > 0 {
            format!(" ({} events did not reach every client)", f.incomplete)
        } else {
            String::new()
        }
    );
    println!(
        "- CPU time over the events: bitsd {:.0} ms, this generator {:.0} ms",
        f.server_cpu_ms, f.generator_cpu_ms
    );
    println!(
        "- time until all received, per event (ms): min {:.1}, max {:.1}\n",
        f.alls.first().copied().unwrap_or(f64::NAN),
        f.alls.last().copied().unwrap_or(f64::NAN)
    );
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

/// The device flood over each transport, side by side on one fresh bitsd:
/// `BENCH_FLOOD` samples a flood, the setups interleaved (each round starts
/// with the next one), `BENCH_ROUNDS` rounds, medians reported.
async fn transports_phase(settings: &Settings) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut club = Club::start(dir.path());
    let rss_start = club.bitsd.rss_kib();
    let mut tcp = club.original().await;
    let mut tls = club.registered("tls", Transport::Tls).await;
    let mut ws = club.registered("ws", Transport::Websocket).await;
    let mut tcp_registered = club.registered("tcp", Transport::Tcp).await;
    let mut ws_second = club.registered("ws-2", Transport::Websocket).await;
    let rss_connected = club.bitsd.rss_kib();
    let setups = [
        "plain TCP, the original device",
        "plain TCP, a registered device",
        "TLS, a registered device",
        "websocket `/device`, a registered device",
        "four registered devices at once (TCP, TLS, 2 websockets), a quarter each",
    ];
    let mut floods: Vec<Vec<transports::Flood>> = vec![Vec::new(); setups.len()];
    let n = settings.flood;
    println!(
        "## The device flood over each transport ({n} samples a flood, {} interleaved rounds, median)\n",
        settings.rounds
    );
    for round in 0..settings.rounds {
        for k in 0..setups.len() {
            let setup = (round + k) % setups.len();
            let flood = match setup {
                0 => transports::flood(&mut club, &mut [&mut tcp], n).await,
                1 => transports::flood(&mut club, &mut [&mut tcp_registered], n).await,
                2 => transports::flood(&mut club, &mut [&mut tls], n).await,
                3 => transports::flood(&mut club, &mut [&mut ws], n).await,
                _ => {
                    let mut four = [&mut tcp_registered, &mut tls, &mut ws, &mut ws_second];
                    transports::flood(&mut club, &mut four, n).await
                }
            };
            match flood {
                Some(flood) => {
                    println!(
                        "- round {round}, {}: {:.0} samples/s, CPU a sample: bitsd {:.2} µs, generator {:.2} µs; RSS {} KiB after",
                        setups[setup],
                        flood.durable_per_second(),
                        flood.cpu_ms * 1000.0 / flood.samples as f64,
                        flood.generator_cpu_ms * 1000.0 / flood.samples as f64,
                        flood.rss_after
                    );
                    floods[setup].push(flood);
                }
                None => println!("- round {round}, {}: did not complete", setups[setup]),
            }
        }
    }
    let rss_end = club.bitsd.rss_kib();
    println!();
    println!(
        "| setup | durable samples/s | runs | share of plain TCP | bitsd CPU a sample | generator CPU a sample | samples stored | RSS before | peak | after |"
    );
    println!("|---|---:|---|---:|---:|---:|---|---:|---:|---:|");
    let tcp_median = median(&mut rates(&floods[0]));
    for (setup, runs) in setups.iter().zip(&floods) {
        let mut rates = rates(runs);
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        let m = median(&mut rates);
        let per_sample = |ms: fn(&transports::Flood) -> f64| {
            median(
                &mut runs
                    .iter()
                    .map(|f| ms(f) * 1000.0 / f.samples as f64)
                    .collect::<Vec<_>>(),
            )
        };
        let cpu = per_sample(|f| f.cpu_ms);
        let generator = per_sample(|f| f.generator_cpu_ms);
        let stored: Vec<String> = runs
            .iter()
            .map(|f| {
                if f.stored == f.samples as u64 {
                    "all".to_string()
                } else {
                    format!("{} of {}", f.stored, f.samples)
                }
            })
            .collect();
        let first = runs.first();
        println!(
            "| {setup} | {m:.0} | {} | {:.2} | {cpu:.2} µs | {generator:.2} µs | {} | {} KiB | {} KiB | {} KiB |",
            shown.join(", "),
            m / tcp_median,
            stored.join(", "),
            first.map_or(0, |f| f.rss_before),
            runs.iter().map(|f| f.rss_peak).max().unwrap_or(0),
            runs.last().map_or(0, |f| f.rss_after),
        );
    }
    println!(
        "\n- bitsd RSS: {rss_start} KiB at start, {rss_connected} KiB with the 5 devices connected, {rss_end} KiB after the {} floods\n",
        floods.iter().map(Vec::len).sum::<usize>()
    );
    let _ = std::io::stdout().flush();
}

/// The durable samples a second of each flood.
fn rates(floods: &[transports::Flood]) -> Vec<f64> {
    floods.iter().map(|f| f.durable_per_second()).collect()
}

/// Floods of mixed kinds against temperature only on one fresh bitsd, then
/// `/data` with and without five more kinds of four sensors each.
async fn sensors_phase(settings: &Settings) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bitsd = start_bitsd(dir.path(), &[]);
    let db = dir.path().join("bench.db");
    let stored = || {
        let conn = rusqlite::Connection::open(&db).expect("bench database");
        let count = |table: &str| -> u64 {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map_or(0, |n| n as u64)
        };
        count("\"Temperature\"") + count("bitsd_sensor")
    };
    let n = settings.flood;
    let setups = [
        "temperature only",
        "mixed: temperature, humidity, CO2, power",
    ];
    println!(
        "## The device flood with mixed kinds ({n} samples a flood, {} interleaved rounds, median)\n",
        settings.rounds
    );
    // Per setup: (durable samples/s, bitsd CPU µs a sample, all stored, RSS after).
    let mut runs: Vec<Vec<(f64, f64, bool, u64)>> = vec![Vec::new(); setups.len()];
    let mut peak = 0;
    for round in 0..settings.rounds {
        for k in 0..setups.len() {
            let setup = (round + k) % setups.len();
            let (rows, cpu) = (stored(), common::cpu_ms(bitsd.child.id()));
            let flood = match setup {
                0 => common::flood(&bitsd, n).await,
                _ => common::flood_of(&bitsd, n, common::mixed_line).await,
            };
            let Some(flood) = flood else {
                println!("- round {round}, {}: did not complete", setups[setup]);
                continue;
            };
            let cpu = (common::cpu_ms(bitsd.child.id()) - cpu) * 1000.0 / flood.samples as f64;
            let all = stored() - rows == flood.samples as u64;
            peak = peak.max(flood.rss_peak);
            println!(
                "- round {round}, {}: {:.0} samples/s, bitsd CPU {cpu:.2} µs a sample, all stored: {all}, RSS {} KiB after",
                setups[setup],
                flood.durable_per_second(),
                flood.rss_after
            );
            runs[setup].push((flood.durable_per_second(), cpu, all, flood.rss_after));
        }
    }
    println!();
    println!(
        "| setup | durable samples/s | runs | share of temperature only | bitsd CPU a sample | all stored | RSS after |"
    );
    println!("|---|---:|---|---:|---:|---|---:|");
    let mut medians = Vec::new();
    for (setup, runs) in setups.iter().zip(&runs) {
        let mut rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        let m = median(&mut rates);
        medians.push(m);
        let cpu = median(&mut runs.iter().map(|r| r.1).collect::<Vec<_>>());
        println!(
            "| {setup} | {m:.0} | {} | {:.2} | {cpu:.2} µs | {} | {} KiB |",
            shown.join(", "),
            m / medians[0],
            runs.iter().all(|r| r.2),
            runs.last().map_or(0, |r| r.3),
        );
    }
    println!("\n- bitsd peak RSS over the floods: {peak} KiB\n");
    drop(bitsd);
    data_with_sensors(settings).await;
    let _ = std::io::stdout().flush();
}

/// `wrk` on `/data` of a seeded bitsd and of one with five more kinds of
/// four sensors each, rounds interleaved.
async fn data_with_sensors(settings: &Settings) {
    if Command::new("wrk").arg("-v").output().is_err() {
        println!("wrk is not installed (Debian package `wrk`); `/data` with sensors skipped.\n");
        return;
    }
    let (plain_dir, more_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let plain = start_bitsd(plain_dir.path(), &[]);
    seed(&plain).await;
    let more = start_bitsd(more_dir.path(), &[]);
    seed(&more).await;
    let kinds = [
        ("humidity", "45.5"),
        ("carbondioxide", "812"),
        ("power_consumption", "1234.5"),
        ("barometer", "1013.2"),
        ("door_locked", "1"),
    ];
    let mut lines = String::new();
    for (kind, value) in kinds {
        for id in 0..4 {
            lines.push_str(&format!("sensor {kind} {id} {value}\n"));
        }
    }
    let mut device = common::device(&more).await;
    use tokio::io::AsyncWriteExt as _;
    device.write_all(lines.as_bytes()).await.unwrap();
    let started = Instant::now();
    let body = |text: String| text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    let more_body = loop {
        let data = body(http_get(more.web, "/data").await);
        if data.matches("\"sensor\"").count() >= 121 {
            break data;
        }
        assert!(started.elapsed() < common::DEADLINE, "sensors not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let plain_body = body(http_get(plain.web, "/data").await);
    let targets = [
        ("`/data` as seeded", format!("http://{}/data", plain.web)),
        (
            "`/data` with 5 more kinds of 4 sensors",
            format!("http://{}/data", more.web),
        ),
    ];
    let mut results = vec![Vec::new(); targets.len()];
    for round in 0..settings.rounds {
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let (url, seconds) = (targets[i].1.clone(), settings.wrk_seconds);
            if let Ok(Some((rps, _))) =
                tokio::task::spawn_blocking(move || wrk(&url, seconds)).await
            {
                results[i].push(rps);
            }
        }
    }
    println!(
        "## `/data` with more sensors (`wrk -t2 -c100 -d{}s`, {} interleaved rounds, median)\n",
        settings.wrk_seconds, settings.rounds
    );
    println!("| target | body | req/s | runs | share of `/data` as seeded |");
    println!("|---|---:|---:|---|---:|");
    let base = median(&mut results[0].clone());
    for ((name, _), (runs, size)) in targets
        .iter()
        .zip(results.iter_mut().zip([plain_body.len(), more_body.len()]))
    {
        let shown: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        let m = median(runs);
        println!(
            "| {name} | {size} bytes | {m:.0} | {} | {:.2} |",
            shown.join(", "),
            m / base
        );
    }
    println!();
}
