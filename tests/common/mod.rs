//! The one helper every integration test uses: a real bitsd on port 0 with a
//! temporary database, and clients that speak to it over real sockets.
//!
//! - `legacy`: a database as the original Python server left it.
//! - `member`: usermanage, and a browser session that keeps its cookies.
//! - `mosquitto`: a real MQTT broker and a subscriber.
//! - `process`: the `bitsd` binary as a child process.
//! - `push_service`: a browser's push service and the browsers behind it,
//!   checking signatures and decrypting as real ones do.
//! - `receiver`: a webhook receiver that records what it is sent.
//! - `sqlite`: what a test reads back from a database file.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bitsd::config::Config;
use bitsd::net::{Address, Listeners};
use reqwest::header::HeaderName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod legacy;
pub mod member;
pub mod mosquitto;
mod process;
pub mod push_service;
pub mod receiver;
pub mod sqlite;
#[allow(unused_imports)]
pub use process::{
    Spawned, bitsd_command, http_get, installed, rss_kib, spawn_with_input, stdout_of,
};

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Options for automatic status that opens and closes after a second.
pub const AUTO_STATUS_IN_A_SECOND: [&str; 5] = [
    "--auto-status",
    "--auto-open-after",
    "1",
    "--auto-close-after",
    "1",
];

/// Options for a device port that asks for the token `s3cret` and takes
/// devices from any loopback address.
pub const DEVICE_TOKEN_S3CRET: [&str; 4] = [
    "--control-token",
    "s3cret",
    "--control-remote-address",
    "127.0.0.0/8",
];

/// Options for a server behind a reverse proxy that takes two connections
/// from each client address.
pub const PROXIED_TWO_PER_ADDRESS: [&str; 3] = [
    "--reverse-proxied",
    "--web-max-connections-per-address",
    "2",
];

/// The headers a reverse proxy adds.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The new folder `name` in `dir`, holding `files` (name, text).
pub fn folder_with(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir(&folder).unwrap();
    for (file, text) in files {
        std::fs::write(folder.join(file), text).unwrap();
    }
    folder
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub web: Address,
    pub control: Address,
    /// The TLS device port, when the server was started with one.
    pub control_tls: Option<SocketAddr>,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A server on a new database with the repository's wiki loaded.
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    /// A server on a new database, and the device connected to it.
    pub async fn start_with_device() -> (TestServer, Device) {
        let server = Self::start().await;
        let device = server.device().await;
        (server, device)
    }

    /// A server on a new database, with extra command-line options.
    pub async fn start_with(extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bitsd.db");
        Self::start_in(dir, db, extra).await
    }

    /// A server on the database `db` inside `dir` (which it keeps alive).
    /// A server reading a configuration file that holds `text`, with the
    /// options `extra`.
    pub async fn start_configured(text: &str, extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bitsd.toml");
        std::fs::write(&config, text).unwrap();
        let config = config.display().to_string();
        let db = dir.path().join("bitsd.db");
        let mut args = vec!["--config", config.as_str()];
        args.extend_from_slice(extra);
        TestServer::start_in(dir, db, &args).await
    }

    pub async fn start_in(dir: tempfile::TempDir, db: PathBuf, extra: &[&str]) -> TestServer {
        let config = test_config(&db, extra);
        bitsd::bootstrap(&config).expect("bootstrap");
        let listeners = Listeners::bind(&config).await.expect("bind");
        let web = listeners.web.address().unwrap();
        let control = listeners.control.address().unwrap();
        let control_tls = listeners
            .control_tls
            .as_ref()
            .map(|l| l.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(bitsd::run(config, listeners, shutdown.clone()));
        let http = http_client(reqwest::Client::builder());
        TestServer {
            dir,
            db,
            web,
            control,
            control_tls,
            http,
            shutdown,
            task: Some(task),
        }
    }

    pub fn web_addr(&self) -> SocketAddr {
        match &self.web {
            Address::Tcp(a) => *a,
            Address::Unix(p) => panic!("web is on a unix socket: {}", p.display()),
        }
    }

    pub fn control_addr(&self) -> SocketAddr {
        match &self.control {
            Address::Tcp(a) => *a,
            Address::Unix(p) => panic!("control is on a unix socket: {}", p.display()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.web_addr())
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// GET `path` with `headers` added.
    pub async fn get_with(&self, path: &str, headers: &[(HeaderName, &str)]) -> reqwest::Response {
        get_with(&self.http, self.url(path), headers).await
    }

    /// POSTs `form` to `path`, without cookies.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    /// The value of the unlabelled metric `name` in `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// Waits until the metric `name` (with its labels) reads `value`: for
    /// what bitsd counts once an answer is back, after its sender saw it.
    pub async fn wait_for_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.metric(name).await;
            if now == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {name} {value}; it is {now}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `state` of each row of `/log?format=json` with `limit`, newest
    /// first.
    pub async fn logged_states(&self, limit: u32) -> Vec<String> {
        let log = self.json(&format!("/log?format=json&limit={limit}")).await;
        log["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["state"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Connects as the device.
    pub async fn device(&self) -> Device {
        Device::connect(self.control_addr()).await
    }

    /// Opens `n` device connections at once, then waits until the server
    /// has closed every one (for a server that refuses them).
    pub async fn refused_devices(&self, n: usize) {
        let mut refused = Vec::new();
        for _ in 0..n {
            refused.push(self.device().await);
        }
        for mut device in refused {
            device.closed().await;
        }
    }

    /// Has `device` told the status `value` (`1` open, `0` closed), as the
    /// server decided it, and waits until it is stored; `why` says when.
    pub async fn status_told(&self, device: &mut Device, value: &str, why: &str) {
        assert_eq!(device.recv().await, format!("status {value}"), "{why}");
        self.wait_for_status(value).await;
    }

    /// Waits until `/data` satisfies `check`; returns it.
    pub async fn wait_for_data(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for_json("/data", what, check).await
    }

    /// Waits until the JSON at `path` satisfies `check`; returns it.
    pub async fn wait_for_json(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let data = self.json(path).await;
            if check(&data) {
                return data;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; {path} is {data}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Has `device` send the status `value` (`1` open, `0` closed) and waits
    /// until it is stored.
    pub async fn status_from(&self, device: &mut Device, value: &str) {
        device.send(&format!("status {value}")).await;
        self.wait_for_status(value).await;
    }

    /// Waits until a status `expected` (`1` open, `0` closed) is stored:
    /// `/data` has it and `/status` answers it. (`/status` alone says `0`
    /// before any status too.)
    pub async fn wait_for_status(&self, expected: &str) {
        let value = if expected == "1" { "open" } else { "closed" };
        self.wait_for_data(&format!("the status {value}"), |d| {
            d["status"]["value"] == value
        })
        .await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = self.text("/status").await;
            if status == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/status stayed {status}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the server as SIGTERM would and waits for it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Today in the tests' time zone (Europe/Rome, as [`test_config`] sets).
pub fn today() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .date_naive()
}

/// A server on a database holding, on each of `days`, the room opened by
/// the device at `from` and closed at `to` (`HH:MM:SS`, local time).
pub async fn server_with_openings(
    days: impl IntoIterator<Item = chrono::NaiveDate>,
    from: &str,
    to: &str,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    bitsd::bootstrap(&test_config(&db, &[])).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    for day in days {
        for (time, value) in [(from, "open"), (to, "closed")] {
            conn.execute(
                r#"INSERT INTO "Status" (timestamp, value, modified_by) VALUES (?1, ?2, 'BITS')"#,
                [format!("{day} {time}.000000"), value.to_string()],
            )
            .unwrap();
        }
    }
    TestServer::start_in(dir, db, &[]).await
}

/// The configuration of a test server: loopback, port 0, no config file.
pub fn test_config(db: &Path, extra: &[&str]) -> Config {
    let mut args: Vec<String> = [
        "bitsd",
        "--config",
        "/dev/null",
        "--web-address",
        "127.0.0.1",
        "--web-port",
        "0",
        "--control-local-port",
        "0",
        "--log-requests=false",
        "--timezone",
        "Europe/Rome",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--db".into(), db.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::from_args(args).expect("test configuration").0
}

/// A device connected to the control port.
pub struct Device {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Device {
    pub async fn connect(addr: SocketAddr) -> Device {
        Device::from_stream(TcpStream::connect(addr).await.unwrap())
    }

    /// Connects as the device from the local address `from` (127.x.y.z).
    pub async fn connect_from(from: &str, addr: SocketAddr) -> Device {
        Device::from_stream(tcp_from(from, addr).await)
    }

    /// A device on a connection already made.
    pub fn from_stream(stream: TcpStream) -> Device {
        let (r, w) = stream.into_split();
        Device {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// Sends one line (a `\n` is added).
    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Sends each of `lines`, in order.
    pub async fn send_all(&mut self, lines: &[&str]) {
        for line in lines {
            self.send(line).await;
        }
    }

    /// Sends the message `text`, base64 as the device writes it.
    pub async fn send_message(&mut self, text: &str) {
        self.send(&format!("message {}", b64(text))).await;
    }

    /// Sends raw bytes; false when the server has closed the connection.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).await.is_ok() && self.writer.flush().await.is_ok()
    }

    /// The next line from the server, without `\n`.
    pub async fn recv(&mut self) -> String {
        let line = next_line(&mut self.reader, "a line from the server").await;
        let line = line.expect("connection closed while waiting for a line");
        line.trim_end_matches('\n').to_string()
    }

    /// Waits until the server closes the connection.
    pub async fn closed(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            match tokio::time::timeout(PATIENCE, self.reader.read_line(&mut line))
                .await
                .expect("the server closes the connection in time")
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// The HTTP client of the tests: no redirects followed, nothing compressed.
fn http_client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .build()
        .unwrap()
}

/// An HTTP client like [`TestServer::http`] whose connections come from the
/// local address `from` (127.x.y.z), so that one test can be many clients.
pub fn client_from(from: &str) -> reqwest::Client {
    http_client(reqwest::Client::builder().local_address(from.parse::<std::net::IpAddr>().unwrap()))
}

/// A TCP connection to `to` from the local address `from` (127.x.y.z), so
/// that one test can be many clients.
pub async fn tcp_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// GET `url` through `client` with `headers` added.
pub async fn get_with(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    headers: &[(HeaderName, &str)],
) -> reqwest::Response {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(name.clone(), *value);
    }
    request.send().await.unwrap()
}

/// The body of a GET of `url`, whatever its status, from a client of its own.
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The value of the header `name` of `response`, as text.
pub fn header_text(response: &reqwest::Response, name: HeaderName) -> &str {
    let value = response.headers().get(&name);
    let value = value.unwrap_or_else(|| panic!("no {name} header"));
    value.to_str().unwrap()
}

/// Fails unless `text` holds each of `parts`, showing `text` when not.
#[track_caller]
pub fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no {part:?} in {text}");
    }
}

/// Fails if a page shows a date as stored (`YYYY-MM-DD`, with or without
/// its time) anywhere but in a `<time datetime>` attribute.
#[track_caller]
pub fn assert_no_raw_timestamps(page: &str) {
    let mut shown = String::with_capacity(page.len());
    let mut rest = page;
    while let Some(at) = rest.find("datetime=\"") {
        shown.push_str(&rest[..at]);
        let value = &rest[at + "datetime=\"".len()..];
        rest = value.find('"').map_or("", |end| &value[end + 1..]);
    }
    shown.push_str(rest);
    let bytes = shown.as_bytes();
    let digits = |from: usize, n: usize| bytes[from..from + n].iter().all(u8::is_ascii_digit);
    for i in 0..bytes.len().saturating_sub(9) {
        let date = digits(i, 4) && bytes[i + 4] == b'-' && digits(i + 5, 2);
        if date && bytes[i + 7] == b'-' && digits(i + 8, 2) {
            let around = &bytes[i.saturating_sub(80)..(i + 80).min(bytes.len())];
            let around = String::from_utf8_lossy(around);
            panic!("a raw date in the page: ...{around}...");
        }
    }
}

/// The next line of `reader`, `\n` included, within [`PATIENCE`]; `None`
/// once the stream has ended. `what` names the line a failure waited for.
pub async fn next_line<R>(reader: &mut R, what: &str) -> Option<String>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut line = String::new();
    let n = tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
        .await
        .unwrap_or_else(|_| panic!("{what} in time"))
        .unwrap();
    (n > 0).then_some(line)
}

/// A connection to `to` on which `request` has been sent.
pub async fn connect_and_send(to: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(to).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream
}

/// A connection from the local address `from` (127.x.y.z) to `to` on which
/// `GET /events` has been sent, with the extra header lines `headers`.
pub async fn request_events_from(from: &str, to: SocketAddr, headers: &str) -> TcpStream {
    let mut stream = tcp_from(from, to).await;
    let request = format!("GET /events HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// base64 of `text`, as the device writes messages.
pub fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The next text message of websocket `ws`, skipping pings and pongs; any
/// other frame, an error or a wait over [`PATIENCE`] fails the test.
pub async fn ws_next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message in time")
            .expect("the stream goes on")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}
