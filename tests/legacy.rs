//! A database written by the original Python server opens as it is.

mod common;

use common::TestServer;
use common::legacy::legacy_database;
use common::sqlite::value;

#[tokio::test]
async fn an_original_database_opens_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_database(dir.path());
    let empty_wiki = common::folder_with(dir.path(), "empty-wiki", &[]);
    let wiki = empty_wiki.display().to_string();
    let server = TestServer::start_in(dir, db.clone(), &["--wiki-path", &wiki]).await;

    // Old `away` reads as closed.
    assert_eq!(server.text("/status").await, "0");
    let data = server.json("/data").await;
    assert_eq!(data["status"]["value"], "away");
    assert_eq!(data["status"]["timestamp"], "2013-05-02 09:30:00");
    assert_eq!(data["tempint"]["value"], 20.5);
    assert_eq!(data["tempint"]["timestamp"], "2013-05-02 09:10:00");
    assert_eq!(data["tempinthist"].as_array().unwrap().len(), 3);
    assert_eq!(data["message"]["user"], "alice");
    assert_eq!(data["message"]["value"], "pizza &lt;b&gt;tonight&lt;/b&gt;");

    let log = server.json("/log?format=json").await;
    let values: Vec<&str> = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["away", "closed", "open"]);
    assert_eq!(log["log"][2]["timestamp"], "2013-05-01 18:00:00");
    assert_eq!(log["log"][1]["modifiedby"], "web");

    let rules = server.text("/rules").await;
    assert!(rules.contains("Be nice."), "{rules}");

    // New events are written next to the old rows, in the old format.
    let mut device = server.device().await;
    device.send_all(&["status 1", "temperature 1 21.0"]).await;
    device.send_message("hello from the device").await;
    server
        .wait_for_data("the device message", |d| d["message"]["user"] == "BITS")
        .await;
    server.wait_for_status("1").await;
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"].as_array().unwrap().len(), 4);
    assert_eq!(log["log"][0]["value"], "open");
    let _dir = server.stop().await;

    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: String = value(
        &conn,
        r#"SELECT timestamp FROM "Status" ORDER BY timestamp DESC LIMIT 1"#,
    );
    assert!(
        chrono::NaiveDateTime::parse_from_str(&stored, "%Y-%m-%d %H:%M:%S%.6f").is_ok()
            && stored.len() == 26,
        "stored as local text with microseconds: {stored}"
    );
    let users: Vec<(i64, String)> = conn
        .prepare(r#"SELECT userid, name FROM "User" ORDER BY userid"#)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(users, [(1, "alice".to_string()), (2, "BITS".to_string())]);
    let hash: String = value(&conn, r#"SELECT password FROM "User" WHERE userid = 1"#);
    assert!(hash.starts_with("$6$"), "old hashes are kept");
    let device_message: i64 = value(
        &conn,
        r#"SELECT userid FROM "Message" WHERE message = 'hello from the device'"#,
    );
    assert_eq!(device_message, 2);
    assert_eq!(value::<String>(&conn, "PRAGMA journal_mode"), "wal");
    let old_rows: i64 = value(&conn, r#"SELECT COUNT(*) FROM "Temperature""#);
    assert_eq!(old_rows, 4);
    let macs: i64 = value(&conn, r#"SELECT COUNT(*) FROM "MACToUser""#);
    assert_eq!(macs, 1);
    assert_eq!(value::<String>(&conn, "PRAGMA integrity_check"), "ok");
}

#[tokio::test]
async fn restarting_keeps_the_state() {
    let (server, mut device) = TestServer::start_with_device().await;
    device.send_all(&["status 1", "temperature 4 18.0"]).await;
    server
        .wait_for_data("the sample", |d| d["tempint"]["sensor"] == 4)
        .await;
    let before = server.json("/data").await;
    let db = server.db.clone();
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, db, &[]).await;
    assert_eq!(server.text("/status").await, "1");
    assert_eq!(server.json("/data").await, before);
}

#[tokio::test]
async fn the_original_device_and_clients_keep_working_beside_other_sensors() {
    let dir = tempfile::tempdir().unwrap();
    let db = legacy_database(dir.path());
    let server = TestServer::start_in(dir, db.clone(), &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.web_addr()))
        .await
        .unwrap();
    let first: serde_json::Value =
        serde_json::from_str(&common::ws_next_text(&mut ws).await).unwrap();
    assert!(first.get("sensors").is_none(), "{first}");

    // The original daemon's lines, with samples of other sensors between.
    let mut device = server.device().await;
    device
        .send_all(&[
            "sensor humidity 0 40",
            "status 1",
            "sensor door_locked 0 0",
            "temperature 1 21.0",
        ])
        .await;
    let mut keys = Vec::new();
    while keys.len() < 4 {
        let text = common::ws_next_text(&mut ws).await;
        let message: serde_json::Value = serde_json::from_str(&text).unwrap();
        let object = message.as_object().unwrap();
        assert_eq!(object.len(), 1, "one change a message: {text}");
        let (key, body) = object.iter().next().unwrap();
        let mut fields: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        fields.sort_unstable();
        match key.as_str() {
            // `state` is the one field added to the original's status.
            "status" => assert_eq!(fields, ["modifiedby", "state", "timestamp", "value"]),
            "tempint" => assert_eq!(fields, ["modifiedby", "sensor", "timestamp", "value"]),
            "sensor" => {
                assert_eq!(
                    fields,
                    ["kind", "modifiedby", "sensor", "timestamp", "value"]
                )
            }
            other => panic!("{other}: {text}"),
        }
        keys.push(key.clone());
    }
    assert_eq!(keys, ["sensor", "status", "sensor", "tempint"]);
    server.wait_for_status("1").await;

    // What the original client reads of /data is where it was; the
    // sensors are beside it.
    let data = server.json("/data").await;
    assert_eq!(data["tempint"]["value"], 21.0);
    assert_eq!(data["tempint"]["sensor"], 1);
    assert_eq!(data["tempinthist"].as_array().unwrap().len(), 4);
    assert_eq!(data["message"]["user"], "alice");
    assert_eq!(data["version"], 3);
    assert_eq!(data["sensors"]["humidity"][0]["value"], 40);
    let _dir = server.stop().await;

    // The original tables hold only what they held, and the device's.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let temperatures: i64 = value(&conn, r#"SELECT COUNT(*) FROM "Temperature""#);
    assert_eq!(temperatures, 4);
    let samples: i64 = value(&conn, "SELECT COUNT(*) FROM bitsd_sensor");
    assert_eq!(samples, 2);
    assert_eq!(value::<String>(&conn, "PRAGMA integrity_check"), "ok");
}
