//! The status history the calendar feed and the history page read.

use rusqlite::{OptionalExtension, params};

use super::{Db, StoreError, status_row, status_select};
use crate::clock::LocalTime;
use crate::record::StatusChange;

impl Db {
    /// The status changes from `from` on (oldest first), at most the newest
    /// `limit` of them, with the change in force before the first one
    /// returned. Both are lookups in the timestamp index.
    pub fn status_since(
        &self,
        from: LocalTime,
        limit: usize,
    ) -> Result<(Option<StatusChange>, Vec<StatusChange>), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            concat!(
               status_select!(),
               r#" WHERE timestamp >= ?1 ORDER BY timestamp DESC LIMIT ?2"#),
        )?;
        let mut changes = stmt
            .query_map(params![from.stored(), limit as i64], status_row)?
            .map(|r| r?)
            .collect::<Result<Vec<_>, _>>()?;
        changes.reverse();
        let first = changes.first().map_or(from, |c| c.timestamp);
        let before = self
            .conn
            .prepare_cached(
                concat!(
                   status_select!(),
                   r#" WHERE timestamp < ?1 ORDER BY timestamp DESC LIMIT 1"#),
            )?
            .query_row([first.stored()], status_row)
            .optional()?
            .transpose()?;
        Ok((before, changes))
    }

    /// The first change after `after` that is not `open`: the end of the
    /// opening in progress then, if it has ended.
    pub fn status_end(&self, after: LocalTime) -> Result<Option<StatusChange>, StoreError> {
        self.conn
            .prepare_cached(
                concat!(
                   status_select!(),
                   r#" WHERE timestamp > ?1 AND value <> 'open' ORDER BY timestamp LIMIT 1"#),
            )?
            .query_row([after.stored()], status_row)
            .optional()?
            .transpose()
    }
}
