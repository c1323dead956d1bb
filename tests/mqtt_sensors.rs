//! Sensors beyond temperature on a real mosquitto: each sample retained on
//! `P/sensor/<kind>/<id>` with a Home Assistant entity of its device class,
//! and, with `mqtt_subscribe`, `P/set/sensor/<kind>/<id>` read as the device
//! line (a bad one skipped with a log line).

mod common;

use std::time::Duration;

use common::mosquitto::{Mosquitto, Subscriber};
use common::{PATIENCE, Spawned, TestServer};
use serde_json::Value;

#[tokio::test]
async fn each_sample_is_retained_with_its_home_assistant_entity() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let server =
        TestServer::start_with(&["--mqtt-url", &url, "--sensor-names", "0=Front door"]).await;
    let mut device = server.device().await;
    device
        .send_all(&[
            "sensor humidity 0 45.5",
            "sensor carbondioxide 1 812",
            "sensor power_consumption 2 1250.5",
            "sensor barometer 3 1013.25",
            "sensor door_locked 0 1",
        ])
        .await;
    server
        .wait_for_data("the lock", |d| d["sensors"]["door_locked"].is_array())
        .await;

    // A subscriber that comes later finds each one retained.
    let mut late = Subscriber::connect(broker.port, "bits/sensor/#").await;
    let topics = [
        "bits/sensor/humidity/0",
        "bits/sensor/carbondioxide/1",
        "bits/sensor/power_consumption/2",
        "bits/sensor/barometer/3",
        "bits/sensor/door_locked/0",
    ];
    let retained = late.latest(&topics).await;
    let payloads: Vec<String> = topics.iter().map(|t| retained[*t].text()).collect();
    assert_eq!(payloads, ["45.5", "812", "1250.5", "1013.25", "1"]);
    assert!(topics.iter().all(|t| retained[*t].retained));

    let ha = "homeassistant/+/bitsd_bits/#";
    let mut ha = Subscriber::connect(broker.port, ha).await;
    let configs = [
        ("sensor", "humidity_0", "humidity", Some("%")),
        ("sensor", "carbondioxide_1", "carbon_dioxide", Some("ppm")),
        ("sensor", "power_consumption_2", "power", Some("W")),
        ("sensor", "barometer_3", "atmospheric_pressure", Some("hPa")),
        ("binary_sensor", "door_locked_0", "lock", None),
    ];
    let names: Vec<String> = configs
        .iter()
        .map(|(component, object, _, _)| {
            format!("homeassistant/{component}/bitsd_bits/{object}/config")
        })
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let found = ha.latest(&names).await;
    for ((_, object, class, unit), topic) in configs.iter().zip(&names) {
        let config = found[*topic].json();
        assert_eq!(config["device_class"], *class, "{topic}");
        assert_eq!(config["unique_id"], format!("bitsd_bits_{object}"));
        assert_eq!(config["availability_topic"], "bits/availability");
        assert_eq!(config["device"]["identifiers"][0], "bitsd_bits");
        match unit {
            Some(unit) => {
                assert_eq!(config["unit_of_measurement"], *unit, "{topic}");
                assert_eq!(config["state_class"], "measurement");
            }
            None => assert!(config.get("unit_of_measurement").is_none()),
        }
    }
    let lock = found[names[4]].json();
    assert_eq!(lock["state_topic"], "bits/sensor/door_locked/0");
    assert_eq!(lock["name"], "Lock Front door");
    // Home Assistant's lock is on while unlocked.
    assert_eq!(lock["payload_on"], "0");
    assert_eq!(lock["payload_off"], "1");

    // A new sample goes out live.
    device.send("sensor door_locked 0 0").await;
    late.until("bits/sensor/door_locked/0", |m| m.text() == "0")
        .await;
    // And in the `/data` document.
    let mut data = Subscriber::connect(broker.port, "bits/data").await;
    data.until("bits/data", |m| {
        m.json()["sensors"]["door_locked"][0]["value"] == 0
    })
    .await;
}

#[tokio::test]
async fn set_sensor_topics_act_as_the_device_line() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let url = broker.url();
    let args = ["--mqtt-url", url.as_str(), "--mqtt-subscribe"];
    let bitsd = Spawned::start_with(&dir.path().join("bitsd.db"), &args, "info");
    let mut watcher = Subscriber::connect(broker.port, "bits/availability").await;
    watcher
        .until("bits/availability", |m| m.text() == "online")
        .await;
    let publisher = Subscriber::connect(broker.port, "unused").await;
    let bad = [
        ("bits/set/sensor/humidity/0", "101"),
        ("bits/set/sensor/radiation/0", "5"),
        ("bits/set/sensor/door_locked/0", "open"),
    ];
    for (topic, payload) in bad {
        publisher.publish(topic, payload).await;
    }
    publisher
        .publish("bits/set/sensor/barometer/2", "998.5")
        .await;
    publisher
        .publish("bits/set/sensor/door_locked/1", "1")
        .await;

    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let data = loop {
        let url = format!("http://{}/data", bitsd.web);
        let data: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        if data["sensors"]["door_locked"].is_array() {
            break data;
        }
        assert!(tokio::time::Instant::now() < deadline, "{data}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sensors = data["sensors"].as_object().unwrap();
    assert_eq!(
        sensors.keys().collect::<Vec<_>>(),
        ["barometer", "door_locked"]
    );
    assert_eq!(data["sensors"]["barometer"][0]["sensor"], 2);
    assert_eq!(data["sensors"]["barometer"][0]["value"], 998.5);
    assert_eq!(data["sensors"]["door_locked"][0]["modifiedby"], "BITS");
    while bitsd.log_lines("skipped").len() < bad.len() {
        assert!(tokio::time::Instant::now() < deadline, "too few skipped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let skipped = bitsd.log_lines("skipped");
    for needle in [
        "humidity 101 is outside 0..100 %",
        "unknown sensor kind `radiation`",
        "door_locked `open` is not a decimal",
    ] {
        assert!(
            skipped.iter().any(|l| l.contains(needle)),
            "{needle}: {skipped:#?}"
        );
    }
}
