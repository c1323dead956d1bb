//! `/openings.ics` and `/badge.svg` over real HTTP, from a history written
//! into the database (the test server's zone is Europe/Rome).

mod common;

use std::io::BufReader;

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Rome;
use common::TestServer;
use reqwest::header;

/// A server on a database holding `rows` of `Status` (local time, value).
async fn server_with(rows: &[(String, &str)], extra: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let config = common::test_config(&db, extra);
    bitsd::bootstrap(&config).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (at, value) in rows {
        conn.execute(
            r#"INSERT INTO "Status" (timestamp, value, modified_by) VALUES (?1, ?2, 'BITS')"#,
            [format!("{at}.000000"), value.to_string()],
        )
        .unwrap();
    }
    drop(conn);
    TestServer::start_in(dir, db, extra).await
}

/// A config file holding `text`, in a directory kept for the test.
fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("bitsd.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `instant` as the local time text the database holds.
fn local(instant: DateTime<Utc>) -> String {
    instant
        .with_timezone(&Rome)
        .naive_local()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Local wall-clock `text` in Rome as the feed's UTC form.
fn rome_utc(text: &str) -> String {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap();
    let instant = Rome.from_local_datetime(&naive).earliest().unwrap();
    stamp(instant.with_timezone(&Utc))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// One event of the feed: its properties by name, as the parser read them.
#[derive(Debug, Clone)]
struct Event(Vec<(String, String)>);

impl Event {
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }

    fn tentative(&self) -> bool {
        self.get("STATUS") == "TENTATIVE"
    }
}

/// The feed at `path`, checked for its headers and framing, parsed by the
/// `ical` crate.
async fn feed(server: &TestServer, path: &str) -> (String, Vec<Event>) {
    let response = server.get(path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/calendar; charset=utf-8"
    );
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(response.headers().contains_key(header::ETAG));
    let text = response.text().await.unwrap();
    assert_framed(&text);
    let mut calendars = ical::IcalParser::new(BufReader::new(text.as_bytes()));
    let calendar = calendars.next().expect("one calendar").expect("it parses");
    assert!(calendars.next().is_none());
    let version = calendar
        .properties
        .iter()
        .find(|p| p.name == "VERSION")
        .and_then(|p| p.value.clone());
    assert_eq!(version.as_deref(), Some("2.0"));
    let events = calendar
        .events
        .into_iter()
        .map(|e| {
            Event(
                e.properties
                    .into_iter()
                    .map(|p| (p.name, p.value.unwrap_or_default()))
                    .collect(),
            )
        })
        .collect();
    (text, events)
}

/// `path` asked for again by a client holding the copy tagged `tag`.
async fn revalidate(server: &TestServer, path: &str, tag: &str) -> reqwest::Response {
    server.get_with(path, &[(header::IF_NONE_MATCH, tag)]).await
}

/// RFC 5545 framing: CRLF line ends only, lines of at most 75 octets.
fn assert_framed(text: &str) {
    assert!(text.starts_with("BEGIN:VCALENDAR\r\n"));
    assert!(text.ends_with("END:VCALENDAR\r\n"));
    assert!(
        !text.replace("\r\n", "").contains(['\r', '\n']),
        "a bare CR or LF"
    );
    for line in text.split_terminator("\r\n") {
        assert!(line.len() <= 75, "{line:?} is {} octets", line.len());
    }
}

#[tokio::test]
async fn past_openings_in_utc_across_daylight_saving_changes() {
    // Rome springs forward on 2024-03-31 at 02:00 and falls back on
    // 2024-10-27 at 03:00.
    let rows = [
        ("2024-03-31 01:30:00", "open"),
        ("2024-03-31 03:30:00", "closed"),
        ("2024-07-01 18:00:00", "open"),
        ("2024-07-01 19:00:00", "open"),
        ("2024-07-01 20:00:00", "closed"),
        ("2024-10-27 01:30:00", "open"),
        ("2024-10-27 03:30:00", "away"),
        ("2024-10-27 04:00:00", "closed"),
    ];
    let rows: Vec<(String, &str)> = rows.iter().map(|(t, v)| (t.to_string(), *v)).collect();
    let server = server_with(&rows, &["--ical-past-days", "3660"]).await;
    let (_, events) = feed(&server, "/openings.ics").await;
    let past: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|e| !e.tentative())
        .map(|e| (e.get("DTSTART"), e.get("DTEND"), e.get("SUMMARY")))
        .collect();
    assert_eq!(
        past,
        [
            ("20240331T003000Z", "20240331T013000Z", "BITS open"),
            ("20240701T160000Z", "20240701T180000Z", "BITS open"),
            ("20241026T233000Z", "20241027T023000Z", "BITS open"),
        ]
    );
    for event in events.iter().filter(|e| !e.tentative()) {
        assert_eq!(event.get("STATUS"), "CONFIRMED");
        assert_eq!(event.get("DTSTAMP"), event.get("DTEND"));
    }

    // Nothing changed: the same text, the same tag, and a 304 for it.
    let first = server.get("/openings.ics").await;
    let etag = common::header_text(&first, header::ETAG).to_string();
    let first = first.text().await.unwrap();
    let again = revalidate(&server, "/openings.ics", &etag).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()[header::ETAG], etag);
    assert_eq!(server.text("/openings.ics").await, first);

    // Opening the room adds an opening in progress and changes the tag.
    let mut device = server.device().await;
    server.status_from(&mut device, "1").await;
    let now = revalidate(&server, "/openings.ics", &etag).await;
    assert_eq!(now.status(), 200);
    assert_ne!(now.headers()[header::ETAG], etag);
}

#[tokio::test]
async fn an_opening_in_progress_ends_at_the_request() {
    let started = Utc::now() - Duration::hours(2);
    let started = Utc.timestamp_opt(started.timestamp(), 0).unwrap();
    let server = server_with(&[(local(started), "open")], &[]).await;
    let before = Utc::now().timestamp();
    let (_, events) = feed(&server, "/openings.ics").await;
    let after = Utc::now().timestamp();
    let opening: Vec<&Event> = events.iter().filter(|e| !e.tentative()).collect();
    assert_eq!(opening.len(), 1, "{events:?}");
    assert_eq!(opening[0].get("DTSTART"), stamp(started));
    let end = NaiveDateTime::parse_from_str(opening[0].get("DTEND"), "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
        .timestamp();
    assert!(
        (before - 1..=after).contains(&end),
        "{end} not in {before}..={after}"
    );

    // The same opening keeps its UID while its end moves on.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, later) = feed(&server, "/openings.ics").await;
    let uids = |events: &[Event]| -> Vec<String> {
        events.iter().map(|e| e.get("UID").to_string()).collect()
    };
    assert_eq!(uids(&events), uids(&later));
    assert_ne!(
        events[0].get("DTEND"),
        later[0].get("DTEND"),
        "the end follows the request"
    );
    assert!(uids(&events)[0].starts_with(&format!("open-{}-bits@", stamp(started))));
}

#[tokio::test]
async fn an_opening_said_to_last_until_a_time_ends_then() {
    let started = Utc::now() - Duration::hours(1);
    let server = server_with(&[(local(started), "open")], &[]).await;
    // Two hours from now, to the minute, as the device says it.
    let until = (Utc::now() + Duration::hours(2))
        .with_timezone(&Rome)
        .naive_local();
    let mut device = server.device().await;
    device
        .send(&format!("until {}", until.format("%H:%M")))
        .await;
    server
        .wait_for_data("until", |d| d["status"]["until"].is_string())
        .await;
    let (_, events) = feed(&server, "/openings.ics").await;
    let opening: Vec<&Event> = events.iter().filter(|e| !e.tentative()).collect();
    assert_eq!(opening.len(), 1, "{events:?}");
    assert_eq!(
        opening[0].get("DTEND"),
        rome_utc(&until.format("%Y-%m-%d %H:%M:00").to_string())
    );
}

#[tokio::test]
async fn the_coming_week_has_tentative_runs_from_the_forecast() {
    // The four weekdays before tomorrow's own, open 14:00-16:00 local time.
    let today = Utc::now().with_timezone(&Rome).date_naive();
    let tomorrow = today + Duration::days(1);
    let mut rows = Vec::new();
    for week in 1..=4 {
        let day = tomorrow - Duration::weeks(week);
        rows.push((format!("{day} 14:00:00"), "open"));
        rows.push((format!("{day} 16:00:00"), "closed"));
    }
    let server = server_with(&rows, &[]).await;
    let (_, events) = feed(&server, "/openings.ics").await;
    let (probable, past): (Vec<&Event>, Vec<&Event>) = events.iter().partition(|e| e.tentative());
    assert_eq!(past.len(), 4, "{events:?}");
    assert_eq!(probable.len(), 1, "{events:?}");
    let run = probable[0];
    assert_eq!(run.get("SUMMARY"), "BITS probably open");
    assert_eq!(
        run.get("DTSTART"),
        rome_utc(&format!("{tomorrow} 14:00:00"))
    );
    assert_eq!(run.get("DTEND"), rome_utc(&format!("{tomorrow} 16:00:00")));
    assert!(
        run.get("UID").starts_with("probably-open-"),
        "{}",
        run.get("UID")
    );
    assert_eq!(tomorrow.weekday(), today.succ_opt().unwrap().weekday());

    // A second request names the same events by the same UIDs.
    let (_, again) = feed(&server, "/openings.ics").await;
    let uids = |events: &[Event]| -> Vec<String> {
        events.iter().map(|e| e.get("UID").to_string()).collect()
    };
    assert_eq!(uids(&events), uids(&again));
    let mut distinct = uids(&events);
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), events.len(), "UIDs are distinct");
}

#[tokio::test]
async fn only_the_last_ical_past_days_are_given() {
    let now = Utc::now();
    let rows = vec![
        (local(now - Duration::days(41)), "open"),
        (local(now - Duration::days(40)), "closed"),
        // Begun before the window, ended inside it: given whole.
        (local(now - Duration::days(31)), "open"),
        (local(now - Duration::days(29)), "closed"),
        (local(now - Duration::days(10)), "open"),
        (local(now - Duration::days(9)), "closed"),
    ];
    let server = server_with(&rows, &["--ical-past-days", "30"]).await;
    let (_, events) = feed(&server, "/openings.ics").await;
    let starts: Vec<&str> = events
        .iter()
        .filter(|e| !e.tentative())
        .map(|e| e.get("DTSTART"))
        .collect();
    let expected = |days: i64| rome_utc(&local(now - Duration::days(days)));
    assert_eq!(starts, [expected(31), expected(10)]);

    // Bounded: a window of 0 days or of more than ten years is refused.
    for bad in ["0", "3661", "many"] {
        let args = ["bitsd", "--config", "/dev/null", "--ical-past-days", bad];
        let refused = bitsd::config::Config::from_args(args.map(String::from));
        let error = refused.err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(error.to_string().contains("--ical-past-days"), "{error}");
    }
}

#[tokio::test]
async fn a_long_multibyte_name_is_folded_between_characters_and_escaped() {
    let space = r"Officina «Ünïcødé» del quartiere; aperta, a tutti \ 🦀🦀🦀🦀 漢字漢字漢字 e ancora più lunga";
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, &format!("[spaceapi]\nspace = '{space}'\n"));
    let opened = Utc::now() - Duration::hours(1);
    let server = server_with(&[(local(opened), "open")], &["--config", &config]).await;
    let (text, events) = feed(&server, "/openings.ics").await;
    // Each physical line is whole UTF-8 (the text is), and folded lines
    // join back, as RFC 5545 unfolds them, into the escaped summary.
    let escaped = space
        .replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,");
    let unfolded = text.replace("\r\n ", "");
    assert!(
        unfolded.contains(&format!("\r\nSUMMARY:{escaped} open\r\n")),
        "{text}"
    );
    assert!(
        text.split_terminator("\r\n").any(|l| l.starts_with(' ')),
        "the summary is folded"
    );
    assert!(
        unfolded.contains(&format!("\r\nX-WR-CALNAME:{escaped} openings\r\n")),
        "{text}"
    );
    let opening: Vec<&Event> = events.iter().filter(|e| !e.tentative()).collect();
    assert_eq!(opening.len(), 1);
    // The parser keeps the escapes; it unfolds the same lines.
    let summary = opening[0].get("SUMMARY");
    assert!(
        summary.starts_with("Officina «Ünïcødé» del quartiere\\; aperta\\,"),
        "{summary}"
    );
    assert!(summary.ends_with(" open"), "{summary}");
    assert!(
        opening[0]
            .get("UID")
            .contains("-officina-n-c-d-del-quartiere-aperta-a-tutti-e-ancora-pi-lunga@")
    );
}

#[tokio::test]
async fn the_badge_follows_the_status() {
    let server = TestServer::start().await;
    let closed = server.get("/badge.svg").await;
    assert_eq!(closed.status(), 200);
    let h = closed.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "image/svg+xml");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let closed_tag = h[header::ETAG].to_str().unwrap().to_string();
    let body = closed.text().await.unwrap();
    assert!(body.starts_with("<svg") && body.ends_with("</svg>"));
    assert!(body.contains(">BITS</text>") && body.contains(">closed</text>"));
    assert!(body.contains("fill=\"#e05d44\"") && !body.contains(">open</text>"));

    // Compressed when the client asks, as every answer over a few hundred
    // bytes.
    let gzipped = server
        .get_with("/badge.svg", &[(header::ACCEPT_ENCODING, "gzip")])
        .await;
    assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(gzipped.headers()[header::ETAG], closed_tag);
    let bytes = gzipped.bytes().await.unwrap();
    assert!(bytes.len() < body.len());
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut unzipped)
        .unwrap();
    assert_eq!(unzipped, body);

    // The client's copy is current: 304, until the status changes.
    let unchanged = revalidate(&server, "/badge.svg", &closed_tag).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()[header::ETAG], closed_tag);
    assert_eq!(
        unchanged.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*"
    );

    let mut device = server.device().await;
    server.status_from(&mut device, "1").await;
    let open = revalidate(&server, "/badge.svg", &closed_tag).await;
    assert_eq!(open.status(), 200);
    let open_tag = common::header_text(&open, header::ETAG).to_string();
    assert_ne!(open_tag, closed_tag);
    let body = open.text().await.unwrap();
    assert!(body.contains(">open</text>") && body.contains("fill=\"#4c1\""));
    assert!(!body.contains(">closed</text>"));
    assert_eq!(
        revalidate(&server, "/badge.svg", &open_tag).await.status(),
        304
    );
}

#[tokio::test]
async fn the_badge_label_is_escaped_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "[spaceapi]\nspace = \"Lab & Co\"\n");
    let server = TestServer::start_with(&["--config", &config]).await;
    let own = server.get("/badge.svg").await;
    let own_tag = own.headers()[header::ETAG].clone();
    // Opened on its own, an SVG is a document: it may run nothing.
    for path in [
        "/badge.svg",
        "/badge.svg?label=x",
        "/presence.svg",
        "/static/logo.svg",
    ] {
        let r = server.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            r.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; style-src 'unsafe-inline'",
            "{path}"
        );
    }
    assert!(own.text().await.unwrap().contains(">Lab &amp; Co</text>"));

    let hostile = server
        .get("/badge.svg?label=%3Cscript%3Ealert(1)%3C%2Fscript%3E%20%26%20%22q%22%20%27s%27&v=2")
        .await;
    assert_eq!(hostile.status(), 200);
    assert_ne!(
        hostile.headers()[header::ETAG],
        own_tag,
        "the tag follows the label"
    );
    let body = hostile.text().await.unwrap();
    assert!(!body.contains("<script"), "{body}");
    assert!(
        body.contains(
            ">&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot; &#39;s&#39;</text>"
        ),
        "{body}"
    );
    assert!(body.contains("aria-label=\"&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot; &#39;s&#39;: closed\""));

    // 64 characters are drawn, wider than a short label; 65 are a 400.
    let longest = "é".repeat(64);
    let wide = server.text(&format!("/badge.svg?label={longest}")).await;
    assert!(wide.contains(&format!(">{longest}</text>")));
    let width = |svg: &str| -> f64 {
        let w = svg.split("width=\"").nth(1).unwrap();
        w[..w.find('"').unwrap()].parse().unwrap()
    };
    assert!(width(&wide) > width(&body));
    for (query, says) in [
        (format!("label={longest}é"), "over 64 characters"),
        ("label=".to_string(), "empty"),
        ("label=a%0Ab".to_string(), "control character"),
        ("label=a%EF%BF%BEb".to_string(), "noncharacter"),
        ("label=%EF%BF%BF".to_string(), "noncharacter"),
        ("label=a&label=b".to_string(), "more than once"),
    ] {
        let refused = server.get(&format!("/badge.svg?{query}")).await;
        assert_eq!(refused.status(), 400, "{query}");
        let text = refused.text().await.unwrap();
        assert!(text.contains(says), "{query}: {text}");
    }
}
