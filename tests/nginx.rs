//! bitsd behind Debian's nginx (which `make test` installs when missing),
//! configured by `deploy/nginx.conf` itself: only its ports, certificate
//! and challenge folder are changed for the test. Everything is checked
//! over HTTPS through nginx, against a real server with `reverse_proxied`.

mod common;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::member::add_user;
use common::{PATIENCE, TestServer, bitsd_command, stdout_of};
use futures_util::SinkExt;
use reqwest::{StatusCode, Version, header};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A websocket through nginx, over TLS.
type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The file an administrator drops into /etc/nginx/sites-available/.
fn site_file() -> PathBuf {
    common::root().join("deploy/nginx.conf")
}

fn nginx_binary() -> PathBuf {
    common::installed("NGINX", &["/usr/sbin/nginx"], "nginx")
}

/// `url` asked for again by a client holding the copy tagged `tag`.
async fn revalidate(https: &reqwest::Client, url: String, tag: &str) -> reqwest::Response {
    common::get_with(https, url, &[(header::IF_NONE_MATCH, tag)]).await
}

/// The ports and files the test puts in place of the deployed ones.
struct Substitutes<'a> {
    http: u16,
    https: u16,
    /// Whether `[::1]` can be bound; the IPv6 `listen` lines are dropped
    /// otherwise.
    ipv6: bool,
    upstream: SocketAddr,
    certificate: &'a Path,
    key: &'a Path,
    webroot: &'a Path,
}

/// `deploy/nginx.conf` with the deployed ports (the redirect's HTTPS port
/// too, as its comment says to), certificate and challenge folder
/// replaced; any other line stays as it is. Panics when a line the
/// test must replace is missing, so the test never runs on port 443.
fn site_for_test(text: &str, with: &Substitutes) -> String {
    let (mut listens, mut upstreams, mut certificates, mut roots) = (0, 0, 0, 0);
    let (mut in_port_map, mut redirect_ports) = (false, 0);
    let mut out = String::new();
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let words: Vec<&str> = line.split_whitespace().collect();
        let replaced = match words.as_slice() {
            ["listen", address, rest @ ..] => {
                listens += 1;
                let port = |deployed: &str| match deployed {
                    "80" => with.http,
                    "443" => with.https,
                    other => panic!("deploy/nginx.conf listens on {other}: expected 80 or 443"),
                };
                let bare = address.trim_end_matches(';');
                let address = match bare.strip_prefix("[::]:") {
                    Some(_) if !with.ipv6 => continue,
                    Some(deployed) => format!("[::1]:{}", port(deployed)),
                    None => format!("127.0.0.1:{}", port(bare)),
                };
                let rest = if rest.is_empty() {
                    ";".to_string()
                } else {
                    format!(" {}", rest.join(" "))
                };
                format!("listen {address}{rest}")
            }
            ["server", "127.0.0.1:8008;", ..] => {
                upstreams += 1;
                format!("server {};", with.upstream)
            }
            ["ssl_certificate", _] => {
                certificates += 1;
                format!("ssl_certificate {};", with.certificate.display())
            }
            ["ssl_certificate_key", _] => {
                certificates += 1;
                format!("ssl_certificate_key {};", with.key.display())
            }
            ["map", "$host", "$bitsd_https_port", "{"] => {
                in_port_map = true;
                line.trim_start().to_string()
            }
            ["default", "\"\";"] if in_port_map => {
                in_port_map = false;
                redirect_ports += 1;
                format!("default \":{}\";", with.https)
            }
            ["root", "/var/www/letsencrypt;"] => {
                roots += 1;
                format!("root {};", with.webroot.display())
            }
            _ => line.trim_start().to_string(),
        };
        out.push_str(indent);
        out.push_str(&replaced);
        out.push('\n');
    }
    assert!(listens >= 2, "deploy/nginx.conf: no listen 80 and 443");
    assert_eq!(
        upstreams, 1,
        "deploy/nginx.conf: no upstream 127.0.0.1:8008"
    );
    assert_eq!(certificates, 2, "deploy/nginx.conf: no certificate and key");
    assert_eq!(roots, 1, "deploy/nginx.conf: no challenge root");
    assert_eq!(
        redirect_ports, 1,
        "deploy/nginx.conf: no HTTPS port for the redirect"
    );
    out
}

/// The top-level configuration around the site: everything in the temporary
/// folder, in the foreground, the http block as in Debian's nginx.conf.
fn main_config(dir: &Path, site: &Path) -> String {
    let dir = dir.display();
    // As root, nginx switches its workers to `user`; root itself keeps the
    // test's files (in a folder only root may enter) readable.
    let user = if is_root() { "user root;" } else { "" };
    format!(
        "{user}
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    gzip on;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {site};
}}
",
        site = site.display()
    )
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Two free ports on 127.0.0.1 (and the same two free on [::1], when it
/// exists); nginx is started again on others if one is taken meanwhile.
fn free_ports() -> (u16, u16, bool) {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let (http, https) = (
        first.local_addr().unwrap().port(),
        second.local_addr().unwrap().port(),
    );
    let ipv6 =
        TcpListener::bind(("::1", http)).is_ok() && TcpListener::bind(("::1", https)).is_ok();
    (http, https, ipv6)
}

/// nginx in front of a test server, killed with its workers when dropped.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    http_port: u16,
    https_port: u16,
    certificate: CertificateDer<'static>,
    certificate_pem: String,
}

impl Nginx {
    /// Starts nginx on `deploy/nginx.conf` in front of `server` and waits
    /// until it answers over HTTPS.
    async fn start(server: &TestServer) -> Nginx {
        let binary = nginx_binary();
        let deployed = std::fs::read_to_string(site_file()).unwrap();
        let tls = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        for attempt in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let certificate = dir.path().join("fullchain.pem");
            let key = dir.path().join("privkey.pem");
            std::fs::write(&certificate, tls.cert.pem()).unwrap();
            std::fs::write(&key, tls.signing_key.serialize_pem()).unwrap();
            let webroot = dir.path().join("letsencrypt");
            std::fs::create_dir(&webroot).unwrap();
            let (http_port, https_port, ipv6) = free_ports();
            let site = site_for_test(
                &deployed,
                &Substitutes {
                    http: http_port,
                    https: https_port,
                    ipv6,
                    upstream: server.web_addr(),
                    certificate: &certificate,
                    key: &key,
                    webroot: &webroot,
                },
            );
            let site_path = dir.path().join("bitsd.conf");
            std::fs::write(&site_path, site).unwrap();
            let config = dir.path().join("nginx.conf");
            std::fs::write(&config, main_config(dir.path(), &site_path)).unwrap();
            let stderr = File::create(dir.path().join("stderr")).unwrap();
            let child = {
                use std::os::unix::process::CommandExt;
                Command::new(&binary)
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .arg("-c")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr)
                    // A group of its own, so that its workers die with it.
                    .process_group(0)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
            };
            let mut nginx = Nginx {
                child,
                dir,
                http_port,
                https_port,
                certificate: tls.cert.der().clone(),
                certificate_pem: tls.cert.pem(),
            };
            match nginx.wait_until_it_answers().await {
                Ok(()) => return nginx,
                Err(log) if log.contains("Address already in use") && attempt < 5 => continue,
                Err(log) => panic!("nginx did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    /// Waits until `/status` answers through nginx; the error log otherwise.
    async fn wait_until_it_answers(&mut self) -> Result<(), String> {
        let http = self.client();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exit {status}\n{}", self.log()));
            }
            if let Ok(r) = http.get(self.url("/status")).send().await {
                if r.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no answer in {PATIENCE:?}\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What nginx wrote to standard error and its error log.
    fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr"), read("error.log"))
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    /// An HTTPS client that trusts the test's certificate only, speaks
    /// HTTP/2 where nginx offers it and follows no redirects.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.certificate_pem.as_bytes()).unwrap(),
            )
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .build()
            .unwrap()
    }

    /// The site file nginx runs: `deploy/nginx.conf` as [`site_for_test`]
    /// changed it.
    fn site(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bitsd.conf")).unwrap()
    }

    /// A websocket to `/ws` over TLS, on an HTTP/1.1 connection as browsers
    /// open one for websockets.
    async fn websocket(&self) -> Wss {
        let url = format!("wss://127.0.0.1:{}/ws", self.https_port);
        let (ws, response) = self
            .upgrade("127.0.0.1", url.into_client_request().unwrap())
            .await
            .expect("the websocket upgrade through nginx");
        assert_eq!(response.status(), 101);
        ws
    }

    /// A device's websocket to `/device` from the local address `from`
    /// (127.x.y.z), with `Authorization: Bearer <key>` when `key` is given;
    /// the status nginx answered instead when the upgrade is refused.
    async fn device_socket(&self, from: &str, key: Option<&str>) -> Result<Wss, u16> {
        let url = format!("wss://127.0.0.1:{}/device", self.https_port);
        let mut request = url.into_client_request().unwrap();
        if let Some(key) = key {
            let bearer = format!("Bearer {key}").parse().unwrap();
            request.headers_mut().insert(header::AUTHORIZATION, bearer);
        }
        match self.upgrade(from, request).await {
            Ok((ws, response)) => {
                assert_eq!(response.status(), 101);
                Ok(ws)
            }
            Err(WsError::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("the /device upgrade through nginx: {e}"),
        }
    }

    /// `request`'s websocket upgrade on a new TLS connection from the local
    /// address `from` (127.x.y.z), offering only HTTP/1.1 as websocket
    /// clients do.
    async fn upgrade(&self, from: &str, request: Request) -> Result<(Wss, Response), WsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.certificate.clone()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let https = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.https_port);
        let tcp = common::tcp_from(from, https).await;
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("a TLS connection to nginx");
        tokio_tungstenite::client_async(request, tls).await
    }

    /// Waits until `/data` through nginx satisfies `check`; returns it.
    async fn wait_for_data(
        &self,
        https: &reqwest::Client,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let r = https.get(self.url("/data")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let data: serde_json::Value = r.json().await.unwrap();
            if check(&data) {
                return data;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; /data is {data}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Logs `user` in through nginx's login form, as a browser on nginx's
    /// origin does.
    async fn log_in(&self, https: &reqwest::Client, user: &str, password: &str) -> Member {
        let r = https.get(self.url("/login")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let xsrf = cookie(&set_cookies(&r), "_xsrf").expect("the login form sets _xsrf");
        let r = https
            .post(self.url("/login"))
            .header(header::COOKIE, format!("_xsrf={xsrf}"))
            .header(header::ORIGIN, self.origin())
            .form(&[
                ("username", user),
                ("password", password),
                ("next", "/admin"),
                ("_xsrf", &xsrf),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{user} logs in");
        let token = cookie(&set_cookies(&r), "usertoken").expect("a login cookie");
        Member {
            cookies: format!("_xsrf={xsrf}; usertoken={token}"),
            xsrf,
        }
    }

    /// POSTs `form` to `path` through nginx as `member`'s browser submits a
    /// page's form.
    async fn submit(
        &self,
        https: &reqwest::Client,
        member: &Member,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut fields = vec![("_xsrf", member.xsrf.as_str())];
        fields.extend_from_slice(form);
        https
            .post(self.url(path))
            .header(header::COOKIE, &member.cookies)
            .header(header::ORIGIN, self.origin())
            .form(&fields)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, waits for them, then exits.
        // Failing that, the master and its workers are killed together: the
        // process group made for them alone.
        let master = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) touches no memory.
        unsafe { libc::kill(master, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above; the group is gone when the master stopped.
        unsafe { libc::kill(-master, libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("nginx's log:\n{}", self.log());
        }
    }
}

/// A member's browser, logged in through nginx.
struct Member {
    /// The `Cookie` header it sends.
    cookies: String,
    /// The form token its pages carry.
    xsrf: String,
}

/// The directives of the block `location <matching>` in the site `site`,
/// each without its `;`, comments left out; panics when there is none.
fn location(site: &str, matching: &str) -> Vec<String> {
    let opening = format!("location {matching} {{");
    let mut lines = site.lines().map(str::trim);
    lines
        .by_ref()
        .find(|l| *l == opening)
        .unwrap_or_else(|| panic!("deploy/nginx.conf has no `{opening}`"));
    lines
        .take_while(|l| *l != "}")
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect()
}

/// An nginx time (`90`, `90s`, `1m30s`, `1h`) in seconds.
fn nginx_seconds(time: &str) -> u64 {
    let (mut total, mut number) = (0, 0);
    for c in time.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = number * 10 + u64::from(digit);
            continue;
        }
        total += number
            * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                other => panic!("{time}: unit {other:?}"),
            };
        number = 0;
    }
    total + number
}

/// The claim code `bitsd device add NAME` prints for the new device `name`
/// on the database `db`, the way an operator adds one.
fn add_device(db: &Path, name: &str) -> String {
    let out = bitsd_command()
        .args(["--config", "/dev/null", "--db"])
        .arg(db)
        .args(["device", "add", name])
        .output()
        .unwrap();
    let printed = stdout_of(out);
    printed
        .lines()
        .find_map(|l| l.strip_prefix("claim code: "))
        .unwrap_or_else(|| panic!("no claim code in {printed}"))
        .to_string()
}

/// Sends `line` to the device's websocket, one text message.
async fn send_line(ws: &mut Wss, line: &str) {
    ws.send(Message::Text(line.into())).await.unwrap();
}

/// Reads Server-Sent Events from a response, one `data:` payload at a time.
struct EventStream {
    response: reqwest::Response,
    pending: String,
}

impl EventStream {
    /// The next event's data; comments (keep-alives) are skipped. Fails the
    /// test when nothing comes within [`PATIENCE`]: an event held back in a
    /// buffer never comes while the stream stays open.
    async fn next(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if !data.is_empty() {
                    return data.join("\n");
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event through nginx in time: is /events buffered?")
                .expect("the event stream goes on")
                .expect("the event stream stays open");
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The value of cookie `name` among `Set-Cookie` headers.
fn cookie(set: &[String], name: &str) -> Option<String> {
    set.iter().find_map(|c| {
        let pair = c.split(';').next()?;
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

#[tokio::test]
async fn plain_http_redirects_to_https_and_serves_certificate_challenges() {
    let server = TestServer::start_with(&["--reverse-proxied"]).await;
    let nginx = Nginx::start(&server).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let plain = format!("http://127.0.0.1:{}", nginx.http_port);

    let r = http
        .get(format!("{plain}/log?offset=20"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    // The HTTPS port is not 443 here: the redirect keeps it.
    assert_eq!(
        r.headers()[header::LOCATION].to_str().unwrap(),
        format!("https://127.0.0.1:{}/log?offset=20", nginx.https_port)
    );

    // Challenges stay on plain HTTP, where the certificate authority asks.
    let challenges = nginx
        .dir
        .path()
        .join("letsencrypt/.well-known/acme-challenge");
    std::fs::create_dir_all(&challenges).unwrap();
    std::fs::write(challenges.join("token-1"), "token-1.thumbprint").unwrap();
    let r = http
        .get(format!("{plain}/.well-known/acme-challenge/token-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "token-1.thumbprint");
}

#[tokio::test]
async fn status_and_its_etag_pass_through_https_and_http2() {
    let server = TestServer::start_with(&["--reverse-proxied"]).await;
    let nginx = Nginx::start(&server).await;
    let https = nginx.client();
    let mut device = server.device().await;
    server.status_from(&mut device, "1").await;

    let r = https.get(nginx.url("/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_2, "nginx speaks HTTP/2 on 443");
    let etag = common::header_text(&r, header::ETAG).to_string();
    assert_eq!(r.text().await.unwrap(), "1");

    let r = revalidate(&https, nginx.url("/status"), &etag).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    server.status_from(&mut device, "0").await;
    let r = revalidate(&https, nginx.url("/status"), &etag).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "0");

    // The same for /data, and a body that passes unchanged.
    let r = https.get(nginx.url("/data")).send().await.unwrap();
    let etag = common::header_text(&r, header::ETAG).to_string();
    let data: serde_json::Value = r.json().await.unwrap();
    assert_eq!(data, server.json("/data").await);
    let r = revalidate(&https, nginx.url("/data"), &etag).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // A client's own X-Forwarded-Host never reaches bitsd: nginx writes
    // the host and port it answered on.
    let forged = [(common::X_FORWARDED_HOST, "evil.example")];
    let response = common::get_with(&https, nginx.url("/spaceapi.json"), &forged).await;
    let doc: serde_json::Value = response.json().await.unwrap();
    assert_eq!(doc["url"], nginx.origin());
}

#[tokio::test]
async fn websocket_and_event_stream_get_each_change_at_once() {
    let server = TestServer::start_with(&["--reverse-proxied"]).await;
    let nginx = Nginx::start(&server).await;
    let mut device = server.device().await;
    server.status_from(&mut device, "0").await;

    let mut ws = nginx.websocket().await;
    let snapshot: serde_json::Value =
        serde_json::from_str(&common::ws_next_text(&mut ws).await).unwrap();
    assert_eq!(snapshot["status"]["value"], "closed");

    // As a browser asks: compressed where possible. A compressed stream
    // would be held back until the compressor's buffer fills.
    let r = nginx
        .client()
        .get(nginx.url("/events"))
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.headers().get(header::CONTENT_ENCODING), None);
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = EventStream {
        response: r,
        pending: String::new(),
    };
    let snapshot: serde_json::Value = serde_json::from_str(&events.next().await).unwrap();
    assert_eq!(snapshot["status"]["value"], "closed");

    // One short event, far smaller than any buffer of nginx's: it comes
    // through at once or not at all while the streams stay open.
    device.send("status 1").await;
    let change: serde_json::Value =
        serde_json::from_str(&common::ws_next_text(&mut ws).await).unwrap();
    assert_eq!(change["status"]["value"], "open", "{change}");
    let change: serde_json::Value = serde_json::from_str(&events.next().await).unwrap();
    assert_eq!(change["status"]["value"], "open", "{change}");

    device.send("temperature 0 21.5").await;
    let change: serde_json::Value =
        serde_json::from_str(&common::ws_next_text(&mut ws).await).unwrap();
    assert_eq!(change["tempint"]["value"], 21.5, "{change}");
    let change: serde_json::Value = serde_json::from_str(&events.next().await).unwrap();
    assert_eq!(change["tempint"]["value"], 21.5, "{change}");
}

#[tokio::test]
async fn login_through_nginx_sets_a_secure_cookie_and_the_client_is_the_address_nginx_saw() {
    // Failed logins for one user from one address are an hour apart.
    let server = TestServer::start_with(&["--reverse-proxied", "--min-login-retry", "3600"]).await;
    add_user(&server, "alice", "correct horse");
    let nginx = Nginx::start(&server).await;
    let https = nginx.client();

    let r = https
        .get(nginx.url("/login?next=/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let xsrf = cookie(&set_cookies(&r), "_xsrf").expect("the login form sets _xsrf");
    let jar = format!("_xsrf={xsrf}");
    let login = |password: &str, claimed: &str| {
        https
            .post(nginx.url("/login"))
            .header(header::COOKIE, &jar)
            // A browser names the origin it is on; bitsd accepts it only if
            // nginx passed the Host and the scheme it was reached by.
            .header(header::ORIGIN, nginx.origin())
            // What a client says of itself; nginx adds the address it saw.
            .header("X-Forwarded-For", claimed)
            .form(&[
                ("username", "alice"),
                ("password", password),
                ("next", "/admin"),
                ("_xsrf", &xsrf),
            ])
            .send()
    };

    let r = login("correct horse", "198.51.100.1").await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/admin");
    let set = set_cookies(&r);
    let login_cookie = set
        .iter()
        .find(|c| c.starts_with("usertoken="))
        .unwrap_or_else(|| panic!("no login cookie in {set:?}"));
    let attributes: Vec<&str> = login_cookie.split(';').map(str::trim).collect();
    for wanted in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(attributes.contains(&wanted), "{wanted}: {login_cookie}");
    }
    let token = cookie(&set, "usertoken").unwrap();
    let page = https
        .get(nginx.url("/admin"))
        .header(header::COOKIE, format!("{jar}; usertoken={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("alice"));

    // Two wrong passwords claiming two addresses: bitsd counts both against
    // 127.0.0.1, where nginx saw them come from, and refuses the second
    // unchecked. Had it believed the claims, both would be plain 401s.
    let r = login("wrong", "198.51.100.2").await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = login("wrong", "198.51.100.3").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_registered_device_pairs_reports_and_hears_the_web_over_wss() {
    let server = TestServer::start_with(&["--reverse-proxied"]).await;
    add_user(&server, "alice", "correct horse");
    let code = add_device(&server.db, "door");
    let nginx = Nginx::start(&server).await;
    let https = nginx.client();

    // The file has its own block for /device, not only `location /`: no
    // buffering, the timeouts far above bitsd's 30-second pings, and the
    // server's headers (Upgrade, Connection, X-Forwarded-For and -Proto)
    // inherited, which a `proxy_set_header` of its own would drop.
    let block = location(&nginx.site(), "= /device");
    let directive = |name: &str| {
        block
            .iter()
            .find_map(|d| d.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("location = /device has no {name}: {block:?}"))
    };
    assert_eq!(directive("proxy_pass"), "http://bitsd");
    assert_eq!(directive("proxy_buffering"), "off");
    for timeout in ["proxy_read_timeout", "proxy_send_timeout"] {
        let seconds = nginx_seconds(directive(timeout));
        assert!(
            seconds >= 90,
            "{timeout} {seconds}s: a late ping of bitsd's (every 30 s) would end the link"
        );
    }
    assert!(
        !block.iter().any(|d| d.starts_with("proxy_set_header")),
        "{block:?}"
    );

    // Paired over wss by its claim code; what it sends is the room's.
    let mut door = nginx
        .device_socket("127.0.0.1", None)
        .await
        .expect("the /device upgrade through nginx");
    send_line(&mut door, &format!("claim {code}")).await;
    let answer = common::ws_next_text(&mut door).await;
    let key = answer
        .strip_prefix("key ")
        .unwrap_or_else(|| panic!("not a key: {answer}"))
        .to_string();
    send_line(&mut door, "status 1").await;
    send_line(&mut door, "temperature 0 21.5").await;
    let data = nginx
        .wait_for_data(&https, "door's status and sample", |d| {
            d["status"]["value"] == "open" && d["tempint"]["value"] == 21.5
        })
        .await;
    assert_eq!(data["status"]["device"], "door", "{data}");
    assert_eq!(data["tempint"]["device"], "door", "{data}");
    assert_eq!(data["tempint"]["sensor"], 0, "{data}");

    // A member closes the room from the web; the device hears it at once.
    let alice = nginx.log_in(&https, "alice", "correct horse").await;
    let r = nginx
        .submit(&https, &alice, "/admin", &[("status", "closed")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(common::ws_next_text(&mut door).await, "status 0");

    // Its key on the upgrade, from another address: bitsd checks one key
    // a second per address, the address nginx saw and passed on.
    let mut again = nginx
        .device_socket("127.0.0.2", Some(&key))
        .await
        .expect("the key is accepted through nginx");
    send_line(&mut again, "status 1").await;
    nginx
        .wait_for_data(&https, "the status from the reconnected door", |d| {
            d["status"]["value"] == "open" && d["status"]["device"] == "door"
        })
        .await;
    let wrong = nginx
        .device_socket("127.0.0.3", Some("not-the-key"))
        .await
        .map(|_| "accepted");
    assert_eq!(wrong.err(), Some(401), "a wrong key through nginx");
}
