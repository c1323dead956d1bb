//! The forecast over real HTTP, from a history written into the database.

mod common;

use chrono::{Datelike, Duration};
use common::{AUTO_STATUS_IN_A_SECOND, TestServer};
use reqwest::header;

#[tokio::test]
async fn forecast_from_a_weekly_pattern() {
    // Four past Tuesdays open 14:00-16:00 local time.
    let today = common::today();
    let back = (today.weekday().num_days_from_monday() as i64 - 1).rem_euclid(7);
    let last_tuesday = today - Duration::days(if back == 0 { 7 } else { back });
    let tuesdays = (0..4).map(|week| last_tuesday - Duration::weeks(week));
    let server = common::server_with_openings(tuesdays, "14:00:00", "16:00:00").await;
    let response = server.get("/presence").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let body: serde_json::Value = response.json().await.unwrap();
    let days = body["forecast"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    for (d, day) in days.iter().enumerate() {
        let slots = day.as_array().unwrap();
        assert_eq!(slots.len(), 48);
        for (s, v) in slots.iter().enumerate() {
            let v = v.as_f64().unwrap();
            let expected = if d == 1 && (28..32).contains(&s) {
                1.0
            } else {
                0.0
            };
            assert_eq!(v, expected, "day {d} slot {s}");
        }
    }

    let svg = server.get("/presence.svg").await;
    assert_eq!(svg.headers()[header::CONTENT_TYPE], "image/svg+xml");
    let plain = svg.text().await.unwrap();
    assert!(
        plain.starts_with("<svg") && plain.contains("Tue 14:00 100%"),
        "{}",
        &plain[..200]
    );
    let blind = server.text("/presence.svg?blind=1").await;
    assert_ne!(plain, blind);
    assert!(
        server
            .text("/")
            .await
            .contains("src=\"/presence.svg?lang=en\"")
    );
    assert!(
        server
            .text("/blind")
            .await
            .contains("src=\"/presence.svg?blind=1&amp;lang=en\"")
    );
}

#[tokio::test]
async fn no_history_gives_zeros() {
    let server = TestServer::start().await;
    let body = server.json("/presence").await;
    let all_zero = body["forecast"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d.as_array().unwrap())
        .all(|v| v.as_f64() == Some(0.0));
    assert!(all_zero, "{body}");
}

/// A server on a database holding an opening from 14:00 to 16:00 on
/// each of the `days` days before today (the server's zone).
async fn server_with_days_of_history(days: i64) -> TestServer {
    let today = common::today();
    let days = (1..=days).map(|back| today - Duration::days(back));
    common::server_with_openings(days, "14:00:00", "16:00:00").await
}

#[tokio::test]
async fn the_heat_map_waits_for_a_week_of_history() {
    // Nothing recorded, or three days: a note in place of the map, in
    // either layout and language.
    for days in [0, 3] {
        let server = server_with_days_of_history(days).await;
        for (query, note) in [
            ("", "Not enough history yet:"),
            ("?layout=tall", "Not enough history yet:"),
            ("?lang=it", "Storico ancora insufficiente:"),
            ("?layout=tall&lang=it", "Storico ancora insufficiente:"),
        ] {
            let svg = server.text(&format!("/presence.svg{query}")).await;
            assert!(
                svg.contains(&format!(">{note}</text>")),
                "{days} days {query}: {svg}"
            );
            assert!(!svg.contains("<rect"), "{days} days {query}: {svg}");
        }
    }
    // Two weeks: the map, in both layouts.
    let server = server_with_days_of_history(14).await;
    let wide = server.text("/presence.svg").await;
    let tall = server.text("/presence.svg?layout=tall").await;
    for svg in [&wide, &tall] {
        assert!(!svg.contains("Not enough history"), "{svg}");
        assert!(
            svg.contains("14:30 100%") && svg.contains("02:00 0%"),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 7 * 48 + 5);
    }
    assert_ne!(wide, tall);
    // The homepage offers the tall one to narrow screens.
    let home = server.text("/").await;
    assert!(
        home.contains(r#"<source id="forecast-tall" media="(max-width: 40rem)" srcset="/presence.svg?layout=tall&amp;lang=en">"#),
        "{home}"
    );
}

#[tokio::test]
async fn automatic_status_follows_the_roster_and_tells_the_device() {
    let server = TestServer::start_with(&AUTO_STATUS_IN_A_SECOND).await;
    let mut device = server.device().await;
    device.send("enter 1").await;
    let why = "the automation tells the device";
    server.status_told(&mut device, "1", why).await;
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"][0]["modifiedby"], "BITS");
    device.send("leave 1").await;
    let why = "the automation closes when the roster empties";
    server.status_told(&mut device, "0", why).await;
}

#[tokio::test]
async fn without_auto_status_the_roster_changes_nothing() {
    let server = TestServer::start_with(&["--auto-open-after", "1"]).await;
    let mut device = server.device().await;
    device.send("enter 1").await;
    server
        .wait_for_json("/spaceapi.json", "one person present", |doc| {
            doc["sensors"]["people_now_present"][0]["value"] == 1
        })
        .await;
    // A server with automatic status, filled later, is the clock: once it
    // has opened, the delay has passed for the first one too.
    let automatic = TestServer::start_with(&["--auto-status", "--auto-open-after", "1"]).await;
    let mut automatic_device = automatic.device().await;
    automatic_device.send("enter 1").await;
    automatic.wait_for_status("1").await;
    assert_eq!(server.text("/status").await, "0");
}

#[tokio::test]
async fn automatic_status_keeps_members_only_and_closes_it_when_empty() {
    let server = TestServer::start_with(&AUTO_STATUS_IN_A_SECOND).await;
    let mut device = server.device().await;
    device.send("state members").await;
    server
        .wait_for_data("members only", |d| d["status"]["state"] == "members")
        .await;
    device.send("enter 1").await;
    server
        .wait_for_json("/spaceapi.json", "one person present", |doc| {
            doc["sensors"]["people_now_present"][0]["value"] == 1
        })
        .await;
    // The clock: a server with automatic status, filled later, opens once
    // the delay has passed for the first one too.
    let clock = TestServer::start_with(&AUTO_STATUS_IN_A_SECOND).await;
    let mut clock_device = clock.device().await;
    clock_device.send("enter 1").await;
    clock.wait_for_status("1").await;
    let data = server.json("/data").await;
    assert_eq!(data["status"]["state"], "members", "not opened to everyone");
    // Empty, it closes as an open room does.
    device.send("leave 1").await;
    server
        .wait_for_data("closed once empty", |d| d["status"]["state"] == "closed")
        .await;
}
