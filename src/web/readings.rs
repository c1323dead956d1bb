//! The homepage's sensors beyond temperature, in words: each kind's name
//! and unit, in the order the page script lists them too.

use crate::clock::LocalTime;
use crate::config::SensorNames;
use crate::record::sensors::{SensorKind, SensorSample};
use crate::state::Snapshot;
use crate::words::{self, HomeWords, Moment, SensorWords, TimeWords};

/// One sensor's newest sample as the homepage shows it.
pub struct ReadingView {
    pub kind: &'static str,
    pub sensor: i64,
    /// What it measures and which it is: "Humidity · Lab".
    pub label: String,
    /// The value with its unit: "46 %", "Locked".
    pub value: String,
    pub at: Moment,
}

/// The words and names a reading is shown with.
pub struct Shown<'a> {
    pub home: &'static HomeWords,
    pub sensors: &'static SensorWords,
    pub times: &'static TimeWords,
    pub names: &'a SensorNames,
}

/// Every sensor's newest sample, by kind and then id.
pub fn readings(shown: &Shown<'_>, snapshot: &Snapshot, now: &LocalTime) -> Vec<ReadingView> {
    snapshot
        .sensor_samples
        .values()
        .map(|s| reading(shown, s, now))
        .collect()
}

fn reading(shown: &Shown<'_>, sample: &SensorSample, now: &LocalTime) -> ReadingView {
    let words = shown.sensors;
    let id = sample.sensor.to_string();
    let name = shown.names.get(sample.sensor).map_or_else(
        || words::fill(shown.home.sensor, &[("sensor", &id)]),
        str::to_string,
    );
    let (kind, unit) = match sample.kind {
        SensorKind::Humidity => (words.humidity, words.percent),
        SensorKind::CarbonDioxide => (words.carbondioxide, words.ppm),
        SensorKind::PowerConsumption => (words.power_consumption, words.watts),
        SensorKind::Barometer => (words.barometer, words.hectopascals),
        SensorKind::DoorLocked => (words.door_locked, ""),
    };
    let value = if sample.kind.is_flag() {
        let locked = sample.value != 0.0;
        (if locked { words.locked } else { words.unlocked }).to_string()
    } else {
        let decimals = words::THRESHOLDS.sensor_decimals;
        let number = words::fixed(sample.value, decimals, shown.home.decimal_point);
        words::fill(unit, &[("value", &number)])
    };
    ReadingView {
        kind: sample.kind.as_str(),
        sensor: sample.sensor,
        label: words::fill(words.label, &[("kind", kind), ("sensor", &name)]),
        value,
        at: Moment::new(shown.times, &sample.timestamp, now),
    }
}
