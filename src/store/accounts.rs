//! Members, their sessions, their MAC hashes and who sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Db, StoreError};

/// A member: id and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
}

/// Who sees a member in the room (`bitsd_member.visibility`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Visibility {
    /// Never counted nor named.
    Hidden,
    /// In the number of people present, never named; members without a
    /// row of their own are counted.
    #[default]
    Counted,
    /// Counted, and named to logged-in members (and in the SpaceAPI
    /// document with `show_names`).
    Named,
}

impl Visibility {
    pub const ALL: [Visibility; 3] = [Visibility::Hidden, Visibility::Counted, Visibility::Named];

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Hidden => "hidden",
            Visibility::Counted => "counted",
            Visibility::Named => "named",
        }
    }

    /// `hidden`, `counted` or `named`; else why not, in one line.
    pub fn parse(text: &str) -> Result<Visibility, String> {
        Visibility::ALL
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| format!("visibility must be hidden, counted or named, got {text:?}"))
    }

    /// Whether the member is in the number of people present.
    pub fn counted(self) -> bool {
        self != Visibility::Hidden
    }

    /// Whether the member's name may be shown.
    pub fn named(self) -> bool {
        self == Visibility::Named
    }

    /// As stored; an unknown value (which the table's check forbids) counts.
    fn from_stored(text: Option<&str>) -> Visibility {
        text.and_then(|t| Visibility::parse(t).ok())
            .unwrap_or_default()
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member as the roster knows them: name and visibility.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub visibility: Visibility,
}

/// Schema version 6: each member's visibility in a table of bitsd's own,
/// the original's `User` left as it is. The members already there become
/// `named`, as the original showed every name; those added later have no
/// row and are `counted`.
pub(super) const VISIBILITY_MIGRATION: &str = r#"
    CREATE TABLE IF NOT EXISTS bitsd_member (
        userid INTEGER NOT NULL PRIMARY KEY REFERENCES "User" (userid),
        visibility TEXT NOT NULL CHECK (visibility IN ('hidden', 'counted', 'named'))
    );
    INSERT OR IGNORE INTO bitsd_member (userid, visibility)
        SELECT userid, 'named' FROM "User";
    "#;

/// A member's stored credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: User,
    /// The password hash as stored (argon2id, the original's `$6$`, or `!`).
    pub hash: String,
}

/// Most sessions one member keeps; logging in once more ends the oldest.
pub const SESSIONS_PER_USER: i64 = 32;

/// Why an account change was refused, or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error("MAC hash {0} is already assigned to {1}")]
    MacTaken(String, String),
    #[error("no MAC hash {0}")]
    NoSuchMac(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for AccountError {
    fn from(e: rusqlite::Error) -> Self {
        AccountError::Store(e.into())
    }
}

impl Db {
    /// A user by id.
    pub fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        user_by_id(&self.conn, id)
    }

    /// A user by name.
    pub fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(r#"SELECT userid, name FROM "User" WHERE name = ?1"#)?
            .query_row([name], user_row)
            .optional()?)
    }

    /// The credentials of the user `name`.
    pub fn credentials(&self, name: &str) -> Result<Option<Credentials>, StoreError> {
        Ok(self
            .conn
            .query_row(
                r#"SELECT userid, name, password FROM "User" WHERE name = ?1"#,
                [name],
                |r| {
                    Ok(Credentials {
                        user: User {
                            id: r.get(0)?,
                            name: r.get(1)?,
                        },
                        hash: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Adds a user with password hash `hash`.
    pub fn add_user(&mut self, name: &str, hash: &str) -> Result<User, AccountError> {
        let tx = self.conn.transaction()?;
        let exists: bool = tx.query_row(
            r#"SELECT EXISTS (SELECT 1 FROM "User" WHERE name = ?1)"#,
            [name],
            |r| r.get(0),
        )?;
        if exists {
            return Err(AccountError::UserExists(name.to_string()));
        }
        tx.execute(
            r#"INSERT INTO "User" (name, password) VALUES (?1, ?2)"#,
            params![name, hash],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(User {
            id,
            name: name.to_string(),
        })
    }

    /// Deletes the user `name` and their MAC hashes.
    pub fn delete_user(&mut self, name: &str) -> Result<(), AccountError> {
        let tx = self.conn.transaction()?;
        let Some(id) = user_id(&tx, name)? else {
            return Err(AccountError::NoSuchUser(name.to_string()));
        };
        tx.execute(r#"DELETE FROM "MACToUser" WHERE userid = ?1"#, [id])?;
        tx.execute("DELETE FROM bitsd_session WHERE userid = ?1", [id])?;
        // SQLite may give the id to the next user added.
        tx.execute("DELETE FROM bitsd_member WHERE userid = ?1", [id])?;
        tx.execute(r#"DELETE FROM "User" WHERE userid = ?1"#, [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces the password hash of the user `name` and ends their sessions.
    pub fn set_password(&mut self, name: &str, hash: &str) -> Result<(), AccountError> {
        let tx = self.conn.transaction()?;
        let Some(id) = user_id(&tx, name)? else {
            return Err(AccountError::NoSuchUser(name.to_string()));
        };
        tx.execute(
            r#"UPDATE "User" SET password = ?2 WHERE userid = ?1"#,
            params![id, hash],
        )?;
        tx.execute("DELETE FROM bitsd_session WHERE userid = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces `old` by `new` as the hash of user `id`, unless the hash
    /// changed meanwhile; true when replaced.
    pub fn upgrade_password(&mut self, id: i64, old: &str, new: &str) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            r#"UPDATE "User" SET password = ?3 WHERE userid = ?1 AND password = ?2"#,
            params![id, old, new],
        )?;
        Ok(changed == 1)
    }

    /// Every user with their visibility and number of MAC hashes, by name.
    pub fn users(&self) -> Result<Vec<(User, Visibility, usize)>, StoreError> {
        let mut stmt = self.conn.prepare(
            r#"SELECT u.userid, u.name, v.visibility, COUNT(m.mac_hash) FROM "User" u
               LEFT JOIN "MACToUser" m ON m.userid = u.userid
               LEFT JOIN bitsd_member v ON v.userid = u.userid
               GROUP BY u.userid ORDER BY u.name"#,
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    },
                    Visibility::from_stored(r.get::<_, Option<String>>(2)?.as_deref()),
                    r.get::<_, i64>(3)? as usize,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The visibility of member `id` (`counted` when there is no such member).
    pub fn visibility(&self, id: i64) -> Result<Visibility, StoreError> {
        Ok(members(&self.conn, [id])?
            .remove(&id)
            .map(|p| p.visibility)
            .unwrap_or_default())
    }

    /// Sets the visibility of the user `name`.
    pub fn set_visibility_of(
        &mut self,
        name: &str,
        visibility: Visibility,
    ) -> Result<(), AccountError> {
        let tx = self.conn.transaction()?;
        let Some(id) = user_id(&tx, name)? else {
            return Err(AccountError::NoSuchUser(name.to_string()));
        };
        set_visibility(&tx, id, visibility)?;
        tx.commit()?;
        Ok(())
    }

    /// Assigns MAC hash `hash` to the user `name`.
    pub fn add_mac(&mut self, name: &str, hash: &str) -> Result<(), AccountError> {
        let tx = self.conn.transaction()?;
        let Some(id) = user_id(&tx, name)? else {
            return Err(AccountError::NoSuchUser(name.to_string()));
        };
        let owner: Option<String> = tx
            .query_row(
                r#"SELECT COALESCE(u.name, '?') FROM "MACToUser" m
                   LEFT JOIN "User" u ON u.userid = m.userid WHERE m.mac_hash = ?1"#,
                [hash],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(owner) = owner {
            return Err(AccountError::MacTaken(hash.to_string(), owner));
        }
        tx.execute(
            r#"INSERT INTO "MACToUser" (userid, mac_hash) VALUES (?1, ?2)"#,
            params![id, hash],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes the MAC hash `hash`.
    pub fn delete_mac(&mut self, hash: &str) -> Result<(), AccountError> {
        let changed = self
            .conn
            .execute(r#"DELETE FROM "MACToUser" WHERE mac_hash = ?1"#, [hash])?;
        if changed == 0 {
            return Err(AccountError::NoSuchMac(hash.to_string()));
        }
        Ok(())
    }

    /// The ids of the members owning any of `hashes`; hashes of nobody
    /// are left out.
    pub fn members_for_macs(&self, hashes: &[String]) -> Result<BTreeSet<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            r#"SELECT u.userid FROM "MACToUser" m JOIN "User" u ON u.userid = m.userid
               WHERE m.mac_hash = ?1"#,
        )?;
        let mut ids = BTreeSet::new();
        for hash in hashes {
            if let Some(id) = stmt.query_row([hash], |r| r.get(0)).optional()? {
                ids.insert(id);
            }
        }
        Ok(ids)
    }

    /// Records a session of `user` whose token hashes to `token_hash`,
    /// ending their oldest beyond `SESSIONS_PER_USER`; only while the
    /// user's password hash is still `password` (the one just checked), so
    /// a password changed or a user deleted meanwhile leaves no session.
    /// True when recorded.
    pub fn create_session(
        &mut self,
        token_hash: &str,
        user: &User,
        password: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let created = tx.execute(
            r#"INSERT INTO bitsd_session (token_hash, userid, name, created, expires)
               SELECT ?1, userid, name, ?4, ?5 FROM "User"
               WHERE userid = ?2 AND name = ?3 AND password = ?6"#,
            params![token_hash, user.id, user.name, now, expires, password],
        )?;
        if created == 0 {
            return Ok(false);
        }
        tx.execute(
            "DELETE FROM bitsd_session WHERE userid = ?1 AND token_hash NOT IN (
                SELECT token_hash FROM bitsd_session WHERE userid = ?1
                ORDER BY created DESC, rowid DESC LIMIT ?2)",
            params![user.id, SESSIONS_PER_USER],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// The member a session token hash logs in at `now`: the session exists,
    /// has not expired, and its user still exists under the same name.
    pub fn session_user(&self, token_hash: &str, now: i64) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                r#"SELECT u.userid, u.name FROM bitsd_session s
                   JOIN "User" u ON u.userid = s.userid AND u.name = s.name
                   WHERE s.token_hash = ?1 AND s.expires > ?2"#,
            )?
            .query_row(params![token_hash, now], user_row)
            .optional()?)
    }

    /// Ends one session; true when it existed.
    pub fn end_session(&mut self, token_hash: &str) -> Result<bool, StoreError> {
        let ended = self.conn.execute(
            "DELETE FROM bitsd_session WHERE token_hash = ?1",
            [token_hash],
        )?;
        Ok(ended > 0)
    }

    /// Ends every session of the user `name`; how many there were.
    pub fn end_sessions(&mut self, name: &str) -> Result<usize, AccountError> {
        let tx = self.conn.transaction()?;
        let Some(id) = user_id(&tx, name)? else {
            return Err(AccountError::NoSuchUser(name.to_string()));
        };
        let ended = tx.execute("DELETE FROM bitsd_session WHERE userid = ?1", [id])?;
        tx.commit()?;
        Ok(ended)
    }

    /// Removes the sessions expired at `now`; how many.
    pub fn sweep_sessions(&mut self, now: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM bitsd_session WHERE expires <= ?1", [now])?)
    }
}

pub(super) fn user_by_id(conn: &Connection, id: i64) -> Result<Option<User>, StoreError> {
    Ok(conn
        .prepare_cached(r#"SELECT userid, name FROM "User" WHERE userid = ?1"#)?
        .query_row([id], user_row)
        .optional()?)
}

/// Members by id with their visibility; ids of no member are left out.
pub(super) fn members(
    conn: &Connection,
    ids: impl IntoIterator<Item = i64>,
) -> Result<BTreeMap<i64, Person>, StoreError> {
    let mut stmt = conn.prepare_cached(
        r#"SELECT u.name, v.visibility FROM "User" u
           LEFT JOIN bitsd_member v ON v.userid = u.userid WHERE u.userid = ?1"#,
    )?;
    let mut found = BTreeMap::new();
    for id in ids {
        if found.contains_key(&id) {
            continue;
        }
        let person = stmt
            .query_row([id], |r| {
                Ok(Person {
                    name: r.get(0)?,
                    visibility: Visibility::from_stored(r.get::<_, Option<String>>(1)?.as_deref()),
                })
            })
            .optional()?;
        if let Some(person) = person {
            found.insert(id, person);
        }
    }
    Ok(found)
}

/// Sets the visibility of member `id`; false when there is no such member.
pub(super) fn set_visibility(
    conn: &Connection,
    id: i64,
    visibility: Visibility,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        r#"INSERT INTO bitsd_member (userid, visibility)
           SELECT userid, ?2 FROM "User" WHERE userid = ?1
           ON CONFLICT (userid) DO UPDATE SET visibility = excluded.visibility"#,
        params![id, visibility.as_str()],
    )?;
    Ok(changed > 0)
}

fn user_id(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    let id = conn
        .query_row(
            r#"SELECT userid FROM "User" WHERE name = ?1"#,
            [name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(id)
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
    })
}
