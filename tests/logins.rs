//! Logins from known browsers: the cookie a right password leaves behind,
//! and the lane of password checks it opens past strangers who keep the
//! checkers busy. Client sockets bound to different 127.x.y.z addresses let
//! one test be many clients.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::member::{add_user, usermanage};
use common::{PATIENCE, TestServer, tcp_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An `_xsrf` cookie and field that match: anybody can send such a pair.
const XSRF: &str = "abcdefghijklmnopqrstuvwx";
/// The known-browser cookie.
const KNOWN: &str = "bitsd_known";
/// Logins checked in the known browsers' lane.
const KNOWN_CHECKS: &str = "bitsd_password_checks_known_browser_total";

/// What the server answered to one request.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The `Set-Cookie` header values.
    set_cookies: Vec<String>,
    body: String,
}

impl Answer {
    /// The value of cookie `name` set by the answer.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies.iter().find_map(|c| {
            let (k, v) = c.split(';').next()?.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }

    /// The whole `Set-Cookie` header of cookie `name`.
    fn set_cookie(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}=");
        self.set_cookies
            .iter()
            .find(|c| c.starts_with(&prefix))
            .map(String::as_str)
    }

    /// A 429 because every checker was busy and the queue full.
    fn busy(&self) -> bool {
        self.status == 429 && self.body.contains("Too many logins at once")
    }
}

/// Sends `request` on a new connection from `from`; the parsed answer.
async fn send_from(from: &str, server: &TestServer, request: String) -> Answer {
    let mut stream = tcp_from(from, server.web_addr()).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let set_cookies = head
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().to_string())
        })
        .collect();
    Answer {
        status,
        set_cookies,
        body: body.to_string(),
    }
}

/// A login attempt from the local address `from`, with the cookie header
/// `cookies` besides `_xsrf` (may be empty) and extra header lines.
async fn login_from(
    from: &str,
    server: &TestServer,
    (name, password): (&str, &str),
    cookies: &str,
    headers: &str,
) -> Answer {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("username", name)
        .append_pair("password", password)
        .append_pair("_xsrf", XSRF)
        .finish();
    let cookies = if cookies.is_empty() {
        format!("_xsrf={XSRF}")
    } else {
        format!("_xsrf={XSRF}; {cookies}")
    };
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Cookie: {cookies}\r\n{headers}\r\n{body}",
        body.len()
    );
    send_from(from, server, request).await
}

/// The `i`-th address of a flood, never 127.0.x.y.
fn flood_address(i: usize) -> String {
    format!(
        "127.{}.{}.{}",
        1 + i / 62_500 % 100,
        i / 250 % 250,
        i % 250 + 1
    )
}

#[tokio::test]
async fn a_known_browser_logs_in_while_strangers_keep_the_checkers_busy() {
    let server = Arc::new(TestServer::start().await);
    add_user(&server, "alice", "right");
    add_user(&server, "bob", "right");
    // Alice logs in before the flood: her browser is known from now on.
    let first = login_from("127.0.0.2", &server, ("alice", "right"), "", "").await;
    assert_eq!(first.status, 303, "{first:?}");
    let mut known = first.cookie(KNOWN).expect("a known-browser cookie");

    // 64 strangers, each attempt from a new address (so no per-address
    // throttle holds them back), as fast as they are answered.
    let stop = Arc::new(AtomicBool::new(false));
    let (next, busy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flood: Vec<_> = (0..64)
        .map(|_| {
            let (server, stop, next, busy) =
                (server.clone(), stop.clone(), next.clone(), busy.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let from = flood_address(next.fetch_add(1, Ordering::Relaxed));
                    let answer = login_from(&from, &server, ("alice", "wrong"), "", "").await;
                    match answer.status {
                        401 => {}
                        429 if answer.busy() => {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => panic!("a stranger got {answer:?}"),
                    }
                }
            })
        })
        .collect();
    // Until strangers are refused for want of room: the queue is full.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while busy.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood never filled the queue"
        );
        tokio::task::yield_now().await;
    }
    let busy_before = busy.load(Ordering::Relaxed);

    // Alice logs in again and again, each time from another address (her
    // phone moving between networks): the cookie names the browser.
    let mut alice = Vec::new();
    for i in 0..8 {
        let from = format!("127.0.9.{}", i + 1);
        let cookies = format!("{KNOWN}={known}");
        let answer = login_from(&from, &server, ("alice", "right"), &cookies, "").await;
        if let Some(renewed) = answer.cookie(KNOWN) {
            known = renewed;
        }
        alice.push(if answer.busy() { 0 } else { answer.status });
    }
    // Bob's browser is not known: he waits with the strangers.
    let mut bob = Vec::new();
    for i in 0..4 {
        let from = format!("127.0.10.{}", i + 1);
        let answer = login_from(&from, &server, ("bob", "right"), "", "").await;
        assert!([303, 429].contains(&answer.status), "{answer:?}");
        bob.push(if answer.busy() { 0 } else { answer.status });
    }
    let busy_during = busy.load(Ordering::Relaxed) - busy_before;
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    println!(
        "alice (known browser): {alice:?}; bob (not known): {bob:?} (0 = 429, too many at once); \
         strangers refused as busy meanwhile: {busy_during}"
    );
    assert!(busy_during > 0, "the strangers' queue was full throughout");
    assert_eq!(alice, [303; 8], "every login of a known browser gets in");
    assert!(server.metric(KNOWN_CHECKS).await >= 8.0);
}

#[tokio::test]
async fn a_right_password_leaves_a_known_browser_cookie_that_logout_keeps() {
    let server = TestServer::start().await;
    add_user(&server, "alice", "right");
    let wrong = login_from("127.0.0.2", &server, ("alice", "wrong"), "", "").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.cookie(KNOWN), None, "a wrong password earns nothing");

    let answer = login_from("127.0.0.3", &server, ("alice", "right"), "", "").await;
    assert_eq!(answer.status, 303);
    let set = answer.set_cookie(KNOWN).expect("a known-browser cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=31536000"] {
        assert!(set.contains(attribute), "{attribute}: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let known = answer.cookie(KNOWN).unwrap();
    let session = answer.cookie("usertoken").unwrap();
    assert!(!known.contains("right"), "nothing secret: {known}");

    // Logging out ends the session and clears its cookie, not this one.
    let request = format!(
        "GET /logout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Cookie: usertoken={session}; {KNOWN}={known}\r\n\r\n"
    );
    let out = send_from("127.0.0.4", &server, request).await;
    assert_eq!(out.status, 303);
    assert!(out.set_cookie("usertoken").unwrap().contains("Max-Age=0"));
    assert_eq!(out.set_cookie(KNOWN), None, "{:?}", out.set_cookies);
    // And still gives priority.
    let cookies = format!("{KNOWN}={known}");
    let again = login_from("127.0.0.5", &server, ("alice", "right"), &cookies, "").await;
    assert_eq!(again.status, 303);
    assert_eq!(server.metric(KNOWN_CHECKS).await, 1.0);
    let renewed = again.cookie(KNOWN).expect("a new known-browser cookie");
    assert_ne!(renewed, known, "each login signs a new one");
}

#[tokio::test]
async fn the_known_browser_cookie_is_secure_over_https() {
    let server = TestServer::start_with(&["--reverse-proxied=true"]).await;
    add_user(&server, "alice", "right");
    let proxied = "X-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.7\r\n";
    let answer = login_from("127.0.0.2", &server, ("alice", "right"), "", proxied).await;
    assert_eq!(answer.status, 303, "{answer:?}");
    let set = answer.set_cookie(KNOWN).expect("a known-browser cookie");
    assert!(set.contains("Secure"), "{set}");
}

#[tokio::test]
async fn only_a_cookie_signed_for_that_very_user_gives_priority() {
    let server = TestServer::start().await;
    add_user(&server, "alice", "right");
    add_user(&server, "bob", "right too");
    let first = login_from("127.0.0.2", &server, ("alice", "right"), "", "").await;
    assert_eq!(first.status, 303);
    let known = first.cookie(KNOWN).unwrap();
    assert_eq!(server.metric(KNOWN_CHECKS).await, 0.0, "not known yet");

    // Another bitsd (another key) signs a cookie for the same name.
    let other = TestServer::start().await;
    add_user(&other, "alice", "right");
    let foreign = login_from("127.0.0.3", &other, ("alice", "right"), "", "")
        .await
        .cookie(KNOWN)
        .unwrap();
    // The signature is the first 44 characters; the payload follows.
    let mut tampered_payload = known.clone();
    let last = tampered_payload.pop().unwrap();
    tampered_payload.push(if last == 'A' { 'B' } else { 'A' });
    let mut tampered_signature = known.clone();
    let first_char = if known.starts_with('A') { "B" } else { "A" };
    tampered_signature.replace_range(..1, first_char);
    let unsigned = known[44..].to_string();

    let refused = [
        ("bob", "right too", known.clone(), "alice's cookie for bob"),
        ("alice", "right", tampered_payload, "a changed payload"),
        ("alice", "right", tampered_signature, "a changed signature"),
        ("alice", "right", unsigned, "no signature"),
        ("alice", "right", foreign, "another server's key"),
    ];
    for (i, (name, password, cookie, what)) in refused.into_iter().enumerate() {
        let from = format!("127.0.1.{}", i + 1);
        let cookies = format!("{KNOWN}={cookie}");
        let answer = login_from(&from, &server, (name, password), &cookies, "").await;
        assert_eq!(answer.status, 303, "{what}: checked as a stranger's");
        assert_eq!(server.metric(KNOWN_CHECKS).await, 0.0, "{what}");
    }
    // The real one, for the name it was made for.
    let cookies = format!("{KNOWN}={known}");
    let answer = login_from("127.0.2.1", &server, ("alice", "right"), &cookies, "").await;
    assert_eq!(answer.status, 303);
    assert_eq!(server.metric(KNOWN_CHECKS).await, 1.0);
}

#[tokio::test]
async fn wrong_passwords_use_up_a_known_browser_s_priority() {
    let server = TestServer::start().await;
    add_user(&server, "alice", "right");
    let first = login_from("127.0.0.2", &server, ("alice", "right"), "", "").await;
    let cookies = format!("{KNOWN}={}", first.cookie(KNOWN).unwrap());
    for i in 1..=5 {
        let from = format!("127.0.1.{i}");
        let answer = login_from(&from, &server, ("alice", "wrong"), &cookies, "").await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.cookie(KNOWN), None);
        assert_eq!(server.metric(KNOWN_CHECKS).await, f64::from(i));
    }
    // The sixth wrong password, and even a right one, wait with strangers.
    let answer = login_from("127.0.1.6", &server, ("alice", "wrong"), &cookies, "").await;
    assert_eq!(answer.status, 401);
    let answer = login_from("127.0.1.7", &server, ("alice", "right"), &cookies, "").await;
    assert_eq!(answer.status, 303);
    assert_eq!(server.metric(KNOWN_CHECKS).await, 5.0);
    // The right password signed a new cookie, which has its priority whole.
    let cookies = format!("{KNOWN}={}", answer.cookie(KNOWN).unwrap());
    let answer = login_from("127.0.1.8", &server, ("alice", "right"), &cookies, "").await;
    assert_eq!(answer.status, 303);
    assert_eq!(server.metric(KNOWN_CHECKS).await, 6.0);
}

#[tokio::test]
async fn a_deleted_user_s_known_browser_cookies_are_worthless() {
    let server = TestServer::start().await;
    add_user(&server, "alice", "right");
    add_user(&server, "bob", "right");
    let first = login_from("127.0.0.2", &server, ("alice", "right"), "", "").await;
    let cookies = format!("{KNOWN}={}", first.cookie(KNOWN).unwrap());
    let out = usermanage(&server, &["delete", "alice"], None);
    assert!(out.status.success(), "{out:?}");
    let answer = login_from("127.0.0.3", &server, ("alice", "right"), &cookies, "").await;
    assert_eq!(answer.status, 401);
    assert_eq!(server.metric(KNOWN_CHECKS).await, 0.0, "the user is gone");
    // A new alice is another user: the old browser is not hers.
    add_user(&server, "alice", "new");
    let answer = login_from("127.0.0.4", &server, ("alice", "new"), &cookies, "").await;
    assert_eq!(answer.status, 303);
    assert_eq!(server.metric(KNOWN_CHECKS).await, 0.0, "another user");
}
