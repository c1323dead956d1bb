//! `/log` over real HTTP, from openings written into the database: each
//! row's weekday and time, and how long each opening lasted, across the
//! pager's pages.

mod common;

use chrono::{Duration, Utc};
use common::{TestServer, assert_no_raw_timestamps};

/// A server on a database holding `rows` of `Status` (local time, value).
async fn server_with(rows: &[(String, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let config = common::test_config(&db, &[]);
    bitsd::bootstrap(&config).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (at, value) in rows {
        conn.execute(
            r#"INSERT INTO "Status" (timestamp, value, modified_by) VALUES (?1, ?2, 'BITS')"#,
            [at.as_str(), value],
        )
        .unwrap();
    }
    TestServer::start_in(dir, db, &[]).await
}

/// The cells of each row of the history's table, tags left out.
fn rows(page: &str) -> Vec<Vec<String>> {
    let body = page.split("<tbody>").nth(1).unwrap_or("");
    let body = body.split("</tbody>").next().unwrap();
    body.split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td>")
                .skip(1)
                .map(|cell| {
                    let cell = cell.split("</td>").next().unwrap();
                    let mut text = String::new();
                    let mut in_tag = false;
                    for c in cell.chars() {
                        match c {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    text
                })
                .collect()
        })
        .collect()
}

/// The status cells of `/log` at `query`.
async fn statuses(server: &TestServer, query: &str) -> Vec<String> {
    let page = server.text(&format!("/log?{query}")).await;
    assert_no_raw_timestamps(&page);
    rows(&page)
        .into_iter()
        .map(|r| r[1].replace('\u{a0}', " "))
        .collect()
}

#[tokio::test]
async fn each_opening_says_how_long_it_lasted_on_every_page() {
    // In the server's zone (Europe/Rome): an opening in progress for 40
    // minutes; a Tuesday's opening told twice; a Monday's.
    let now = Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .naive_local();
    let stored = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let server = server_with(&[
        ("2026-11-30 18:00:00.000000".into(), "open"),
        ("2026-11-30 20:15:30.000000".into(), "closed"),
        ("2026-12-01 17:00:00.000000".into(), "open"),
        ("2026-12-01 17:30:00.000000".into(), "open"),
        ("2026-12-01 19:00:00.000000".into(), "closed"),
        (
            stored(now - Duration::minutes(40) - Duration::seconds(5)),
            "open",
        ),
    ])
    .await;

    let all = server.text("/log").await;
    assert_no_raw_timestamps(&all);
    // (A no-break space within each unit of a duration.)
    let table: Vec<Vec<String>> = rows(&all)
        .into_iter()
        .map(|r| r.into_iter().map(|c| c.replace('\u{a0}', " ")).collect())
        .collect();
    assert_eq!(
        table.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        [
            "open for 40 min so far",
            "closed",
            "open",
            "open for 2 h",
            "closed",
            "open for 2 h 15 min",
        ],
        "{all}"
    );
    // The weekday and the time of each, and how long ago.
    assert!(table[5][0].starts_with("Mon 30 Nov"), "{:?}", table[5]);
    assert!(table[5][0].contains(", 18:00 ("), "{:?}", table[5]);
    assert!(table[5][0].ends_with(" days ago)"), "{:?}", table[5]);
    assert!(table[2][0].starts_with("Tue 1 Dec"), "{:?}", table[2]);
    assert!(table[0][0].ends_with("(40 minutes ago)"), "{:?}", table[0]);
    assert!(
        all.contains(r#"<time datetime="2026-11-30T18:00:00">"#),
        "{all}"
    );

    // One row a page, two rows a page: the same durations.
    let mut one_by_one = Vec::new();
    for offset in 0..6 {
        one_by_one.extend(statuses(&server, &format!("offset={offset}&limit=1")).await);
    }
    assert_eq!(
        one_by_one,
        table.iter().map(|r| r[1].clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        statuses(&server, "offset=2&limit=2").await,
        ["open", "open for 2 h"]
    );
    assert_eq!(
        statuses(&server, "offset=3&limit=3").await,
        ["open for 2 h", "closed", "open for 2 h 15 min"]
    );

    // In Italian.
    let italian = server.text("/log?lang=it").await;
    let table = rows(&italian);
    assert_eq!(table[0][1], "ancora aperta, da 40\u{a0}min");
    assert_eq!(table[5][1], "aperta per 2\u{a0}h 15\u{a0}min");
    assert!(table[5][0].starts_with("lun 30 nov"), "{:?}", table[5]);
    assert!(table[5][0].ends_with(" giorni fa)"), "{:?}", table[5]);

    // The JSON stays as it was.
    let json = server.json("/log?format=json&limit=1").await;
    assert_eq!(json["log"][0]["value"], "open");
    assert_eq!(json["log"].as_array().unwrap().len(), 1);
}
