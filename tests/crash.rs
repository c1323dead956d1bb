//! `kill -9` in the middle of a flood loses nothing any client has seen.

mod common;

use std::collections::BTreeSet;

use common::sqlite::{column, value};
use common::{PATIENCE, Spawned};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Collects the sensor ids of the `tempint` messages a client receives
/// until the connection dies; reports progress through `seen`.
async fn listen(
    web: std::net::SocketAddr,
    seen: tokio::sync::watch::Sender<usize>,
) -> BTreeSet<i64> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{web}/ws"))
        .await
        .unwrap();
    let mut sensors = BTreeSet::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(PATIENCE, ws.next()).await {
        if let Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(sensor) = value["tempint"]["sensor"].as_i64() {
                sensors.insert(sensor);
                let _ = seen.send(sensors.len());
            }
        }
    }
    sensors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_a_client_saw_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let mut bitsd = Spawned::start(&db);

    let (progress, mut watched) = tokio::sync::watch::channel(0usize);
    let (other, _) = tokio::sync::watch::channel(0usize);
    let first = tokio::spawn(listen(bitsd.web, progress));
    let second = tokio::spawn(listen(bitsd.web, other));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut device = tokio::net::TcpStream::connect(bitsd.control).await.unwrap();
    // 2,000 lines in bursts of 100 every 20 ms, so the kill lands mid-flood.
    let flooding = tokio::spawn(async move {
        for burst in 0..20 {
            let mut lines = String::new();
            for sensor in burst * 100..(burst + 1) * 100 {
                lines.push_str(&format!("temperature {sensor} 20.5\n"));
            }
            if device.write_all(lines.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    // Kill it as soon as clients have seen a good part of the flood.
    tokio::time::timeout(PATIENCE, watched.wait_for(|n| *n >= 300))
        .await
        .unwrap()
        .unwrap();
    bitsd.child.kill().unwrap();
    bitsd.child.wait().unwrap();
    let _ = flooding.await;

    let mut seen = first.await.unwrap();
    seen.extend(second.await.unwrap());
    assert!(seen.len() >= 300, "{}", seen.len());

    let conn = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(value::<String>(&conn, "PRAGMA integrity_check"), "ok");
    let stored: BTreeSet<i64> = column(&conn, r#"SELECT sensor FROM "Temperature""#);
    let lost: Vec<&i64> = seen.difference(&stored).collect();
    assert!(lost.is_empty(), "seen by a client but not stored: {lost:?}");
    assert!(
        stored.len() < 2000,
        "the kill came mid-flood ({} stored)",
        stored.len()
    );
    drop(conn);

    // And bitsd starts again on the same file.
    let again = Spawned::start(&db);
    let body = common::get_text(format!("http://{}/healthz", again.web)).await;
    assert_eq!(body, "ok\n");
}
