//! Members over real HTTP: login, admin, messages, MAC updates, usermanage.

mod common;

use common::TestServer;
use common::member::{Session, add_user, location, logged_in_member, usermanage};
use reqwest::header;

#[tokio::test]
async fn login_admin_toggle_and_message_reach_the_device() {
    let server = TestServer::start().await;
    add_user(&server, "alice", "correct horse");
    let mut device = server.device().await;
    server.status_from(&mut device, "0").await;

    let mut s = Session::new(&server);
    let r = s.get("/admin").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login?next=/admin");

    let r = s.login("alice", "correct horse", "/admin").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/admin");
    let set = r
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        set.contains("usertoken=") && set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(set.contains("Max-Age=86400"), "{set}");
    assert!(!set.contains("Secure"), "plain HTTP: {set}");

    let page = s.get("/admin").await.text().await.unwrap();
    assert!(
        page.contains("alice") && page.contains("Open the room"),
        "{page}"
    );
    let r = s.submit("/admin", &[("status", "open")]).await;
    assert_eq!(r.status(), 303);
    server.wait_for_status("1").await;
    assert_eq!(device.recv().await, "status 1");
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"][0]["modifiedby"], "web");

    let r = s.submit("/message", &[("msgtext", "pizza at 8 <b>")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        device.recv().await,
        format!("message {}", common::b64("pizza at 8 <b>"))
    );
    let data = server.json("/data").await;
    assert_eq!(data["message"]["user"], "alice");
    assert_eq!(data["message"]["value"], "pizza at 8 &lt;b&gt;");

    let r = s.get("/logout").await;
    assert_eq!(r.status(), 303);
    assert_eq!(s.cookie("usertoken"), None);
    assert_eq!(s.get("/admin").await.status(), 303);
}

#[tokio::test]
async fn forged_and_tampered_requests_change_nothing() {
    let server = TestServer::start().await;
    add_user(&server, "bob", "pw-bob");
    let mut s = Session::new(&server);
    // No token at all, or a token that is not the cookie's.
    let r = server
        .post_form("/login", &[("username", "bob"), ("password", "pw-bob")])
        .await;
    assert_eq!(r.status(), 403);
    s.get("/login").await;
    let r = s
        .post(
            "/login",
            &[
                ("username", "bob"),
                ("password", "pw-bob"),
                ("_xsrf", "guess"),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);

    assert_eq!(s.login("bob", "pw-bob", "/admin").await.status(), 303);
    let r = s.post("/admin", &[("status", "open")]).await;
    assert_eq!(r.status(), 403);
    let r = s
        .post("/message", &[("msgtext", "forged"), ("_xsrf", "nope")])
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(server.text("/status").await, "0");
    assert!(server.json("/data").await.get("message").is_none());

    // A tampered or made-up login cookie is no login.
    let token = s.cookie("usertoken").unwrap();
    for forged in [
        format!("{}x", token),
        "1:99999999999".to_string(),
        "garbage%%".to_string(),
        String::new(),
    ] {
        let r = server
            .get_with(
                "/admin",
                &[(header::COOKIE, &format!("usertoken={forged}"))],
            )
            .await;
        assert_eq!(r.status(), 303, "{forged}");
    }
    let r = server
        .get_with("/admin", &[(header::COOKIE, "usertoken")])
        .await;
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn next_never_leaves_the_site() {
    let server = TestServer::start().await;
    add_user(&server, "dave", "pw");
    for (next, expected) in [
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/message", "/message"),
    ] {
        let mut s = Session::new(&server);
        let r = s.login("dave", "pw", next).await;
        assert_eq!(r.status(), 303, "{next}");
        assert_eq!(location(&r), expected, "{next}");
    }
}

#[tokio::test]
async fn wrong_passwords_get_401_then_429() {
    let server = TestServer::start().await;
    add_user(&server, "erin", "right");
    let mut s = Session::new(&server);
    let r = s.login("erin", "wrong", "/").await;
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong user name or password")
    );
    // At once again: refused without checking, even with the right password.
    let r = s.login("erin", "right", "/").await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("Too many attempts"));
    // An unknown user counts the same way (from another client, which the
    // first one's limit does not hold back).
    let mut other = Session::from_address(&server, "127.0.0.2");
    let r = other.login("nobody", "x", "/").await;
    assert_eq!(r.status(), 401);
    // Past the address's one failure a second, the name's own limit
    // (min_login_retry, 5 s) still holds it back.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = other.login("nobody", "x", "/").await;
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn a_legacy_hash_logs_in_and_becomes_argon2id() {
    let server = TestServer::start().await;
    // What the Python server stored: sha512_crypt.
    let legacy = {
        use sha_crypt::PasswordHasher as _;
        let params = sha_crypt::Params::new(5000).unwrap();
        sha_crypt::ShaCrypt::from(params)
            .hash_password_with_salt(b"old pw", b"saltsalt")
            .unwrap()
            .to_string()
    };
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    conn.execute(
        r#"INSERT INTO "User" (name, password) VALUES ('frank', ?1)"#,
        [&legacy],
    )
    .unwrap();
    let mut s = Session::new(&server);
    let r = s.login("frank", "old pw", "/admin").await;
    assert_eq!(r.status(), 303);
    let stored: String = conn
        .query_row(
            r#"SELECT password FROM "User" WHERE name = 'frank'"#,
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    let mut again = Session::new(&server);
    assert_eq!(again.login("frank", "old pw", "/admin").await.status(), 303);
}

#[tokio::test]
async fn messages_are_checked_and_keep_the_text() {
    let server = TestServer::start().await;
    let mut s = logged_in_member(&server, "gina", "/message").await;
    let r = s.submit("/message", &[("msgtext", "   ")]).await;
    assert_eq!(r.status(), 400);
    let long = "é".repeat(1001);
    let r = s.submit("/message", &[("msgtext", &long)]).await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains(&long), "the form keeps the text");
    let ok = "ü".repeat(1000);
    assert_eq!(
        s.submit("/message", &[("msgtext", &ok)]).await.status(),
        303
    );
}

#[tokio::test]
async fn a_member_posts_five_messages_in_ten_seconds_then_waits() {
    let server = TestServer::start().await;
    let mut s = logged_in_member(&server, "hana", "/message").await;
    let long = "ü".repeat(1000);
    for n in 0..5 {
        let r = s.submit("/message", &[("msgtext", &long)]).await;
        assert_eq!(r.status(), 303, "message {n}");
    }
    let r = s.submit("/message", &[("msgtext", "sixth")]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["cache-control"], "private, no-cache");
    let body = r.text().await.unwrap();
    assert!(body.contains("Too many messages in a row"), "{body}");
    assert!(body.contains("sixth"), "the form keeps the text");
    // The refused one was not sent; the fifth is the last.
    let data = server.json("/data").await;
    assert_eq!(data["message"]["value"], long.as_str());
    // Another member is not held back.
    let mut other = logged_in_member(&server, "ivo", "/message").await;
    let r = other.submit("/message", &[("msgtext", "hi")]).await;
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn pages_that_name_members_are_private() {
    let server = TestServer::start().await;
    let mut s = logged_in_member(&server, "juno", "/admin").await;
    for path in ["/admin", "/message", "/"] {
        let r = s.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "private, no-cache", "{path}");
    }
    // A visitor's homepage names nobody's session: shared caches may keep
    // it, after asking again.
    let r = server.get("/").await;
    assert_eq!(r.headers()["cache-control"], "no-cache");
}

#[tokio::test]
async fn mac_updates_fill_the_roster() {
    let server = TestServer::start_with(&[
        "--mac-update-password",
        "router-token",
        "--mac-update-interval",
        "1",
    ])
    .await;
    add_user(&server, "heidi", "pw");
    add_user(&server, "ivan", "pw");
    for name in ["heidi", "ivan"] {
        let out = usermanage(&server, &["modify", name, "--visibility", "named"], None);
        assert!(out.status.success(), "{out:?}");
    }
    let out = usermanage(
        &server,
        &["mac", "add", "heidi", "--mac", "AA:BB:CC:DD:EE:01"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ivan_hash = bitsd::auth::mac_hash("aa:bb:cc:dd:ee:02").unwrap();
    assert!(
        usermanage(&server, &["mac", "add", "ivan", "--hash", &ivan_hash], None)
            .status
            .success()
    );
    let heidi_hash = bitsd::auth::mac_hash("aa:bb:cc:dd:ee:01").unwrap();

    // One update a second from each address: each case comes from its own.
    let post = |from: &str, form: Vec<(&'static str, String)>| {
        let http = common::client_from(from);
        let url = server.url("/macupdate");
        async move { http.post(url).form(&form).send().await.unwrap() }
    };
    let macs = serde_json::json!([heidi_hash, ivan_hash, "0".repeat(64)]).to_string();
    let r = post(
        "127.0.0.2",
        vec![("password", "wrong".into()), ("macs", macs.clone())],
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = post(
        "127.0.0.3",
        vec![("password", "router-token".into()), ("macs", macs.clone())],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = post(
        "127.0.0.3",
        vec![("password", "router-token".into()), ("macs", macs.clone())],
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        post("127.0.0.4", vec![("password", "router-token".into())])
            .await
            .status(),
        400
    );
    assert_eq!(
        post(
            "127.0.0.5",
            vec![
                ("password", "router-token".into()),
                ("macs", "not json".into())
            ]
        )
        .await
        .status(),
        400
    );

    let mut s = Session::new(&server);
    s.login("heidi", "pw", "/admin").await;
    let page = s.get("/admin").await.text().await.unwrap();
    assert!(
        page.contains("<li>heidi</li>") && page.contains("<li>ivan</li>"),
        "{page}"
    );

    // The keypad adds to the roster; the MAC part is replaced by the next update.
    let mut device = server.device().await;
    let gina_id = 2; // BITS is 1, heidi 2
    device.send(&format!("enter {gina_id}")).await;
    let only_ivan = serde_json::json!([ivan_hash]).to_string();
    assert_eq!(
        post(
            "127.0.0.6",
            vec![("password", "router-token".into()), ("macs", only_ivan)]
        )
        .await
        .status(),
        200
    );
    // The update is applied before it is answered; the keypad line maybe not.
    let page = s
        .wait_for("/admin", |page| page.contains("<li>heidi</li>"))
        .await;
    assert!(page.contains("<li>ivan</li>"), "{page}");
}

#[tokio::test]
async fn macupdate_is_404_without_a_password_configured() {
    let server = TestServer::start().await;
    let r = server
        .post_form("/macupdate", &[("password", "x"), ("macs", "[]")])
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn usermanage_misuse_is_one_line_and_changes_nothing() {
    let server = TestServer::start().await;
    add_user(&server, "judy", "pw");
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["add", "judy", "--password-stdin"], Some("pw2")),
        (&["add", "kim", "--password-stdin"], Some("")),
        (&["add", "with space", "--password-stdin"], Some("pw")),
        (&["delete", "nobody"], None),
        (&["delete", "BITS"], None),
        (&["modify", "nobody", "--password-stdin"], Some("pw")),
        (&["mac", "add", "judy", "--mac", "not-a-mac"], None),
        (
            &["mac", "add", "nobody", "--mac", "aa:bb:cc:dd:ee:ff"],
            None,
        ),
        (&["mac", "delete", "abc"], None),
        (&["add", "kim"], None),
        (&["modify", "judy", "--visibility", "everyone"], None),
        // Refused before the password is read.
        (
            &["modify", "judy", "--visibility", "", "--password-stdin"],
            None,
        ),
        (&["modify", "nobody", "--visibility", "named"], None),
        (
            &[
                "modify",
                "BITS",
                "--visibility",
                "named",
                "--password-stdin",
            ],
            Some("pw"),
        ),
    ];
    let before = usermanage(&server, &["list"], None).stdout;
    for (args, stdin) in cases {
        let out = usermanage(&server, args, *stdin);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
    assert_eq!(usermanage(&server, &["list"], None).stdout, before);
    let list = String::from_utf8(before).unwrap();
    assert!(list.contains("judy\tcounted\t0 MAC hash(es)"), "{list}");
    assert!(list.contains("BITS"), "{list}");

    // And the happy paths. --visibility alone asks for no password
    // (standard input is closed) and leaves it as it was.
    let mut s = Session::new(&server);
    assert_eq!(s.login("judy", "pw", "/admin").await.status(), 303);
    for visibility in ["hidden", "named", "counted", "named"] {
        let out = usermanage(
            &server,
            &["modify", "judy", "--visibility", visibility],
            None,
        );
        assert!(out.status.success(), "{out:?}");
        let list = String::from_utf8(usermanage(&server, &["list"], None).stdout).unwrap();
        assert!(list.contains(&format!("judy\t{visibility}\t")), "{list}");
    }
    assert_eq!(s.get("/admin").await.status(), 200, "still logged in");
    // With --password-stdin both change.
    let out = usermanage(
        &server,
        &[
            "modify",
            "judy",
            "--visibility",
            "hidden",
            "--password-stdin",
        ],
        Some("newer"),
    );
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8(usermanage(&server, &["list"], None).stdout).unwrap();
    assert!(list.contains("judy\thidden\t"), "{list}");
    assert_eq!(s.get("/admin").await.status(), 303, "the sessions ended");
    assert_eq!(s.login("judy", "newer", "/admin").await.status(), 303);
    assert!(
        usermanage(
            &server,
            &["modify", "judy", "--password-stdin"],
            Some("new")
        )
        .status
        .success()
    );
    let list = String::from_utf8(usermanage(&server, &["list"], None).stdout).unwrap();
    assert!(
        list.contains("judy\thidden\t"),
        "the password alone: {list}"
    );
    let mut s = Session::new(&server);
    assert_eq!(s.login("judy", "new", "/admin").await.status(), 303);
    assert!(
        usermanage(&server, &["delete", "judy"], None)
            .status
            .success()
    );
    assert_eq!(
        s.get("/admin").await.status(),
        303,
        "a deleted user is logged out"
    );
}

#[tokio::test]
async fn logins_survive_a_restart_with_the_generated_secret() {
    let server = TestServer::start().await;
    let s = logged_in_member(&server, "kate", "/admin").await;
    let cookie = s.cookie_header();
    let db = server.db.clone();
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, db, &[]).await;
    let r = server
        .get_with("/admin", &[(header::COOKIE, &cookie)])
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn cookies_are_secure_behind_an_https_proxy_only_when_proxied() {
    for (proxied, secure) in [(true, true), (false, false)] {
        let flag = format!("--reverse-proxied={proxied}");
        let server = TestServer::start_with(&[&flag]).await;
        let r = server
            .get_with("/login", &[(common::X_FORWARDED_PROTO, "https")])
            .await;
        let set = common::header_text(&r, header::SET_COOKIE);
        assert_eq!(set.contains("Secure"), secure, "proxied={proxied}: {set}");
    }
}

/// Sends `request` (a full HTTP/1.1 request) on a new connection; returns the
/// status code and the whole response.
async fn raw(server: &TestServer, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.web_addr())
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("a response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (status, text)
}

#[tokio::test]
async fn malformed_cookies_and_xsrf_tokens_are_refused_cleanly() {
    let server = TestServer::start().await;
    add_user(&server, "erin", "pw");
    let get = |path: &str, cookie: &[u8]| {
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: ").into_bytes();
        request.extend_from_slice(cookie);
        request.extend_from_slice(b"\r\n\r\n");
        request
    };

    // An `_xsrf` cookie that is not one of ours is replaced, never echoed.
    for cookie in [
        &b"_xsrf=\"><script>alert(1)</script>"[..],
        b"_xsrf=short",
        &[b"_xsrf=".as_slice(), "a".repeat(129).as_bytes()].concat(),
        b"_xsrf=\xff\xfe\x80",
    ] {
        let (status, response) = raw(&server, &get("/login", cookie)).await;
        assert_eq!(status, 200, "{response}");
        assert!(!response.contains("<script>alert"), "{response}");
        let fresh = response
            .split("set-cookie: _xsrf=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .unwrap_or_else(|| panic!("a new _xsrf cookie: {response}"));
        assert!(response.contains(&format!("value=\"{fresh}\"")));
    }

    // A malformed cookie that matches the form field is still refused.
    let r = server
        .http
        .post(server.url("/login"))
        .header(header::COOKIE, "_xsrf=not-a-token!")
        .form(&[
            ("username", "erin"),
            ("password", "pw"),
            ("_xsrf", "not-a-token!"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Broken cookie headers are no login, and no error.
    for cookie in [
        &b"usertoken=\xff\xfe"[..],
        b";;;;==;usertoken==;=",
        b"usertoken=1|2|3; usertoken=4",
        b"usertoken=\"unterminated",
        &[b"x=", "y; ".repeat(4000).as_bytes()].concat(),
    ] {
        let (status, response) = raw(&server, &get("/admin", cookie)).await;
        assert_eq!(
            status,
            303,
            "{}: {response}",
            String::from_utf8_lossy(cookie)
        );
    }
    // A login cookie signed by another server's key.
    let other = bitsd::auth::Signer::new("another server");
    let forged = other.sign(&bitsd::auth::session_token());
    let (status, _) = raw(
        &server,
        &get("/admin", format!("usertoken={forged}").as_bytes()),
    )
    .await;
    assert_eq!(status, 303);
    // A cookie header past the 16 KiB head limit.
    let huge = [b"x=".as_slice(), "y".repeat(20 * 1024).as_bytes()].concat();
    let (status, _) = raw(&server, &get("/admin", &huge)).await;
    assert_eq!(status, 431);

    // Forms that do not parse get a 400 that says so, logged in or not.
    let mut s = Session::new(&server);
    assert_eq!(s.login("erin", "pw", "/admin").await.status(), 303);
    let xsrf = s.cookie("_xsrf").unwrap();
    for body in [
        format!("_xsrf={xsrf}&status=%ZZ"),
        format!("_xsrf={xsrf}&_xsrf={xsrf}&status=open"),
        format!("_xsrf={xsrf}&status=%FF%FE"),
    ] {
        let r = server
            .http
            .post(server.url("/admin"))
            .header(header::COOKIE, s.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.starts_with("400 Bad Request: "), "{text}");
    }
    assert_eq!(server.text("/status").await, "0");
    assert_eq!(server.text("/healthz").await, "ok\n");
}

#[tokio::test]
async fn names_in_the_roster_and_the_admin_page_are_escaped() {
    let server = TestServer::start_with(&["--mac-update-password", "router-token"]).await;
    let by_keypad = "<img/src=x/onerror=alert(1)>";
    let by_mac = "\"><svg/onload=alert(2)>";
    // usermanage refuses such names now; an older database may hold them.
    let db = rusqlite::Connection::open(&server.db).unwrap();
    for name in [by_keypad, by_mac] {
        db.execute(
            r#"INSERT INTO "User" (name, password) VALUES (?1, ?2)"#,
            [name, &bitsd::auth::hash_password("pw")],
        )
        .unwrap();
    }
    drop(db);
    let mac = bitsd::auth::mac_hash("aa:bb:cc:dd:ee:03").unwrap();
    assert!(
        usermanage(&server, &["mac", "add", by_mac, "--hash", &mac], None)
            .status
            .success()
    );
    for name in [by_keypad, by_mac] {
        let out = usermanage(&server, &["modify", name, "--visibility", "named"], None);
        assert!(out.status.success(), "{out:?}");
    }
    let mut device = server.device().await;
    device.send("enter 2").await;
    let macs = serde_json::json!([mac]).to_string();
    let r = server
        .post_form(
            "/macupdate",
            &[("password", "router-token"), ("macs", macs.as_str())],
        )
        .await;
    assert_eq!(r.status(), 200);

    // Logged in as the second of them, with both in the room.
    let mut s = Session::new(&server);
    assert_eq!(s.login(by_mac, "pw", "/admin").await.status(), 303);
    let page = s
        .wait_for("/admin", |page| page.matches("<li>").count() == 2)
        .await;
    for (raw, escaped) in [
        (by_keypad, "&#60;img/src=x/onerror=alert(1)&#62;"),
        (by_mac, "&#34;&#62;&#60;svg/onload=alert(2)&#62;"),
    ] {
        assert!(!page.contains(raw), "{raw} in {page}");
        assert!(page.contains(escaped), "{escaped} not in {page}");
    }
    // The roster on the homepage and in /data is escaped text too, for
    // visitors and for the members it names.
    let home = server.text("/").await;
    assert!(!home.contains(by_keypad) && !home.contains(by_mac));
    let home = s.get("/").await.text().await.unwrap();
    assert_eq!(home.matches("<li>").count(), 2, "{home}");
    assert!(
        !home.contains(by_keypad) && !home.contains(by_mac),
        "{home}"
    );
    let presence = server.text("/presence").await;
    assert!(!presence.contains(by_keypad) && !presence.contains(by_mac));
}
