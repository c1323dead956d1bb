//! What bitsd writes and reads on MQTT, without I/O: topic names, payloads,
//! Home Assistant discovery configs and the `set/` commands.

use serde_json::{Value, json};

use crate::config::SensorNames;
use crate::device::protocol::{self, ParseError};
use crate::escape::cut;
use crate::record::StatusValue;
use crate::record::sensors::{SensorKind, SensorSample};
use crate::state::{Event, Origin};

/// The topics under one prefix `P`.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `P/status`: `open` or `closed`.
    pub status: String,
    /// `P/state`: `open`, `members` or `closed`.
    pub state: String,
    /// `P/until`: `HH:MM` the room stays open until, or `-` for none.
    pub until: String,
    /// `P/message`: the last message's raw text.
    pub message: String,
    /// `P/people_now_present`: the roster's size.
    pub people: String,
    /// `P/data`: the `/data` document.
    pub data: String,
    /// `P/spaceapi`: the `/spaceapi.json` document.
    pub spaceapi: String,
    /// `P/availability`: `online`, or `offline` as the last will.
    pub availability: String,
    /// `P/temperature/`, followed by the sensor number.
    temperature: String,
    /// `P/sensor/`, followed by a kind and a sensor number.
    sensor: String,
    /// `P/set/`, followed by what to set.
    set: String,
}

/// Payload of `P/availability` while bitsd is connected.
pub const ONLINE: &str = "online";
/// Payload of `P/availability` after bitsd is gone.
pub const OFFLINE: &str = "offline";

impl Topics {
    pub fn new(prefix: &str) -> Topics {
        let under = |name: &str| format!("{prefix}/{name}");
        Topics {
            status: under("status"),
            state: under("state"),
            until: under("until"),
            message: under("message"),
            people: under("people_now_present"),
            data: under("data"),
            spaceapi: under("spaceapi"),
            availability: under("availability"),
            temperature: under("temperature/"),
            sensor: under("sensor/"),
            set: under("set/"),
        }
    }

    /// `P/temperature/<sensor>`.
    pub fn temperature(&self, sensor: i64) -> String {
        format!("{}{sensor}", self.temperature)
    }

    /// `P/sensor/<kind>/<sensor>`.
    pub fn sensor(&self, kind: SensorKind, sensor: i64) -> String {
        format!("{}{}/{sensor}", self.sensor, kind.as_str())
    }

    /// `P/set/#`, the filter bitsd subscribes to with `mqtt_subscribe`.
    pub fn set_filter(&self) -> String {
        format!("{}#", self.set)
    }

    /// What a message on `topic` (under `P/set/`) asks for.
    pub fn parse_set(
        &self,
        topic: &str,
        payload: &[u8],
        retained: bool,
    ) -> Result<Event, SetError> {
        let what = topic
            .strip_prefix(&self.set)
            .ok_or(SetError::UnknownTopic)?;
        if retained {
            return Err(SetError::Retained);
        }
        match what {
            "status" => {
                let value = match trimmed(payload)? {
                    "open" | "1" => StatusValue::Open,
                    "closed" | "0" => StatusValue::Closed,
                    other => return Err(SetError::BadStatus(cut(other))),
                };
                Ok(Event::Status {
                    value,
                    origin: Origin::Mqtt,
                })
            }
            "state" => {
                let text = trimmed(payload)?;
                let value =
                    StatusValue::from_state(text).ok_or_else(|| SetError::BadState(cut(text)))?;
                Ok(Event::Status {
                    value,
                    origin: Origin::Mqtt,
                })
            }
            "until" => {
                let at = protocol::until(trimmed(payload)?)?;
                Ok(Event::Until {
                    at,
                    origin: Origin::Mqtt,
                })
            }
            "message" => {
                let text = std::str::from_utf8(payload).map_err(|_| SetError::NotUtf8)?;
                let text = protocol::message_text(text.to_string())?;
                Ok(Event::Message {
                    author: None,
                    text,
                    origin: Origin::Mqtt,
                })
            }
            other if other.starts_with("sensor/") => sensor_event(other, payload),
            other => {
                let sensor = other
                    .strip_prefix("temperature/")
                    .ok_or(SetError::UnknownTopic)?;
                let sensor = protocol::sensor(sensor)?;
                if sensor > MAX_MQTT_SENSOR {
                    return Err(SetError::SensorTooHigh(sensor));
                }
                let value = protocol::decimal(trimmed(payload)?)?;
                Ok(Event::Temperature {
                    sensor,
                    value,
                    device: None,
                })
            }
        }
    }
}

/// A sample on `sensor/<kind>/<sensor>` (`what`, under `P/set/`).
fn sensor_event(what: &str, payload: &[u8]) -> Result<Event, SetError> {
    let rest = what.strip_prefix("sensor/").unwrap_or(what);
    let (kind, sensor) = rest.split_once('/').ok_or(SetError::UnknownTopic)?;
    let sensor = protocol::sensor(sensor)?;
    if sensor > MAX_MQTT_SENSOR {
        return Err(SetError::SensorTooHigh(sensor));
    }
    let (kind, value) = protocol::sensor_value(kind, trimmed(payload)?)?;
    Ok(Event::Sensor {
        kind,
        sensor,
        value,
        device: None,
    })
}

/// A sample as published: `45.5`, `812`; `1` or `0` for a lock.
pub fn sensor_payload(sample: &SensorSample) -> String {
    sample.value.to_string()
}

/// A short payload without surrounding white space (`mosquitto_pub -l`
/// sends a newline).
fn trimmed(payload: &[u8]) -> Result<&str, SetError> {
    // Any valid status or number is far shorter.
    if payload.len() > 256 {
        return Err(SetError::TooLong(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| SetError::NotUtf8)?;
    Ok(text.trim())
}

/// Highest sensor number a `set/temperature/` topic may name: whoever may
/// publish there must not make the model (cloned on every commit) and the
/// discovery configs grow without bound.
pub const MAX_MQTT_SENSOR: i64 = 255;

/// Why a message on a `set/` topic was skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetError {
    #[error(
        "not a topic bitsd reads (status, state, until, message, temperature/<sensor>, sensor/<kind>/<sensor>)"
    )]
    UnknownTopic,
    #[error("retained messages are not commands")]
    Retained,
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("status must be open, closed, 1 or 0, got `{0}`")]
    BadStatus(String),
    #[error("state must be open, members or closed, got `{0}`")]
    BadState(String),
    #[error("payload of {0} bytes; a status or a number fits in 256")]
    TooLong(usize),
    #[error("sensor {0} is past {MAX_MQTT_SENSOR}, the highest read over MQTT")]
    SensorTooHigh(i64),
    #[error(transparent)]
    Device(#[from] ParseError),
}

/// A temperature as published: the shortest decimal that reads back the
/// same, with at least one digit after the point (`21.5`, `20.0`).
pub fn temperature_payload(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// `bitsd_<prefix>` with every character but letters, digits, `-` and `_`
/// replaced by `_`: names this bitsd among others on the same broker.
pub fn node_id(topic_prefix: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let name: String = topic_prefix
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .collect();
    format!("bitsd_{name}")
}

/// Home Assistant discovery configs for one bitsd.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// `<discovery prefix>/<component>/<node>/`... is where configs go.
    prefix: String,
    /// Identifies this bitsd among others on the same broker.
    node: String,
    device: Value,
    names: SensorNames,
}

impl Discovery {
    /// Configs under `ha_prefix` for the topics under `topic_prefix`, on a
    /// device named `space`.
    pub fn new(ha_prefix: &str, topic_prefix: &str, space: &str, url: Option<&str>) -> Discovery {
        let node = node_id(topic_prefix);
        let mut device = json!({
            "identifiers": [node],
            "name": space,
            "manufacturer": "bitsd",
            "model": "bitsd presence server",
            "sw_version": env!("CARGO_PKG_VERSION"),
        });
        if let Some(url) = url {
            device["configuration_url"] = json!(url);
        }
        Discovery {
            prefix: ha_prefix.to_string(),
            node,
            device,
            names: SensorNames::default(),
        }
    }

    /// The same, with the temperature sensors named as the pages name them.
    pub fn with_names(self, names: SensorNames) -> Discovery {
        Discovery { names, ..self }
    }

    fn config(
        &self,
        topics: &Topics,
        component: &str,
        object: &str,
        fields: Value,
    ) -> (String, Vec<u8>) {
        let mut config = json!({
            "unique_id": format!("{}_{object}", self.node),
            "availability_topic": topics.availability,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": self.device,
        });
        if let (Value::Object(config), Value::Object(fields)) = (&mut config, fields) {
            config.extend(fields);
        }
        let topic = format!("{}/{component}/{}/{object}/config", self.prefix, self.node);
        (topic, config.to_string().into_bytes())
    }

    /// The `binary_sensor` that is on while the space is open. A door: Home
    /// Assistant then shows it as Open and Closed, the words of the status.
    pub fn open(&self, topics: &Topics) -> (String, Vec<u8>) {
        let fields = json!({
            "name": "Open",
            "state_topic": topics.status,
            "payload_on": StatusValue::Open.as_str(),
            "payload_off": StatusValue::Closed.as_str(),
            "device_class": "door",
        });
        self.config(topics, "binary_sensor", "open", fields)
    }

    /// The `sensor` of the three states.
    pub fn state(&self, topics: &Topics) -> (String, Vec<u8>) {
        let states = [StatusValue::Open, StatusValue::Members, StatusValue::Closed];
        let fields = json!({
            "name": "State",
            "state_topic": topics.state,
            "device_class": "enum",
            "options": states.map(StatusValue::state_str),
            "icon": "mdi:door",
        });
        self.config(topics, "sensor", "state", fields)
    }

    /// The `sensor` of the time the room stays open until: `HH:MM`, or
    /// unknown when none was said.
    pub fn until(&self, topics: &Topics) -> (String, Vec<u8>) {
        let fields = json!({
            "name": "Open until",
            "state_topic": topics.until,
            "value_template": "{{ None if value == '-' else value }}",
            "icon": "mdi:clock-end",
        });
        self.config(topics, "sensor", "until", fields)
    }

    /// The `sensor` counting the people present.
    pub fn people(&self, topics: &Topics) -> (String, Vec<u8>) {
        let fields = json!({
            "name": "People present",
            "state_topic": topics.people,
            "state_class": "measurement",
            "unit_of_measurement": "people",
            "icon": "mdi:account-group",
        });
        self.config(topics, "sensor", "people_now_present", fields)
    }

    /// The temperature `sensor` of one sensor of the device.
    pub fn temperature(&self, topics: &Topics, sensor: i64) -> (String, Vec<u8>) {
        let fields = json!({
            "name": match self.names.get(sensor) {
                Some(name) => format!("Temperature {name}"),
                None => format!("Temperature {sensor}"),
            },
            "state_topic": topics.temperature(sensor),
            "device_class": "temperature",
            "unit_of_measurement": "°C",
            "state_class": "measurement",
        });
        self.config(topics, "sensor", &format!("temperature_{sensor}"), fields)
    }

    /// The entity of one sensor beyond temperature: a `sensor` of its
    /// device class, or for a lock a `binary_sensor` of class `lock`, which
    /// is on while unlocked.
    pub fn sensor(&self, topics: &Topics, kind: SensorKind, sensor: i64) -> (String, Vec<u8>) {
        let (what, class) = match kind {
            SensorKind::Humidity => ("Humidity", "humidity"),
            SensorKind::CarbonDioxide => ("Carbon dioxide", "carbon_dioxide"),
            SensorKind::PowerConsumption => ("Power", "power"),
            SensorKind::Barometer => ("Air pressure", "atmospheric_pressure"),
            SensorKind::DoorLocked => ("Lock", "lock"),
        };
        let name = match self.names.get(sensor) {
            Some(name) => format!("{what} {name}"),
            None => format!("{what} {sensor}"),
        };
        let object = format!("{}_{sensor}", kind.as_str());
        let state_topic = topics.sensor(kind, sensor);
        match kind.unit() {
            Some(unit) => {
                let fields = json!({
                    "name": name,
                    "state_topic": state_topic,
                    "device_class": class,
                    "unit_of_measurement": unit,
                    "state_class": "measurement",
                });
                self.config(topics, "sensor", &object, fields)
            }
            None => {
                let fields = json!({
                    "name": name,
                    "state_topic": state_topic,
                    "device_class": class,
                    "payload_on": "0",
                    "payload_off": "1",
                });
                self.config(topics, "binary_sensor", &object, fields)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_lie_under_the_prefix() {
        let topics = Topics::new("club/room");
        assert_eq!(topics.status, "club/room/status");
        assert_eq!(topics.people, "club/room/people_now_present");
        assert_eq!(topics.temperature(3), "club/room/temperature/3");
        assert_eq!(topics.set_filter(), "club/room/set/#");
    }

    #[test]
    fn temperatures_read_as_decimals() {
        for (value, text) in [
            (21.5, "21.5"),
            (20.0, "20.0"),
            (-3.25, "-3.25"),
            (0.1, "0.1"),
        ] {
            assert_eq!(temperature_payload(value), text);
        }
    }

    #[test]
    fn set_messages_become_device_events() {
        let topics = Topics::new("bits");
        let status = |value| Event::Status {
            value,
            origin: Origin::Mqtt,
        };
        let cases: &[(&str, &[u8], Event)] = &[
            ("bits/set/status", b"open", status(StatusValue::Open)),
            ("bits/set/status", b"1\n", status(StatusValue::Open)),
            ("bits/set/status", b"closed", status(StatusValue::Closed)),
            ("bits/set/status", b"0", status(StatusValue::Closed)),
            (
                "bits/set/temperature/2",
                b"21.5",
                Event::Temperature {
                    sensor: 2,
                    value: 21.5,
                    device: None,
                },
            ),
            (
                "bits/set/message",
                "ciao <b>a tutti</b> ☕".as_bytes(),
                Event::Message {
                    author: None,
                    text: "ciao <b>a tutti</b> ☕".into(),
                    origin: Origin::Mqtt,
                },
            ),
        ];
        for (topic, payload, event) in cases {
            assert_eq!(
                topics.parse_set(topic, payload, false).as_ref(),
                Ok(event),
                "{topic}"
            );
        }
    }

    #[test]
    fn bad_set_messages_are_refused_with_a_reason() {
        let topics = Topics::new("bits");
        let long = "x".repeat(protocol::MAX_MESSAGE + 1);
        let cases: &[(&str, &[u8], bool)] = &[
            ("bits/set/status", b"maybe", false),
            ("bits/set/status", b"open", true),
            ("bits/set/status", b"\xff", false),
            ("bits/set/temperature/0", b"1e999", false),
            ("bits/set/temperature/0", b"nan", false),
            ("bits/set/temperature/0", b"999", false),
            ("bits/set/temperature/x", b"20", false),
            ("bits/set/temperature/-1", b"20", false),
            ("bits/set/temperature/99999999999", b"20", false),
            ("bits/set/temperature", b"20", false),
            ("bits/set/message", b"", false),
            ("bits/set/message", b"\xc3\x28", false),
            ("bits/set/message", long.as_bytes(), false),
            ("bits/set/door", b"open", false),
            ("bits/set/temperature/256", b"20", false),
        ];
        let padded = [b"1".as_slice(), &[b' '; 300]].concat();
        assert_eq!(
            topics.parse_set("bits/set/status", &padded, false),
            Err(SetError::TooLong(301))
        );
        assert!(
            topics
                .parse_set("bits/set/temperature/255", b"20", false)
                .is_ok()
        );
        for (topic, payload, retained) in cases {
            let refused = topics.parse_set(topic, payload, *retained);
            assert!(refused.is_err(), "{topic} {payload:?}: {refused:?}");
            assert!(!refused.unwrap_err().to_string().is_empty());
        }
        let reason = topics.parse_set("bits/set/status", b"maybe\x1b[2J", false);
        assert_eq!(
            reason.unwrap_err().to_string(),
            "status must be open, closed, 1 or 0, got `maybe\\u{1b}[2J`"
        );
    }

    #[test]
    fn discovery_configs_name_one_device_and_the_availability() {
        let topics = Topics::new("club/room");
        let discovery = Discovery::new("homeassistant", "club/room", "Club", None);
        let (topic, config) = discovery.open(&topics);
        assert_eq!(
            topic,
            "homeassistant/binary_sensor/bitsd_club_room/open/config"
        );
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["state_topic"], "club/room/status");
        assert_eq!(config["payload_on"], "open");
        assert_eq!(config["availability_topic"], "club/room/availability");
        assert_eq!(config["device"]["name"], "Club");
        let (topic, config) = discovery.temperature(&topics, 4);
        assert_eq!(
            topic,
            "homeassistant/sensor/bitsd_club_room/temperature_4/config"
        );
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["unique_id"], "bitsd_club_room_temperature_4");
        assert_eq!(config["unit_of_measurement"], "°C");
    }

    #[test]
    fn sensor_topics_read_and_publish_samples_of_each_kind() {
        let topics = Topics::new("bits");
        assert_eq!(
            topics.sensor(SensorKind::DoorLocked, 2),
            "bits/sensor/door_locked/2"
        );
        let event = topics.parse_set("bits/set/sensor/barometer/3", b"1013.25\n", false);
        assert_eq!(
            event,
            Ok(Event::Sensor {
                kind: SensorKind::Barometer,
                sensor: 3,
                value: 1013.25,
                device: None,
            })
        );
        for (topic, payload) in [
            ("bits/set/sensor/humidity/0", "101"),
            ("bits/set/sensor/radiation/0", "1"),
            ("bits/set/sensor/humidity", "40"),
            ("bits/set/sensor/humidity/x", "40"),
            ("bits/set/sensor/humidity/256", "40"),
            ("bits/set/sensor/door_locked/0", "yes"),
        ] {
            let refused = topics.parse_set(topic, payload.as_bytes(), false);
            assert!(refused.is_err(), "{topic} {payload}: {refused:?}");
        }
        let discovery = Discovery::new("homeassistant", "bits", "Lab", None)
            .with_names(SensorNames([(0, "Front door".to_string())].into()));
        let (topic, config) = discovery.sensor(&topics, SensorKind::DoorLocked, 0);
        assert_eq!(
            topic,
            "homeassistant/binary_sensor/bitsd_bits/door_locked_0/config"
        );
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["device_class"], "lock");
        assert_eq!(config["name"], "Lock Front door");
        assert_eq!(config["payload_on"], "0", "on means unlocked");
        let (topic, config) = discovery.sensor(&topics, SensorKind::CarbonDioxide, 1);
        assert_eq!(
            topic,
            "homeassistant/sensor/bitsd_bits/carbondioxide_1/config"
        );
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["device_class"], "carbon_dioxide");
        assert_eq!(config["unit_of_measurement"], "ppm");
        assert_eq!(config["state_topic"], "bits/sensor/carbondioxide/1");
    }
}
