//! What the homepage tells a member over real HTTP (SPEC 21): the space's
//! name on every page, no status known yet, a device gone too long, and a
//! logged-in member's name and toggle.

use std::time::Duration;

use reqwest::header;

mod common;

use bitsd::clock::unix_seconds;
use bitsd::store::Db;
use common::member::{Session, add_user, location, logged_in_member};
use common::{Device, TestServer, assert_contains, ws_next_text};

/// A server whose configuration file holds `text`.
async fn server_configured(text: &str) -> TestServer {
    TestServer::start_configured(text, &[]).await
}

/// The `<title>` and the header's brand of `page`.
fn title_and_brand(page: &str) -> (&str, &str) {
    let between = |start: &str, end: &str| {
        let from = page
            .find(start)
            .unwrap_or_else(|| panic!("no {start} in {page}"))
            + start.len();
        let to = from + page[from..].find(end).unwrap();
        &page[from..to]
    };
    (
        between("<title>", "</title>"),
        between("<a class=\"brand\" href=\"/\">", "</a>"),
    )
}

#[tokio::test]
async fn the_space_name_heads_every_page_and_its_title() {
    let server = server_configured("[spaceapi]\nspace = \"Officina & Co\"\n").await;
    add_user(&server, "ada", "pw");
    let mut member = Session::new(&server);
    assert_eq!(member.login("ada", "pw", "/admin").await.status(), 303);
    for (path, title) in [
        ("/", "Officina &#38; Co · no status yet"),
        ("/log", "Officina &#38; Co · History"),
        ("/info", "Officina &#38; Co · "),
        ("/login", "Officina &#38; Co · Log in"),
        ("/admin", "Officina &#38; Co · Admin"),
        ("/message", "Officina &#38; Co · Send a message"),
        ("/no-such-page", "Officina &#38; Co · Not found"),
        ("/log?lang=it", "Officina &#38; Co · Storico"),
    ] {
        let page = member.get(path).await.text().await.unwrap();
        let (shown, brand) = title_and_brand(&page);
        assert!(shown.starts_with(title), "{path}: {shown}");
        assert_eq!(brand, "Officina &#38; Co", "{path}");
    }

    let plain = TestServer::start().await;
    for path in ["/", "/log", "/no-such-page"] {
        let page = plain.text(path).await;
        let (shown, brand) = title_and_brand(&page);
        assert!(shown.starts_with("BITS · "), "{path}: {shown}");
        assert_eq!(brand, "BITS", "{path}");
    }
}

#[tokio::test]
async fn before_any_status_the_homepage_says_none_is_known_not_closed() {
    let server = TestServer::start().await;
    let data = server.json("/data").await;
    assert!(data.get("status").is_none(), "{data}");
    for (path, words) in [
        ("/", ["No status known yet", "BITS · no status yet"]),
        (
            "/?lang=it",
            ["Stato non ancora noto", "BITS · stato non ancora noto"],
        ),
    ] {
        let page = server.text(path).await;
        assert_contains(&page, &words);
        assert_contains(&page, &["class=\"status unknown\"", "/static/unknown.svg"]);
        for closed in [
            "status closed",
            "closed.svg",
            "status-text\">The room",
            "status-text\">La sede",
        ] {
            assert!(!page.contains(closed), "{path}: {closed} in {page}");
        }
    }
    assert_eq!(server.get("/static/unknown.svg").await.status(), 200);
    // /admin says the same.
    add_user(&server, "ada", "pw");
    let mut member = Session::new(&server);
    assert_eq!(member.login("ada", "pw", "/admin").await.status(), 303);
    let admin = member.get("/admin").await.text().await.unwrap();
    assert_contains(
        &admin,
        &["<section class=\"status unknown\">\n  <h2>No status known yet</h2>"],
    );

    let mut device = server.device().await;
    server.status_from(&mut device, "0").await;
    let page = server.text("/").await;
    assert_contains(
        &page,
        &[
            "class=\"status closed\"",
            "The room is closed",
            "/static/closed.svg",
        ],
    );
    assert!(
        !page.contains("status unknown") && !page.contains("unknown.svg"),
        "{page}"
    );
}

/// `/data` once `device_offline_since` is given (`true`) or not.
async fn offline(server: &TestServer, shown: bool) -> serde_json::Value {
    let what = if shown {
        "the device offline"
    } else {
        "the device back"
    };
    server
        .wait_for_data(what, |d| d.get("device_offline_since").is_some() == shown)
        .await
}

/// Checks `/data` for `window` (past `device_stale_after`): no absence
/// is told.
async fn never_offline_for(server: &TestServer, window: Duration) {
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline {
        let data = server.json("/data").await;
        assert!(data.get("device_offline_since").is_none(), "{data}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next message of `ws` about the device's absence, past the changes.
async fn next_notice<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message: serde_json::Value = serde_json::from_str(&ws_next_text(ws).await).unwrap();
        if message.get("device_offline_since").is_some() {
            return message;
        }
    }
}

/// The hour and minute of a `/data` time.
fn time_of(data: &serde_json::Value) -> String {
    data["device_offline_since"].as_str().unwrap()[11..16].to_string()
}

#[tokio::test]
async fn a_device_gone_too_long_makes_the_homepage_doubt_the_status() {
    let server = TestServer::start_with(&[
        "--device-stale-after",
        "1",
        "--control-remote-address",
        "127.0.0.0/8",
    ])
    .await;
    // Never connected since the start: offline since then, once the
    // status is the device's.
    let mut device = server.device().await;
    server.status_from(&mut device, "1").await;
    assert!(
        server
            .json("/data")
            .await
            .get("device_offline_since")
            .is_none()
    );
    let page = server.text("/").await;
    assert_contains(
        &page,
        &["<p id=\"device-offline\" class=\"stale\" hidden></p>"],
    );

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.web_addr()))
        .await
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(&ws_next_text(&mut ws).await).unwrap();
    assert!(first.get("device_offline_since").is_none(), "{first}");

    drop(device);
    let data = offline(&server, true).await;
    let time = time_of(&data);
    let iso = data["device_offline_since"].as_str().unwrap()[..19].replace(' ', "T");
    let told = next_notice(&mut ws).await;
    assert_eq!(
        told,
        serde_json::json!({"device_offline_since": data["device_offline_since"]})
    );
    assert_eq!(data["status"]["value"], "open", "the status stays");
    let page = server.text("/").await;
    assert_contains(
        &page,
        &[
            &format!(
                "<p id=\"device-offline\" class=\"stale\">The device has been offline since \
                 <time datetime=\"{iso}\">{time} ("
            ),
            "</time>; the status may be out of date.</p>",
        ],
    );
    let page = server.text("/?lang=it").await;
    assert_contains(
        &page,
        &[
            &format!("Il dispositivo non è in linea dalle <time datetime=\"{iso}\">{time} ("),
            "</time>; lo stato potrebbe non essere aggiornato.",
        ],
    );

    // Back: the notice goes, at once, on the websocket too.
    let mut device = server.device().await;
    device.send("temperature 0 20.5").await;
    offline(&server, false).await;
    let told = next_notice(&mut ws).await;
    assert_eq!(told, serde_json::json!({"device_offline_since": null}));
    assert_contains(&server.text("/").await, &["class=\"stale\" hidden"]);

    // Gone again, then a member closes from the web: the status is theirs,
    // and no absence of the device doubts it.
    drop(device);
    offline(&server, true).await;
    let mut member = logged_in_member(&server, "ada", "/").await;
    let r = member.submit("/admin", &[("status", "closed")]).await;
    assert_eq!(r.status(), 303);
    server.wait_for_status("0").await;
    offline(&server, false).await;
    never_offline_for(&server, Duration::from_secs(3)).await;

    // A registered device's status: its own absence counts.
    let code = {
        let mut db = Db::open(&server.db, false).unwrap();
        db.add_device("door", unix_seconds(), 900).unwrap().code
    };
    let mut door = Device::connect_from("127.0.0.2", server.control_addr()).await;
    door.send(&format!("claim {code}")).await;
    assert!(door.recv().await.starts_with("key "));
    door.send("status 1").await;
    server
        .wait_for_data("the door's status", |d| d["status"]["device"] == "door")
        .await;
    // The original device comes and goes: not the one that set the status.
    let mut original = Device::connect_from("127.0.0.3", server.control_addr()).await;
    original.send("temperature 1 19.0").await;
    drop(original);
    never_offline_for(&server, Duration::from_secs(3)).await;
    drop(door);
    let data = offline(&server, true).await;
    assert_eq!(data["status"]["device"], "door");
}

#[tokio::test]
async fn a_members_homepage_names_them_and_toggles_the_status() {
    let server = TestServer::start().await;
    let anonymous = server.get("/").await;
    assert!(
        anonymous
            .headers()
            .get(header::CACHE_CONTROL)
            .is_none_or(|v| !v.to_str().unwrap().contains("private"))
    );
    let page = anonymous.text().await.unwrap();
    assert!(!page.contains("Logged in as"), "{page}");
    assert!(!page.contains("id=\"toggle\""), "{page}");

    let mut member = logged_in_member(&server, "ada", "/").await;
    let r = member.get("/").await;
    assert_eq!(r.headers()[header::CACHE_CONTROL], "private, no-cache");
    let page = r.text().await.unwrap();
    let xsrf = member
        .cookie("_xsrf")
        .expect("the homepage's form has a token");
    assert_contains(
        &page,
        &[
            "Logged in as <strong>ada</strong>",
            "<a href=\"/logout\">Log out</a>",
            "<form method=\"post\" action=\"/admin\" id=\"toggle\">",
            &format!("name=\"_xsrf\" value=\"{xsrf}\""),
            "name=\"next\" value=\"/\"",
            "id=\"toggle-status\" value=\"open\"",
            ">Open the room</button>",
        ],
    );
    let italian = member.get("/?lang=it").await.text().await.unwrap();
    assert_contains(
        &italian,
        &[
            "Connesso come <strong>ada</strong>",
            ">Apri la sede</button>",
        ],
    );

    // The toggle opens the room and comes back to the homepage.
    let r = member
        .submit("/admin", &[("next", "/"), ("status", "open")])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/");
    server.wait_for_status("1").await;
    let page = member.get("/?lang=en").await.text().await.unwrap();
    assert_contains(
        &page,
        &[
            "id=\"toggle-status\" value=\"closed\"",
            ">Close the room</button>",
        ],
    );
    // Without `next`, or with another, it is /admin's own form.
    let r = member.submit("/admin", &[("status", "closed")]).await;
    assert_eq!(location(&r), "/admin");
    let r = member
        .submit(
            "/admin",
            &[("next", "https://elsewhere.example/"), ("status", "open")],
        )
        .await;
    assert_eq!(location(&r), "/admin");
    // Without the token, nothing changes.
    let r = member
        .post("/admin", &[("next", "/"), ("status", "closed")])
        .await;
    assert_eq!(r.status(), 403);
}
