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

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

mod common;
use common::push::{Browser, Storm};
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

async fn run(subscribers: usize, rounds: usize) {
    let epoch = Instant::now();
    let Storm {
        bitsd,
        browser,
        counts,
        ..
    } = &Storm::start(subscribers, epoch, &[]).await;
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
    encryption_cost(browser);
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
