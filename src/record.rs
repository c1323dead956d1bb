//! What a change stores: a status change, a temperature sample or a
//! message, the [`Change`] that holds one of them, and their JSON shapes
//! (protocol version 3); the kinds of change a webhook can follow. The
//! events that cause changes are the `Event`s of `state`.
//!
//! - `sensors`: the sensors beyond temperature (humidity, carbon dioxide,
//!   power, pressure, a door's lock), a sample of one and its JSON.
//! - `push`: a Web Push subscription and its topics.

pub mod push;
pub mod sensors;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::LocalTime;
use crate::escape::html_escape;
use sensors::{SensorJson, SensorSample};

/// Whether the room is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusValue {
    /// Anyone may come.
    Open,
    /// Open, for members only; old clients see it as closed.
    Members,
    Closed,
    /// Only found in old data; reads as closed.
    Away,
}

impl StatusValue {
    /// The value as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusValue::Open => "open",
            StatusValue::Members => "members",
            StatusValue::Closed => "closed",
            StatusValue::Away => "away",
        }
    }

    /// Reads a stored value; anything unknown is closed.
    pub fn from_stored(text: &str) -> StatusValue {
        match text {
            "open" => StatusValue::Open,
            "members" => StatusValue::Members,
            "away" => StatusValue::Away,
            _ => StatusValue::Closed,
        }
    }

    /// One of the three states as written by a device, a form or MQTT:
    /// `open`, `members` or `closed`.
    pub fn from_state(text: &str) -> Option<StatusValue> {
        match text {
            "open" => Some(StatusValue::Open),
            "members" => Some(StatusValue::Members),
            "closed" => Some(StatusValue::Closed),
            _ => None,
        }
    }

    /// Open to anyone: what `/status`, the forecast and the calendar count.
    pub fn is_open(self) -> bool {
        self == StatusValue::Open
    }

    /// Open to anyone or to members: the room is in use.
    pub fn lets_members_in(self) -> bool {
        matches!(self, StatusValue::Open | StatusValue::Members)
    }

    /// The value as old clients know it: `open`, or `closed` for members
    /// only (and `away` as the original wrote it).
    pub fn legacy_str(self) -> &'static str {
        match self {
            StatusValue::Members => "closed",
            other => other.as_str(),
        }
    }

    /// One of the three states: `open`, `members` or `closed`.
    pub fn state_str(self) -> &'static str {
        match self {
            StatusValue::Away => "closed",
            other => other.as_str(),
        }
    }

    /// The value as the device and `/status` write it: `1` open, `0` otherwise.
    pub fn digit(self) -> char {
        if self.is_open() { '1' } else { '0' }
    }
}

/// Who caused a change: the device or automation, or a person on the web.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModifiedBy {
    Bits,
    Web,
}

impl ModifiedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ModifiedBy::Bits => "BITS",
            ModifiedBy::Web => "web",
        }
    }

    pub fn from_stored(text: &str) -> ModifiedBy {
        if text == "web" {
            ModifiedBy::Web
        } else {
            ModifiedBy::Bits
        }
    }
}

/// The name of a registered device (SPEC 18), as a change records which
/// one sent it; cheap to clone.
pub type DeviceName = Arc<str>;

/// A row of `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub timestamp: LocalTime,
    pub value: StatusValue,
    pub modified_by: ModifiedBy,
    /// The registered device that sent it; none for the original device
    /// and everyone else.
    pub device: Option<DeviceName>,
    /// Until when the room stays open, as a member or the device said;
    /// the next status change clears it.
    pub until: Option<LocalTime>,
    /// The member who changed it, from `/admin` or by entering on the
    /// keypad; none for the device and everyone else.
    pub person: Option<Opener>,
}

/// The member who changed the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opener {
    pub id: i64,
    pub name: String,
    /// Whether the member lets themselves be named (`named`): only then is
    /// the name shown, to members, and to everyone with `show_names`.
    pub named: bool,
}

/// A row of `Temperature`.
#[derive(Debug, Clone, PartialEq)]
pub struct TemperatureSample {
    pub timestamp: LocalTime,
    pub sensor: i64,
    pub value: f64,
    pub modified_by: ModifiedBy,
    /// The registered device that sent it, if one did.
    pub device: Option<DeviceName>,
}

/// A row of `Message`, with the author's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub timestamp: LocalTime,
    pub user: String,
    /// The text as written, not escaped.
    pub text: String,
    /// The registered device that sent it, if one did.
    pub device: Option<DeviceName>,
}

/// A committed change that live clients are told about.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Status(StatusChange),
    /// The current status with a new "open until" (or none): the same row,
    /// told to clients as a status.
    Until(StatusChange),
    Temperature(TemperatureSample),
    /// A sample of a sensor beyond temperature.
    Sensor(SensorSample),
    Message(Message),
}

impl Change {
    /// The kind of change, as hooks follow it; none for those no hook
    /// follows.
    pub fn hook_event(&self) -> Option<HookEvent> {
        match self {
            // A new "until" is news to a status hook: `{until}` says it.
            Change::Status(_) | Change::Until(_) => Some(HookEvent::Status),
            Change::Message(_) => Some(HookEvent::Message),
            Change::Temperature(_) => Some(HookEvent::Temperature),
            Change::Sensor(_) => None,
        }
    }

    /// The kind, as used in JSON keys and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Status(_) | Change::Until(_) => "status",
            Change::Temperature(_) => "tempint",
            Change::Sensor(_) => "sensor",
            Change::Message(_) => "message",
        }
    }

    /// The websocket message: `{"status": {...}}`, `{"tempint": {...}}`,
    /// `{"sensor": {...}}` or `{"message": {...}}`; a status names its
    /// person with `show_names` (see [`StatusJson::new`]).
    pub fn to_json(&self, show_names: bool) -> String {
        let body = match self {
            Change::Status(s) | Change::Until(s) => {
                serde_json::to_string(&StatusJson::new(s, show_names))
            }
            Change::Temperature(t) => serde_json::to_string(&TemperatureJson::from(t)),
            Change::Sensor(s) => serde_json::to_string(&SensorJson::live(s)),
            Change::Message(m) => serde_json::to_string(&MessageJson::from(m)),
        }
        .expect("records serialise");
        format!("{{\"{}\":{body}}}", self.kind())
    }
}

/// `{"timestamp": "...", "modifiedby": "BITS", "value": "open"}`
#[derive(Debug, Serialize)]
pub struct StatusJson<'a> {
    pub timestamp: String,
    pub modifiedby: &'static str,
    /// `open` or `closed`, as old clients know it.
    pub value: &'static str,
    /// `open`, `members` or `closed`.
    pub state: &'static str,
    /// Until when the room stays open, when somebody said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Only when a registered device sent it: old clients never see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a str>,
    /// The member who changed it, when they are `named` and the space
    /// shows names (`show_names`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<&'a str>,
}

impl<'a> StatusJson<'a> {
    /// `s` as clients see it: its person named only when `show_names` is
    /// on and the member is `named`.
    pub fn new(s: &'a StatusChange, show_names: bool) -> Self {
        StatusJson {
            timestamp: s.timestamp.display(),
            modifiedby: s.modified_by.as_str(),
            value: s.value.legacy_str(),
            state: s.value.state_str(),
            until: s.until.map(|u| u.display()),
            device: s.device.as_deref(),
            person: s.public_person(show_names),
        }
    }
}

impl StatusChange {
    /// The name of who changed it, as everyone may see it: only a `named`
    /// member's, and only with `show_names`.
    pub fn public_person(&self, show_names: bool) -> Option<&str> {
        self.person
            .as_ref()
            .filter(|p| show_names && p.named)
            .map(|p| p.name.as_str())
    }
}

/// `{"timestamp": "...", "value": 21.5, "modifiedby": "BITS", "sensor": 0}`
#[derive(Debug, Serialize)]
pub struct TemperatureJson<'a> {
    pub timestamp: String,
    pub value: f64,
    pub modifiedby: &'static str,
    pub sensor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a str>,
}

impl<'a> From<&'a TemperatureSample> for TemperatureJson<'a> {
    fn from(t: &'a TemperatureSample) -> Self {
        TemperatureJson {
            timestamp: t.timestamp.display(),
            value: t.value,
            modifiedby: t.modified_by.as_str(),
            sensor: t.sensor,
            device: t.device.as_deref(),
        }
    }
}

/// `{"user": "alice", "timestamp": "...", "value": "see you &lt;3"}`: the
/// `user` escaped like the `value`, since old clients insert both as HTML.
#[derive(Debug, Serialize)]
pub struct MessageJson<'a> {
    pub user: String,
    pub timestamp: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a str>,
}

impl<'a> From<&'a Message> for MessageJson<'a> {
    fn from(m: &'a Message) -> Self {
        MessageJson {
            user: html_escape(&m.user),
            timestamp: m.timestamp.display(),
            value: html_escape(&m.text),
            device: m.device.as_deref(),
        }
    }
}

impl fmt::Display for StatusValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of committed change a hook can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookEvent {
    Status,
    Message,
    Temperature,
}

impl HookEvent {
    /// The name in the config file and in a `json` delivery's `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Status => "status",
            HookEvent::Message => "message",
            HookEvent::Temperature => "temperature",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> LocalTime {
        LocalTime::parse(text).unwrap()
    }

    #[test]
    fn json_shapes() {
        let status = Change::Status(StatusChange {
            timestamp: at("2024-03-01 18:30:05.123456"),
            value: StatusValue::Open,
            modified_by: ModifiedBy::Bits,
            device: None,
            until: None,
            person: None,
        });
        assert_eq!(
            status.to_json(true),
            r#"{"status":{"timestamp":"2024-03-01 18:30:05","modifiedby":"BITS","value":"open","state":"open"}}"#
        );
        // Members only: closed to old clients, the three states to new ones.
        // Its person is named only with `show_names`, and only if `named`.
        let mut members = StatusChange {
            timestamp: at("2024-03-01 18:31:00"),
            value: StatusValue::Members,
            modified_by: ModifiedBy::Web,
            device: None,
            until: None,
            person: Some(Opener {
                id: 3,
                name: "ada".into(),
                named: true,
            }),
        };
        assert_eq!(
            Change::Status(members.clone()).to_json(false),
            r#"{"status":{"timestamp":"2024-03-01 18:31:00","modifiedby":"web","value":"closed","state":"members"}}"#
        );
        assert_eq!(
            Change::Status(members.clone()).to_json(true),
            r#"{"status":{"timestamp":"2024-03-01 18:31:00","modifiedby":"web","value":"closed","state":"members","person":"ada"}}"#
        );
        members.person.as_mut().unwrap().named = false;
        assert!(!Change::Status(members).to_json(true).contains("ada"));
        let temp = Change::Temperature(TemperatureSample {
            timestamp: at("2024-03-01 18:30:06"),
            sensor: 0,
            value: 21.5,
            modified_by: ModifiedBy::Bits,
            device: None,
        });
        let v: serde_json::Value = serde_json::from_str(&temp.to_json(true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"tempint": {"timestamp": "2024-03-01 18:30:06", "value": 21.5,
                "modifiedby": "BITS", "sensor": 0}})
        );
        let message = Change::Message(Message {
            timestamp: at("2024-03-01 18:30:07"),
            user: "<b>o'neil".into(),
            text: "see you <3 & \"bye\" 'x'".into(),
            device: None,
        });
        let v: serde_json::Value = serde_json::from_str(&message.to_json(true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"message": {"user": "&lt;b&gt;o&#39;neil", "timestamp": "2024-03-01 18:30:07",
                "value": "see you &lt;3 &amp; &quot;bye&quot; &#39;x&#39;"}})
        );
    }

    #[test]
    fn stored_values() {
        assert_eq!(StatusValue::from_stored("away").digit(), '0');
        assert_eq!(StatusValue::from_stored("open").digit(), '1');
        assert_eq!(ModifiedBy::from_stored("web"), ModifiedBy::Web);
    }
}
