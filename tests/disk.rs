//! Writes that fail: a log that cannot be written (standard error a closed
//! pipe, or a file on a full disk) and a database on a full disk. bitsd
//! goes on serving, counts what it lost in `/metrics`, says so in
//! `/healthz`, and recovers by itself when space returns.
//!
//! The full disks are small tmpfs mounts: these tests need root, as CI has.

mod common;

use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::sqlite::column;
use common::{Device, PATIENCE, Spawned, client_from};
use reqwest::StatusCode;
use reqwest::header;

/// A tmpfs of its own, unmounted when dropped (a failed test included).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on a new folder.
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={bytes},mode=0700")).unwrap();
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let mounted = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if mounted != 0 {
            let e = std::io::Error::last_os_error();
            panic!(
                "cannot mount a tmpfs on {}: {e}; these tests fill small file systems \
                 of their own and must run as root (as CI does)",
                dir.path().display()
            );
        }
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with the file `filler`; its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![b'x'; 64 << 10];
        let full = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(full.kind(), std::io::ErrorKind::StorageFull, "{full}");
        // Down to the last byte: no partly used page is left to the filler.
        for size in [4096, 512, 64, 8, 1] {
            while file.write_all(&chunk[..size]).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
        // Detached: gone even while a killed bitsd still holds a file in it.
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A database as bitsd's first start leaves it, with a member added by
/// `usermanage add --password-stdin`.
fn add_user(db: &Path, name: &str, password: &str) {
    bitsd::store::Db::open(db, false).unwrap();
    common::member::add_user_to(db, name, password);
}

/// `GET path` on `server`: its status and body.
async fn get(server: &Spawned, path: &str) -> (StatusCode, String) {
    let url = format!("http://{}{path}", server.web);
    let response = reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: no answer: {e}"));
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// The value of the metric `name` (a counter or a gauge without labels).
async fn metric(server: &Spawned, name: &str) -> f64 {
    let (status, text) = get(server, "/metrics").await;
    assert_eq!(status, 200, "/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics: {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until `/data` satisfies `check`.
async fn wait_for_data(server: &Spawned, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, text) = get(server, "/data").await;
        assert_eq!(status, 200, "/data");
        let data: serde_json::Value = serde_json::from_str(&text).unwrap();
        if check(&data) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not in /data: {data}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs in through the form from the local address `from`: the answer's
/// status and the login cookie it set, if any.
async fn login(server: &Spawned, from: &str, user: &str, password: &str) -> (u16, Option<String>) {
    let http = client_from(from);
    let base = format!("http://{}", server.web);
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(form.status(), 200, "the login form");
    let xsrf = cookie(&form, "_xsrf").expect("the login form sets _xsrf");
    let answer = http
        .post(format!("{base}/login"))
        .header(header::COOKIE, format!("_xsrf={xsrf}"))
        .form(&[
            ("username", user),
            ("password", password),
            ("next", "/admin"),
            ("_xsrf", &xsrf),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /login: no answer: {e}"));
    (answer.status().as_u16(), cookie(&answer, "usertoken"))
}

fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether process `pid` ignores `SIGPIPE` (so a write to a closed pipe
/// fails instead of killing it).
fn ignores_sigpipe(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .expect("SigIgn in /proc/PID/status");
    let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
    mask & (1 << (libc::SIGPIPE - 1)) != 0
}

/// Sends `SIGTERM` and waits for bitsd to end: it must, within 2 seconds
/// and successfully.
fn stop_within_two_seconds(server: &mut Spawned) {
    // SAFETY: kill has no memory effects; the pid is our own child's.
    let sent = unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM sent");
    let sent_at = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "bitsd ended with {status}");
            return;
        }
        assert!(
            sent_at.elapsed() < Duration::from_secs(2),
            "bitsd still runs 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// With its log unwritable, bitsd answers requests, takes the device's
/// lines, checks logins, counts the lines it dropped, and stops on SIGTERM.
async fn serves_with_its_log_unwritable(server: &mut Spawned) {
    // Until a line has been dropped the log may still have had room.
    let deadline = Instant::now() + PATIENCE;
    while metric(server, "bitsd_log_lines_dropped_total").await == 0.0 {
        assert_eq!(get(server, "/status").await, (StatusCode::OK, "0".into()));
        assert!(Instant::now() < deadline, "no log line dropped");
    }

    let mut device = Device::connect(server.control).await;
    device.send_all(&["status 1", "temperature 0 21.5"]).await;
    wait_for_data(server, "the device's status and sample", |d| {
        d["status"]["value"] == "open" && d["tempint"]["value"] == 21.5
    })
    .await;
    assert_eq!(get(server, "/status").await, (StatusCode::OK, "1".into()));

    // Two addresses, so the wrong password's throttle holds back neither.
    let (status, token) = login(server, "127.0.0.2", "alice", "wrong").await;
    assert_eq!((status, token), (401, None), "a wrong password");
    let (status, token) = login(server, "127.0.0.3", "alice", "right").await;
    assert_eq!(status, 303, "the right password");
    let token = token.expect("a login cookie");
    let admin = client_from("127.0.0.3")
        .get(format!("http://{}/admin", server.web))
        .header(header::COOKIE, format!("usertoken={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200, "logged in");

    // The device goes on after the logins.
    device.send("status 0").await;
    wait_for_data(server, "the closed status", |d| {
        d["status"]["value"] == "closed"
    })
    .await;

    let dropped = metric(server, "bitsd_log_lines_dropped_total").await;
    assert!(dropped > 0.0, "{dropped}");
    assert!(ignores_sigpipe(server.child.id()), "bitsd ignores SIGPIPE");
    stop_within_two_seconds(server);
}

#[tokio::test]
async fn logging_to_a_closed_pipe_never_stops_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    add_user(&db, "alice", "right");
    let mut server = Spawned::start_with_stderr_closed(&db, &["--log-requests=true"], "info");
    serves_with_its_log_unwritable(&mut server).await;
}

#[tokio::test]
async fn logging_to_a_full_disk_never_stops_serving() {
    let logs = Tmpfs::mount(256 << 10);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    add_user(&db, "alice", "right");
    let log = logs.path().join("bitsd.log");
    let mut server = Spawned::start_logging_to(&log, &db, &["--log-requests=true"], "info");
    logs.fill();
    serves_with_its_log_unwritable(&mut server).await;
}

/// `/healthz`: its status and body.
async fn health(server: &Spawned) -> (StatusCode, String) {
    get(server, "/healthz").await
}

#[tokio::test]
async fn a_full_disk_is_visible_and_bitsd_recovers_by_itself() {
    let disk = Tmpfs::mount(8 << 20);
    let db = disk.path().join("bitsd.db");
    let mut server = Spawned::start_with(&db, &[], "info");
    let mut device = Device::connect(server.control).await;
    device.send("status 1").await;
    wait_for_data(&server, "the open status", |d| {
        d["status"]["value"] == "open"
    })
    .await;
    assert_eq!(health(&server).await, (StatusCode::OK, "ok\n".into()));

    // Full after the start: the database is open, its next write fails.
    let filler = disk.fill();
    device.send_all(&["status 0", "temperature 0 21.5"]).await;
    let deadline = Instant::now() + PATIENCE;
    while metric(&server, "bitsd_events_not_stored_total").await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the events were not counted as lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        health(&server).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot store events: database or disk is full\n".into()
        )
    );
    // Nothing unstored is shown; reads go on.
    assert_eq!(get(&server, "/status").await, (StatusCode::OK, "1".into()));
    let (status, data) = get(&server, "/data").await;
    assert_eq!(status, 200);
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert!(data.get("tempint").is_none(), "an unstored sample: {data}");
    server.wait_for_log("cannot store events", PATIENCE).await;

    // Space returns: the next event is stored, with no restart.
    std::fs::remove_file(&filler).unwrap();
    device.send("temperature 0 22.5").await;
    wait_for_data(&server, "the sample after space returned", |d| {
        d["tempint"]["value"] == 22.5
    })
    .await;
    assert_eq!(health(&server).await, (StatusCode::OK, "ok\n".into()));
    device.send("status 0").await;
    wait_for_data(&server, "the closed status", |d| {
        d["status"]["value"] == "closed"
    })
    .await;
    assert_eq!(metric(&server, "bitsd_events_not_stored_total").await, 2.0);
    server
        .wait_for_log("events are stored again", PATIENCE)
        .await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "bitsd still runs"
    );
    stop_within_two_seconds(&mut server);

    // What the file holds: the open and the close, the second sample only.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let statuses: Vec<String> = column(&conn, r#"SELECT value FROM "Status" ORDER BY timestamp"#);
    assert_eq!(statuses, ["open", "closed"]);
    let samples: Vec<f64> = column(&conn, r#"SELECT value FROM "Temperature""#);
    assert_eq!(samples, [22.5]);
}
