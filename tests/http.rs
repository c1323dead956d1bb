//! The read endpoints and pages over real HTTP.

mod common;

use common::{TestServer, assert_contains, header_text};
use reqwest::header;

#[tokio::test]
async fn empty_state() {
    let server = TestServer::start().await;
    let response = server.get("/status").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.unwrap(), "0");
    assert_eq!(
        server.json("/data").await,
        serde_json::json!({"version": 3})
    );
}

#[tokio::test]
async fn jsonver_is_reported() {
    let server = TestServer::start_with(&["--jsonver", "4"]).await;
    assert_eq!(server.json("/data").await["version"], 4);
}

#[tokio::test]
async fn widget_headers_etag_and_304() {
    let server = TestServer::start().await;
    for path in ["/status", "/data"] {
        let response = server.get(path).await;
        let h = response.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{path}");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache", "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        let etag = h[header::ETAG].to_str().unwrap().to_string();
        let again = server
            .get_with(path, &[(header::IF_NONE_MATCH, &etag)])
            .await;
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()[header::ETAG], etag.as_str());
        assert_eq!(again.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");

        let mut device = server.device().await;
        let value = if path == "/status" { 19.5 } else { 18.5 };
        device.send(&format!("temperature 0 {value}")).await;
        device
            .send(if path == "/status" {
                "status 1"
            } else {
                "status 0"
            })
            .await;
        drop(device);
        server
            .wait_for_data("the sample", |d| d["tempint"]["value"] == value)
            .await;
        if path == "/status" {
            server.wait_for_status("1").await;
        }
        let changed = server
            .get_with(path, &[(header::IF_NONE_MATCH, &etag)])
            .await;
        assert_eq!(changed.status(), 200, "{path} changed");
        assert_ne!(changed.headers()[header::ETAG], etag.as_str());
    }
}

#[tokio::test]
async fn log_pages_and_bad_parameters() {
    let (server, mut device) = TestServer::start_with_device().await;
    for i in 0..45 {
        device.send(&format!("status {}", (i + 1) % 2)).await;
    }
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while server.json("/log?format=json&limit=1000").await["log"]
        .as_array()
        .unwrap()
        .len()
        < 45
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let all = server.json("/log?format=json&limit=5000").await;
    let all = all["log"].as_array().unwrap();
    assert_eq!(all.len(), 45);
    assert_eq!(all[0]["value"], "open", "newest first");
    assert_eq!(all[1]["value"], "closed");
    assert_eq!(all[44]["value"], "open");
    let page = server.json("/log?format=json&offset=20&limit=20").await;
    assert_eq!(page["log"].as_array().unwrap().as_slice(), &all[20..40]);
    let last = server.json("/log?format=json&offset=40").await;
    assert_eq!(last["log"].as_array().unwrap().len(), 5);

    let html = server.text("/log").await;
    assert_eq!(html.matches("<tr class=").count(), 20);
    assert_contains(&html, &["href=\"/log?offset=20&#38;limit=20\""]);
    assert!(!html.contains("rel=\"prev\""), "no newer page on the first");
    let middle = server.text("/log?offset=20").await;
    assert_contains(
        &middle,
        &[
            "rel=\"prev\" href=\"/log?offset=0&#38;limit=20\"",
            "rel=\"next\" href=\"/log?offset=40&#38;limit=20\"",
        ],
    );
    let end = server.text("/log?offset=40").await;
    assert!(!end.contains("rel=\"next\""), "no older page on the last");

    for (query, word) in [
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
        ("limit=2.5", "limit"),
        ("limit=-3", "limit"),
        ("format=xml", "format"),
    ] {
        let response = server.get(&format!("/log?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        let body = response.text().await.unwrap();
        assert!(body.contains(word), "{query}: {body}");
    }
}

#[tokio::test]
async fn device_clock_and_health() {
    let server = TestServer::start().await;
    let now = server.text("/data.php").await;
    let parsed = chrono::NaiveDateTime::parse_from_str(&now, "%Y-%m-%d %H:%M:%S");
    assert!(parsed.is_ok(), "{now}");
    let expected = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .naive_local();
    let skew = (expected - parsed.unwrap()).num_seconds().abs();
    assert!(skew < 60, "{now} is local time in the configured zone");
    assert_eq!(server.text("/healthz").await, "ok\n");
}

/// The page at `path`, which must be served with a content security policy
/// that has `directive`.
async fn page_under_policy(server: &TestServer, path: &str, directive: &str) -> String {
    let response = server.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    let policy = header_text(&response, header::CONTENT_SECURITY_POLICY);
    assert!(policy.contains(directive), "{path}: {policy}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn wiki_pages_render_and_unknown_paths_get_404() {
    let server = TestServer::start().await;
    let html = page_under_policy(&server, "/info", "script-src 'self'").await;
    // The heading, a markdown table and fenced code.
    assert_contains(
        &html,
        &[
            "<h1>About BITS</h1>",
            "<table>",
            "<code class=\"language-text\">",
        ],
    );

    for path in ["/no-such-page", "/info/deeper", "/static/missing.css"] {
        let response = server.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains("Not found"), "{path}: {body}");
    }
}

#[tokio::test]
async fn raw_html_in_pages_is_escaped_unless_mdescape_is_off() {
    for (flag, escaped) in [("--mdescape=true", true), ("--mdescape=false", false)] {
        let dir = tempfile::tempdir().unwrap();
        let rules = "# Rules\n\n<b onclick=\"x()\">bold</b> <script>alert(1)</script>\n";
        let wiki = common::folder_with(dir.path(), "wiki", &[("rules.md", rules)]);
        let db = dir.path().join("bitsd.db");
        let wiki_arg = wiki.display().to_string();
        let server = TestServer::start_in(dir, db, &[flag, "--wiki-path", &wiki_arg]).await;
        let html = server.text("/rules").await;
        assert_eq!(
            !html.contains("<script>alert(1)</script>"),
            escaped,
            "{flag}: {html}"
        );
        assert_eq!(html.contains("&lt;script&gt;"), escaped, "{flag}: {html}");
    }
}

#[tokio::test]
async fn static_files_and_traversal() {
    let server = TestServer::start().await;
    let response = server.get("/static/style.css").await;
    assert_eq!(response.status(), 200);
    let kind = header_text(&response, header::CONTENT_TYPE);
    assert!(kind.starts_with("text/css"), "{kind}");
    let cache = header_text(&response, header::CACHE_CONTROL);
    assert!(cache.contains("max-age="), "{cache}");
    assert_eq!(
        response.headers()[header::X_CONTENT_TYPE_OPTIONS],
        "nosniff"
    );
    assert_eq!(
        server.get("/static/open.svg").await.headers()[header::CONTENT_TYPE],
        "image/svg+xml"
    );

    // Raw paths, so no client normalises the dots away.
    let addr = server.web_addr();
    for path in [
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/static/%2E%2E%2FCargo.toml",
        "/static/..%2fCargo.toml",
        "/static/..%5cCargo.toml",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/./../../etc/passwd",
    ] {
        let (status, body) = raw_get(addr, path).await;
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(
            !body.contains("[package]") && !body.contains("root:"),
            "{path} leaked a file"
        );
    }
}

/// A GET with the path sent exactly as given.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn large_responses_are_compressed() {
    let (server, mut device) = TestServer::start_with_device().await;
    for i in 0..100 {
        device
            .send(&format!("temperature {} 2{}.25", i % 3, i % 10))
            .await;
    }
    server
        .wait_for_data("100 samples", |d| {
            d["tempinthist"].as_array().is_some_and(|h| h.len() == 100)
        })
        .await;
    for encoding in ["gzip", "br"] {
        for path in ["/data", "/static/style.css", "/info"] {
            let response = server
                .get_with(path, &[(header::ACCEPT_ENCODING, encoding)])
                .await;
            assert_eq!(
                response.headers()[header::CONTENT_ENCODING],
                encoding,
                "{path}"
            );
        }
    }
    let small = server
        .get_with("/status", &[(header::ACCEPT_ENCODING, "gzip")])
        .await;
    assert!(
        small.headers().get(header::CONTENT_ENCODING).is_none(),
        "one byte is not worth compressing"
    );
}

#[tokio::test]
async fn homepage_shows_the_current_state() {
    let server = TestServer::start().await;
    let html = server.text("/").await;
    assert_contains(&html, &["No status known yet", "unknown.svg"]);
    let mut device = server.device().await;
    device.send_all(&["status 1", "temperature 2 22.25"]).await;
    device.send_message("back at 9").await;
    server
        .wait_for_data("the message", |d| d["message"].is_object())
        .await;
    let html = page_under_policy(&server, "/", "default-src 'self'").await;
    assert_contains(
        &html,
        &[
            "The room is open",
            "<title>BITS · open</title>",
            "open.svg",
            "Sensor 2",
            "back at 9",
            "href=\"/log\"",
        ],
    );
    assert!(
        html.contains("22.2 °C") || html.contains("22.3 °C"),
        "{html}"
    );
    let blind = server.text("/blind").await;
    assert!(blind.contains("<body class=\"blind\">"), "{blind}");
}

#[tokio::test]
async fn web_on_a_unix_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("web.sock");
    let db = dir.path().join("bitsd.db");
    let _server = TestServer::start_in(dir, db, &["--web-usocket", socket.to_str().unwrap()]).await;
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\n0"), "{response}");
}

#[tokio::test]
async fn shutdown_finishes_pending_writes() {
    let (server, mut device) = TestServer::start_with_device().await;
    for i in 0..500 {
        device.send(&format!("temperature 0 {}.0", i % 100)).await;
    }
    server.status_from(&mut device, "1").await;
    let db = server.db.clone();
    let dir = server.stop().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = common::sqlite::value(&conn, "SELECT COUNT(*) FROM Temperature");
    assert_eq!(n, 500);
    drop(dir);
}

/// Every answer, the fast snapshot ones and the errors included, carries the
/// same security headers and says how it may be cached.
#[tokio::test]
async fn every_route_carries_the_security_and_caching_headers() {
    let server = TestServer::start().await;
    let get = [
        "/status",
        "/data",
        "/data.php",
        "/healthz",
        "/metrics",
        "/presence",
        "/presence.svg?blind=1",
        "/spaceapi.json",
        "/",
        "/blind",
        "/log",
        "/log?format=json",
        "/log?offset=-1",
        "/info",
        "/no-such-page",
        "/login",
        "/admin",
        "/message",
        "/ws",
        "/events",
        "/static/style.css",
        "/static/no-such-file.css",
    ];
    let mut requests: Vec<_> = get
        .iter()
        .map(|path| server.http.get(server.url(path)))
        .collect();
    requests.push(server.http.head(server.url("/status")));
    requests.push(server.http.head(server.url("/data")));
    requests.push(server.http.post(server.url("/status")));
    requests.push(server.http.post(server.url("/macupdate")).body("x"));
    requests.push(
        server
            .http
            .post(server.url("/login"))
            .form(&[("username", "nobody"), ("password", "wrong")]),
    );
    requests.push(server.http.post(server.url("/logout")));
    let mut statuses = std::collections::BTreeSet::new();
    for request in requests {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url().path());
        let response = server.http.execute(request).await.unwrap();
        statuses.insert(response.status().as_u16());
        let h = response.headers();
        if response.status() == 405 {
            assert!(h[header::ALLOW].to_str().unwrap().contains("GET"), "{what}");
        }
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        let cache = h.get(header::CACHE_CONTROL).map(|v| v.to_str().unwrap());
        let expected = match what.as_str() {
            "GET /static/style.css" => "public, max-age=604800",
            // Members' pages, even the way to them, stay out of shared caches.
            "GET /admin" | "GET /message" => "private, no-cache",
            _ => "no-cache",
        };
        assert_eq!(cache, Some(expected), "{what}: {}", response.status());
        let html = h
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.to_str().unwrap().starts_with("text/html"));
        if html && !what.contains("/static/") {
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
            assert_eq!(h[header::REFERRER_POLICY], "same-origin", "{what}");
        }
    }
    // Successes and errors of several kinds were all seen.
    for status in [200, 400, 404, 405] {
        assert!(statuses.contains(&status), "{status} in {statuses:?}");
    }
    // And each was counted under its route.
    let metrics = server.text("/metrics").await;
    for route in ["/status", "/data", "/static", "/{slug}", "/log", "/login"] {
        assert!(metrics.contains(&format!("route=\"{route}\"")), "{route}");
    }
}
