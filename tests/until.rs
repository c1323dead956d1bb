//! "Open until": said by the device or on `/admin`, shown on the homepage
//! and in the JSON, and the room left open well past it closed by bitsd,
//! also across a restart.

mod common;

use chrono::{Duration, NaiveDateTime, Timelike};
use common::member::{Session, add_user};
use common::{TestServer, assert_contains};

/// Now in the tests' time zone, to the minute.
fn rome_now() -> NaiveDateTime {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .naive_local()
        .with_second(0)
        .unwrap()
}

/// The `HH:MM` `minutes` from now, and the date and time bitsd makes of it
/// (the next such time), as `/data` writes it.
fn later(minutes: i64) -> (String, String) {
    let at = rome_now() + Duration::minutes(minutes);
    (
        at.format("%H:%M").to_string(),
        at.format("%Y-%m-%d %H:%M:00").to_string(),
    )
}

#[tokio::test]
async fn the_device_says_until_when_and_every_page_says_it_too() {
    let (server, mut device) = TestServer::start_with_device().await;
    // Closed: nothing to say.
    device.send("state closed").await;
    let (hhmm, when) = later(120);
    device.send(&format!("until {hhmm}")).await;
    device.send("state open").await;
    let data = server
        .wait_for_data("open", |d| d["status"]["state"] == "open")
        .await;
    assert!(data["status"].get("until").is_none(), "{data}");

    device.send(&format!("until {hhmm}")).await;
    let data = server
        .wait_for_data("until", |d| d["status"]["until"].is_string())
        .await;
    assert_eq!(data["status"]["until"], when.as_str());
    assert_eq!(data["status"]["value"], "open", "the same status");
    assert_contains(&server.text("/").await, &[&format!("Open until {hhmm}")]);
    assert_contains(
        &server.text("/?lang=it").await,
        &[&format!("Aperta fino alle {hhmm}")],
    );
    let doc = server.json("/spaceapi.json").await;
    assert!(doc["state"]["ext_until"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    // One row, which now carries it.
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"][0]["until"], when.as_str(), "{log}");

    // In its last quarter hour: closing soon.
    let (soon, _) = later(10);
    device.send(&format!("until {soon}")).await;
    server
        .wait_for_data("soon", |d| d["status"]["until"] != when.as_str())
        .await;
    assert_contains(
        &server.text("/").await,
        &[&format!("Closing soon, at {soon}")],
    );
    assert_contains(
        &server.text("/?lang=it").await,
        &[&format!("Chiude a breve, alle {soon}")],
    );

    // `until -` takes it back; a new status forgets it.
    device.send("until -").await;
    server
        .wait_for_data("no until", |d| d["status"].get("until").is_none())
        .await;
    device.send(&format!("until {hhmm}")).await;
    server
        .wait_for_data("until again", |d| d["status"]["until"].is_string())
        .await;
    device.send("state members").await;
    let data = server
        .wait_for_data("members", |d| d["status"]["state"] == "members")
        .await;
    assert!(data["status"].get("until").is_none(), "{data}");
}

#[tokio::test]
async fn admin_says_until_when() {
    let (server, mut device) = TestServer::start_with_device().await;
    device.send("state open").await;
    server.wait_for_status("1").await;
    add_user(&server, "ada", "pw");
    let mut member = Session::new(&server);
    assert_eq!(member.login("ada", "pw", "/admin").await.status(), 303);
    let page = member.get("/admin").await.text().await.unwrap();
    assert_contains(
        &page,
        &["<input type=\"time\" id=\"until\" name=\"until\" value=\"\">"],
    );
    let (hhmm, when) = later(90);
    let r = member.submit("/admin", &[("until", hhmm.as_str())]).await;
    assert_eq!(r.status(), 303);
    let data = server
        .wait_for_data("until", |d| d["status"]["until"].is_string())
        .await;
    assert_eq!(data["status"]["until"], when.as_str());
    assert_eq!(
        data["status"]["modifiedby"], "BITS",
        "still the device's status"
    );
    let page = member.get("/admin").await.text().await.unwrap();
    assert_contains(&page, &[&format!("name=\"until\" value=\"{hhmm}\"")]);

    let r = member.submit("/admin", &[("until", "25:00")]).await;
    assert_eq!(r.status(), 400);
    let r = member.submit("/admin", &[("until", "")]).await;
    assert_eq!(r.status(), 303);
    server
        .wait_for_data("no until", |d| d["status"].get("until").is_none())
        .await;
}

#[tokio::test]
async fn a_room_left_open_past_its_until_is_closed_also_after_a_restart() {
    // Stored before the restart: open since 18:00, to close at 19:30 two
    // days ago; bitsd starts now, long past 19:30 plus an hour.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    bitsd::bootstrap(&common::test_config(&db, &[])).unwrap();
    let day = rome_now().date() - Duration::days(2);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            r#"INSERT INTO "Status" (timestamp, value, modified_by, until)
               VALUES (?1, 'open', 'BITS', ?2)"#,
            [
                format!("{day} 18:00:00.000000"),
                format!("{day} 19:30:00.000000"),
            ],
        )
        .unwrap();
    let server = TestServer::start_in(dir, db, &[]).await;
    let data = server
        .wait_for_data("closed by bitsd", |d| d["status"]["state"] == "closed")
        .await;
    assert_eq!(data["status"]["modifiedby"], "BITS");
    assert_eq!(server.logged_states(5).await, ["closed", "open"]);
}
