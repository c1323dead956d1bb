//! MQTT against a real mosquitto: retained state, live changes in order,
//! Home Assistant discovery, the last will, a broker that is down, restarts
//! or wants a password, `set/` topics read as device commands (huge ones
//! skipped), and `public_url` as bitsd's own address.

mod common;

use std::time::Duration;

use common::mosquitto::{Mosquitto, Subscriber, free_port};
use common::{PATIENCE, Spawned, TestServer, b64, ws_next_text};
use serde_json::Value;

/// Every state topic under `bits/`.
const STATE_TOPICS: [&str; 7] = [
    "bits/status",
    "bits/temperature/0",
    "bits/temperature/1",
    "bits/message",
    "bits/people_now_present",
    "bits/data",
    "bits/spaceapi",
];

async fn server_on(broker: &Mosquitto, extra: &[&str]) -> TestServer {
    let url = broker.url();
    let mut args = vec!["--mqtt-url", url.as_str()];
    args.extend_from_slice(extra);
    TestServer::start_with(&args).await
}

/// [`server_on`] for the space "Lab", whose website is https://lab.example/.
async fn lab_on(broker: &Mosquitto, extra: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bitsd.toml");
    std::fs::write(
        &config,
        "[spaceapi]\nspace = \"Lab\"\nurl = \"https://lab.example/\"\n",
    )
    .unwrap();
    let db = dir.path().join("bitsd.db");
    let url = broker.url();
    let config = config.display().to_string();
    let mut args = vec!["--mqtt-url", url.as_str(), "--config", config.as_str()];
    args.extend_from_slice(extra);
    TestServer::start_in(dir, db, &args).await
}

/// bitsd as a child process on `broker`, with `extra` options and
/// `RUST_LOG=log`; the folder holds its database.
fn spawned_on(broker: &Mosquitto, extra: &[&str], log: &str) -> (tempfile::TempDir, Spawned) {
    let dir = tempfile::tempdir().unwrap();
    let url = broker.url();
    let mut args = vec!["--mqtt-url", url.as_str()];
    args.extend_from_slice(extra);
    let bitsd = Spawned::start_with(&dir.path().join("bitsd.db"), &args, log);
    (dir, bitsd)
}

/// Waits until bitsd says `online` on `prefix/availability`.
async fn online(port: u16, prefix: &str) {
    let topic = format!("{prefix}/availability");
    let mut watcher = Subscriber::connect(port, &topic).await;
    watcher.until(&topic, |m| m.text() == "online").await;
}

/// Waits until bitsd has counted `n` rejected `set/` messages.
async fn rejected_reach(http: &reqwest::Client, web: std::net::SocketAddr, n: f64) {
    set_messages_reach(http, web, "rejected", n).await;
}

/// Waits until bitsd has counted `n` `set/` messages with `result`.
async fn set_messages_reach(
    http: &reqwest::Client,
    web: std::net::SocketAddr,
    result: &str,
    n: f64,
) {
    let name = format!("bitsd_mqtt_set_messages_total{{result=\"{result}\"}}");
    eventually(&format!("{n} {result} set/ messages counted"), async || {
        metric(http, web, &name).await == Some(n)
    })
    .await;
}

/// Waits until `check` holds, polling every 20 ms for [`PATIENCE`].
async fn eventually(what: &str, check: impl AsyncFn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(http: &reqwest::Client, web: std::net::SocketAddr, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://{web}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_late_subscriber_finds_the_whole_state_retained() {
    let broker = Mosquitto::start();
    let server = server_on(&broker, &[]).await;
    let mut device = server.device().await;
    device
        .send_all(&["status 1", "temperature 0 21.5", "temperature 1 19"])
        .await;
    device
        .send(&format!(
            "message {}",
            b64("pizza <b>stasera</b> & \"vino\"")
        ))
        .await;
    let data = server
        .wait_for_data("the message", |d| d["message"].is_object())
        .await;

    // Once the last change is out, a subscriber that comes later finds
    // every topic retained, as it is now.
    let mut follower = Subscriber::connect(broker.port, "bits/#").await;
    // The SpaceAPI document goes out last.
    let text = "pizza <b>stasera</b> & \"vino\"";
    follower
        .until("bits/spaceapi", |m| m.json()["state"]["message"] == text)
        .await;
    let mut late = Subscriber::connect(broker.port, "bits/#").await;
    let mut topics = STATE_TOPICS.to_vec();
    topics.push("bits/availability");
    let state = late.latest(&topics).await;
    assert!(state.values().all(|m| m.retained), "{state:?}");
    assert_eq!(state["bits/data"].json(), data);
    assert_eq!(state["bits/status"].text(), "open");
    assert_eq!(state["bits/temperature/0"].text(), "21.5");
    assert_eq!(state["bits/temperature/1"].text(), "19.0");
    assert_eq!(
        state["bits/message"].text(),
        "pizza <b>stasera</b> & \"vino\""
    );
    assert_eq!(state["bits/people_now_present"].text(), "0");
    assert_eq!(state["bits/availability"].text(), "online");
    assert_eq!(
        data["message"]["value"],
        "pizza &lt;b&gt;stasera&lt;/b&gt; &amp; &quot;vino&quot;"
    );
    let spaceapi = state["bits/spaceapi"].json();
    assert_eq!(spaceapi["state"]["open"], true);
    assert_eq!(spaceapi["space"], "BITS");
    // Without `[spaceapi] url`: this host, on the port bitsd serves.
    let own = spaceapi["url"].as_str().unwrap();
    let port = format!(":{}", server.web_addr().port());
    assert!(own.starts_with("http://") && own.ends_with(&port), "{own}");
    assert_eq!(
        spaceapi["sensors"]["temperature"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn every_sample_reaches_a_subscriber_in_order() {
    let broker = Mosquitto::start();
    let server = server_on(&broker, &["--mqtt-homeassistant=false"]).await;
    online(broker.port, "bits").await;
    let mut subscriber = Subscriber::connect(broker.port, "bits/temperature/#").await;
    let mut device = server.device().await;
    let samples: Vec<String> = (0..2000)
        .map(|i| format!("{}", f64::from(i) / 10.0))
        .collect();
    for value in &samples {
        device.send(&format!("temperature 0 {value}")).await;
    }
    for expected in &samples {
        let got = subscriber.next().await;
        assert_eq!(got.topic, "bits/temperature/0");
        assert_eq!(
            got.text().parse::<f64>().unwrap(),
            expected.parse::<f64>().unwrap()
        );
    }
}

#[tokio::test]
async fn samples_committed_while_the_broker_stalled_all_arrive_in_order() {
    let broker = Mosquitto::start();
    let (_dir, bitsd) = spawned_on(
        &broker,
        &["--mqtt-homeassistant=false"],
        "info,bitsd::mqtt=debug",
    );
    online(broker.port, "bits").await;
    let mut subscriber = Subscriber::connect(broker.port, "bits/temperature/#").await;
    // The broker stops acknowledging: bitsd's window fills, and the stream
    // of changes goes on without its MQTT follower.
    broker.pause();
    let count = 30_000;
    // 0.00 to 149.99, within the device's range.
    let value = |i: usize| format!("{}.{:02}", i % 15_000 / 100, i % 100);
    let lines: String = (0..count)
        .map(|i| format!("temperature {} {}\n", i % 2, value(i)))
        .collect();
    let mut device = common::Device::connect(bitsd.control).await;
    assert!(device.send_raw(lines.as_bytes()).await);
    let http = reqwest::Client::new();
    let last = value(count - 1).parse::<f64>().unwrap();
    eventually("every sample committed", async || {
        let url = format!("http://{}/data", bitsd.web);
        let data: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        data["tempint"]["value"].as_f64() == Some(last)
    })
    .await;
    broker.resume();
    for i in 0..count {
        let got = subscriber.next().await;
        assert_eq!(
            got.topic,
            format!("bits/temperature/{}", i % 2),
            "sample {i}"
        );
        assert_eq!(
            got.text().parse::<f64>().unwrap(),
            value(i).parse::<f64>().unwrap(),
            "sample {i}"
        );
    }
    // They did not all come from the stream.
    assert!(!bitsd.log_lines("reading the samples it missed").is_empty());
}

#[tokio::test]
async fn a_custom_prefix_holds_every_topic() {
    let broker = Mosquitto::start();
    let server = server_on(
        &broker,
        &[
            "--mqtt-topic-prefix",
            "club/room",
            "--mqtt-homeassistant=false",
        ],
    )
    .await;
    let mut ha = Subscriber::connect(broker.port, "homeassistant/#").await;
    let mut device = server.device().await;
    device.send("status 1").await;
    let mut subscriber = Subscriber::connect(broker.port, "club/room/#").await;
    let state = subscriber
        .latest(&[
            "club/room/availability",
            "club/room/status",
            "club/room/people_now_present",
            "club/room/data",
            "club/room/spaceapi",
        ])
        .await;
    assert_eq!(state["club/room/availability"].text(), "online");
    if state["club/room/status"].text() != "open" {
        subscriber
            .until("club/room/status", |m| m.text() == "open")
            .await;
    }
    // No discovery configs: the broker handles messages in order, so any
    // config would reach this subscriber before the marker published now.
    ha.publish("homeassistant/marker", "end").await;
    let first = ha.next().await;
    assert_eq!(first.topic, "homeassistant/marker", "{first:?}");
    let web = server.web_addr();
    let published = metric(&server.http, web, "bitsd_mqtt_published_total").await;
    assert!(published.is_some_and(|n| n >= 5.0), "{published:?}");
    assert_eq!(
        metric(&server.http, web, "bitsd_mqtt_connected").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn the_last_will_says_offline_when_bitsd_is_killed() {
    let broker = Mosquitto::start();
    let (_dir, mut bitsd) = spawned_on(&broker, &[], "info");
    let mut watcher = Subscriber::connect(broker.port, "bits/availability").await;
    watcher
        .until("bits/availability", |m| m.text() == "online")
        .await;
    bitsd.child.kill().unwrap();
    bitsd.child.wait().unwrap();
    watcher
        .until("bits/availability", |m| m.text() == "offline")
        .await;
    // Retained for whoever comes later.
    let mut late = Subscriber::connect(broker.port, "bits/availability").await;
    assert_eq!(late.next().await.text(), "offline");
}

#[tokio::test]
async fn a_clean_shutdown_says_offline() {
    let broker = Mosquitto::start();
    let server = server_on(&broker, &[]).await;
    let mut watcher = Subscriber::connect(broker.port, "bits/availability").await;
    watcher
        .until("bits/availability", |m| m.text() == "online")
        .await;
    server.stop().await;
    watcher
        .until("bits/availability", |m| m.text() == "offline")
        .await;
}

#[tokio::test]
async fn a_broker_down_at_start_gets_the_state_once_it_is_up() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let bitsd = Spawned::start_with(
        &dir.path().join("bitsd.db"),
        &["--mqtt-url", &url],
        "info,bitsd::mqtt=debug",
    );
    let http = reqwest::Client::new();
    let status = http
        .get(format!("http://{}/status", bitsd.web))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    // Two tries failed: logged once, not once per try.
    bitsd.wait_for_log("next try in 2 s", PATIENCE).await;
    assert_eq!(bitsd.log_lines("cannot reach the broker").len(), 1);

    let broker = Mosquitto::start_on(port, None);
    let mut subscriber = Subscriber::connect(port, "bits/#").await;
    let state = subscriber
        .latest(&[
            "bits/availability",
            "bits/status",
            "bits/data",
            "bits/spaceapi",
        ])
        .await;
    assert_eq!(state["bits/status"].text(), "closed");
    bitsd.wait_for_log("mqtt: connected to", PATIENCE).await;
    drop(broker);
}

#[tokio::test]
async fn a_restarted_broker_gets_the_state_again() {
    let mut broker = Mosquitto::start();
    let server = server_on(&broker, &[]).await;
    let mut device = server.device().await;
    device.send_all(&["status 1", "temperature 3 18.5"]).await;
    let mut subscriber = Subscriber::connect(broker.port, "bits/temperature/3").await;
    subscriber
        .until("bits/temperature/3", |m| m.text() == "18.5")
        .await;
    drop(subscriber);

    broker.restart();
    let mut after = Subscriber::connect(broker.port, "bits/#").await;
    let state = after
        .latest(&[
            "bits/status",
            "bits/temperature/3",
            "bits/availability",
            "bits/data",
        ])
        .await;
    assert_eq!(state["bits/temperature/3"].text(), "18.5");
    assert_eq!(state["bits/status"].text(), "open");
    // Live again after the reconnection.
    device.send("temperature 3 19.5").await;
    after
        .until("bits/temperature/3", |m| m.text() == "19.5")
        .await;
}

#[tokio::test]
async fn home_assistant_finds_the_space_and_each_new_sensor() {
    let broker = Mosquitto::start();
    let server = lab_on(&broker, &[]).await;
    let mut ha = Subscriber::connect(broker.port, "homeassistant/#").await;
    let open = "homeassistant/binary_sensor/bitsd_bits/open/config";
    let people = "homeassistant/sensor/bitsd_bits/people_now_present/config";
    let configs = ha.latest(&[open, people]).await;

    let open = configs[open].json();
    assert_eq!(open["state_topic"], "bits/status");
    assert_eq!(open["payload_on"], "open");
    assert_eq!(open["payload_off"], "closed");
    assert_eq!(open["device_class"], "door");
    let people = configs[people].json();
    assert_eq!(people["state_topic"], "bits/people_now_present");
    for config in [&open, &people] {
        assert_eq!(config["availability_topic"], "bits/availability");
        assert_eq!(config["device"]["identifiers"][0], "bitsd_bits");
        assert_eq!(config["device"]["name"], "Lab");
        assert_eq!(config["device"]["manufacturer"], "bitsd");
        assert!(config["device"]["sw_version"].is_string());
        assert!(config["device"]["model"].is_string());
    }
    assert_ne!(open["unique_id"], people["unique_id"]);

    let mut device = server.device().await;
    device.send("temperature 7 22.25").await;
    let sensor = ha
        .until(
            "homeassistant/sensor/bitsd_bits/temperature_7/config",
            |_| true,
        )
        .await
        .json();
    assert_eq!(sensor["state_topic"], "bits/temperature/7");
    assert_eq!(sensor["device_class"], "temperature");
    assert_eq!(sensor["unit_of_measurement"], "°C");
    assert_eq!(sensor["state_class"], "measurement");
    assert_eq!(sensor["unique_id"], "bitsd_bits_temperature_7");
    assert_eq!(sensor["availability_topic"], "bits/availability");

    let mut spaceapi = Subscriber::connect(broker.port, "bits/spaceapi").await;
    let document = spaceapi.next().await.json();
    assert_eq!(document["url"], "https://lab.example/");
    assert_eq!(document["logo"], "https://lab.example/static/logo.svg");
}

#[tokio::test]
async fn set_topics_act_as_the_device_and_bad_ones_are_skipped() {
    let broker = Mosquitto::start();
    let (_dir, bitsd) = spawned_on(&broker, &["--mqtt-subscribe"], "info");
    online(broker.port, "bits").await;
    let http = reqwest::Client::new();
    let data = async |http: &reqwest::Client| -> Value {
        let url = format!("http://{}/data", bitsd.web);
        http.get(url).send().await.unwrap().json().await.unwrap()
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", bitsd.web))
        .await
        .unwrap();
    let publisher = Subscriber::connect(broker.port, "unused").await;
    // The room's device hears what came over MQTT, as it hears the web.
    let mut device = common::Device::connect(bitsd.control).await;

    // Bad ones first: none may change anything.
    let long = "x".repeat(1001);
    let bad: [(&str, &[u8]); 6] = [
        ("bits/set/status", b"maybe"),
        ("bits/set/temperature/0", b"1e999"),
        ("bits/set/message", b"caf\xe9"),
        ("bits/set/message", long.as_bytes()),
        ("bits/set/temperature/kitchen", b"20"),
        ("bits/set/door", b"open"),
    ];
    for (topic, payload) in bad {
        publisher.publish(topic, payload).await;
    }
    let web = bitsd.web;
    rejected_reach(&http, web, 6.0).await;
    // The lines are read from bitsd's standard error as it writes them.
    eventually("six lines", async || bitsd.log_lines("skipped").len() >= 6).await;
    let skipped = bitsd.log_lines("skipped");
    assert_eq!(skipped.len(), 6, "{skipped:#?}");
    for needle in [
        "bits/set/status",
        "maybe",
        "1e999",
        "not UTF-8",
        "1001 characters",
        "kitchen",
        "bits/set/door",
    ] {
        assert!(
            skipped.iter().any(|l| l.contains(needle)),
            "{needle}: {skipped:#?}"
        );
    }
    let before = data(&http).await;
    assert!(
        before.get("status").is_none() && before.get("tempint").is_none(),
        "{before}"
    );
    assert!(before.get("message").is_none(), "{before}");

    publisher.publish("bits/set/status", "open").await;
    loop {
        let text = ws_next_text(&mut ws).await;
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["status"]["value"] == "open" {
            assert_eq!(message["status"]["modifiedby"], "BITS");
            break;
        }
    }
    assert_eq!(device.recv().await, "status 1");
    publisher.publish("bits/set/temperature/2", "22.5").await;
    publisher
        .publish("bits/set/message", "ciao <a tutti>")
        .await;
    assert_eq!(
        device.recv().await,
        format!("message {}", b64("ciao <a tutti>"))
    );
    eventually("the message stored", async || {
        data(&http).await["message"]["value"] == "ciao &lt;a tutti&gt;"
    })
    .await;
    let after = data(&http).await;
    assert_eq!(after["tempint"]["sensor"], 2);
    assert_eq!(after["tempint"]["value"], 22.5);
    let status = http
        .get(format!("http://{web}/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.text().await.unwrap(), "1");
    assert_eq!(
        metric(
            &http,
            web,
            "bitsd_mqtt_set_messages_total{result=\"accepted\"}"
        )
        .await,
        Some(3.0)
    );
}

/// Far over the 64 KiB bitsd reads of a message, and over the 1 MiB packet
/// that once cost it the connection.
const HUGE: usize = 2 << 20;

#[tokio::test]
async fn a_huge_set_message_is_skipped_and_bitsd_stays_on_the_broker() {
    let broker = Mosquitto::start();
    let publisher = Subscriber::connect(broker.port, "unused").await;
    // Retained before bitsd starts: the broker hands it over on every
    // subscription, so a bitsd that cannot skip it never stays connected.
    publisher
        .publish_retained("bits/set/message", vec![b'x'; HUGE])
        .await;
    let mut held = Subscriber::connect(broker.port, "bits/set/message").await;
    let retained = held.next().await;
    assert!(retained.retained && retained.payload.len() == HUGE);
    drop(held);

    let (_dir, bitsd) = spawned_on(&broker, &["--mqtt-subscribe"], "info");
    let http = reqwest::Client::new();
    let web = bitsd.web;
    let connected = async || metric(&http, web, "bitsd_mqtt_connected").await == Some(1.0);
    set_messages_reach(&http, web, "too_large", 1.0).await;
    assert!(connected().await);
    // And one while bitsd runs.
    publisher
        .publish_retained("bits/set/status", vec![b'1'; HUGE])
        .await;
    set_messages_reach(&http, web, "too_large", 2.0).await;
    assert!(connected().await);
    // One line each, naming the topic and the size.
    let limit = "over the 64 KiB limit";
    eventually("two lines", async || bitsd.log_lines(limit).len() >= 2).await;
    let lines = bitsd.log_lines(limit);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("\"bits/set/message\"") && lines[0].contains("2097152 bytes"));
    assert!(lines[1].contains("\"bits/set/status\""), "{}", lines[1]);

    // Just over the limit, more than the broker lets wait unacknowledged
    // (20): each skipped one is acknowledged, or what follows is held back.
    for _ in 0..30 {
        publisher
            .publish("bits/set/message", vec![b'y'; (64 << 10) + 1])
            .await;
    }
    // At the limit: read, and refused as a message's text.
    publisher
        .publish("bits/set/message", vec![b'z'; 64 << 10])
        .await;
    rejected_reach(&http, web, 1.0).await;
    assert_eq!(
        metric(
            &http,
            web,
            "bitsd_mqtt_set_messages_total{result=\"too_large\"}"
        )
        .await,
        Some(32.0)
    );

    publisher.publish("bits/set/status", "open").await;
    eventually("the status opened over MQTT", async || {
        let status = http.get(format!("http://{web}/status")).send().await;
        status.unwrap().text().await.unwrap() == "1"
    })
    .await;
    assert!(connected().await);
    // Never off the broker in between: one connection, and the retained
    // message was delivered once.
    let sessions = bitsd.log_lines("mqtt: connected to");
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert!(bitsd.log_lines("retrying").is_empty());
    let skipped = bitsd.log_lines("skipped");
    assert!(skipped.len() <= 12, "{} lines", skipped.len());
}

#[tokio::test]
async fn the_public_url_is_bitsds_own_address_on_mqtt() {
    let broker = Mosquitto::start();
    let _server = lab_on(&broker, &["--public-url", "https://bits.example.org/"]).await;
    let open = "homeassistant/binary_sensor/bitsd_bits/open/config";
    let mut ha = Subscriber::connect(broker.port, open).await;
    let config = ha.until(open, |_| true).await.json();
    assert_eq!(
        config["device"]["configuration_url"],
        "https://bits.example.org"
    );

    let mut spaceapi = Subscriber::connect(broker.port, "bits/spaceapi").await;
    let document = spaceapi.next().await.json();
    // The space's website stays the space's; bitsd's own files are at its
    // public address.
    assert_eq!(document["url"], "https://lab.example/");
    assert_eq!(document["logo"], "https://bits.example.org/static/logo.svg");
    assert_eq!(
        document["feeds"]["calendar"]["url"],
        "https://bits.example.org/openings.ics"
    );
    assert_eq!(
        document["state"]["icon"]["open"],
        "https://bits.example.org/static/open.svg"
    );
}

#[tokio::test]
async fn a_flood_of_bad_set_messages_logs_a_bounded_number_of_lines() {
    let broker = Mosquitto::start();
    let (_dir, bitsd) = spawned_on(&broker, &["--mqtt-subscribe"], "info");
    online(broker.port, "bits").await;
    let publisher = Subscriber::connect(broker.port, "unused").await;
    for i in 0..200 {
        publisher
            .publish("bits/set/status", format!("bad{i}"))
            .await;
    }
    let http = reqwest::Client::new();
    let web = bitsd.web;
    rejected_reach(&http, web, 200.0).await;
    let skipped = bitsd.log_lines("skipped");
    assert!(skipped.len() <= 10, "{} lines", skipped.len());
}

#[tokio::test]
async fn a_broker_that_wants_a_password() {
    let broker = Mosquitto::with_password("bits", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let right = format!("mqtt://bits:s3cret@127.0.0.1:{}", broker.port);
    let _good = Spawned::start_with(&dir.path().join("good.db"), &["--mqtt-url", &right], "info");
    let mut watcher =
        Subscriber::connect_as(broker.port, "bits/availability", Some(("bits", "s3cret"))).await;
    watcher
        .until("bits/availability", |m| m.text() == "online")
        .await;

    let wrong = format!("mqtt://bits:wrong@127.0.0.1:{}", broker.port);
    let bad = Spawned::start_with(
        &dir.path().join("bad.db"),
        &["--mqtt-url", &wrong, "--mqtt-topic-prefix", "other"],
        "info,bitsd::mqtt=debug",
    );
    bad.wait_for_log("next try in 2 s", PATIENCE).await;
    let refused = bad.log_lines("the broker refused the connection");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(!refused[0].contains("wrong"), "{}", refused[0]);
    let http = reqwest::Client::new();
    let status = http
        .get(format!("http://{}/status", bad.web))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
}

#[tokio::test]
async fn named_sensors_are_named_on_the_page_in_the_spaceapi_and_in_home_assistant() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bitsd.toml");
    std::fs::write(&config, "sensor_names = { 0 = \"Lab <1>\" }\n").unwrap();
    let db = dir.path().join("bitsd.db");
    let url = broker.url();
    let config = config.display().to_string();
    let server = TestServer::start_in(dir, db, &["--mqtt-url", &url, "--config", &config]).await;
    let mut ha = Subscriber::connect(broker.port, "homeassistant/sensor/#").await;
    let mut device = server.device().await;
    device
        .send_all(&["temperature 0 21.5", "temperature 1 19.0"])
        .await;
    let lab = ha
        .until(
            "homeassistant/sensor/bitsd_bits/temperature_0/config",
            |_| true,
        )
        .await
        .json();
    assert_eq!(lab["name"], "Temperature Lab <1>");
    let other = ha
        .until(
            "homeassistant/sensor/bitsd_bits/temperature_1/config",
            |_| true,
        )
        .await
        .json();
    assert_eq!(other["name"], "Temperature 1");

    let spaceapi = server.json("/spaceapi.json").await;
    let locations: Vec<&str> = spaceapi["sensors"]["temperature"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["location"].as_str().unwrap())
        .collect();
    assert_eq!(locations, ["Lab <1>", "Sensor 1"]);

    let page = server.text("/").await;
    assert!(
        page.contains("<span class=\"label\">Lab &#60;1&#62;</span>"),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"label\">Sensor 1</span>"),
        "{page}"
    );
    assert!(
        page.contains(r#"id="sensor-names">{"0":"Lab \u003c1>"}</script>"#),
        "the script's names, safe in a script element: {page}"
    );
}

#[tokio::test]
async fn people_now_present_leaves_hidden_members_out() {
    use common::member::{Session, add_user, usermanage};
    let broker = Mosquitto::start();
    let server = server_on(&broker, &[]).await;
    add_user(&server, "carl", "pw");
    add_user(&server, "hugo", "pw");
    let out = usermanage(&server, &["modify", "hugo", "--visibility", "hidden"], None);
    assert!(out.status.success(), "{out:?}");
    let mut follower = Subscriber::connect(broker.port, "bits/#").await;
    let mut device = server.device().await;
    // BITS is 1, carl 2, hugo 3.
    device.send_all(&["enter 3", "enter 2"]).await;
    // The SpaceAPI document goes out after the count: once it counts carl,
    // the count sent last must be his alone.
    let mut people = None;
    loop {
        let m = follower.next().await;
        match m.topic.as_str() {
            "bits/people_now_present" => people = Some(m.text()),
            "bits/spaceapi" if m.json()["sensors"]["people_now_present"][0]["value"] == 1 => break,
            _ => {}
        }
    }
    assert_eq!(people.as_deref(), Some("1"));
    // hugo becomes counted on /admin: published at once, no roster change needed.
    let mut s = Session::new(&server);
    assert_eq!(s.login("hugo", "pw", "/admin").await.status(), 303);
    let xsrf = s.cookie("_xsrf").unwrap();
    let r = s
        .post("/admin", &[("visibility", "counted"), ("_xsrf", &xsrf)])
        .await;
    assert_eq!(r.status(), 303);
    follower
        .until("bits/people_now_present", |m| m.text() == "2")
        .await;
}

#[tokio::test]
async fn the_three_states_go_out_on_p_state_and_come_in_on_p_set_state() {
    let broker = Mosquitto::start();
    let server = server_on(&broker, &["--mqtt-subscribe"]).await;
    online(broker.port, "bits").await;
    let mut follower = Subscriber::connect(broker.port, "bits/#").await;
    let publisher = Subscriber::connect(broker.port, "unused").await;

    // In: members only over MQTT; out: P/status stays closed, P/state says it.
    publisher.publish("bits/set/state", "members").await;
    follower
        .until("bits/state", |m| m.text() == "members")
        .await;
    let data = server
        .wait_for_data("members only", |d| d["status"]["state"] == "members")
        .await;
    assert_eq!(data["status"]["value"], "closed");
    let mut late = Subscriber::connect(broker.port, "bits/#").await;
    let state = late.latest(&["bits/status", "bits/state"]).await;
    assert_eq!(state["bits/status"].text(), "closed");
    assert_eq!(state["bits/state"].text(), "members");
    assert!(state["bits/state"].retained);

    // Home Assistant: a sensor with the three options.
    let topic = "homeassistant/sensor/bitsd_bits/state/config";
    let mut ha = Subscriber::connect(broker.port, "homeassistant/#").await;
    let config = ha.latest(&[topic]).await[topic].json();
    assert_eq!(config["state_topic"], "bits/state");
    assert_eq!(config["device_class"], "enum");
    assert_eq!(
        config["options"],
        serde_json::json!(["open", "members", "closed"])
    );
    // And one of the time it stays open until, unknown when none was said.
    let topic = "homeassistant/sensor/bitsd_bits/until/config";
    let config = ha.latest(&[topic]).await[topic].json();
    assert_eq!(config["state_topic"], "bits/until");
    assert_eq!(config["name"], "Open until");

    // A bad state changes nothing; open does.
    publisher.publish("bits/set/state", "ajar").await;
    publisher.publish("bits/set/state", "open").await;
    // P/status goes out first, then P/state.
    follower.until("bits/status", |m| m.text() == "open").await;
    follower.until("bits/state", |m| m.text() == "open").await;
    assert_eq!(server.logged_states(20).await, ["open", "members"]);

    // Until when: in on P/set/until, out on P/until (`-` for none).
    let until = (chrono::Utc::now().with_timezone(&chrono_tz::Europe::Rome)
        + chrono::Duration::hours(2))
    .format("%H:%M")
    .to_string();
    publisher.publish("bits/set/until", until.as_str()).await;
    follower.until("bits/until", |m| m.text() == until).await;
    let data = server
        .wait_for_data("until", |d| d["status"]["until"].is_string())
        .await;
    assert!(data["status"]["until"].as_str().unwrap().contains(&until));
    publisher.publish("bits/set/until", "-").await;
    follower.until("bits/until", |m| m.text() == "-").await;
}
