//! Samples of the sensors beyond temperature, in `bitsd_sensor`: written by
//! the writer's batch, the newest of each kind and id read at start.
//!
//! Like `Temperature`, the table keeps every sample: nothing is pruned.

use rusqlite::params;

use super::{Batch, Db, RowResult, StoreError, device_column, parse_time};
use crate::record::ModifiedBy;
use crate::record::sensors::{SensorKind, SensorSample};

/// The table, and the index that finds a sensor's newest sample.
pub const MIGRATION: &str = r#"
    CREATE TABLE IF NOT EXISTS bitsd_sensor (
        id INTEGER NOT NULL PRIMARY KEY,
        timestamp DATETIME NOT NULL,
        kind TEXT NOT NULL,
        sensor INTEGER NOT NULL,
        value FLOAT NOT NULL,
        modified_by VARCHAR(4) NOT NULL,
        device TEXT
    );
    CREATE INDEX IF NOT EXISTS ix_bitsd_sensor_kind_sensor_timestamp
        ON bitsd_sensor (kind, sensor, timestamp);
"#;

impl Batch<'_> {
    /// Writes a sample; its row.
    pub fn insert_sensor(&self, s: &SensorSample) -> Result<i64, StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO bitsd_sensor (timestamp, kind, sensor, value, modified_by, device)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                s.timestamp.stored(),
                s.kind.as_str(),
                s.sensor,
                s.value,
                s.modified_by.as_str(),
                s.device.as_deref()
            ])?;
        Ok(self.tx.last_insert_rowid())
    }
}

impl Db {
    /// The newest sample of each kind and sensor, by kind and then sensor;
    /// rows of a kind this bitsd does not know are left out.
    pub fn latest_sensors(&self) -> Result<Vec<SensorSample>, StoreError> {
        // One index lookup per kind and sensor, found by stepping through
        // the index, as for temperatures.
        let mut stmt = self.conn.prepare(
            "WITH RECURSIVE ids(kind, sensor) AS (
                 SELECT * FROM (
                     SELECT kind, sensor FROM bitsd_sensor ORDER BY kind, sensor LIMIT 1
                 )
                 UNION ALL
                 SELECT (SELECT b.kind FROM bitsd_sensor b
                         WHERE (b.kind, b.sensor) > (ids.kind, ids.sensor)
                         ORDER BY b.kind, b.sensor LIMIT 1),
                        (SELECT b.sensor FROM bitsd_sensor b
                         WHERE (b.kind, b.sensor) > (ids.kind, ids.sensor)
                         ORDER BY b.kind, b.sensor LIMIT 1)
                 FROM ids WHERE ids.kind IS NOT NULL
             )
             SELECT s.timestamp, s.kind, s.sensor, s.value, s.modified_by, s.device
             FROM ids JOIN bitsd_sensor s ON s.id = (
                 SELECT id FROM bitsd_sensor WHERE kind = ids.kind AND sensor = ids.sensor
                 ORDER BY timestamp DESC LIMIT 1
             )",
        )?;
        let mut samples = stmt
            .query_map([], sensor_row)?
            .filter_map(|r| match r {
                Ok(Ok(Some(sample))) => Some(Ok(sample)),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some(Err(e)),
                Err(e) => Some(Err(e.into())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        samples.sort_by_key(|s| (s.kind, s.sensor));
        Ok(samples)
    }
}

/// A row; `None` for a kind this bitsd does not know.
fn sensor_row(r: &rusqlite::Row<'_>) -> RowResult<Option<SensorSample>> {
    let ts: String = r.get(0)?;
    let kind: String = r.get(1)?;
    let Some(kind) = SensorKind::from_name(&kind) else {
        return Ok(Ok(None));
    };
    let sensor: i64 = r.get(2)?;
    let value: f64 = r.get(3)?;
    let by: String = r.get(4)?;
    Ok(parse_time(ts, "bitsd_sensor").map(|timestamp| {
        Some(SensorSample {
            timestamp,
            kind,
            sensor,
            value,
            modified_by: ModifiedBy::from_stored(&by),
            device: device_column(r, 5),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::LocalTime;

    fn sample(at: &str, kind: SensorKind, sensor: i64, value: f64) -> SensorSample {
        SensorSample {
            timestamp: LocalTime::parse(at).unwrap(),
            kind,
            sensor,
            value,
            modified_by: ModifiedBy::Bits,
            device: None,
        }
    }

    #[test]
    fn the_newest_sample_of_each_kind_and_sensor_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("t.db"), false).unwrap();
        assert!(db.latest_sensors().unwrap().is_empty());
        let rows = [
            sample("2024-03-01 10:00:00", SensorKind::Humidity, 0, 40.0),
            sample("2024-03-01 10:05:00", SensorKind::Humidity, 0, 41.0),
            sample("2024-03-01 10:01:00", SensorKind::Humidity, 3, 60.0),
            sample("2024-03-01 10:02:00", SensorKind::DoorLocked, 0, 1.0),
            sample("2024-03-01 10:00:00", SensorKind::Barometer, 7, 1013.0),
        ];
        let batch = db.batch().unwrap();
        for row in &rows {
            batch.insert_sensor(row).unwrap();
        }
        batch.commit().unwrap();
        db.conn
            .execute(
                "INSERT INTO bitsd_sensor (timestamp, kind, sensor, value, modified_by)
                 VALUES ('2024-03-01 11:00:00', 'radiation', 0, 1, 'BITS')",
                [],
            )
            .unwrap();
        let latest = db.latest_sensors().unwrap();
        assert_eq!(
            latest,
            [
                rows[1].clone(),
                rows[2].clone(),
                rows[4].clone(),
                rows[3].clone()
            ]
        );
    }
}
