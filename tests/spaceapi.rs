//! `/spaceapi.json` validated against the published SpaceAPI schemas.

mod common;

use common::TestServer;
use reqwest::header;

fn schema(version: &str) -> jsonschema::Validator {
    let path = format!(
        "{}/tests/data/spaceapi-{version}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// Validates `doc` against every version it claims, and checks that it
/// claims 15, plus 14 exactly when it has both coordinates.
fn assert_valid(doc: &serde_json::Value) {
    let claimed: Vec<&str> = doc["api_compatibility"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(claimed.contains(&"15"), "{claimed:?}");
    let located = doc["location"]["lat"].is_number() && doc["location"]["lon"].is_number();
    assert_eq!(claimed.contains(&"14"), located, "{claimed:?}");
    for version in claimed {
        let validator = schema(version);
        let errors: Vec<String> = validator
            .iter_errors(doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "version {version}: {errors:?}\n{doc:#}");
    }
    // Nothing unset is sent as null or empty.
    fn no_nulls(v: &serde_json::Value, path: &str) {
        match v {
            serde_json::Value::Null => panic!("null at {path}"),
            serde_json::Value::String(s) => assert!(!s.is_empty(), "empty string at {path}"),
            serde_json::Value::Array(items) => {
                assert!(
                    !items.is_empty() || !path.ends_with("names"),
                    "empty list at {path}"
                );
                for (i, item) in items.iter().enumerate() {
                    no_nulls(item, &format!("{path}/{i}"));
                }
            }
            serde_json::Value::Object(map) => {
                for (k, item) in map {
                    no_nulls(item, &format!("{path}/{k}"));
                }
            }
            _ => {}
        }
    }
    no_nulls(doc, "");
}

fn config_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("bitsd.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn without_configuration_it_is_still_valid() {
    let server = TestServer::start().await;
    let response = server.get("/spaceapi.json").await;
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/json; charset=utf-8"
    );
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let doc: serde_json::Value = response.json().await.unwrap();
    assert_valid(&doc);
    let base = format!("http://{}", server.web_addr());
    assert_eq!(doc["space"], "BITS");
    assert_eq!(doc["url"], base);
    assert_eq!(doc["logo"], format!("{base}/static/logo.svg"));
    assert_eq!(doc["contact"], serde_json::json!({}));
    assert_eq!(doc["state"]["open"], false);
    assert!(doc["state"].get("lastchange").is_none());
    assert_eq!(
        doc["state"]["icon"]["open"],
        format!("{base}/static/open.svg")
    );
    assert_eq!(
        doc["sensors"]["people_now_present"],
        serde_json::json!([{"value": 0}])
    );
    assert_eq!(doc["ext_bits_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc["feeds"]["calendar"],
        serde_json::json!({"type": "ical", "url": format!("{base}/openings.ics")})
    );
    // The feed it names is served.
    assert_eq!(server.get("/openings.ics").await.status(), 200);
    assert!(doc.get("location").is_none());
    // The schema check is not vacuous: a broken document fails it.
    let mut broken = doc.clone();
    broken["state"]["open"] = serde_json::json!("yes");
    assert!(!schema("15").is_valid(&broken));
    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("space");
    assert!(!schema("15").is_valid(&broken));
    // The logo it names is served.
    assert_eq!(server.get("/static/logo.svg").await.status(), 200);
}

#[tokio::test]
async fn with_a_full_configuration_and_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        r##"
[spaceapi]
space = "POuL"
logo = "https://poul.example/logo.png"
url = "https://poul.example"
address = "Via Ponzio 34/5, Milano"
lat = 45.4781
lon = 9.2273
timezone = "Europe/Rome"
country_code = "IT"
email = "info@poul.example"
irc = "ircs://irc.libera.chat/#poul"
mastodon = "@poul@mastodon.example"
matrix = "#poul:matrix.example"
ml = "soci@poul.example"
show_names = true
"##,
    );
    let db = dir.path().join("bitsd.db");
    let server = TestServer::start_in(dir, db, &["--config", &config]).await;
    let mut device = server.device().await;
    device
        .send_all(&["status 1", "temperature 0 21.5", "temperature 1 18.25"])
        .await;
    device.send_message("Pizza <tonight>").await;
    // The device user: some name is enough, once named.
    let out =
        common::member::usermanage(&server, &["modify", "BITS", "--visibility", "named"], None);
    assert!(out.status.success(), "{out:?}");
    device.send("enter 1").await;
    server
        .wait_for_data("the message", |d| d["message"].is_object())
        .await;

    let doc = server.json("/spaceapi.json").await;
    assert_valid(&doc);
    assert_eq!(doc["api_compatibility"], serde_json::json!(["14", "15"]));
    assert_eq!(doc["space"], "POuL");
    assert_eq!(doc["url"], "https://poul.example");
    assert_eq!(doc["location"]["country_code"], "IT");
    assert_eq!(doc["contact"]["mastodon"], "@poul@mastodon.example");
    assert_eq!(doc["state"]["open"], true);
    assert!(doc["state"]["lastchange"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(
        doc["state"]["message"], "Pizza <tonight>",
        "not HTML-escaped"
    );
    let temps = doc["sensors"]["temperature"].as_array().unwrap();
    assert_eq!(temps.len(), 2);
    assert_eq!(temps[1]["value"], 18.25);
    assert_eq!(temps[1]["unit"], "°C");
    assert_eq!(
        doc["sensors"]["people_now_present"],
        serde_json::json!([{"value": 1, "names": ["BITS"]}])
    );
}

#[tokio::test]
async fn every_kind_of_sensor_is_listed_with_the_schemas_units() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "sensor_names = { 0 = \"Lab\", 2 = \"Front door\" }\n\
         [spaceapi]\nspace = \"Lab\"\nlat = 45.0\nlon = 9.0\n",
    );
    let db = dir.path().join("bitsd.db");
    let server = TestServer::start_in(dir, db, &["--config", &config]).await;
    let mut device = server.device().await;
    device
        .send_all(&[
            "temperature 0 21.5",
            "sensor humidity 0 45.5",
            "sensor humidity 1 60",
            "sensor carbondioxide 0 812",
            "sensor power_consumption 0 1250.5",
            "sensor barometer 0 1013.25",
            "sensor door_locked 2 1",
            "sensor door_locked 3 0",
        ])
        .await;
    server
        .wait_for_data("the last lock", |d| {
            d["sensors"]["door_locked"]
                .as_array()
                .is_some_and(|l| l.len() == 2)
        })
        .await;
    let doc = server.json("/spaceapi.json").await;
    // Valid against 14 and 15 both, with every new field.
    assert_eq!(doc["api_compatibility"], serde_json::json!(["14", "15"]));
    assert_valid(&doc);
    let sensors = &doc["sensors"];
    let humidity = sensors["humidity"].as_array().unwrap();
    assert_eq!(humidity.len(), 2);
    assert_eq!(humidity[0]["value"], 45.5);
    assert_eq!(humidity[0]["unit"], "%");
    assert_eq!(humidity[0]["location"], "Lab");
    assert_eq!(humidity[1]["location"], "Sensor 1");
    assert!(humidity[0]["lastchange"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(sensors["carbondioxide"][0]["unit"], "ppm");
    assert_eq!(sensors["carbondioxide"][0]["value"], 812.0);
    assert_eq!(sensors["power_consumption"][0]["unit"], "W");
    assert_eq!(sensors["barometer"][0]["unit"], "hPa");
    assert_eq!(sensors["barometer"][0]["value"], 1013.25);
    let locks = sensors["door_locked"].as_array().unwrap();
    assert_eq!(locks[0]["value"], true);
    assert_eq!(locks[0]["location"], "Front door");
    assert_eq!(locks[1]["value"], false);
    assert!(locks[0].get("unit").is_none(), "{}", locks[0]);
    assert_eq!(sensors["temperature"][0]["location"], "Lab");
    // The check is not vacuous: a lock as a number, or a pressure in
    // another unit, fails it.
    let mut broken = doc.clone();
    broken["sensors"]["door_locked"][0]["value"] = serde_json::json!(1);
    assert!(!schema("15").is_valid(&broken));
    assert!(!schema("14").is_valid(&broken));
    let mut broken = doc.clone();
    broken["sensors"]["barometer"][0]["unit"] = serde_json::json!("mbar");
    assert!(!schema("15").is_valid(&broken));
}

#[tokio::test]
async fn names_only_when_allowed_and_latitude_alone_claims_only_15() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "[spaceapi]\nspace = \"Lab\"\nlat = 45.0\n");
    let db = dir.path().join("bitsd.db");
    let server = TestServer::start_in(dir, db, &["--config", &config]).await;
    let mut device = server.device().await;
    device.send_all(&["enter 1", "status 1"]).await;
    server.wait_for_status("1").await;
    let doc = server.json("/spaceapi.json").await;
    assert_valid(&doc);
    assert_eq!(doc["api_compatibility"], serde_json::json!(["15"]));
    assert_eq!(
        doc["sensors"]["people_now_present"],
        serde_json::json!([{"value": 1}])
    );
}

#[tokio::test]
async fn the_base_url_follows_the_proxy_only_when_proxied() {
    /// `/spaceapi.json` as asked through an HTTPS proxy.
    async fn proxied(server: &TestServer) -> serde_json::Value {
        server
            .get_with(
                "/spaceapi.json",
                &[
                    (common::X_FORWARDED_PROTO, "https"),
                    (common::X_FORWARDED_HOST, "bits.example.org"),
                ],
            )
            .await
            .json()
            .await
            .unwrap()
    }
    let behind = TestServer::start_with(&["--reverse-proxied"]).await;
    let doc = proxied(&behind).await;
    assert_valid(&doc);
    assert_eq!(doc["url"], "https://bits.example.org");
    assert_eq!(
        doc["feeds"]["calendar"]["url"],
        "https://bits.example.org/openings.ics"
    );
    let direct = TestServer::start().await;
    let doc = proxied(&direct).await;
    assert_eq!(doc["url"], format!("http://{}", direct.web_addr()));

    // With public_url, no header of the client's chooses them.
    let fixed = TestServer::start_with(&[
        "--reverse-proxied",
        "--public-url",
        "https://bits.club.example/",
    ])
    .await;
    let forged = [
        (header::HOST, "evil.example"),
        (common::X_FORWARDED_HOST, "evil.example"),
        (common::X_FORWARDED_PROTO, "http"),
    ];
    let response = fixed.get_with("/spaceapi.json", &forged).await;
    let doc: serde_json::Value = response.json().await.unwrap();
    assert_valid(&doc);
    assert_eq!(doc["url"], "https://bits.club.example");
    assert_eq!(
        doc["feeds"]["calendar"]["url"],
        "https://bits.club.example/openings.ics"
    );
    assert!(!doc.to_string().contains("evil"), "{doc}");
}

#[tokio::test]
async fn believing_a_proxy_on_every_address_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bitsd.db");
    let open = common::Spawned::start_with(
        &db,
        &["--reverse-proxied", "--web-address", "0.0.0.0"],
        "info",
    );
    let warning = open
        .wait_for_log("reverse_proxied is on", common::PATIENCE)
        .await;
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("web_address = \"127.0.0.1\""), "{warning}");
    drop(open);
    let loopback =
        common::Spawned::start_with(&db, &["--reverse-proxied", "--log-requests=true"], "info");
    // A request is logged after every line of the start.
    let status = reqwest::get(format!("http://{}/status", loopback.web))
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    loopback.wait_for_log("/status", common::PATIENCE).await;
    assert!(loopback.log_lines("reverse_proxied is on").is_empty());
}

#[tokio::test]
async fn a_public_url_is_an_origin() {
    for bad in [
        "bits.example.org",
        "ftp://bits.example.org",
        "https://bits.example.org/bits",
        "https://",
    ] {
        let out = common::bitsd_command()
            .args(["--public-url", bad, "check"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("public_url") || err.contains("public-url"),
            "{err}"
        );
        assert!(err.contains("expected an origin"), "{err}");
    }
}

#[tokio::test]
async fn members_only_is_not_open_and_is_named_in_ext_state() {
    let (server, mut device) = TestServer::start_with_device().await;
    for (line, open, state) in [
        ("state members", false, "members"),
        ("state open", true, "open"),
        ("state closed", false, "closed"),
    ] {
        device.send(line).await;
        server
            .wait_for_data(state, |d| d["status"]["state"] == state)
            .await;
        let doc = server.json("/spaceapi.json").await;
        assert_valid(&doc);
        assert_eq!(doc["state"]["open"], open, "{line}");
        assert_eq!(doc["state"]["ext_state"], state, "{line}");
    }
}
