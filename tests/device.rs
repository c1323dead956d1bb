//! The device link over a real TCP (and unix) socket.

mod common;

use common::sqlite::column;
use common::{Device, TestServer};

#[tokio::test]
async fn status_line_opens_the_room_and_is_logged() {
    let server = TestServer::start().await;
    assert_eq!(server.text("/status").await, "0");
    let mut device = server.device().await;
    server.status_from(&mut device, "1").await;

    let log = server.json("/log?format=json").await;
    let rows = log["log"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["value"], "open");
    assert_eq!(rows[0]["modifiedby"], "BITS");
    // Timestamps are local time in the configured zone (Europe/Rome here).
    let stamp = chrono::NaiveDateTime::parse_from_str(
        rows[0]["timestamp"].as_str().unwrap(),
        "%Y-%m-%d %H:%M:%S",
    )
    .unwrap();
    let rome = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .naive_local();
    assert!((rome - stamp).num_seconds().abs() < 60, "{stamp} vs {rome}");
    let html = server.text("/log").await;
    assert!(
        html.contains("<td>open for under a minute so far</td>"),
        "{html}"
    );

    server.status_from(&mut device, "0").await;
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"][0]["value"], "closed");
    assert_eq!(log["log"][1]["value"], "open");
}

#[tokio::test]
async fn a_repeated_status_is_not_stored_twice() {
    let (server, mut device) = TestServer::start_with_device().await;
    device.send_all(&["status 1", "status 1", "status 1"]).await;
    // A temperature after the repeats proves they were all processed.
    device.send("temperature 0 20.0").await;
    server
        .wait_for_data("the sample", |d| d["tempint"].is_object())
        .await;
    let log = server.json("/log?format=json").await;
    assert_eq!(log["log"].as_array().unwrap().len(), 1, "{log}");
}

#[tokio::test]
async fn temperatures_fill_data_newest_first() {
    let (server, mut device) = TestServer::start_with_device().await;
    for i in 0..105 {
        device
            .send(&format!("temperature {} {}.5", i % 2, 10 + i % 50))
            .await;
    }
    let data = server
        .wait_for_data("105 samples", |d| {
            d["tempinthist"].as_array().is_some_and(|h| h.len() == 100)
                && d["tempint"]["value"] == 14.5
        })
        .await;
    let hist = data["tempinthist"].as_array().unwrap();
    assert_eq!(hist[0], data["tempint"]);
    assert_eq!(hist[0]["sensor"], 0);
    assert_eq!(hist[1]["value"], 13.5);
    assert_eq!(hist[1]["sensor"], 1);
    assert_eq!(hist[0]["modifiedby"], "BITS");
    let t0 = hist[0]["timestamp"].as_str().unwrap();
    assert_eq!(t0.len(), 19, "YYYY-MM-DD HH:MM:SS: {t0}");
    assert_eq!(data["version"], 3);
    assert!(data.get("status").is_none(), "no status yet: {data}");
    assert!(data.get("message").is_none(), "no message yet: {data}");
}

#[tokio::test]
async fn device_messages_are_stored_as_bits_and_escaped_in_json() {
    let (server, mut device) = TestServer::start_with_device().await;
    device.send_message("pizza <tonight> & 'beer'").await;
    let data = server
        .wait_for_data("the message", |d| d["message"].is_object())
        .await;
    assert_eq!(data["message"]["user"], "BITS");
    assert_eq!(
        data["message"]["value"],
        "pizza &lt;tonight&gt; &amp; &#39;beer&#39;"
    );
    let home = server.text("/").await;
    assert!(home.contains("pizza &#60;tonight&#62;"), "{home}");
    assert!(!home.contains("<tonight>"), "{home}");
}

#[tokio::test]
async fn bad_lines_are_skipped_and_the_connection_goes_on() {
    let (server, mut device) = TestServer::start_with_device().await;
    for bad in [
        "hello",
        "status 2",
        "status",
        "temperature 0 hot",
        "temperature 0 500",
        "temperature 0 NaN",
        "message %%%",
        "enter bob",
        "\u{00e9}\u{00e8}",
    ] {
        device.send(bad).await;
    }
    assert!(device.send_raw(b"\xff\xfe\xfd\n").await);
    device.send("status 1\r").await;
    server.wait_for_status("1").await;
    let data = server.json("/data").await;
    assert!(
        data.get("tempint").is_none(),
        "no bad sample stored: {data}"
    );
}

#[tokio::test]
async fn an_overlong_line_closes_the_connection() {
    let (server, mut device) = TestServer::start_with_device().await;
    server.status_from(&mut device, "1").await;
    let long = vec![b'7'; 64 * 1024];
    device.send_raw(&long).await;
    device.closed().await;
    // The server still accepts a device afterwards.
    let mut device = server.device().await;
    server.status_from(&mut device, "0").await;
}

#[tokio::test]
async fn a_new_device_replaces_the_old_one() {
    let server = TestServer::start().await;
    let mut first = server.device().await;
    server.status_from(&mut first, "1").await;
    let mut second = server.device().await;
    server.status_from(&mut second, "0").await;
    first.closed().await;
    second.send("sound 2").await;
    assert_eq!(second.recv().await, "sound 2");
}

#[tokio::test]
async fn sound_is_echoed_to_the_device() {
    let (_server, mut device) = TestServer::start_with_device().await;
    device.send("sound 7").await;
    assert_eq!(device.recv().await, "sound 7");
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let server = TestServer::start_with(&common::DEVICE_TOKEN_S3CRET).await;
    // Each from an address of its own: one token check a second per address.
    let from = |ip: &'static str| common::Device::connect_from(ip, server.control_addr());

    let mut intruder = from("127.0.0.2").await;
    intruder.send("status 1").await;
    intruder.closed().await;

    let mut wrong = from("127.0.0.3").await;
    wrong.send("auth guess").await;
    wrong.closed().await;
    assert_eq!(server.text("/status").await, "0");

    let mut device = from("127.0.0.4").await;
    device.send_all(&["auth s3cret", "status 1"]).await;
    server.wait_for_status("1").await;
}

#[tokio::test]
async fn peers_outside_the_allowlist_are_refused() {
    let server =
        TestServer::start_with(&["--control-remote-address", "10.0.0.0/8, 192.168.0.1"]).await;
    let mut device = server.device().await;
    device.send_raw(b"status 1\n").await;
    device.closed().await;
    assert_eq!(server.text("/status").await, "0");
}

#[tokio::test]
async fn many_refused_peers_leave_the_device_port_working() {
    let server = TestServer::start_with(&["--control-remote-address", "10.0.0.0/8"]).await;
    server.refused_devices(200).await;
    assert_eq!(server.text("/healthz").await, "ok\n");
}

#[tokio::test]
async fn keypad_enter_and_leave_are_accepted() {
    let (server, mut device) = TestServer::start_with_device().await;
    // The device user exists with some id; unknown ids are ignored.
    device
        .send_all(&["enter 1", "enter 999", "leave 999", "leave 1", "status 1"])
        .await;
    server.wait_for_status("1").await;
}

#[tokio::test]
async fn control_on_a_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    // A stale socket file from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let db = dir.path().join("bitsd.db");
    let server = TestServer::start_in(
        dir,
        db,
        &[
            "--control-local-usocket",
            socket.to_str().unwrap(),
            "--usocket-mode",
            "0660",
        ],
    )
    .await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660);
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream.write_all(b"status 1\n").await.unwrap();
    server.wait_for_status("1").await;
}

#[tokio::test]
async fn web_changes_reach_nobody_when_no_device_is_connected() {
    // Sending to an absent device must not block anything.
    let (server, mut device) = TestServer::start_with_device().await;
    server.status_from(&mut device, "1").await;
    drop(device);
    let mut again = Device::connect(server.control_addr()).await;
    server.status_from(&mut again, "0").await;
}

#[tokio::test]
async fn a_flood_is_stored_whole_and_in_order() {
    let (server, mut device) = TestServer::start_with_device().await;
    let mut burst = String::new();
    for i in 0..5000 {
        burst.push_str(&format!("temperature {} {}.{}\n", i % 4, i % 90, i % 10));
    }
    burst.push_str("status 1\n");
    assert!(device.send_raw(burst.as_bytes()).await);
    server.wait_for_status("1").await;
    let data = server.json("/data").await;
    assert_eq!(
        data["tempint"]["value"], 49.9,
        "the last sample is the newest: {data}"
    );
    let db = server.db.clone();
    let _dir = server.stop().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let values: Vec<f64> = column(
        &conn,
        r#"SELECT value FROM "Temperature" ORDER BY timestamp"#,
    );
    assert_eq!(values.len(), 5000);
    for (i, v) in values.iter().enumerate() {
        let expected: f64 = format!("{}.{}", i % 90, i % 10).parse().unwrap();
        assert_eq!(*v, expected, "row {i}");
    }
}
