//! A database written by the original Python server opens as it is.

mod common;

use common::{TestServer, b64};

/// The original's schema, as SQLAlchemy created it on SQLite.
const LEGACY_SCHEMA: &str = r#"
CREATE TABLE "Status" (
    timestamp DATETIME NOT NULL,
    value VARCHAR(6) NOT NULL,
    modified_by VARCHAR(4) NOT NULL,
    PRIMARY KEY (timestamp),
    CHECK (value IN ('open', 'closed', 'away')),
    CHECK (modified_by IN ('BITS', 'web'))
);
CREATE TABLE "Temperature" (
    timestamp DATETIME NOT NULL,
    value FLOAT NOT NULL,
    sensor INTEGER NOT NULL,
    modified_by VARCHAR(4) NOT NULL,
    PRIMARY KEY (timestamp, value),
    CHECK (modified_by IN ('BITS', 'web'))
);
CREATE TABLE "Message" (
    userid BIGINT NOT NULL,
    timestamp DATETIME NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (userid, timestamp)
);
CREATE TABLE "Pages" (
    slug VARCHAR(100) NOT NULL,
    title VARCHAR(100) NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (slug)
);
CREATE TABLE "User" (
    userid INTEGER NOT NULL,
    name VARCHAR(256) NOT NULL,
    password VARCHAR(512) NOT NULL,
    PRIMARY KEY (userid),
    UNIQUE (name)
);
CREATE TABLE "LoginAttempt" (
    id INTEGER NOT NULL,
    username VARCHAR(256) NOT NULL,
    ipaddress VARCHAR(39) NOT NULL,
    timestamp DATETIME NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE "MACToUser" (
    userid INTEGER NOT NULL,
    mac_hash VARCHAR(64) NOT NULL,
    PRIMARY KEY (mac_hash),
    FOREIGN KEY(userid) REFERENCES "User" (userid)
);
INSERT INTO "User" VALUES (1, 'alice', '$6$rounds=656000$saltsalt$oldhasholdhasholdhash');
INSERT INTO "Status" VALUES ('2013-05-01 18:00:00', 'open', 'BITS');
INSERT INTO "Status" VALUES ('2013-05-01 23:10:00.250000', 'closed', 'web');
INSERT INTO "Status" VALUES ('2013-05-02 09:30:00.123456', 'away', 'BITS');
INSERT INTO "Temperature" VALUES ('2013-05-02 09:00:00', 19.5, 0, 'BITS');
INSERT INTO "Temperature" VALUES ('2013-05-02 09:05:00.5', 20.0, 1, 'BITS');
INSERT INTO "Temperature" VALUES ('2013-05-02 09:10:00.000001', 20.5, 0, 'BITS');
INSERT INTO "Message" VALUES (1, '2013-05-02 10:00:00.000000', 'pizza <b>tonight</b>');
INSERT INTO "Pages" VALUES ('rules', 'Rules', '# Rules

Be nice.');
INSERT INTO "MACToUser" VALUES (1, 'abc123');
"#;

#[tokio::test]
async fn an_original_database_opens_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bits.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(LEGACY_SCHEMA)
        .unwrap();
    let empty_wiki = dir.path().join("empty-wiki");
    std::fs::create_dir(&empty_wiki).unwrap();
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
    device.send("status 1").await;
    device.send("temperature 1 21.0").await;
    device
        .send(&format!("message {}", b64("hello from the device")))
        .await;
    server
        .wait_for_data("the device message", |d| d["message"]["user"] == "BITS")
        .await;
    server.wait_for_status("1").await;
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"].as_array().unwrap().len(), 4);
    assert_eq!(log["log"][0]["value"], "open");
    let _dir = server.stop().await;

    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: String = conn
        .query_row(
            r#"SELECT timestamp FROM "Status" ORDER BY timestamp DESC LIMIT 1"#,
            [],
            |r| r.get(0),
        )
        .unwrap();
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
    let hash: String = conn
        .query_row(r#"SELECT password FROM "User" WHERE userid = 1"#, [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(hash.starts_with("$6$"), "old hashes are kept");
    let device_message: i64 = conn
        .query_row(
            r#"SELECT userid FROM "Message" WHERE message = 'hello from the device'"#,
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(device_message, 2);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let old_rows: i64 = conn
        .query_row(r#"SELECT COUNT(*) FROM "Temperature""#, [], |r| r.get(0))
        .unwrap();
    assert_eq!(old_rows, 4);
    let macs: i64 = conn
        .query_row(r#"SELECT COUNT(*) FROM "MACToUser""#, [], |r| r.get(0))
        .unwrap();
    assert_eq!(macs, 1);
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[tokio::test]
async fn restarting_keeps_the_state() {
    let server = TestServer::start().await;
    let mut device = server.device().await;
    device.send("status 1").await;
    device.send("temperature 4 18.0").await;
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
