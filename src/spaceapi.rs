//! The SpaceAPI document of the current state, for `/spaceapi.json` and
//! the MQTT `spaceapi` topic.
//!
//! Valid against the published schemas 14 and 15; version 14 is claimed
//! only when a location with both coordinates is configured, as it requires.

use serde_json::{Map, Value, json};

use crate::config::{SensorNames, SpaceApi};
use crate::state::Snapshot;

/// The document for the current state.
pub fn document(
    facts: &SpaceApi,
    names: &SensorNames,
    snapshot: &Snapshot,
    base: &str,
    tz: chrono_tz::Tz,
) -> Value {
    let mut doc = Map::new();
    let located = facts.lat.is_some() && facts.lon.is_some();
    let versions: &[&str] = if located { &["14", "15"] } else { &["15"] };
    doc.insert("api_compatibility".into(), json!(versions));
    doc.insert("space".into(), json!(facts.name()));
    doc.insert(
        "logo".into(),
        json!(
            facts
                .logo
                .clone()
                .unwrap_or_else(|| format!("{base}/static/logo.svg"))
        ),
    );
    doc.insert(
        "url".into(),
        json!(facts.url.clone().unwrap_or_else(|| base.to_string())),
    );

    let mut location = Map::new();
    put(&mut location, "address", &facts.address);
    if let Some(lat) = facts.lat {
        location.insert("lat".into(), json!(lat));
    }
    if let Some(lon) = facts.lon {
        location.insert("lon".into(), json!(lon));
    }
    put(&mut location, "timezone", &facts.timezone);
    put(&mut location, "country_code", &facts.country_code);
    if !location.is_empty() {
        doc.insert("location".into(), Value::Object(location));
    }

    let mut contact = Map::new();
    for (key, value) in [
        ("email", &facts.email),
        ("phone", &facts.phone),
        ("irc", &facts.irc),
        ("mastodon", &facts.mastodon),
        ("matrix", &facts.matrix),
        ("ml", &facts.ml),
    ] {
        put(&mut contact, key, value);
    }
    doc.insert("contact".into(), Value::Object(contact));

    doc.insert(
        "feeds".into(),
        json!({"calendar": {"type": "ical", "url": format!("{base}/openings.ics")}}),
    );

    let mut state = Map::new();
    state.insert("open".into(), json!(snapshot.is_open()));
    if let Some(status) = &snapshot.status {
        state.insert("lastchange".into(), json!(status.timestamp.unix(tz)));
        // The three states; `open` is true only for `open`.
        state.insert("ext_state".into(), json!(status.value.state_str()));
        if let Some(until) = status.until.filter(|_| status.value.lets_members_in()) {
            state.insert("ext_until".into(), json!(until.unix(tz)));
        }
        if let Some(person) = status.public_person(facts.show_names) {
            state.insert("trigger_person".into(), json!(person));
        }
    }
    if let Some(message) = &snapshot.message {
        state.insert("message".into(), json!(message.text));
    }
    state.insert(
        "icon".into(),
        json!({"open": format!("{base}/static/open.svg"), "closed": format!("{base}/static/closed.svg")}),
    );
    doc.insert("state".into(), Value::Object(state));

    let mut sensors = Map::new();
    let temperatures: Vec<Value> = snapshot
        .sensors
        .values()
        .map(|t| {
            json!({
                "value": t.value,
                "unit": "°C",
                "location": names
                    .get(t.sensor)
                    .map_or_else(|| format!("Sensor {}", t.sensor), str::to_string),
                "lastchange": t.timestamp.unix(tz),
            })
        })
        .collect();
    if !temperatures.is_empty() {
        sensors.insert("temperature".into(), Value::Array(temperatures));
    }
    more_sensors(&mut sensors, names, snapshot, tz);
    // Hidden members are neither counted nor named; only `named` ones are named.
    let present = snapshot.roster.counted();
    let mut people = Map::new();
    people.insert("value".into(), json!(present));
    let names = snapshot.roster.named();
    if facts.show_names && present > 0 && !names.is_empty() {
        people.insert("names".into(), json!(names));
    }
    sensors.insert("people_now_present".into(), json!([people]));
    doc.insert("sensors".into(), Value::Object(sensors));
    doc.insert("ext_bits_version".into(), json!(env!("CARGO_PKG_VERSION")));
    Value::Object(doc)
}

/// Each kind of sensor beyond temperature, under its own key, with the
/// schema's unit; `door_locked` as a boolean, without one.
fn more_sensors(
    sensors: &mut Map<String, Value>,
    names: &SensorNames,
    snapshot: &Snapshot,
    tz: chrono_tz::Tz,
) {
    for ((kind, id), sample) in &snapshot.sensor_samples {
        let mut entry = Map::new();
        if kind.is_flag() {
            entry.insert("value".into(), json!(sample.value != 0.0));
        } else {
            entry.insert("value".into(), json!(sample.value));
        }
        if let Some(unit) = kind.unit() {
            entry.insert("unit".into(), json!(unit));
        }
        let location = names
            .get(*id)
            .map_or_else(|| format!("Sensor {id}"), str::to_string);
        entry.insert("location".into(), json!(location));
        entry.insert("lastchange".into(), json!(sample.timestamp.unix(tz)));
        let list = sensors
            .entry(kind.as_str())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.push(Value::Object(entry));
        }
    }
}

fn put(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
        map.insert(key.into(), json!(v));
    }
}
