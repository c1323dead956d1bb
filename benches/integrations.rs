//! Integrations run, by `make bench-integrations` (and `make bench`): what
//! MQTT and webhooks cost the release `bitsd`, side by side in one run.
//!
//! 1. A flood of temperature lines on a fresh bitsd per round, interleaved:
//!    without integrations; with MQTT (Debian's mosquitto on loopback, a
//!    subscriber on `#`) and two webhooks (one on `temperature`, one on
//!    `status`) answered by a local receiver; and the same with the receiver
//!    down (503) for the whole flood. Durable samples a second, RSS before,
//!    at its peak and after, and whether the subscriber got every sample in
//!    order.
//! 2. N websocket clients and events sent to them, without and with the
//!    integrations.
//! 3. 10,000 deliveries queued while the receiver is down, then drained to
//!    it: time, order.
//!
//! Settings: BENCH_FLOOD (1000000), BENCH_ROUNDS (3), BENCH_CLIENTS (10000),
//! BENCH_EVENTS (20), BENCH_QUEUED (10000).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::process::Spawned;
use common::{DEADLINE, Flood, flood_place, median, setting, start_bitsd};

#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

/// How long the broker may take to start.
const PATIENCE: Duration = Duration::from_secs(10);

fn main() {
    let Some(runtime) = common::start_run("integrations", "bench-integrations") else {
        return;
    };
    runtime.block_on(run());
}

/// Which integrations a bitsd of the run has.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Without,
    MqttOnly,
    HooksOnly,
    With,
    ReceiverDown,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Without => "without integrations",
            Setup::MqttOnly => "MQTT only",
            Setup::HooksOnly => "2 webhooks only",
            Setup::With => "MQTT + 2 webhooks",
            Setup::ReceiverDown => "MQTT + 2 webhooks, receiver down",
        }
    }
}

/// A bitsd of the run with what its setup needs beside it.
struct Rig {
    _dir: tempfile::TempDir,
    bitsd: Spawned,
    _broker: Option<mosquitto::Mosquitto>,
    subscriber: Option<Subscriber>,
    receiver: Option<Receiver>,
}

async fn rig(setup: Setup, hooks: &[(&str, &str)]) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    if setup == Setup::Without {
        let bitsd = start_bitsd(dir.path(), &[]);
        return Rig {
            _dir: dir,
            bitsd,
            _broker: None,
            subscriber: None,
            receiver: None,
        };
    }
    let broker = mosquitto::Mosquitto::start();
    let receiver = Receiver::start(setup != Setup::ReceiverDown);
    let mut config = String::new();
    if setup != Setup::HooksOnly {
        config.push_str(&format!("mqtt_url = \"{}\"\n", broker.url()));
    }
    let hooks = if setup == Setup::MqttOnly {
        &[][..]
    } else {
        hooks
    };
    for (name, events) in hooks {
        config.push_str(&format!(
            "[[webhook]]\nname = \"{name}\"\nurl = \"http://{}/{name}\"\nevents = [\"{events}\"]\n",
            receiver.address
        ));
    }
    let file = dir.path().join("bitsd.toml");
    std::fs::write(&file, config).unwrap();
    let subscriber = Subscriber::start(broker.port).await;
    let bitsd = start_bitsd(dir.path(), &["--config", file.to_str().unwrap()]);
    if setup != Setup::HooksOnly {
        subscriber.wait_online().await;
    }
    Rig {
        _dir: dir,
        bitsd,
        _broker: Some(broker),
        subscriber: (setup != Setup::HooksOnly).then_some(subscriber),
        receiver: Some(receiver),
    }
}

const BOTH_HOOKS: &[(&str, &str)] = &[("temperature", "temperature"), ("status", "status")];

async fn run() {
    let count = setting("BENCH_FLOOD", 1_000_000);
    let rounds = setting("BENCH_ROUNDS", 3);
    let setups = [
        Setup::Without,
        Setup::MqttOnly,
        Setup::HooksOnly,
        Setup::With,
        Setup::ReceiverDown,
    ];

    let mut floods: Vec<Vec<(Flood, Option<Duration>)>> = vec![Vec::new(); setups.len()];
    let mut in_order = true;
    for _ in 0..rounds {
        for (i, setup) in setups.iter().enumerate() {
            let rig = rig(*setup, BOTH_HOOKS).await;
            let Some(flood) = common::flood(&rig.bitsd, count).await else {
                println!("- {}: the flood did not complete in time", setup.name());
                continue;
            };
            let mqtt = match &rig.subscriber {
                Some(s) => {
                    let all = s.wait_for(count).await;
                    if all.is_none() {
                        println!(
                            "- {}: the subscriber had {} of {count} samples",
                            setup.name(),
                            s.samples.load(Ordering::Relaxed)
                        );
                    }
                    in_order &= s.in_order();
                    all
                }
                None => None,
            };
            floods[i].push((flood, mqtt));
        }
    }
    println!("## Flood of {count} temperature lines, {rounds} interleaved rounds, median\n");
    println!(
        "| setup | durable samples/s | runs | RSS before | peak | after | every sample on MQTT, after the last commit |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (i, setup) in setups.iter().enumerate() {
        let runs = &floods[i];
        let mut rates: Vec<f64> = runs.iter().map(|(f, _)| f.durable_per_second()).collect();
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        let pick = |get: fn(&Flood) -> u64| {
            let mut v: Vec<f64> = runs.iter().map(|(f, _)| get(f) as f64).collect();
            median(&mut v)
        };
        let mut mqtt: Vec<f64> = runs
            .iter()
            .filter_map(|(_, m)| m.map(|d| d.as_secs_f64() * 1000.0))
            .collect();
        let mqtt = match (setup, mqtt.len()) {
            (Setup::Without | Setup::HooksOnly, _) => "-".to_string(),
            (_, n) if n == runs.len() => format!("{:.0} ms", median(&mut mqtt)),
            (_, n) => format!("{n} of {} runs complete", runs.len()),
        };
        println!(
            "| {} | {:.0} | {} | {:.0} KiB | {:.0} KiB | {:.0} KiB | {mqtt} |",
            setup.name(),
            median(&mut rates),
            shown.join(", "),
            pick(|f| f.rss_before),
            pick(|f| f.rss_peak),
            pick(|f| f.rss_after),
        );
    }
    println!(
        "\nEvery MQTT sample in order, per sensor: {}\n",
        if in_order { "yes" } else { "NO" }
    );

    fanout_phase().await;
    drain_phase().await;
}

async fn fanout_phase() {
    let clients = setting("BENCH_CLIENTS", 10_000);
    let events = setting("BENCH_EVENTS", 20);
    println!("## {clients} websocket clients, {events} events one every 200 ms\n");
    println!(
        "| setup | connected | clients/s | p50 | p99 | last client | bitsd CPU over the events |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for setup in [Setup::Without, Setup::With, Setup::Without, Setup::With] {
        let rig = rig(setup, BOTH_HOOKS).await;
        let f = common::fanout::fanout(&rig.bitsd, clients, events).await;
        println!(
            "| {} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms |",
            setup.name(),
            f.connected,
            f.connected as f64 / f.connect_time.as_secs_f64(),
            f.p50,
            f.p99,
            f.last,
            f.server_cpu_ms
        );
    }
    println!();
}

async fn drain_phase() {
    let queued = setting("BENCH_QUEUED", 10_000);
    let rig = rig(Setup::ReceiverDown, &[("temperature", "temperature")]).await;
    let receiver = rig.receiver.as_ref().unwrap();
    let Some(flood) = common::flood(&rig.bitsd, queued - 1).await else {
        println!("The samples to queue were not committed in time.\n");
        return;
    };
    let started = Instant::now();
    receiver.up.store(true, Ordering::Relaxed);
    let mut first = None;
    loop {
        let got = receiver.delivered("temperature");
        if got > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if got >= flood.samples as u64 || started.elapsed() > DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = started.elapsed();
    let got = receiver.delivered("temperature");
    let first = first.unwrap_or(all);
    let drained = all - first;
    println!(
        "## {} deliveries queued while the receiver was down\n",
        flood.samples
    );
    println!(
        "- the receiver up again: first delivery after {:.0} ms (the next retry), all {got} in {:.0} ms more: {:.0} deliveries/s; in order: {}; answered 503 before: {}",
        first.as_secs_f64() * 1000.0,
        drained.as_secs_f64() * 1000.0,
        got as f64 / drained.as_secs_f64().max(1e-9),
        if receiver.in_order() { "yes" } else { "NO" },
        receiver.refused.load(Ordering::Relaxed)
    );
    println!("- bitsd RSS after the drain: {} KiB\n", rig.bitsd.rss_kib());
}

/// A local webhook receiver: answers 200, or 503 with `Retry-After: 1`
/// while down; counts deliveries per path and checks their order.
struct Receiver {
    address: SocketAddr,
    up: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(Default)]
struct Seen {
    per_path: BTreeMap<String, u64>,
    /// The last flood place per sensor, and whether each came after it.
    places: BTreeMap<u64, usize>,
    in_order: bool,
}

impl Receiver {
    fn start(up: bool) -> Receiver {
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(up));
        let refused = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Seen {
            in_order: true,
            ..Seen::default()
        }));
        let (up2, refused2, seen2) = (up.clone(), refused.clone(), seen.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (up, refused, seen) = (up2.clone(), refused2.clone(), seen2.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (up, refused, seen) = (up.clone(), refused.clone(), seen.clone());
                            async move {
                                let path = request.uri().path().trim_start_matches('/').to_string();
                                let body =
                                    request.into_body().collect().await.map(|b| b.to_bytes());
                                let mut response =
                                    hyper::Response::new(Full::new(hyper::body::Bytes::new()));
                                if !up.load(Ordering::Relaxed) {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                                    response.headers_mut().insert(
                                        "retry-after",
                                        hyper::header::HeaderValue::from_static("1"),
                                    );
                                    return Ok::<_, std::convert::Infallible>(response);
                                }
                                if let Ok(body) = body {
                                    seen.lock().unwrap().record(&path, &body);
                                }
                                Ok(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            address,
            up,
            refused,
            seen,
            runtime: Some(runtime),
        }
    }

    fn delivered(&self, path: &str) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .per_path
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn in_order(&self) -> bool {
        self.seen.lock().unwrap().in_order
    }
}

impl Seen {
    fn record(&mut self, path: &str, body: &[u8]) {
        *self.per_path.entry(path.to_string()).or_default() += 1;
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let sample = &json["tempint"];
        if let (Some(sensor), Some(value)) = (sample["sensor"].as_u64(), sample["value"].as_f64()) {
            if sensor >= common::FLOOD_END {
                return;
            }
            let place = flood_place(value);
            if let Some(last) = self.places.insert(sensor, place) {
                self.in_order &= place > last;
            }
        }
    }
}

/// An MQTT client on `#`: counts flood samples and checks their order.
struct Subscriber {
    samples: Arc<AtomicU64>,
    in_order: Arc<AtomicBool>,
    online: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(port: u16) -> Subscriber {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut options = MqttOptions::new("bench-subscriber", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_inflight(1000);
        let (client, mut events) = AsyncClient::new(options, 100);
        client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
        let samples = Arc::new(AtomicU64::new(0));
        let in_order = Arc::new(AtomicBool::new(true));
        let online = Arc::new(tokio::sync::Notify::new());
        let (s, o, n) = (samples.clone(), in_order.clone(), online.clone());
        let task = tokio::spawn(async move {
            let _client = client;
            let mut places: BTreeMap<u64, usize> = BTreeMap::new();
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == "bits/availability" && &p.payload[..] == b"online" {
                            n.notify_one();
                        }
                        let Some(sensor) = p.topic.strip_prefix("bits/temperature/") else {
                            continue;
                        };
                        let (Ok(sensor), Some(value)) = (
                            sensor.parse::<u64>(),
                            std::str::from_utf8(&p.payload)
                                .ok()
                                .and_then(|v| v.parse::<f64>().ok()),
                        ) else {
                            continue;
                        };
                        if sensor >= common::FLOOD_END {
                            continue;
                        }
                        let place = flood_place(value);
                        match places.insert(sensor, place) {
                            // QoS 1 is at least once: a repeat is no disorder.
                            Some(last) if place == last => continue,
                            Some(last) if place < last => o.store(false, Ordering::Relaxed),
                            _ => {}
                        }
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Subscriber {
            samples,
            in_order,
            online,
            task,
        }
    }

    async fn wait_online(&self) {
        tokio::time::timeout(DEADLINE, self.online.notified())
            .await
            .expect("bitsd comes online on the broker");
    }

    /// How long after this call the subscriber had `count` flood samples;
    /// `None` once two seconds pass without one arriving.
    async fn wait_for(&self, count: usize) -> Option<Duration> {
        let started = Instant::now();
        let (mut last, mut moved) = (0, Instant::now());
        loop {
            let now = self.samples.load(Ordering::Relaxed);
            if now >= count as u64 {
                return Some(started.elapsed());
            }
            if now != last {
                (last, moved) = (now, Instant::now());
            }
            if moved.elapsed() > Duration::from_secs(2) || started.elapsed() > DEADLINE {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn in_order(&self) -> bool {
        self.in_order.load(Ordering::Relaxed)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
