//! SQLite storage: schema, migrations, and every SQL statement bitsd runs.
//!
//! The tables and columns are the original Python server's, so its databases
//! open as they are. Migrations are numbered and recorded in `user_version`;
//! they only add tables and indexes.
//!
//! Here: opening (with `open` saying in plain words why a file cannot be),
//! the migrations, the statuses, messages, temperatures, pages and
//! settings, and the [`Handle`] that everything but the writer uses. `accounts` holds
//! members, sessions, MAC hashes and visibility, `history` the status
//! rows as read (with who set them) and the history the calendar reads, `outbox` the webhook deliveries not yet
//! made, `devices` the registered devices with their claim codes and keys,
//! `sensors` the samples of sensors beyond temperature, `push` the Web
//! Push subscriptions;
//! `backup` and `check` are `bitsd backup` and `bitsd check`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::clock::LocalTime;
use crate::record::{
    DeviceName, Message, ModifiedBy, StatusChange, StatusValue, TemperatureSample,
};

mod accounts;
mod backup;
mod check;
mod devices;
mod history;
mod open;
mod outbox;
mod push;
mod sensors;

pub use accounts::{AccountError, Credentials, Person, User, Visibility};
use accounts::{members, set_visibility, user_by_id};
pub use backup::{BackupDone, backup};
pub use check::{Inventory, MaintenanceError, Schema, Span, check};
pub use devices::{
    Claimed, Device, DeviceError, MAX_DEVICES, MAX_NAME, NewCode, check_device_name, secret_hash,
};
use history::{status_row, status_select};
use open::{directory_of, why_not_open};
pub use outbox::{OUTBOX_BATCH, OutboxRow};
pub use push::{Pending, PushEvent, Subscribed, SubscriptionRow};

/// Name of the device user; device messages are stored under it.
pub const DEVICE_USER: &str = "BITS";

/// Errors of the storage layer. Each keeps its cause as its source; show
/// them with [`crate::report::Report`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be opened as a database; why, in plain words.
    #[error("{0}")]
    Open(String),
    #[error("database")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database: bad timestamp {0:?} in table {1}")]
    BadTimestamp(String, &'static str),
    #[error("database: the writer has stopped")]
    Closed,
    #[error("database: a blocking task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("database: cannot start the writer thread")]
    WriterThread(#[source] std::io::Error),
    /// The batch an event was written in failed to commit (each event of
    /// the batch shares the one cause).
    #[error("database: not committed")]
    NotCommitted(#[source] Arc<StoreError>),
    /// A setting bitsd wrote cannot be read back.
    #[error("database: the setting {0} is not what bitsd writes")]
    BadSetting(&'static str),
}

/// The schema, one entry per version. Tables are created only when missing,
/// so a database written by the original server gains just what it lacks.
const MIGRATIONS: &[&str] = &[
    // 1: the original server's tables.
    r#"
    CREATE TABLE IF NOT EXISTS "Status" (
        timestamp DATETIME NOT NULL PRIMARY KEY,
        value VARCHAR(6) NOT NULL,
        modified_by VARCHAR(4) NOT NULL
    );
    CREATE TABLE IF NOT EXISTS "Temperature" (
        timestamp DATETIME NOT NULL,
        value FLOAT NOT NULL,
        sensor INTEGER NOT NULL,
        modified_by VARCHAR(4) NOT NULL,
        PRIMARY KEY (timestamp, value)
    );
    CREATE TABLE IF NOT EXISTS "Message" (
        userid BIGINT NOT NULL,
        timestamp DATETIME NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (userid, timestamp)
    );
    CREATE TABLE IF NOT EXISTS "Pages" (
        slug VARCHAR(100) NOT NULL PRIMARY KEY,
        title VARCHAR(100) NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS "User" (
        userid INTEGER NOT NULL PRIMARY KEY,
        name VARCHAR(256) NOT NULL UNIQUE,
        password VARCHAR(512) NOT NULL
    );
    CREATE TABLE IF NOT EXISTS "LoginAttempt" (
        id INTEGER NOT NULL PRIMARY KEY,
        username VARCHAR(256) NOT NULL,
        ipaddress VARCHAR(39) NOT NULL,
        timestamp DATETIME NOT NULL
    );
    CREATE TABLE IF NOT EXISTS "MACToUser" (
        userid INTEGER NOT NULL REFERENCES "User" (userid),
        mac_hash VARCHAR(64) NOT NULL PRIMARY KEY
    );
    "#,
    // 2: indexes for the latest sample per sensor and the last message.
    r#"
    CREATE INDEX IF NOT EXISTS ix_temperature_sensor_timestamp ON "Temperature" (sensor, timestamp);
    CREATE INDEX IF NOT EXISTS ix_message_timestamp ON "Message" (timestamp);
    "#,
    // 3: bitsd's own settings (the generated cookie secret).
    r#"
    CREATE TABLE IF NOT EXISTS bitsd_setting (
        key TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 4: login sessions, by the SHA-256 of their token; times in unix seconds.
    r#"
    CREATE TABLE IF NOT EXISTS bitsd_session (
        token_hash TEXT NOT NULL PRIMARY KEY,
        userid INTEGER NOT NULL,
        name TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS ix_bitsd_session_userid ON bitsd_session (userid);
    CREATE INDEX IF NOT EXISTS ix_bitsd_session_expires ON bitsd_session (expires);
    "#,
    // 5: webhook deliveries not yet made.
    outbox::MIGRATION,
    // 6: who is seen; the members of the time become `named`.
    accounts::VISIBILITY_MIGRATION,
    // 7: registered devices, their claim codes and keys.
    devices::MIGRATION,
    // 8: which registered device sent a change (none: the original device,
    // or a person).
    devices::SENDER_MIGRATION,
    // 9: samples of sensors beyond temperature.
    sensors::MIGRATION,
    // 10: `members`, open for members only, as a status value. The
    // original's `Status` allows only open, closed and away: it is made
    // again without that check, its rows kept.
    r#"
    CREATE TABLE bitsd_status_rebuilt (
        timestamp DATETIME NOT NULL PRIMARY KEY,
        value VARCHAR(7) NOT NULL,
        modified_by VARCHAR(4) NOT NULL,
        device TEXT
    );
    INSERT INTO bitsd_status_rebuilt (timestamp, value, modified_by, device)
        SELECT timestamp, value, modified_by, device FROM "Status";
    DROP TABLE "Status";
    ALTER TABLE bitsd_status_rebuilt RENAME TO "Status";
    "#,
    // 11: until when the room stays open, as a member or the device said.
    r#"
    ALTER TABLE "Status" ADD COLUMN until TEXT;
    "#,
    // 12: the member who changed the status, from `/admin` or the keypad.
    r#"
    ALTER TABLE "Status" ADD COLUMN person INTEGER;
    "#,
    // 13: Web Push subscriptions.
    push::MIGRATION,
];

/// A wiki page as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub slug: String,
    pub title: String,
    pub body: String,
}

/// Status history for the forecast; see [`Db::status_window`].
#[derive(Debug, Default)]
pub struct StatusWindow {
    pub before: Option<StatusValue>,
    pub changes: Vec<StatusChange>,
}

/// What the snapshot needs at start-up.
#[derive(Debug, Default)]
pub struct Latest {
    pub status: Option<StatusChange>,
    /// Newest first.
    pub temperatures: Vec<TemperatureSample>,
    /// The newest sample of each sensor.
    pub per_sensor: Vec<TemperatureSample>,
    pub message: Option<Message>,
    /// The row of the newest sample written (0 when there is none).
    pub temperature_row: i64,
}

/// One SQLite connection.
pub struct Db {
    conn: Connection,
}

impl Db {
    /// A write transaction that holds the lock from its start, so what it
    /// reads stays true until it commits, also against other connections
    /// and processes.
    pub(super) fn immediate(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path, log_queries: bool) -> Result<Db, StoreError> {
        let opened = Connection::open(path).and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            Ok(conn)
        });
        let mut conn = opened.map_err(|e| StoreError::Open(why_not_open(path, &e)))?;
        if log_queries {
            conn.trace_v2(
                rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
                Some(|event: rusqlite::trace::TraceEvent<'_>| {
                    if let rusqlite::trace::TraceEvent::Stmt(_, sql) = event {
                        tracing::info!(target: "bitsd::sql", "{sql}");
                    }
                }),
            )?;
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let mut db = Db { conn };
        db.migrate()?;
        db.ensure_device_user()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!("database migrated to schema version {}", i + 1);
        }
        Ok(())
    }

    fn ensure_device_user(&mut self) -> Result<(), StoreError> {
        // `!` is no valid hash of any scheme, so nobody can log in as BITS.
        self.conn.execute(
            r#"INSERT INTO "User" (name, password) SELECT ?1, '!'
               WHERE NOT EXISTS (SELECT 1 FROM "User" WHERE name = ?1)"#,
            params![DEVICE_USER],
        )?;
        Ok(())
    }

    /// Checks that the database answers.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Starts a write transaction.
    pub fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch {
            tx: self.conn.transaction()?,
        })
    }

    /// The current state as the snapshot needs it.
    pub fn latest(&self, samples: usize) -> Result<Latest, StoreError> {
        let status = self
            .conn
            .query_row(
                concat!(status_select!(), r#" ORDER BY timestamp DESC LIMIT 1"#),
                [],
                status_row,
            )
            .optional()?
            .transpose()?;
        let mut stmt = self.conn.prepare(
            r#"SELECT timestamp, value, sensor, modified_by, device FROM "Temperature"
               ORDER BY timestamp DESC LIMIT ?1"#,
        )?;
        let temperatures = stmt
            .query_map([samples as i64], temperature_row)?
            .map(|r| r?)
            .collect::<Result<Vec<_>, _>>()?;
        // The newest sample of each sensor, one index lookup per sensor:
        // the sensors are found by stepping through the index (a GROUP BY
        // would read every sample, 120 ms for a year of them).
        let mut stmt = self.conn.prepare(
            r#"WITH RECURSIVE sensors(sensor) AS (
                   SELECT MIN(sensor) FROM "Temperature"
                   UNION ALL
                   SELECT (SELECT MIN(sensor) FROM "Temperature" WHERE sensor > sensors.sensor)
                   FROM sensors WHERE sensors.sensor IS NOT NULL
               )
               SELECT t.timestamp, t.value, t.sensor, t.modified_by, t.device
               FROM sensors JOIN "Temperature" t ON t.rowid = (
                   SELECT rowid FROM "Temperature" WHERE sensor = sensors.sensor
                   ORDER BY timestamp DESC LIMIT 1
               )
               ORDER BY t.sensor"#,
        )?;
        let per_sensor = stmt
            .query_map([], temperature_row)?
            .map(|r| r?)
            .collect::<Result<Vec<_>, _>>()?;
        let message = self
            .conn
            .query_row(
                r#"SELECT m.timestamp, COALESCE(u.name, CAST(m.userid AS TEXT)), m.message, m.device
                   FROM "Message" m LEFT JOIN "User" u ON u.userid = m.userid
                   ORDER BY m.timestamp DESC LIMIT 1"#,
                [],
                |r| {
                    let ts: String = r.get(0)?;
                    Ok(parse_time(ts, "Message").map(|timestamp| Message {
                        timestamp,
                        user: r.get(1).unwrap_or_default(),
                        text: r.get(2).unwrap_or_default(),
                        device: device_column(r, 3),
                    }))
                },
            )
            .optional()?
            .transpose()?;
        let temperature_row = self.conn.query_row(
            r#"SELECT COALESCE(MAX(rowid), 0) FROM "Temperature""#,
            [],
            |r| r.get(0),
        )?;
        Ok(Latest {
            status,
            temperatures,
            per_sensor,
            message,
            temperature_row,
        })
    }

    /// Up to `limit` samples written after row `after`, in the order they
    /// were written, with their rows.
    pub fn temperatures_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, i64, f64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            r#"SELECT rowid, sensor, value FROM "Temperature"
               WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"#,
        )?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Status changes, newest first.
    pub fn status_log(&self, offset: u64, limit: u64) -> Result<Vec<StatusChange>, StoreError> {
        let mut stmt = self.conn.prepare_cached(concat!(
            status_select!(),
            r#" ORDER BY timestamp DESC LIMIT ?1 OFFSET ?2"#
        ))?;
        stmt.query_map(
            [
                limit.min(i64::MAX as u64) as i64,
                offset.min(i64::MAX as u64) as i64,
            ],
            status_row,
        )?
        .map(|r| r?)
        .collect()
    }

    /// The time of the first recorded status change.
    pub fn first_status(&self) -> Result<Option<LocalTime>, StoreError> {
        self.conn
            .query_row(r#"SELECT MIN(timestamp) FROM "Status""#, [], |r| {
                r.get::<_, Option<String>>(0)
            })?
            .map(|t| parse_time(t, "Status"))
            .transpose()
    }

    /// What the forecast needs over `[from, ...)`: the status in force at
    /// `from` and the changes from then on, oldest first.
    pub fn status_window(&self, from: LocalTime) -> Result<StatusWindow, StoreError> {
        let from_text = from.stored();
        let before = self
            .conn
            .query_row(
                concat!(
                    status_select!(),
                    r#" WHERE timestamp < ?1 ORDER BY timestamp DESC LIMIT 1"#
                ),
                [&from_text],
                status_row,
            )
            .optional()?
            .transpose()?
            .map(|s| s.value);
        let mut stmt = self.conn.prepare_cached(concat!(
            status_select!(),
            r#" WHERE timestamp >= ?1 ORDER BY timestamp"#
        ))?;
        let changes = stmt
            .query_map([&from_text], status_row)?
            .map(|r| r?)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StatusWindow { before, changes })
    }

    /// The number of status changes.
    pub fn status_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row(r#"SELECT COUNT(*) FROM "Status""#, [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// A wiki page by slug.
    pub fn page(&self, slug: &str) -> Result<Option<Page>, StoreError> {
        Ok(self
            .conn
            .query_row(
                r#"SELECT slug, title, body FROM "Pages" WHERE slug = ?1"#,
                [slug],
                |r| {
                    Ok(Page {
                        slug: r.get(0)?,
                        title: r.get(1)?,
                        body: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Inserts or replaces a page; true when something changed.
    pub fn put_page(&mut self, page: &Page) -> Result<bool, StoreError> {
        if self.page(&page.slug)?.as_ref() == Some(page) {
            return Ok(false);
        }
        self.conn.execute(
            r#"INSERT INTO "Pages" (slug, title, body) VALUES (?1, ?2, ?3)
               ON CONFLICT (slug) DO UPDATE SET title = excluded.title, body = excluded.body"#,
            params![page.slug, page.title, page.body],
        )?;
        Ok(true)
    }

    /// A bitsd setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM bitsd_setting WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores `value` under `key` unless a value is already there; returns
    /// the value in force.
    pub fn setting_or_insert(&mut self, key: &str, value: &str) -> Result<String, StoreError> {
        self.conn.execute(
            "INSERT INTO bitsd_setting (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            [key, value],
        )?;
        Ok(self.setting(key)?.unwrap_or_else(|| value.to_string()))
    }
}

/// A write transaction; nothing is visible until [`Batch::commit`].
pub struct Batch<'a> {
    tx: Transaction<'a>,
}

impl Batch<'_> {
    /// Says until when the room stays open, on the newest status change.
    pub fn set_until(&self, until: Option<LocalTime>) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                r#"UPDATE "Status" SET until = ?1
                   WHERE timestamp = (SELECT MAX(timestamp) FROM "Status")"#,
            )?
            .execute(params![until.map(|u| u.stored())])?;
        Ok(())
    }

    pub fn insert_status(&self, s: &StatusChange) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                r#"INSERT INTO "Status" (timestamp, value, modified_by, device, until, person)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
            )?
            .execute(params![
                s.timestamp.stored(),
                s.value.as_str(),
                s.modified_by.as_str(),
                s.device.as_deref(),
                s.until.map(|u| u.stored()),
                s.person.as_ref().map(|p| p.id)
            ])?;
        Ok(())
    }

    /// Writes a sample; its row, which orders samples as written.
    pub fn insert_temperature(&self, t: &TemperatureSample) -> Result<i64, StoreError> {
        self.tx
            .prepare_cached(
                r#"INSERT INTO "Temperature" (timestamp, value, sensor, modified_by, device)
                   VALUES (?1, ?2, ?3, ?4, ?5)"#,
            )?
            .execute(params![
                t.timestamp.stored(),
                t.value,
                t.sensor,
                t.modified_by.as_str(),
                t.device.as_deref()
            ])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Writes a message of user `userid` (`device`: the registered device
    /// that sent it, if one did).
    pub fn insert_message(
        &self,
        userid: i64,
        timestamp: LocalTime,
        text: &str,
        device: Option<&str>,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                r#"INSERT INTO "Message" (userid, timestamp, message, device)
                   VALUES (?1, ?2, ?3, ?4)"#,
            )?
            .execute(params![userid, timestamp.stored(), text, device])?;
        Ok(())
    }

    /// A user by id, read inside the transaction.
    pub fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        user_by_id(&self.tx, id)
    }

    /// Members by id with their visibility, read inside the transaction;
    /// ids of no member are left out.
    pub fn members(
        &self,
        ids: impl IntoIterator<Item = i64>,
    ) -> Result<BTreeMap<i64, Person>, StoreError> {
        members(&self.tx, ids)
    }

    /// Sets the visibility of member `id`; false when there is no such member.
    pub fn set_visibility(&self, id: i64, visibility: Visibility) -> Result<bool, StoreError> {
        set_visibility(&self.tx, id, visibility)
    }

    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

fn parse_time(text: String, table: &'static str) -> Result<LocalTime, StoreError> {
    LocalTime::parse(&text).ok_or(StoreError::BadTimestamp(text, table))
}

type RowResult<T> = rusqlite::Result<Result<T, StoreError>>;

/// The `device` column at `at`: a name, or none (also for a value that is
/// not text, which bitsd never writes).
fn device_column(r: &rusqlite::Row<'_>, at: usize) -> Option<DeviceName> {
    r.get::<_, Option<String>>(at)
        .ok()
        .flatten()
        .map(DeviceName::from)
}

fn temperature_row(r: &rusqlite::Row<'_>) -> RowResult<TemperatureSample> {
    let ts: String = r.get(0)?;
    let value: f64 = r.get(1)?;
    let sensor: i64 = r.get(2)?;
    let by: String = r.get(3)?;
    Ok(
        parse_time(ts, "Temperature").map(|timestamp| TemperatureSample {
            timestamp,
            sensor,
            value,
            modified_by: ModifiedBy::from_stored(&by),
            device: device_column(r, 4),
        }),
    )
}

/// A connection of its own for everything but events, shared by the web,
/// MQTT and the webhooks: reads (history, pages, users, samples, the
/// outbox) and the account writes (password upgrades, sessions made, ended
/// and swept). Each use runs on a blocking thread; events, and the outbox
/// rows delivered, go through the writer instead.
#[derive(Clone)]
pub struct Handle {
    db: Arc<Mutex<Db>>,
}

impl Handle {
    pub fn open(path: &Path) -> Result<Handle, StoreError> {
        let conn = Connection::open(path)
            .and_then(|conn| conn.busy_timeout(Duration::from_secs(5)).map(|()| conn))
            .map_err(|e| StoreError::Open(why_not_open(path, &e)))?;
        Ok(Handle {
            db: Arc::new(Mutex::new(Db { conn })),
        })
    }

    /// Runs `f` with the connection on this thread, which may block.
    pub fn run_blocking<R>(&self, f: impl FnOnce(&mut Db) -> R) -> R {
        let mut db = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut db)
    }

    /// Runs `f` with the connection, off the async runtime.
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut db)
        })
        .await?
    }
}

#[cfg(test)]
mod tests;
