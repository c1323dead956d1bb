//! Fan-out run, by `make bench-fanout` (and `make bench`): one event to
//! many websocket clients, against the least a server can do and during a
//! Web Push storm.
//!
//! 1. `floor`: the release bitsd against `fanout_floor`, a websocket server
//!    that writes one pre-built frame per client with one `write` each, on
//!    one thread. Rounds of a fresh server of each, in turn, the one to go
//!    first alternating: BENCH_CLIENTS clients, then BENCH_EVENTS lines of
//!    `status 1` and `status 0` in turn, one every 200 ms. Each round gives
//!    the time until the last client had an event (median over the events),
//!    and bitsd's as a multiple of the floor's.
//! 2. `storm`: one bitsd with BENCH_SUBSCRIBERS push subscriptions of `open`
//!    on a local push service, and BENCH_CLIENTS clients. Each round sends
//!    BENCH_EVENTS temperature samples, one every 200 ms, with no push under
//!    way; then `status 1`, which starts a push to every subscriber, and
//!    samples one every 200 ms until its last message is delivered. The
//!    time until the last client had a sample, quiet and during the storm.
//!
//! The floor is built from FANOUT_FLOOR_SRC (`../shared/bench/fanout_floor`)
//! into `target/floors`, unless FANOUT_FLOOR names a built one; without
//! either the `floor` phase is skipped.
//!
//! Settings: BENCH_PHASES (`floor,storm`), BENCH_CLIENTS (10000),
//! BENCH_EVENTS (20), BENCH_ROUNDS (5), BENCH_SUBSCRIBERS (10000).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

mod common;
use common::fanout::{CLOSED, Clients, OPEN, Spread};
use common::push::Storm;
use common::{DEADLINE, cpu_ms, device, median, setting};

fn main() {
    let Some(runtime) = common::start_run("fan-out", "bench-fanout") else {
        return;
    };
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "floor,storm".into());
    let settings = Settings {
        clients: setting("BENCH_CLIENTS", 10_000),
        events: setting("BENCH_EVENTS", 20),
        rounds: setting("BENCH_ROUNDS", 5),
        subscribers: setting("BENCH_SUBSCRIBERS", 10_000),
    };
    runtime.block_on(async {
        if phases.split(',').any(|p| p == "floor") {
            floor_phase(&settings).await;
        }
        if phases.split(',').any(|p| p == "storm") {
            storm_phase(&settings).await;
        }
    });
}

struct Settings {
    clients: usize,
    events: usize,
    rounds: usize,
    subscribers: usize,
}

/// The floor, started on free ports: a websocket port and a control port
/// that takes `status N` lines.
struct Floor {
    child: Child,
    web: SocketAddr,
    control: SocketAddr,
}

impl Floor {
    /// The floor's binary: FANOUT_FLOOR, or one built from its sources.
    fn binary() -> Option<PathBuf> {
        if let Ok(path) = std::env::var("FANOUT_FLOOR") {
            return Some(path.into());
        }
        let source = std::env::var("FANOUT_FLOOR_SRC")
            .unwrap_or_else(|_| "../shared/bench/fanout_floor".into());
        let manifest = PathBuf::from(source).join("Cargo.toml");
        if !manifest.exists() {
            println!("No fan-out floor at {}: skipped.\n", manifest.display());
            return None;
        }
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/floors");
        let built = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .is_ok_and(|s| s.success());
        if !built {
            println!("The fan-out floor did not build: skipped.\n");
            return None;
        }
        Some(target.join("release/fanout_floor"))
    }

    async fn start(binary: &PathBuf) -> Floor {
        let (web, control) = (free_port(), free_port());
        let child = Command::new(binary)
            .args([
                web.port().to_string(),
                control.port().to_string(),
                "1".into(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("fanout_floor starts");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(web).await.is_err() {
            assert!(started.elapsed() < DEADLINE, "fanout_floor did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Floor {
            child,
            web,
            control,
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// The `status` lines of a round, each to every client: the time until the
/// last client had it, median over the events, and the events that did not
/// reach every client.
async fn status_events(
    sender: &mut tokio::net::TcpStream,
    clients: &mut Clients,
    events: usize,
) -> (f64, usize) {
    let mut lasts = Vec::with_capacity(events);
    let mut incomplete = 0;
    for event in 0..events {
        let (line, marker): (&[u8], u64) = if event % 2 == 0 {
            (b"status 1\n", OPEN)
        } else {
            (b"status 0\n", CLOSED)
        };
        let latencies = clients.event(sender, line, marker).await;
        let spread = Spread::of(&latencies, clients.connected);
        incomplete += usize::from(!spread.complete);
        lasts.push(spread.last);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (median(&mut lasts), incomplete)
}

async fn floor_phase(settings: &Settings) {
    let Some(binary) = Floor::binary() else {
        return;
    };
    let n = settings.clients;
    println!(
        "## One event to {n} websocket clients: bitsd against fanout_floor ({} rounds, {} events each)\n",
        settings.rounds, settings.events
    );
    println!(
        "| round | floor, last client | bitsd, last client | bitsd / floor | connected | incomplete events |"
    );
    println!("|---:|---:|---:|---:|---|---|");
    let mut ratios = Vec::new();
    let (mut floors, mut bitsds) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        let mut floor_first = [true, false];
        if round % 2 == 1 {
            floor_first.reverse();
        }
        let (mut floor, mut bitsd) = ((0.0, 0, 0), (0.0, 0, 0));
        for is_floor in floor_first {
            if is_floor {
                let server = Floor::start(&binary).await;
                let mut clients = Clients::connect(server.web, n).await;
                let mut control = tokio::net::TcpStream::connect(server.control)
                    .await
                    .expect("floor control port");
                control.set_nodelay(true).unwrap();
                let (last, incomplete) =
                    status_events(&mut control, &mut clients, settings.events).await;
                floor = (last, clients.connected, incomplete);
            } else {
                let dir = tempfile::tempdir().expect("temp dir");
                let server = common::start_bitsd(dir.path(), &["--log-requests=false"]);
                let mut clients = Clients::connect(server.web, n).await;
                let mut dev = device(&server).await;
                let (last, incomplete) =
                    status_events(&mut dev, &mut clients, settings.events).await;
                bitsd = (last, clients.connected, incomplete);
            }
        }
        let ratio = bitsd.0 / floor.0;
        println!(
            "| {round} | {:.1} ms | {:.1} ms | {ratio:.2} | floor {}, bitsd {} | floor {}, bitsd {} |",
            floor.0, bitsd.0, floor.1, bitsd.1, floor.2, bitsd.2
        );
        ratios.push(ratio);
        floors.push(floor.0);
        bitsds.push(bitsd.0);
    }
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "\nMedians: floor {:.1} ms, bitsd {:.1} ms; bitsd / floor {:.2} (rounds: {})\n",
        median(&mut floors),
        median(&mut bitsds),
        median(&mut ratios),
        shown.join(", ")
    );
}

async fn storm_phase(settings: &Settings) {
    let (n, subscribers) = (settings.clients, settings.subscribers);
    let Storm { bitsd, counts, .. } = &Storm::start(
        subscribers,
        Instant::now(),
        &[
            "--web-max-connections-per-address",
            "100000",
            "--web-max-streams",
            "100000",
        ],
    )
    .await;
    let mut clients = Clients::connect(bitsd.web, n).await;
    let mut dev = device(bitsd).await;
    println!(
        "## One temperature sample to {} websocket clients, quiet and during a push to {subscribers} subscribers ({} rounds)\n",
        clients.connected, settings.rounds
    );
    println!(
        "| round | quiet: events, last client (median) | storm: events, last client (median) | the opening itself | storm length | bitsd CPU in the storm |"
    );
    println!("|---:|---|---|---:|---:|---:|");
    let mut event = 0;
    let (mut quiet_all, mut storm_all) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        let quiet =
            common::fanout::temperatures(&mut dev, &mut clients, settings.events, event).await;
        event += settings.events as u64;

        let expected = subscribers * (round + 1);
        let cpu = cpu_ms(bitsd.child.id());
        let started = Instant::now();
        let opening = Spread::of(
            &clients.event(&mut dev, b"status 1\n", OPEN).await,
            clients.connected,
        );
        let mut storm = Vec::new();
        while counts.taken.load(Ordering::Relaxed) < expected && started.elapsed() < DEADLINE {
            storm.push(common::fanout::temperature(&mut dev, &mut clients, event).await);
            event += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let length = started.elapsed();
        let cpu = cpu_ms(bitsd.child.id()) - cpu;
        clients.event(&mut dev, b"status 0\n", CLOSED).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let summary = |spreads: &[Spread]| {
            let mut lasts: Vec<f64> = spreads.iter().map(|s| s.last).collect();
            let incomplete = spreads.iter().filter(|s| !s.complete).count();
            let mut text = format!("{}, {:.1} ms", spreads.len(), median(&mut lasts));
            if incomplete > 0 {
                text.push_str(&format!(" ({incomplete} incomplete)"));
            }
            text
        };
        println!(
            "| {round} | {} | {} | {:.1} ms | {:.2} s | {:.0} ms |",
            summary(&quiet),
            summary(&storm),
            opening.last,
            length.as_secs_f64(),
            cpu
        );
        quiet_all.extend(quiet.iter().map(|s| s.last));
        storm_all.extend(storm.iter().map(|s| s.last));
    }
    let delivered = counts.taken.load(Ordering::Relaxed);
    let (quiet, storm) = (median(&mut quiet_all), median(&mut storm_all));
    println!(
        "\nMedians over every event: quiet {quiet:.1} ms ({} events), during the storm {storm:.1} ms ({} events): {:.2} of quiet. {delivered} push messages delivered, {} did not decrypt.\n",
        quiet_all.len(),
        storm_all.len(),
        storm / quiet,
        counts.wrong.load(Ordering::Relaxed)
    );
    let _ = dev.shutdown().await;
}
