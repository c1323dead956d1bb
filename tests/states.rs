//! The three states (open, members only, closed) over the real server: the
//! device's `state` line, `/admin`'s buttons, what old and new clients
//! read, the history, and an original database taking `members`.

mod common;

use common::legacy::legacy_database;
use common::member::{Session, add_user};
use common::{TestServer, assert_contains, sqlite};

/// Waits until `/data`'s status is in `state`; returns `/data`.
async fn wait_for_state(server: &TestServer, state: &str) -> serde_json::Value {
    server
        .wait_for_data(&format!("the state {state}"), |d| {
            d["status"]["state"] == state
        })
        .await
}

#[tokio::test]
async fn members_only_is_closed_to_old_clients_and_said_to_new_ones() {
    let (server, mut device) = TestServer::start_with_device().await;
    device.send("state members").await;
    let data = wait_for_state(&server, "members").await;
    // Old clients: closed.
    assert_eq!(data["status"]["value"], "closed", "{data}");
    assert_eq!(server.text("/status").await, "0");
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let stored: String = sqlite::value(&conn, r#"SELECT value FROM "Status""#);
    assert_eq!(stored, "members");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.web_addr()))
        .await
        .unwrap();
    let first: serde_json::Value =
        serde_json::from_str(&common::ws_next_text(&mut ws).await).unwrap();
    assert_eq!(first["status"]["state"], "members", "{first}");

    for (path, words) in [
        (
            "/",
            [
                "Open for members only",
                "status members",
                "/static/members.svg",
            ],
        ),
        (
            "/?lang=it",
            ["Aperta solo ai soci", "status members", "· solo soci"],
        ),
    ] {
        assert_contains(&server.text(path).await, &words);
    }
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"][0]["state"], "members", "{log}");
    assert_eq!(log["log"][0]["value"], "closed", "{log}");
    assert_contains(&server.text("/log").await, &["<td>members only</td>"]);
    assert_contains(&server.text("/log?lang=it").await, &["<td>solo soci</td>"]);

    // Then open, and the websocket hears both fields.
    device.send("state open").await;
    let live: serde_json::Value =
        serde_json::from_str(&common::ws_next_text(&mut ws).await).unwrap();
    assert_eq!(live["status"]["state"], "open", "{live}");
    assert_eq!(live["status"]["value"], "open", "{live}");
    assert_eq!(server.text("/status").await, "1");

    // A bad state is skipped, with the reason in the log.
    device.send("state away").await;
    device.send("state closed").await;
    wait_for_state(&server, "closed").await;
    let values: Vec<String> =
        sqlite::column(&conn, r#"SELECT value FROM "Status" ORDER BY timestamp"#);
    assert_eq!(values, ["members", "open", "closed"]);
}

#[tokio::test]
async fn admin_offers_the_three_states() {
    let server = TestServer::start().await;
    add_user(&server, "ada", "pw");
    let mut member = Session::new(&server);
    assert_eq!(member.login("ada", "pw", "/admin").await.status(), 303);
    let page = member.get("/admin").await.text().await.unwrap();
    for button in [
        "name=\"status\" value=\"open\">Open the room</button>",
        "name=\"status\" value=\"members\" class=\"quiet\">Members only</button>",
        "name=\"status\" value=\"closed\" class=\"quiet\">Close the room</button>",
    ] {
        assert!(page.contains(button), "{button} in {page}");
    }
    let r = member.submit("/admin", &[("status", "members")]).await;
    assert_eq!(r.status(), 303);
    let data = wait_for_state(&server, "members").await;
    assert_eq!(data["status"]["modifiedby"], "web");
    let page = member.get("/admin").await.text().await.unwrap();
    assert_contains(
        &page,
        &[
            "<section class=\"status members\">",
            "Open for members only",
        ],
    );
    assert!(
        !page.contains("value=\"members\""),
        "no button for the state it is in"
    );

    let r = member.submit("/admin", &[("status", "ajar")]).await;
    assert_eq!(r.status(), 400);
    let said = r.text().await.unwrap();
    assert!(
        said.contains("status must be open, members or closed"),
        "{said}"
    );
}

#[tokio::test]
async fn an_original_database_takes_members_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_database(dir.path());
    let server = TestServer::start_in(dir, db.clone(), &[]).await;
    let mut device = server.device().await;
    device.send("state members").await;
    wait_for_state(&server, "members").await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let values: Vec<String> =
        sqlite::column(&conn, r#"SELECT value FROM "Status" ORDER BY timestamp"#);
    assert_eq!(values, ["open", "closed", "away", "members"]);
    // The original's rows read as they did.
    assert_eq!(
        server.logged_states(10).await,
        ["members", "closed", "closed", "open"]
    );
}

#[tokio::test]
async fn metrics_say_the_state() {
    let (server, mut device) = TestServer::start_with_device().await;
    for state in ["members", "open", "closed"] {
        device.send(&format!("state {state}")).await;
        let lines: Vec<String> = ["open", "members", "closed"]
            .iter()
            .map(|other| {
                format!(
                    "bitsd_state{{state=\"{other}\"}} {}",
                    u8::from(*other == state)
                )
            })
            .collect();
        let deadline = tokio::time::Instant::now() + common::PATIENCE;
        loop {
            let metrics = server.text("/metrics").await;
            if lines.iter().all(|l| metrics.contains(l.as_str())) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{lines:?} in {metrics}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
