//! `bitsd fake device` and `bitsd fake history` against a real server.

mod common;

use std::process::{Command, Stdio};

use common::{TestServer, bitsd_command as bitsd, stdout_of};

/// Kills the child when the test ends, however it ends.
struct Kill(std::process::Child);

impl Kill {
    /// Starts `command`, its output kept from the test's.
    fn spawn(command: &mut Command) -> Kill {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Kill(child)
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_fake_device_brings_the_homepage_to_life() {
    let server = TestServer::start_with(&["--control-token", "demo"]).await;
    let _child = Kill::spawn(
        bitsd()
            .args(["--config", "/dev/null", "fake", "device", "--token", "demo"])
            .args(["--interval", "0.1", "--control"])
            .arg(server.control_addr().to_string()),
    );
    server.wait_for_status("1").await;
    let data = server
        .wait_for_data("samples from both sensors", |d| {
            d["tempinthist"].as_array().is_some_and(|h| {
                h.iter().any(|s| s["sensor"] == 0) && h.iter().any(|s| s["sensor"] == 1)
            })
        })
        .await;
    let value = data["tempint"]["value"].as_f64().unwrap();
    assert!((10.0..30.0).contains(&value), "{value}");
    let data = server
        .wait_for_data("a message", |d| d["message"].is_object())
        .await;
    assert_eq!(data["message"]["user"], "BITS");
}

/// Without `--control` and `--token`, the fake device dials the configured
/// device port with the configured token.
#[tokio::test]
async fn the_fake_device_follows_the_configured_port_and_token() {
    let server = TestServer::start_with(&["--control-token", "from-config"]).await;
    let port = server.control_addr().port().to_string();
    let _child = Kill::spawn(
        bitsd()
            .args(["--config", "/dev/null", "--control-local-port", &port])
            .env("BITSD_CONTROL_TOKEN", "from-config")
            .args(["fake", "device", "--interval", "0.1"]),
    );
    server.wait_for_status("1").await;
}

#[tokio::test]
async fn fake_history_fills_the_log_and_the_forecast() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let out = bitsd()
        .args(["--config", "/dev/null", "--timezone", "Europe/Rome", "--db"])
        .arg(&db)
        .args(["fake", "history", "--days", "21"])
        .output()
        .unwrap();
    let said = stdout_of(out);
    assert!(said.contains("21 past day(s) written"), "{said}");
    let server = TestServer::start_in(dir, db, &[]).await;
    let log = server.json("/log?format=json&limit=1000").await;
    let rows = log["log"].as_array().unwrap();
    assert!(rows.len() >= 20, "{} changes", rows.len());
    assert_eq!(rows[0]["value"], "closed", "the past ends closed");
    let forecast = server.json("/presence").await;
    let values: Vec<f64> = forecast["forecast"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let afternoon_weekdays: f64 = (0..5).map(|d| values[d * 48 + 34]).sum::<f64>() / 5.0;
    let night: f64 = (0..7).map(|d| values[d * 48 + 6]).sum::<f64>() / 7.0;
    assert!(
        afternoon_weekdays > 0.5,
        "weekday 17:00 is usually open: {afternoon_weekdays}"
    );
    assert_eq!(night, 0.0, "03:00 never is");
    let data = server.json("/data").await;
    assert_eq!(data["tempinthist"].as_array().unwrap().len(), 100);
}
