//! Status rows as every query reads them, each with the member who set
//! it, and the status history the calendar feed and the history page read.

use rusqlite::{OptionalExtension, params};

use super::{Db, RowResult, StoreError, Visibility, device_column, parse_time};
use crate::clock::LocalTime;
use crate::record::{ModifiedBy, Opener, StatusChange, StatusValue};

/// The start of a query for `Status` rows as [`status_row`] reads them:
/// each with its person's name and visibility (none once the member is
/// deleted).
macro_rules! status_select {
    () => {
        r#"SELECT "Status".timestamp, "Status".value, "Status".modified_by, "Status".device,
                  "Status".until, "User".userid, "User".name, bitsd_member.visibility
           FROM "Status"
           LEFT JOIN "User" ON "User".userid = "Status".person
           LEFT JOIN bitsd_member ON bitsd_member.userid = "Status".person"#
    };
}
pub(super) use status_select;

pub(super) fn status_row(r: &rusqlite::Row<'_>) -> RowResult<StatusChange> {
    let ts: String = r.get(0)?;
    let value: String = r.get(1)?;
    let by: String = r.get(2)?;
    Ok(parse_time(ts, "Status").map(|timestamp| StatusChange {
        timestamp,
        value: StatusValue::from_stored(&value),
        modified_by: ModifiedBy::from_stored(&by),
        device: device_column(r, 3),
        // A time that does not read is as good as none.
        until: r
            .get::<_, Option<String>>(4)
            .ok()
            .flatten()
            .and_then(|t| LocalTime::parse(&t)),
        person: person_columns(r, 5),
    }))
}

/// The person of a status row from `at` on: id, name and visibility (a
/// member without a visibility row is `counted`).
fn person_columns(r: &rusqlite::Row<'_>, at: usize) -> Option<Opener> {
    let id = r.get::<_, Option<i64>>(at).ok().flatten()?;
    let name = r.get::<_, Option<String>>(at + 1).ok().flatten()?;
    let visibility = r.get::<_, Option<String>>(at + 2).ok().flatten();
    Some(Opener {
        id,
        name,
        named: visibility.as_deref() == Some(Visibility::Named.as_str()),
    })
}

impl Db {
    /// The status changes from `from` on (oldest first), at most the newest
    /// `limit` of them, with the change in force before the first one
    /// returned. Both are lookups in the timestamp index.
    pub fn status_since(
        &self,
        from: LocalTime,
        limit: usize,
    ) -> Result<(Option<StatusChange>, Vec<StatusChange>), StoreError> {
        let mut stmt = self.conn.prepare_cached(concat!(
            status_select!(),
            r#" WHERE timestamp >= ?1 ORDER BY timestamp DESC LIMIT ?2"#
        ))?;
        let mut changes = stmt
            .query_map(params![from.stored(), limit as i64], status_row)?
            .map(|r| r?)
            .collect::<Result<Vec<_>, _>>()?;
        changes.reverse();
        let first = changes.first().map_or(from, |c| c.timestamp);
        let before = self
            .conn
            .prepare_cached(concat!(
                status_select!(),
                r#" WHERE timestamp < ?1 ORDER BY timestamp DESC LIMIT 1"#
            ))?
            .query_row([first.stored()], status_row)
            .optional()?
            .transpose()?;
        Ok((before, changes))
    }

    /// The first change after `after` that is not `open`: the end of the
    /// opening in progress then, if it has ended.
    pub fn status_end(&self, after: LocalTime) -> Result<Option<StatusChange>, StoreError> {
        self.conn
            .prepare_cached(concat!(
                status_select!(),
                r#" WHERE timestamp > ?1 AND value <> 'open' ORDER BY timestamp LIMIT 1"#
            ))?
            .query_row([after.stored()], status_row)
            .optional()?
            .transpose()
    }
}
