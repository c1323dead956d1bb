//! Start-up benchmark, run by `make bench`: the size of the release `bitsd`
//! and the time from starting it to the first answered `/data`, on a
//! database holding a year of history (`bitsd fake history --days 365`).
//!
//! `BENCH_COMPARE=/path/to/other/bitsd` measures a second binary side by side
//! (runs interleaved, each on a fresh copy of the same database);
//! `BENCH_STARTS` (20) sets the number of starts per binary. Each start runs
//! in an empty directory, as a service does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest a single start may take before the run stops.
const DEADLINE: Duration = Duration::from_secs(30);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("start-up benchmark: run it with `make bench`");
        return;
    }
    let starts: usize = std::env::var("BENCH_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut binaries = vec![("this", PathBuf::from(env!("CARGO_BIN_EXE_bitsd")))];
    if let Some(other) = std::env::var_os("BENCH_COMPARE") {
        binaries.push(("compared", PathBuf::from(other)));
    }
    for (name, binary) in &binaries {
        let size = std::fs::metadata(binary).expect("binary exists").len();
        println!(
            "{name}: {} ({:.1} MiB, {} stripped)",
            binary.display(),
            mib(size),
            stripped_size(binary)
                .map_or("strip not found".into(), |s| format!("{:.1} MiB", mib(s)))
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let year = dir.path().join("year.db");
    let made = Command::new(&binaries[0].1)
        .args(["--config", "/dev/null", "--db"])
        .arg(&year)
        .args(["fake", "history", "--days", "365"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(made.status.success(), "fake history failed");
    println!(
        "database: {} ({:.1} MiB)",
        String::from_utf8_lossy(&made.stdout).trim(),
        mib(std::fs::metadata(&year).unwrap().len())
    );

    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); binaries.len()];
    for round in 0..starts {
        for (i, (_, binary)) in binaries.iter().enumerate() {
            let run = dir.path().join(format!("run-{round}-{i}"));
            std::fs::create_dir(&run).unwrap();
            std::fs::copy(&year, run.join("bitsd.db")).unwrap();
            times[i].push(start_to_first_data(binary, &run));
        }
    }
    for ((name, _), times) in binaries.iter().zip(&mut times) {
        times.sort();
        println!(
            "{name}: start to first /data: median {:.1} ms, min {:.1} ms, max {:.1} ms ({} starts)",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
            times.len()
        );
    }
    if times.len() == 2 {
        println!(
            "ratio this/compared (medians): {:.2}",
            ms(times[0][times[0].len() / 2]) / ms(times[1][times[1].len() / 2])
        );
    }
}

/// Starts `binary` in `dir` on its `bitsd.db` and times it until `/data`
/// has been answered in full.
fn start_to_first_data(binary: &Path, dir: &Path) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .current_dir(dir)
        .args(["--config", "/dev/null", "--db", "bitsd.db"])
        .args(["--web-address", "127.0.0.1", "--web-port", "0"])
        .args(["--control-local-port", "0", "--log-requests=false"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bitsd starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let web = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "bitsd exited early"
        );
        if let Some(addr) = line
            .split("web listening on ")
            .nth(1)
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        {
            break addr;
        }
        assert!(started.elapsed() < DEADLINE, "bitsd did not start");
    };
    let answer = get_data(web);
    let elapsed = started.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "/data answered {answer:.80}"
    );
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

fn get_data(web: SocketAddr) -> String {
    let mut stream = TcpStream::connect(web).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"GET /data HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The size of `binary` without symbols, from a stripped copy.
fn stripped_size(binary: &Path) -> Option<u64> {
    let copy = tempfile::NamedTempFile::new().ok()?;
    let status = Command::new("strip")
        .arg("-o")
        .arg(copy.path())
        .arg(binary)
        .status()
        .ok()?;
    status
        .success()
        .then(|| std::fs::metadata(copy.path()).ok().map(|m| m.len()))
        .flatten()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
