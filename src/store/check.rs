//! `bitsd check`: what a database holds, read without changing it; and
//! the read-only opening and the counts `bitsd backup` shares.
//!
//! [`open_read_only`] never creates, migrates or writes anything: the
//! file's bytes stay the same and no `-wal` or `-shm` file appears next to it.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, percent_encode};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::MIGRATIONS;
use crate::clock::LocalTime;

/// Tables of the original server, as SQLAlchemy named them.
const ORIGINAL_TABLES: &[&str] = &[
    "Status",
    "Temperature",
    "Message",
    "Pages",
    "User",
    "LoginAttempt",
    "MACToUser",
];
/// Integrity problems named in an error; the rest are counted.
const PROBLEMS_SHOWN: usize = 3;

/// Why a backup or a check failed, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("no such file")]
    Missing,
    #[error("not a regular file")]
    NotAFile,
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    #[error("{what}: {}", crate::report::io_cause(cause))]
    Io { what: String, cause: std::io::Error },
    #[error(
        "{0} holds an interrupted transaction; the next program that opens the database \
         for writing rolls it back (bitsd does when it starts)"
    )]
    Interrupted(PathBuf),
    #[error("integrity check failed: {0}")]
    Damaged(String),
    #[error("schema version {found} is newer than this bitsd knows (version {known})")]
    NewerSchema { found: i64, known: usize },
    #[error("it holds tables but none of BITS ({}): not a BITS or bitsd database", ORIGINAL_TABLES.join(", "))]
    Foreign,
    #[error("table {table} holds a timestamp bitsd cannot read: {text:?}")]
    BadTimestamp { table: &'static str, text: String },
    #[error("that is the database itself or one of its files")]
    SameFile,
    #[error("the directory {0} does not exist")]
    NoDirectory(PathBuf),
    #[error("that is a directory")]
    IsDirectory,
    #[error("the database stayed busy for {} s", .0.as_secs())]
    Busy(Duration),
    #[error("the copy failed its integrity check: {0}")]
    CopyDamaged(String),
}

impl From<rusqlite::Error> for MaintenanceError {
    fn from(e: rusqlite::Error) -> Self {
        MaintenanceError::Sqlite(e)
    }
}

pub(super) fn io(what: impl fmt::Display, cause: std::io::Error) -> MaintenanceError {
    MaintenanceError::Io {
        what: what.to_string(),
        cause,
    }
}

/// What kind of schema a database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// No tables at all: bitsd creates them.
    Empty,
    /// The original server's tables and no recorded version.
    Original,
    /// A bitsd schema of this version.
    Version(usize),
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = MIGRATIONS.len();
        match *self {
            Schema::Empty => write!(f, "none (no tables), will be created on first start"),
            Schema::Original => write!(f, "original BITS schema, will be upgraded on first start"),
            Schema::Version(v) if v == current => write!(f, "version {v} (current)"),
            Schema::Version(v) => {
                write!(
                    f,
                    "version {v}, will be upgraded to version {current} on first start"
                )
            }
        }
    }
}

/// The rows of a table of events and the time they span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Span {
    /// `None` when the table does not exist (yet).
    pub count: Option<u64>,
    pub first: Option<LocalTime>,
    pub last: Option<LocalTime>,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count {
            None => write!(f, "0 (no table yet)")?,
            Some(n) => write!(f, "{n}")?,
        }
        if let (Some(first), Some(last)) = (self.first, self.last) {
            write!(f, ", {} to {}", first.display(), last.display())?;
        }
        Ok(())
    }
}

/// What `bitsd check` found in a database.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub bytes: u64,
    pub schema: Schema,
    pub status_changes: Span,
    pub samples: Span,
    /// Samples of the sensors beyond temperature (SPEC 19).
    pub sensor_samples: Span,
    pub messages: Span,
    pub users: Option<u64>,
    pub pages: Option<u64>,
    pub mac_hashes: Option<u64>,
    /// Registered devices (SPEC 18), not counting the original one.
    pub devices: Option<u64>,
}

impl Inventory {
    /// The first and last timestamp of any event.
    pub fn history(&self) -> Option<(LocalTime, LocalTime)> {
        let spans = [
            &self.status_changes,
            &self.samples,
            &self.sensor_samples,
            &self.messages,
        ];
        let first = spans.iter().filter_map(|s| s.first).min()?;
        let last = spans.iter().filter_map(|s| s.last).max()?;
        Some((first, last))
    }
}

/// One `name: value` line per fact.
impl fmt::Display for Inventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |n: Option<u64>| match n {
            Some(n) => n.to_string(),
            None => "0 (no table yet)".to_string(),
        };
        writeln!(
            f,
            "database: {} ({})",
            self.path.display(),
            Size(self.bytes)
        )?;
        writeln!(f, "schema: {}", self.schema)?;
        writeln!(f, "integrity: ok")?;
        writeln!(f, "status changes: {}", self.status_changes)?;
        writeln!(f, "temperature samples: {}", self.samples)?;
        writeln!(f, "other sensor samples: {}", self.sensor_samples)?;
        writeln!(f, "messages: {}", self.messages)?;
        writeln!(f, "users: {}", count(self.users))?;
        writeln!(f, "pages: {}", count(self.pages))?;
        writeln!(f, "MAC hashes: {}", count(self.mac_hashes))?;
        writeln!(f, "registered devices: {}", count(self.devices))?;
        match self.history() {
            Some((first, last)) => {
                writeln!(f, "history: {} to {}", first.display(), last.display())
            }
            None => writeln!(f, "history: empty"),
        }
    }
}

/// Reads the database at `path` without changing it and tells what it
/// holds; an error when it is missing, no database, damaged, of a newer
/// schema or of another program.
pub fn check(path: &Path) -> Result<Inventory, MaintenanceError> {
    let conn = open_read_only(path, true)?;
    let bytes = fs::metadata(path)
        .map_err(|e| io("cannot read its size", e))?
        .len();
    // One read transaction, so every count is of the same moment.
    conn.execute_batch("BEGIN")?;
    let tables = tables(&conn)?;
    let schema = schema(&conn, &tables)?;
    integrity(&conn).map_err(|problems| match problems {
        Problems::Found(text) => MaintenanceError::Damaged(text),
        Problems::Unreadable(e) => e,
    })?;
    let count = |table| count(&conn, &tables, table);
    Ok(Inventory {
        path: path.to_path_buf(),
        bytes,
        schema,
        status_changes: span(&conn, &tables, "Status")?,
        samples: span(&conn, &tables, "Temperature")?,
        sensor_samples: span(&conn, &tables, "bitsd_sensor")?,
        messages: span(&conn, &tables, "Message")?,
        users: count("User")?,
        pages: count("Pages")?,
        mac_hashes: count("MACToUser")?,
        devices: count("bitsd_device")?,
    })
}

/// `path` with `suffix` appended to its name, as SQLite names its files.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens `path` for reading only, creating nothing.
///
/// A database in WAL mode without a `-wal` file is closed by every
/// program and whole in its one file. Opened read-only the usual way,
/// SQLite would leave `-wal` and `-shm` files behind, so it is opened as
/// immutable when `closed_is_immutable` (a check, which reads in one
/// moment). Otherwise locks are taken as usual: a running server may be
/// writing, or start while a backup copies.
pub(super) fn open_read_only(
    path: &Path,
    closed_is_immutable: bool,
) -> Result<Connection, MaintenanceError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(MaintenanceError::NotAFile),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MaintenanceError::Missing);
        }
        Err(e) => return Err(io("cannot read it", e)),
    }
    let immutable = closed_is_immutable && in_wal_mode(path)? && !sibling(path, "-wal").exists();
    /// What a path may not hold as such in an SQLite URI.
    const URI_PATH: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#').add(b' ');
    let uri = format!(
        "file:{}?mode=ro{}",
        percent_encode(path.as_os_str().as_bytes(), URI_PATH),
        if immutable { "&immutable=1" } else { "" }
    );
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // The first read tells a file that is no database, or one that needs
    // writing before it can be read.
    let probe = conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |_| Ok(()));
    match probe {
        Ok(()) => Ok(conn),
        Err(e)
            if e.sqlite_error().map(|e| e.extended_code)
                == Some(rusqlite::ffi::SQLITE_READONLY_ROLLBACK) =>
        {
            Err(MaintenanceError::Interrupted(sibling(path, "-journal")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the header of the file at `path` says WAL mode (format version 2).
fn in_wal_mode(path: &Path) -> Result<bool, MaintenanceError> {
    let mut header = [0u8; 20];
    let mut file = File::open(path).map_err(|e| io("cannot read it", e))?;
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("cannot read it", e)),
        }
    }
    Ok(read == header.len() && header.starts_with(b"SQLite format 3\0") && header[18] == 2)
}

/// The names of the tables, lower-cased (SQLite ignores their case).
pub(super) fn tables(conn: &Connection) -> Result<BTreeSet<String>, MaintenanceError> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .map(|name| name.map(|n| n.to_lowercase()))
        .collect::<Result<_, _>>()?;
    Ok(names)
}

fn schema(conn: &Connection, tables: &BTreeSet<String>) -> Result<Schema, MaintenanceError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len();
    if version > known as i64 {
        return Err(MaintenanceError::NewerSchema {
            found: version,
            known,
        });
    }
    if version > 0 {
        return Ok(Schema::Version(version as usize));
    }
    let original = ORIGINAL_TABLES
        .iter()
        .any(|t| tables.contains(&t.to_lowercase()));
    match (original, tables.is_empty()) {
        (true, _) => Ok(Schema::Original),
        (false, true) => Ok(Schema::Empty),
        (false, false) => Err(MaintenanceError::Foreign),
    }
}

/// Why `integrity_check` did not answer `ok`.
pub(super) enum Problems {
    Found(String),
    Unreadable(MaintenanceError),
}

pub(super) fn integrity(conn: &Connection) -> Result<(), Problems> {
    let unreadable = |e: rusqlite::Error| Problems::Unreadable(e.into());
    let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(unreadable)?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(unreadable)?
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    let mut text = rows
        .iter()
        .take(PROBLEMS_SHOWN)
        .map(|row| row.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ");
    if rows.len() > PROBLEMS_SHOWN {
        text.push_str(&format!(" (and {} more)", rows.len() - PROBLEMS_SHOWN));
    }
    Err(Problems::Found(text))
}

/// The rows of `table`, `None` when there is no such table.
pub(super) fn count(
    conn: &Connection,
    tables: &BTreeSet<String>,
    table: &'static str,
) -> Result<Option<u64>, MaintenanceError> {
    if !tables.contains(&table.to_lowercase()) {
        return Ok(None);
    }
    let n: i64 = conn.query_row(&format!(r#"SELECT COUNT(*) FROM "{table}""#), [], |r| {
        r.get(0)
    })?;
    Ok(Some(n as u64))
}

/// The rows of `table` and its first and last timestamps.
fn span(
    conn: &Connection,
    tables: &BTreeSet<String>,
    table: &'static str,
) -> Result<Span, MaintenanceError> {
    if !tables.contains(&table.to_lowercase()) {
        return Ok(Span::default());
    }
    let sql = format!(r#"SELECT COUNT(*), MIN(timestamp), MAX(timestamp) FROM "{table}""#);
    conn.query_row(&sql, [], |r| {
        let time = |i| -> rusqlite::Result<Result<Option<LocalTime>, MaintenanceError>> {
            Ok(match r.get_ref(i)? {
                ValueRef::Null => Ok(None),
                ValueRef::Text(text) => {
                    let text = String::from_utf8_lossy(text);
                    LocalTime::parse(&text).map(Some).ok_or_else(|| {
                        MaintenanceError::BadTimestamp {
                            table,
                            text: text.into_owned(),
                        }
                    })
                }
                ValueRef::Integer(n) => Err(MaintenanceError::BadTimestamp {
                    table,
                    text: n.to_string(),
                }),
                ValueRef::Real(x) => Err(MaintenanceError::BadTimestamp {
                    table,
                    text: x.to_string(),
                }),
                ValueRef::Blob(_) => Err(MaintenanceError::BadTimestamp {
                    table,
                    text: "a blob".to_string(),
                }),
            })
        };
        let count: i64 = r.get(0)?;
        let (first, last) = (time(1)?, time(2)?);
        Ok(first.and_then(|first| {
            Ok(Span {
                count: Some(count as u64),
                first,
                last: last?,
            })
        }))
    })?
}

/// A size in bytes, shown in the largest binary unit it fills.
pub(super) struct Size(pub(super) u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_schema_is_named_with_its_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        drop(conn);
        let found = check(&path).unwrap();
        assert_eq!(found.schema, Schema::Version(2));
        assert_eq!(
            found.schema.to_string(),
            format!(
                "version 2, will be upgraded to version {} on first start",
                MIGRATIONS.len()
            )
        );
        assert_eq!(found.status_changes.count, Some(0));
        assert_eq!(found.history(), None);
    }

    #[test]
    fn a_bad_timestamp_is_reported_with_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(r#"INSERT INTO "Message" VALUES (1, 1367488800, 'hi')"#)
            .unwrap();
        drop(conn);
        let e = check(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            "table Message holds a timestamp bitsd cannot read: \"1367488800\""
        );
    }

    #[test]
    fn sizes_and_io_errors_in_plain_words() {
        assert_eq!(Size(512).to_string(), "512 B");
        assert_eq!(Size(24 * 1024).to_string(), "24.0 KiB");
        assert_eq!(Size(5 * 1024 * 1024 + 400 * 1024).to_string(), "5.4 MiB");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            io("cannot read it", denied).to_string(),
            "cannot read it: permission denied"
        );
    }
}
