//! The current state as readers see it, and the model the writer keeps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use serde::Serialize;

use super::Origin;
use crate::clock::LocalTime;
use crate::record::sensors::{SensorJson, SensorKind, SensorSample};
use crate::record::{
    Change, Message, MessageJson, StatusChange, StatusJson, TemperatureJson, TemperatureSample,
};
use crate::store::{Db, Person, StoreError};

/// Samples kept for `tempinthist`.
pub const HISTORY_SAMPLES: usize = 100;

/// Who is in the room, by member id: by keypad and by MAC address, each
/// with the visibility they had at the last roster change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roster {
    pub keypad: BTreeMap<i64, Person>,
    pub macs: BTreeMap<i64, Person>,
}

impl Roster {
    /// Everyone in the room, hidden members too, once each.
    fn everyone(&self) -> BTreeMap<i64, &Person> {
        self.keypad
            .iter()
            .chain(&self.macs)
            .map(|(id, p)| (*id, p))
            .collect()
    }

    /// Whether anybody at all is in the room, hidden members too: what
    /// automatic status looks at.
    pub fn occupied(&self) -> bool {
        !self.keypad.is_empty() || !self.macs.is_empty()
    }

    /// The number of people present as shown: hidden members left out.
    pub fn counted(&self) -> usize {
        self.everyone()
            .values()
            .filter(|p| p.visibility.counted())
            .count()
    }

    /// The names that may be shown, sorted: those of `named` members.
    pub fn named(&self) -> BTreeSet<String> {
        self.everyone()
            .values()
            .filter(|p| p.visibility.named())
            .map(|p| p.name.clone())
            .collect()
    }

    /// The ids of everyone in the room.
    pub fn ids(&self) -> BTreeSet<i64> {
        self.keypad
            .keys()
            .chain(self.macs.keys())
            .copied()
            .collect()
    }
}

/// The current state, as of change `version`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub status: Option<StatusChange>,
    /// Sequence number of the last status change (0 before any).
    pub status_version: u64,
    /// Who made the last status change; `None` when it was loaded at start.
    pub status_origin: Option<Origin>,
    /// Newest sample of each sensor.
    pub sensors: BTreeMap<i64, TemperatureSample>,
    /// Up to [`HISTORY_SAMPLES`] samples, newest first.
    pub temperatures: VecDeque<TemperatureSample>,
    /// Newest sample of each sensor beyond temperature, by kind and id.
    pub sensor_samples: BTreeMap<(SensorKind, i64), SensorSample>,
    pub message: Option<Message>,
    /// Sequence number of the last message (0 before any).
    pub message_version: u64,
    /// Who wrote the last message; `None` when it was loaded at start.
    pub message_origin: Option<Origin>,
    pub roster: Roster,
    /// The row of the newest sample in the database: a follower that missed
    /// samples reads those after the last row it saw.
    pub temperature_row: i64,
    /// Since when the device that set the status has been disconnected,
    /// once that is longer than `device_stale_after`.
    pub device_offline_since: Option<LocalTime>,
    /// The `/data` JSON, serialised once per change for every reader.
    pub data_json: Bytes,
}

impl Snapshot {
    pub fn is_open(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.value.is_open())
    }

    /// The `/status` body: `1` or `0`.
    pub fn status_digit(&self) -> &'static str {
        if self.is_open() { "1" } else { "0" }
    }
}

#[derive(Serialize)]
struct DataJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tempint: Option<TemperatureJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<MessageJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tempinthist: Vec<TemperatureJson<'a>>,
    /// Left out when there is none, so old clients see what they saw.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sensors: BTreeMap<&'static str, Vec<SensorJson<'a>>>,
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_offline_since: Option<String>,
}

/// `/data`'s `sensors`: each kind's newest samples, by id.
fn sensors_json(
    samples: &BTreeMap<(SensorKind, i64), SensorSample>,
) -> BTreeMap<&'static str, Vec<SensorJson<'_>>> {
    let mut by_kind: BTreeMap<&'static str, Vec<SensorJson<'_>>> = BTreeMap::new();
    for ((kind, _), sample) in samples {
        by_kind
            .entry(kind.as_str())
            .or_default()
            .push(SensorJson::listed(sample));
    }
    by_kind
}

/// The message that tells live clients of the device's absence, or that
/// it is over (`null`).
pub(super) fn device_offline_json(since: Option<LocalTime>) -> Bytes {
    let json = serde_json::json!({ "device_offline_since": since.map(|t| t.display()) });
    Bytes::from(json.to_string())
}

/// The mutable state the writer owns.
#[derive(Debug, Clone, Default)]
pub(super) struct Model {
    pub seq: u64,
    pub status: Option<StatusChange>,
    pub status_seq: u64,
    pub status_origin: Option<Origin>,
    pub sensors: BTreeMap<i64, TemperatureSample>,
    pub temperatures: VecDeque<TemperatureSample>,
    pub sensor_samples: BTreeMap<(SensorKind, i64), SensorSample>,
    pub message: Option<Message>,
    pub message_seq: u64,
    pub message_origin: Option<Origin>,
    pub roster: Roster,
    /// The row of the newest sample stored.
    pub temperature_row: i64,
    pub device_offline_since: Option<LocalTime>,
    /// The members in by keypad, in the order they entered: the first
    /// one still in opened the room when the automation opens it.
    pub keypad_order: Vec<i64>,
    /// Whether a status names its `named` member to everyone (`[spaceapi]
    /// show_names`).
    pub show_names: bool,
}

impl Model {
    /// The state as stored in `db`, before any change of this run.
    pub fn load(db: &Db) -> Result<Model, StoreError> {
        let latest = db.latest(HISTORY_SAMPLES)?;
        Ok(Model {
            status: latest.status,
            sensors: latest
                .per_sensor
                .into_iter()
                .map(|t| (t.sensor, t))
                .collect(),
            temperatures: latest.temperatures.into(),
            sensor_samples: db
                .latest_sensors()?
                .into_iter()
                .map(|s| ((s.kind, s.sensor), s))
                .collect(),
            message: latest.message,
            temperature_row: latest.temperature_row,
            ..Model::default()
        })
    }

    pub fn snapshot(&self, jsonver: u32) -> Snapshot {
        let data = DataJson {
            status: self
                .status
                .as_ref()
                .map(|s| StatusJson::new(s, self.show_names)),
            tempint: self.temperatures.front().map(TemperatureJson::from),
            message: self.message.as_ref().map(MessageJson::from),
            tempinthist: self
                .temperatures
                .iter()
                .map(TemperatureJson::from)
                .collect(),
            sensors: sensors_json(&self.sensor_samples),
            version: jsonver,
            device_offline_since: self.device_offline_since.map(|t| t.display()),
        };
        Snapshot {
            version: self.seq,
            status: self.status.clone(),
            status_version: self.status_seq,
            status_origin: self.status_origin.clone(),
            sensors: self.sensors.clone(),
            temperatures: self.temperatures.clone(),
            sensor_samples: self.sensor_samples.clone(),
            message: self.message.clone(),
            message_version: self.message_seq,
            message_origin: self.message_origin.clone(),
            roster: self.roster.clone(),
            temperature_row: self.temperature_row,
            device_offline_since: self.device_offline_since,
            data_json: Bytes::from(serde_json::to_vec(&data).expect("snapshot serialises")),
        }
    }

    /// Takes the device's absence as the new state; whether it changed.
    pub fn device_offline(&mut self, since: Option<LocalTime>) -> bool {
        if self.device_offline_since == since {
            return false;
        }
        self.device_offline_since = since;
        self.seq += 1;
        true
    }

    /// Applies a change stored at `row` of its table; returns its sequence
    /// number.
    pub fn apply(&mut self, change: &Change, origin: Origin, row: i64) -> u64 {
        self.seq += 1;
        match change {
            Change::Status(s) => {
                self.status = Some(s.clone());
                self.status_seq = self.seq;
                self.status_origin = Some(origin);
            }
            // The same status, told again with its new "until": news to
            // whoever follows the status (webhooks among them).
            Change::Until(s) => {
                self.status = Some(s.clone());
                self.status_seq = self.seq;
            }
            Change::Temperature(t) => {
                self.temperature_row = row;
                self.sensors.insert(t.sensor, t.clone());
                self.temperatures.push_front(t.clone());
                self.temperatures.truncate(HISTORY_SAMPLES);
            }
            Change::Sensor(s) => {
                self.sensor_samples.insert((s.kind, s.sensor), s.clone());
            }
            Change::Message(m) => {
                self.message = Some(m.clone());
                self.message_seq = self.seq;
                self.message_origin = Some(origin);
            }
        }
        self.seq
    }
}
