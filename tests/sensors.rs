//! Sensors beyond temperature from the device line `sensor <kind> <id>
//! <value>`: each kind stored with its time, the newest of each in `/data`,
//! live on `/ws` and `/events`, counted in `/metrics`, kept over a restart;
//! bad lines skipped with a log line and nothing stored.

mod common;

use common::{PATIENCE, Spawned, TestServer, ws_next_text};
use serde_json::Value;

/// One line of each kind.
const LINES: [&str; 5] = [
    "sensor humidity 0 45.5",
    "sensor carbondioxide 1 812",
    "sensor power_consumption 0 1250.5",
    "sensor barometer 2 1013.25",
    "sensor door_locked 0 1",
];

/// The rows of `bitsd_sensor`: kind, sensor, value, modified_by, and
/// whether the time is stored as the original stores times.
fn stored(db: &std::path::Path) -> Vec<(String, i64, f64, String, bool)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT kind, sensor, value, modified_by, timestamp FROM bitsd_sensor ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        let time: String = r.get(4)?;
        let local = chrono::NaiveDateTime::parse_from_str(&time, "%Y-%m-%d %H:%M:%S%.6f").is_ok();
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, local))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[tokio::test]
async fn each_kind_is_stored_shown_in_data_and_pushed_live() {
    let (server, mut device) = TestServer::start_with_device().await;
    device.send("temperature 0 21.5").await;
    let before = server
        .wait_for_data("the temperature", |d| d["tempint"].is_object())
        .await;
    assert!(before.get("sensors").is_none(), "old clients: {before}");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.web_addr()))
        .await
        .unwrap();
    let first: Value = serde_json::from_str(&ws_next_text(&mut ws).await).unwrap();
    assert!(first.get("sensors").is_none(), "{first}");
    let mut events = reqwest::get(server.url("/events")).await.unwrap();
    device.send_all(&LINES).await;

    let mut live = Vec::new();
    while live.len() < LINES.len() {
        let message: Value = serde_json::from_str(&ws_next_text(&mut ws).await).unwrap();
        if let Some(sample) = message.get("sensor") {
            assert_eq!(message.as_object().unwrap().len(), 1, "{message}");
            live.push(sample.clone());
        }
    }
    let kinds: Vec<&str> = live.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "humidity",
            "carbondioxide",
            "power_consumption",
            "barometer",
            "door_locked"
        ]
    );
    assert_eq!(live[0]["sensor"], 0);
    assert_eq!(live[0]["value"], 45.5);
    assert_eq!(live[0]["modifiedby"], "BITS");
    assert_eq!(live[1]["value"], 812);
    assert_eq!(live[4]["value"], 1);
    assert_eq!(live[0]["timestamp"].as_str().unwrap().len(), 19);

    // The same samples as Server-Sent Events.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seen.matches("data: {\"sensor\":").count() < LINES.len() {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("every sample as an event")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains(r#""kind":"door_locked","sensor":0,"value":1"#),
        "{seen}"
    );

    let data = server
        .wait_for_data("every kind", |d| d["sensors"]["door_locked"].is_array())
        .await;
    let sensors = &data["sensors"];
    assert_eq!(sensors.as_object().unwrap().len(), 5, "{sensors}");
    let humidity = &sensors["humidity"][0];
    assert_eq!(humidity["sensor"], 0);
    assert_eq!(humidity["value"], 45.5);
    assert_eq!(humidity["modifiedby"], "BITS");
    assert_eq!(humidity["timestamp"], live[0]["timestamp"]);
    assert!(humidity.get("kind").is_none(), "{humidity}");
    assert_eq!(sensors["carbondioxide"][0]["sensor"], 1);
    assert_eq!(sensors["barometer"][0]["value"], 1013.25);
    // What old clients read is as it was.
    assert_eq!(data["tempint"], before["tempint"]);
    assert_eq!(data["tempinthist"], before["tempinthist"]);

    // A newer sample replaces the older of its sensor; another id is listed
    // beside it, in order of id.
    device
        .send_all(&["sensor humidity 0 50", "sensor humidity 3 60"])
        .await;
    let data = server
        .wait_for_data("the second humidity sensor", |d| {
            d["sensors"]["humidity"].as_array().unwrap().len() == 2
        })
        .await;
    let humidity = &data["sensors"]["humidity"];
    assert_eq!(humidity[0]["value"], 50);
    assert_eq!(humidity[1]["sensor"], 3);

    let metrics = server.text("/metrics").await;
    for line in [
        "bitsd_events_total{kind=\"sensor\"} 7",
        "bitsd_sensor_samples_total{kind=\"humidity\"} 3",
        "bitsd_sensor_samples_total{kind=\"door_locked\"} 1",
        "bitsd_events_total{kind=\"tempint\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }

    let rows = stored(&server.db);
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert_eq!(rows[0], ("humidity".into(), 0, 45.5, "BITS".into(), true));
    assert_eq!(rows[4], ("door_locked".into(), 0, 1.0, "BITS".into(), true));

    // A restart reads the newest of each back.
    let db = server.db.clone();
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, db, &[]).await;
    let after = server.json("/data").await;
    assert_eq!(after["sensors"], data["sensors"]);
}

#[tokio::test]
async fn bad_sensor_lines_are_skipped_with_the_reason_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let bitsd = Spawned::start_with(&db, &[], "info");
    let mut device = common::Device::connect(bitsd.control).await;
    let bad = [
        ("sensor humidity 0 101", "humidity 101 is outside 0..100 %"),
        (
            "sensor carbondioxide 0 100001",
            "carbondioxide 100001 is outside",
        ),
        ("sensor power_consumption 0 -1", "power_consumption -1"),
        (
            "sensor barometer 0 250",
            "barometer 250 is outside 300..1100",
        ),
        ("sensor door_locked 0 2", "door_locked 2 is outside 0 or 1"),
        ("sensor radiation 0 5", "unknown sensor kind `radiation`"),
        ("sensor humidity 0 damp", "humidity `damp` is not a decimal"),
        ("sensor humidity 0", "`sensor` takes 3 argument(s), got 2"),
    ];
    for (line, _) in bad {
        device.send(line).await;
    }
    device.send("sensor humidity 4 40").await;
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let data = loop {
        let url = format!("http://{}/data", bitsd.web);
        let data: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        if data.get("sensors").is_some() {
            break data;
        }
        assert!(tokio::time::Instant::now() < deadline, "{data}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(
        data["sensors"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["humidity"]
    );
    assert_eq!(data["sensors"]["humidity"][0]["sensor"], 4);
    // The lines are read from bitsd's standard error as it writes them.
    while bitsd.log_lines("line skipped").len() < bad.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too few lines skipped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let skipped = bitsd.log_lines("line skipped");
    assert_eq!(skipped.len(), bad.len(), "{skipped:#?}");
    for ((line, reason), logged) in bad.iter().zip(&skipped) {
        assert!(logged.contains(reason), "{line}: {logged}");
    }
    assert_eq!(
        stored(&db),
        [("humidity".into(), 4, 40.0, "BITS".into(), true)]
    );
}

#[tokio::test]
async fn bitsd_check_counts_the_samples_of_every_kind() {
    let (server, mut device) = TestServer::start_with_device().await;
    device
        .send_all(&["sensor humidity 0 45.5", "sensor carbondioxide 1 800"])
        .await;
    server
        .wait_for_data("both samples", |d| {
            d["sensors"]["humidity"].is_array() && d["sensors"]["carbondioxide"].is_array()
        })
        .await;
    let out = common::bitsd_command()
        .args(["--config", "/dev/null", "--db"])
        .arg(&server.db)
        .arg("check")
        .output()
        .unwrap();
    let said = common::stdout_of(out);
    let line = said
        .lines()
        .find(|l| l.starts_with("other sensor samples: "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(line.starts_with("other sensor samples: 2, "), "{line}");
}
