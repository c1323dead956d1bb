//! Registered devices (SPEC 18): names, claim codes and keys, stored only as
//! SHA-256 hashes, and the columns the device port fills when one connects.
//! Its tests are in `tests`.

use base64::Engine as _;
use rand::{Rng as _, RngCore as _};
use rusqlite::{OptionalExtension, Transaction, params};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{DEVICE_USER, Db, StoreError};

/// Most devices registered at once.
pub const MAX_DEVICES: i64 = 64;

/// Longest device name.
pub const MAX_NAME: usize = 32;

/// The letters of a claim code: no `0`/`o`, `1`/`i`/`l` to confuse.
const CODE_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// Letters in a claim code, shown in groups of [`CODE_GROUP`].
const CODE_LEN: usize = 16;
const CODE_GROUP: usize = 4;

/// Schema version 7: the registered devices. Times are unix seconds; the
/// name's collation makes it unique ignoring case (names are ASCII). A
/// key or code is present only while it may be used.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE IF NOT EXISTS bitsd_device (
        id INTEGER NOT NULL PRIMARY KEY,
        name TEXT NOT NULL COLLATE NOCASE UNIQUE CHECK (length(name) BETWEEN 1 AND 32),
        created INTEGER NOT NULL,
        key_hash TEXT UNIQUE,
        key_made INTEGER,
        code_hash TEXT UNIQUE,
        code_expires INTEGER,
        revoked INTEGER,
        last_seen INTEGER,
        address TEXT,
        transport TEXT
    );
    "#;

/// Schema version 8: the registered device that sent each status change,
/// sample and message, by name (null for the original device and for
/// people; the original server's tables only gain a column), and since when
/// a device is connected (null when it is not).
pub(super) const SENDER_MIGRATION: &str = r#"
    ALTER TABLE "Status" ADD COLUMN device TEXT;
    ALTER TABLE "Temperature" ADD COLUMN device TEXT;
    ALTER TABLE "Message" ADD COLUMN device TEXT;
    ALTER TABLE bitsd_device ADD COLUMN connected INTEGER;
    "#;

/// A registered device as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: i64,
    pub name: String,
    pub created: i64,
    /// When its key was made; none before the first claim and after a revoke.
    pub key_made: Option<i64>,
    /// When its pending claim code expires; none when no code is pending.
    pub code_expires: Option<i64>,
    /// When its key was last revoked, unless claimed since.
    pub revoked: Option<i64>,
    /// Its last contact: when it connected or disconnected, or, while
    /// connected, within the last minute.
    pub last_seen: Option<i64>,
    pub address: Option<String>,
    pub transport: Option<String>,
    /// Since when it is connected, as the running bitsd last said.
    pub connected: Option<i64>,
}

/// A claim code just made, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCode {
    pub device: String,
    /// As shown: four groups of four letters, e.g. `5qqp-e9dp-hh7v-fjrk`.
    pub code: String,
    pub expires: i64,
}

/// A claim accepted: the device and its new key, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub device: Device,
    /// URL-safe base64 of 32 random bytes.
    pub key: String,
}

/// Why a device change or a claim was refused, or failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0:?} is not a valid device name (1 to 32 ASCII letters, digits, '-' or '_')")]
    BadName(String),
    #[error("the name {0} is reserved for the original device, which is not registered")]
    Reserved(String),
    #[error("a device named {0} already exists")]
    Exists(String),
    #[error("there are already {MAX_DEVICES} devices, the most bitsd keeps; delete one first")]
    Full,
    #[error("no device named {0}")]
    NoSuchDevice(String),
    /// A code of no device: wrong, already used, or replaced by a newer one.
    #[error("no device has this claim code")]
    UnknownCode,
    #[error("the claim code has expired")]
    ExpiredCode,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for DeviceError {
    fn from(e: rusqlite::Error) -> Self {
        DeviceError::Store(e.into())
    }
}

/// Checks a device name: 1-32 ASCII letters, digits, `-`, `_`, not `BITS`.
pub fn check_device_name(name: &str) -> Result<(), DeviceError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(DeviceError::BadName(name.to_string()));
    }
    if name.eq_ignore_ascii_case(DEVICE_USER) {
        return Err(DeviceError::Reserved(name.to_string()));
    }
    Ok(())
}

/// A new claim code as shown, from the thread's CSPRNG.
fn new_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(CODE_LEN + CODE_LEN / CODE_GROUP);
    for i in 0..CODE_LEN {
        if i > 0 && i % CODE_GROUP == 0 {
            code.push('-');
        }
        code.push(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char);
    }
    code
}

/// A typed claim code as made: dashes and surrounding blanks dropped, lower
/// case; none when it cannot be a code.
fn normalise_code(typed: &str) -> Option<String> {
    let code: String = typed
        .trim()
        .chars()
        .filter(|&c| c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b));
    valid.then_some(code)
}

/// A new device key: URL-safe base64 of 256 random bits.
fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored of a code or key: its SHA-256, in hex. Both are random
/// enough that a fast hash is safe.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The hash of a code as made (dashes dropped).
fn code_hash(shown: &str) -> String {
    secret_hash(&shown.replace('-', ""))
}

/// The first of `(id, hash)` whose hash is `wanted`, every pair compared in
/// constant time so the time taken tells nothing of the hashes.
fn find_hash<T: Copy>(rows: &[(T, String)], wanted: &str) -> Option<T> {
    let mut found = None;
    for (id, hash) in rows {
        if bool::from(hash.as_bytes().ct_eq(wanted.as_bytes())) && found.is_none() {
            found = Some(*id);
        }
    }
    found
}

const DEVICE_COLUMNS: &str = "id, name, created, key_made, code_expires, revoked, \
     last_seen, address, transport, connected";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        name: r.get(1)?,
        created: r.get(2)?,
        key_made: r.get(3)?,
        code_expires: r.get(4)?,
        revoked: r.get(5)?,
        last_seen: r.get(6)?,
        address: r.get(7)?,
        transport: r.get(8)?,
        connected: r.get(9)?,
    })
}

/// A pending claim code: (its device's id, when it expires) and its hash.
type PendingCode = ((i64, i64), String);

/// The pending claim codes.
fn pending_codes(conn: &rusqlite::Connection) -> Result<Vec<PendingCode>, StoreError> {
    let pending = conn
        .prepare_cached(
            "SELECT id, code_expires, code_hash FROM bitsd_device WHERE code_hash IS NOT NULL",
        )?
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(pending)
}

fn device_by_id(tx: &Transaction<'_>, id: i64) -> Result<Device, StoreError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM bitsd_device WHERE id = ?1");
    Ok(tx.query_row(&sql, [id], device_row)?)
}

/// The id and stored name of the device `name` (any case); refuses `BITS`.
fn device_id(tx: &Transaction<'_>, name: &str) -> Result<(i64, String), DeviceError> {
    if name.eq_ignore_ascii_case(DEVICE_USER) {
        return Err(DeviceError::Reserved(name.to_string()));
    }
    tx.query_row(
        "SELECT id, name FROM bitsd_device WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?
    .ok_or_else(|| DeviceError::NoSuchDevice(name.to_string()))
}

impl Db {
    /// Registers the device `name` with a claim code valid for `ttl`
    /// seconds from `now`.
    pub fn add_device(&mut self, name: &str, now: i64, ttl: i64) -> Result<NewCode, DeviceError> {
        check_device_name(name)?;
        let tx = self.immediate()?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT name FROM bitsd_device WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(existing) = existing {
            return Err(DeviceError::Exists(existing));
        }
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM bitsd_device", [], |r| r.get(0))?;
        if count >= MAX_DEVICES {
            return Err(DeviceError::Full);
        }
        let code = new_code();
        let expires = now.saturating_add(ttl);
        tx.execute(
            "INSERT INTO bitsd_device (name, created, code_hash, code_expires)
             VALUES (?1, ?2, ?3, ?4)",
            params![name, now, code_hash(&code), expires],
        )?;
        tx.commit()?;
        Ok(NewCode {
            device: name.to_string(),
            code,
            expires,
        })
    }

    /// A new claim code for the device `name`, replacing any pending one;
    /// its key keeps working until the code is claimed.
    pub fn new_claim_code(
        &mut self,
        name: &str,
        now: i64,
        ttl: i64,
    ) -> Result<NewCode, DeviceError> {
        let tx = self.immediate()?;
        let (id, name) = device_id(&tx, name)?;
        let code = new_code();
        let expires = now.saturating_add(ttl);
        tx.execute(
            "UPDATE bitsd_device SET code_hash = ?2, code_expires = ?3 WHERE id = ?1",
            params![id, code_hash(&code), expires],
        )?;
        tx.commit()?;
        Ok(NewCode {
            device: name,
            code,
            expires,
        })
    }

    /// Claims a device with `typed` (dashes optional, any case) at `now`:
    /// the code is used up and a new key replaces the device's old one.
    pub fn claim_device(&mut self, typed: &str, now: i64) -> Result<Claimed, DeviceError> {
        let Some(code) = normalise_code(typed) else {
            return Err(DeviceError::UnknownCode);
        };
        let wanted = secret_hash(&code);
        // A wrong code, the common case and a stranger's, is found out
        // without taking the database's write lock.
        if find_hash(&pending_codes(&self.conn)?, &wanted).is_none() {
            return Err(DeviceError::UnknownCode);
        }
        let tx = self.immediate()?;
        let Some((id, expires)) = find_hash(&pending_codes(&tx)?, &wanted) else {
            return Err(DeviceError::UnknownCode);
        };
        if now >= expires {
            return Err(DeviceError::ExpiredCode);
        }
        let key = new_key();
        tx.execute(
            "UPDATE bitsd_device SET key_hash = ?2, key_made = ?3, revoked = NULL,
                 code_hash = NULL, code_expires = NULL
             WHERE id = ?1",
            params![id, secret_hash(&key), now],
        )?;
        let device = device_by_id(&tx, id)?;
        tx.commit()?;
        Ok(Claimed { device, key })
    }

    /// The device whose key is `key`; none when no device has it (wrong,
    /// revoked, replaced, or its device deleted).
    pub fn device_by_key(&self, key: &str) -> Result<Option<Device>, StoreError> {
        let wanted = secret_hash(key);
        let keys = self.device_keys()?;
        let Some(id) = find_hash(&keys, &wanted) else {
            return Ok(None);
        };
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM bitsd_device WHERE id = ?1");
        Ok(self.conn.query_row(&sql, [id], device_row).optional()?)
    }

    /// Ends the key of the device `name`, and its pending claim code: its
    /// name as stored, and whether it had a key.
    pub fn revoke_device(&mut self, name: &str, now: i64) -> Result<(String, bool), DeviceError> {
        let tx = self.immediate()?;
        let (id, name) = device_id(&tx, name)?;
        let had_key: bool = tx.query_row(
            "SELECT key_hash IS NOT NULL FROM bitsd_device WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE bitsd_device SET key_hash = NULL, key_made = NULL,
                 code_hash = NULL, code_expires = NULL, revoked = ?2
             WHERE id = ?1",
            params![id, now],
        )?;
        tx.commit()?;
        Ok((name, had_key))
    }

    /// Removes the device `name`; what it sent stays.
    pub fn delete_device(&mut self, name: &str) -> Result<String, DeviceError> {
        let tx = self.immediate()?;
        let (id, name) = device_id(&tx, name)?;
        tx.execute("DELETE FROM bitsd_device WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(name)
    }

    /// The id and key hash ([`secret_hash`]) of every device with a key:
    /// a connected device whose pair is not among them was revoked, deleted
    /// or claimed anew since it authenticated.
    pub fn device_keys(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let keys = self
            .conn
            .prepare_cached("SELECT id, key_hash FROM bitsd_device WHERE key_hash IS NOT NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    /// Notes that device `id` connected at `now` from `address` over
    /// `transport` (`tcp`, `tls`, `websocket`); nothing when it was deleted.
    pub fn device_connected(
        &mut self,
        id: i64,
        now: i64,
        address: &str,
        transport: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE bitsd_device SET connected = ?2, last_seen = ?2, address = ?3,
                     transport = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, now, address, transport])?;
        Ok(())
    }

    /// Notes that the devices `ids` are still connected at `now`: a running
    /// bitsd says so every half minute, so another process can tell a
    /// device connected now from one whose server stopped.
    pub fn devices_still_connected(&mut self, ids: &[i64], now: i64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.prepare_cached(
                "UPDATE bitsd_device SET last_seen = ?2, connected = COALESCE(connected, ?2)
                 WHERE id = ?1",
            )?
            .execute(params![id, now])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Notes that device `id` disconnected at `now`, or all of them when
    /// `id` is none (bitsd starts: nothing is connected yet).
    pub fn device_disconnected(&mut self, id: Option<i64>, now: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE bitsd_device SET connected = NULL, last_seen = ?2
                 WHERE connected IS NOT NULL AND (?1 IS NULL OR id = ?1)",
            )?
            .execute(params![id, now])?;
        Ok(())
    }

    /// Every registered device, by name.
    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM bitsd_device ORDER BY name");
        let devices = self
            .conn
            .prepare(&sql)?
            .query_map([], device_row)?
            .collect::<Result<_, _>>()?;
        Ok(devices)
    }
}

#[cfg(test)]
mod tests;
