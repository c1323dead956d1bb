//! Sensors beyond temperature: their kinds with range and unit, a sample
//! as stored, and its JSON in `/data` and on the live streams.

use serde::{Serialize, Serializer};

use super::{DeviceName, ModifiedBy};
use crate::clock::LocalTime;

/// What a sensor measures: the `<kind>` of `sensor <kind> <id> <value>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SensorKind {
    /// Relative humidity, %.
    Humidity,
    /// Carbon dioxide, ppm.
    CarbonDioxide,
    /// Power drawn, W.
    PowerConsumption,
    /// Air pressure, hPa.
    Barometer,
    /// A door's lock: 1 locked, 0 unlocked.
    DoorLocked,
}

impl SensorKind {
    /// Every kind, in the order pages show them.
    pub const ALL: [SensorKind; 5] = [
        SensorKind::Humidity,
        SensorKind::CarbonDioxide,
        SensorKind::PowerConsumption,
        SensorKind::Barometer,
        SensorKind::DoorLocked,
    ];

    /// Its name in device lines, topics, JSON keys and the database; also
    /// the SpaceAPI's key.
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Humidity => "humidity",
            SensorKind::CarbonDioxide => "carbondioxide",
            SensorKind::PowerConsumption => "power_consumption",
            SensorKind::Barometer => "barometer",
            SensorKind::DoorLocked => "door_locked",
        }
    }

    /// The kind of a name, exactly as [`SensorKind::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<SensorKind> {
        SensorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The values a sample may take, both ends included.
    pub fn range(self) -> (f64, f64) {
        match self {
            SensorKind::Humidity => (0.0, 100.0),
            SensorKind::CarbonDioxide => (0.0, 100_000.0),
            SensorKind::PowerConsumption => (0.0, 1_000_000.0),
            SensorKind::Barometer => (300.0, 1100.0),
            SensorKind::DoorLocked => (0.0, 1.0),
        }
    }

    /// The range in words, for log lines: `0..100 %`.
    pub fn range_text(self) -> &'static str {
        match self {
            SensorKind::Humidity => "0..100 %",
            SensorKind::CarbonDioxide => "0..100000 ppm",
            SensorKind::PowerConsumption => "0..1000000 W",
            SensorKind::Barometer => "300..1100 hPa",
            SensorKind::DoorLocked => "0 or 1",
        }
    }

    /// Whether its samples are `0` or `1` only.
    pub fn is_flag(self) -> bool {
        self == SensorKind::DoorLocked
    }

    /// The unit as the SpaceAPI schema and Home Assistant write it; none
    /// for a flag.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            SensorKind::Humidity => Some("%"),
            SensorKind::CarbonDioxide => Some("ppm"),
            SensorKind::PowerConsumption => Some("W"),
            SensorKind::Barometer => Some("hPa"),
            SensorKind::DoorLocked => None,
        }
    }

    /// Whether `value` is one this kind may take.
    pub fn accepts(self, value: f64) -> bool {
        let (low, high) = self.range();
        value.is_finite()
            && (low..=high).contains(&value)
            && (!self.is_flag() || value.fract() == 0.0)
    }
}

/// A row of `bitsd_sensor`: one sample of one sensor of a kind.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorSample {
    pub timestamp: LocalTime,
    pub kind: SensorKind,
    pub sensor: i64,
    pub value: f64,
    pub modified_by: ModifiedBy,
    /// The registered device that sent it, if one did.
    pub device: Option<DeviceName>,
}

/// `{"sensor": 0, "value": 45.5, "timestamp": "...", "modifiedby": "BITS"}`,
/// in `/data`'s `sensors.<kind>` lists; with `"kind"` on the live streams.
#[derive(Debug, Serialize)]
pub struct SensorJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub sensor: i64,
    #[serde(serialize_with = "number")]
    pub value: f64,
    pub timestamp: String,
    pub modifiedby: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a str>,
}

impl<'a> SensorJson<'a> {
    /// As listed under its kind in `/data`.
    pub fn listed(s: &'a SensorSample) -> Self {
        SensorJson {
            kind: None,
            sensor: s.sensor,
            value: s.value,
            timestamp: s.timestamp.display(),
            modifiedby: s.modified_by.as_str(),
            device: s.device.as_deref(),
        }
    }

    /// As a live message, which names its kind.
    pub fn live(s: &'a SensorSample) -> Self {
        SensorJson {
            kind: Some(s.kind.as_str()),
            ..SensorJson::listed(s)
        }
    }
}

/// A whole number as an integer (`812`, `1`), else as a decimal (`45.5`).
fn number<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_from_their_names() {
        for kind in SensorKind::ALL {
            assert_eq!(SensorKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(SensorKind::from_name("Humidity"), None);
        assert_eq!(SensorKind::from_name("temperature"), None);
    }

    #[test]
    fn ranges_include_their_ends() {
        let cases = [
            (SensorKind::Humidity, 0.0, true),
            (SensorKind::Humidity, 100.0, true),
            (SensorKind::Humidity, 100.1, false),
            (SensorKind::Humidity, -0.1, false),
            (SensorKind::CarbonDioxide, 100_000.0, true),
            (SensorKind::CarbonDioxide, 100_001.0, false),
            (SensorKind::PowerConsumption, 1_000_000.0, true),
            (SensorKind::PowerConsumption, -1.0, false),
            (SensorKind::Barometer, 299.9, false),
            (SensorKind::Barometer, 1013.25, true),
            (SensorKind::Barometer, 1100.5, false),
            (SensorKind::DoorLocked, 1.0, true),
            (SensorKind::DoorLocked, 0.0, true),
            (SensorKind::DoorLocked, 0.5, false),
            (SensorKind::DoorLocked, 2.0, false),
            (SensorKind::Humidity, f64::NAN, false),
        ];
        for (kind, value, accepted) in cases {
            assert_eq!(kind.accepts(value), accepted, "{kind:?} {value}");
        }
    }

    #[test]
    fn whole_values_read_as_integers() {
        let sample = SensorSample {
            timestamp: LocalTime::parse("2024-03-01 18:30:06.5").unwrap(),
            kind: SensorKind::CarbonDioxide,
            sensor: 2,
            value: 812.0,
            modified_by: ModifiedBy::Bits,
            device: None,
        };
        assert_eq!(
            serde_json::to_string(&SensorJson::live(&sample)).unwrap(),
            r#"{"kind":"carbondioxide","sensor":2,"value":812,"timestamp":"2024-03-01 18:30:06","modifiedby":"BITS"}"#
        );
        let humid = SensorSample {
            kind: SensorKind::Humidity,
            value: 45.5,
            ..sample
        };
        assert_eq!(
            serde_json::to_string(&SensorJson::listed(&humid)).unwrap(),
            r#"{"sensor":2,"value":45.5,"timestamp":"2024-03-01 18:30:06","modifiedby":"BITS"}"#
        );
    }
}
