//! The `bitsd` binary as a child process: for tests that kill it or measure
//! its memory, and for the load generator.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `bitsd` binary, free of the test's `RUST_LOG`, `BITSD_*` variables
/// and standard input.
pub fn bitsd_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bitsd"));
    command.env_remove("RUST_LOG").stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("BITSD_") {
            command.env_remove(key);
        }
    }
    command
}

/// The program the environment variable `variable` names, or else the first
/// of `paths` that exists; `program` names it when none is found.
pub fn installed(variable: &str, paths: &[&str], program: &str) -> PathBuf {
    let named = std::env::var(variable).unwrap_or_default();
    std::iter::once(named.as_str())
        .chain(paths.iter().copied())
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no {program} found: `make test-deps` installs it, \
                 or set {variable}=/path"
            )
        })
}

/// `command` started with its output piped and `stdin` (when given)
/// written to its standard input, which is then closed. A command that
/// exits before reading its input is no failure here.
pub fn spawn_with_input(command: &mut Command, stdin: Option<&str>) -> Child {
    use std::io::Write as _;
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        let written = child.stdin.take().unwrap().write_all(text.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    child
}

/// The standard output of a command that had to succeed (its standard
/// error is the failure message otherwise).
pub fn stdout_of(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How long a started `bitsd` may take to log its addresses.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// Log lines kept for [`Spawned::wait_for_log`]; older ones are dropped.
const KEPT_LINES: usize = 10_000;

pub struct Spawned {
    pub child: Child,
    pub web: SocketAddr,
    pub control: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
    log_bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl Spawned {
    /// Starts `bitsd` on `db` on loopback, port 0.
    pub fn start(db: &Path) -> Spawned {
        Self::start_with(db, &[], "info")
    }

    /// Starts `bitsd` on `db` on loopback, port 0, with `extra` options and
    /// `RUST_LOG=log`, and reads its addresses from the log.
    pub fn start_with(db: &Path, extra: &[&str], log: &str) -> Spawned {
        Self::start_in(Path::new("."), db, extra, log)
    }

    /// [`Spawned::start_with`] with `dir` as the working directory.
    pub fn start_in(dir: &Path, db: &Path, extra: &[&str], log: &str) -> Spawned {
        let mut child = bitsd_command()
            .current_dir(dir)
            .args(["--config", "/dev/null", "--db"])
            .arg(db)
            .args(["--web-address", "127.0.0.1", "--web-port", "0"])
            .args(["--control-local-port", "0", "--log-requests=false"])
            .args(extra)
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bitsd starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (mut web, mut control) = (None, None);
        while web.is_none() || control.is_none() {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "bitsd exited early"
            );
            let addr = |marker: &str| {
                line.split(marker)
                    .nth(1)
                    .and_then(|r| r.trim().parse::<SocketAddr>().ok())
            };
            web = web.or_else(|| addr("web listening on "));
            control = control.or_else(|| addr("control listening on "));
        }
        // Keep reading the log so bitsd never blocks on a full pipe.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let log_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (kept, counted) = (log.clone(), log_bytes.clone());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                counted.fetch_add(line.len() as u64 + 1, std::sync::atomic::Ordering::Relaxed);
                let mut kept = kept.lock().unwrap();
                if kept.len() == KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        Spawned {
            child,
            web: web.unwrap(),
            control: control.unwrap(),
            log,
            log_bytes,
        }
    }

    /// The address a log line names after `marker` (`"control TLS
    /// listening on "`), waiting up to `patience` for the line.
    pub fn logged_address(&self, marker: &str, patience: Duration) -> SocketAddr {
        let started = Instant::now();
        loop {
            let found = self
                .log_lines(marker)
                .iter()
                .find_map(|l| l.split(marker).nth(1)?.trim().parse().ok());
            if let Some(address) = found {
                return address;
            }
            assert!(started.elapsed() < patience, "no {marker:?} in the log");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines (after the start) that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Waits up to `patience` for a log line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str, patience: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log_lines(needle).pop() {
                return line;
            }
            assert!(
                started.elapsed() < patience,
                "no log line with {needle:?} after {patience:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Bytes logged since the start.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Spawned {
    /// Starts `bitsd` on `db` on loopback, port 0, with `extra` options and
    /// `RUST_LOG=log`, its standard error a pipe whose read end is closed
    /// once the addresses are read: every later log line meets a closed
    /// pipe.
    pub fn start_with_stderr_closed(db: &Path, extra: &[&str], log: &str) -> Spawned {
        let mut child = serving(db, extra, log)
            .stderr(Stdio::piped())
            .spawn()
            .expect("bitsd starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (mut web, mut control) = (None, None);
        let mut lines = stderr.lines().map_while(Result::ok);
        while web.is_none() || control.is_none() {
            let line = lines.next().expect("bitsd exited early");
            listening(&line, &mut web, &mut control);
        }
        // `lines` owns the read end: dropping it closes the pipe.
        drop(lines);
        Spawned::without_log(child, web.unwrap(), control.unwrap())
    }

    /// Starts `bitsd` like [`Spawned::start_with_stderr_closed`], its
    /// standard error written to the new file `file`, where the addresses
    /// are read.
    pub fn start_logging_to(file: &Path, db: &Path, extra: &[&str], log: &str) -> Spawned {
        let out = std::fs::File::create(file).expect("the log file");
        let mut child = serving(db, extra, log)
            .stderr(out)
            .spawn()
            .expect("bitsd starts");
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let (mut web, mut control) = (None, None);
            for line in text.lines() {
                listening(line, &mut web, &mut control);
            }
            if let (Some(web), Some(control)) = (web, control) {
                return Spawned::without_log(child, web, control);
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("bitsd exited early ({status}): {text}");
            }
            assert!(
                started.elapsed() < START_PATIENCE,
                "no addresses in the log after {START_PATIENCE:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A started `bitsd` whose log the test does not read.
    fn without_log(child: Child, web: SocketAddr, control: SocketAddr) -> Spawned {
        Spawned {
            child,
            web,
            control,
            log: Arc::default(),
            log_bytes: Arc::default(),
        }
    }
}

/// `bitsd` serving `db` on loopback, port 0, with `extra` options and
/// `RUST_LOG=log`; standard error is the caller's to choose.
fn serving(db: &Path, extra: &[&str], log: &str) -> Command {
    let mut command = bitsd_command();
    command
        .args(["--config", "/dev/null", "--db"])
        .arg(db)
        .args(["--web-address", "127.0.0.1", "--web-port", "0"])
        .args(["--control-local-port", "0"])
        .args(extra)
        .env("RUST_LOG", log)
        .stdout(Stdio::null());
    command
}

/// Takes the web and control addresses from a log line that gives them.
fn listening(line: &str, web: &mut Option<SocketAddr>, control: &mut Option<SocketAddr>) {
    let addr = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|r| r.trim().parse::<SocketAddr>().ok())
    };
    *web = web.or_else(|| addr("web listening on "));
    *control = control.or_else(|| addr("control listening on "));
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid`, in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `GET path` on a new connection, without an async runtime: the whole
/// response, head and body.
pub fn http_get(addr: impl std::net::ToSocketAddrs, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}
