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
use common::{PATIENCE, TestServer};
use reqwest::{StatusCode, Version, header};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

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

/// `deploy/nginx.conf` with the deployed ports, certificate and challenge
/// folder replaced; any other line stays as it is. Panics when a line the
/// test must replace is missing, so the test never runs on port 443.
fn site_for_test(text: &str, with: &Substitutes) -> String {
    let (mut listens, mut upstreams, mut certificates, mut roots) = (0, 0, 0, 0);
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

    /// A websocket to `/ws` over TLS, on an HTTP/1.1 connection as browsers
    /// open one for websockets.
    async fn websocket(
        &self,
    ) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>
    {
        let mut roots = RootCertStore::empty();
        roots.add(self.certificate.clone()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.https_port))
            .await
            .unwrap();
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("a TLS connection to nginx");
        let url = format!("wss://127.0.0.1:{}/ws", self.https_port);
        let (ws, response) = tokio_tungstenite::client_async(url, tls)
            .await
            .expect("the websocket upgrade through nginx");
        assert_eq!(response.status(), 101);
        ws
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
    assert_eq!(
        r.headers()[header::LOCATION].to_str().unwrap(),
        "https://127.0.0.1/log?offset=20"
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
