//! The webhook outbox: deliveries not yet made, written in the same
//! transaction as the change they tell of, removed once made or given up.

use rusqlite::params;

use super::{Batch, Db, StoreError};

/// Schema version 5.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE IF NOT EXISTS webhook_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hook TEXT NOT NULL,
        -- 128 random bits: unique without an index, which a random key
        -- would make the costliest write of a flood.
        delivery TEXT NOT NULL,
        event TEXT NOT NULL,
        record TEXT NOT NULL,
        status TEXT,
        created REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS ix_webhook_outbox_hook_id ON webhook_outbox (hook, id);
    "#;

/// Rows a follower reads at a time.
pub const OUTBOX_BATCH: usize = 100;

/// Rows per hook.
pub type HookCounts = Vec<(String, u64)>;

/// A delivery waiting to be made.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    /// Unique per delivery, the same on every try: 32 hex digits.
    pub delivery: String,
    /// `status`, `message` or `temperature`.
    pub event: String,
    /// The change's JSON, `{"status": {...}}` and the like.
    pub record: String,
    /// What a status delivery says (`open`, `members`, `closed`, each perhaps
    /// followed by `until <time>`); none for other events.
    pub status: Option<String>,
    /// Unix seconds when the change was written.
    pub created: f64,
}

impl Batch<'_> {
    /// Queues a delivery of `record` to `hook`.
    pub fn insert_outbox(
        &self,
        hook: &str,
        delivery: &str,
        event: &str,
        record: &str,
        status: Option<&str>,
        created: f64,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO webhook_outbox (hook, delivery, event, record, status, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![hook, delivery, event, record, status, created])?;
        Ok(())
    }

    /// Removes the rows `ids` of `hook`; how many there were.
    pub fn forget_outbox(&self, hook: &str, ids: &[i64]) -> Result<u64, StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached("DELETE FROM webhook_outbox WHERE hook = ?1 AND id = ?2")?;
        let mut removed = 0;
        for id in ids {
            removed += stmt.execute(params![hook, id])? as u64;
        }
        Ok(removed)
    }
}

impl Db {
    /// Pending rows per hook, and removes those of hooks not in `hooks`
    /// (a hook taken out of the configuration); the counts of those removed
    /// come back under their names too.
    pub fn outbox_counts(
        &mut self,
        hooks: &[&str],
    ) -> Result<(HookCounts, HookCounts), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT hook, COUNT(*) FROM webhook_outbox GROUP BY hook ORDER BY hook")?;
        let counts = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        let (kept, dropped): (Vec<_>, Vec<_>) = counts
            .into_iter()
            .partition(|(hook, _)| hooks.contains(&hook.as_str()));
        for (hook, _) in &dropped {
            self.conn
                .execute("DELETE FROM webhook_outbox WHERE hook = ?1", [hook])?;
        }
        Ok((kept, dropped))
    }

    /// Up to `limit` rows of `hook` after row `after`, oldest first.
    pub fn outbox_after(
        &self,
        hook: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, delivery, event, record, status, created FROM webhook_outbox
             WHERE hook = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![hook, after, limit as i64], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    delivery: r.get(1)?,
                    event: r.get(2)?,
                    record: r.get(3)?,
                    status: r.get(4)?,
                    created: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Whether a status change for `hook` newer than row `id` was written
    /// by `until` (unix seconds): row `id` is then superseded.
    pub fn outbox_status_after(&self, hook: &str, id: i64, until: f64) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM webhook_outbox
             WHERE hook = ?1 AND id > ?2 AND status IS NOT NULL AND created <= ?3)",
        )?;
        Ok(stmt.query_row(params![hook, id, until], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_in_order_and_go_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("t.db"), false).unwrap();
        let batch = db.batch().unwrap();
        for (i, (hook, status)) in [
            ("a", "open"),
            ("b", "open"),
            ("a", "closed"),
            ("gone", "open"),
        ]
        .into_iter()
        .enumerate()
        {
            let delivery = format!("{i:032x}");
            let record = format!("{{\"status\":{i}}}");
            batch
                .insert_outbox(
                    hook,
                    &delivery,
                    "status",
                    &record,
                    Some(status),
                    100.0 + i as f64,
                )
                .unwrap();
        }
        batch.commit().unwrap();
        let (kept, dropped) = db.outbox_counts(&["a", "b"]).unwrap();
        assert_eq!(kept, [("a".to_string(), 2), ("b".to_string(), 1)]);
        assert_eq!(dropped, [("gone".to_string(), 1)]);
        assert!(db.outbox_after("gone", 0, 10).unwrap().is_empty());

        let rows = db.outbox_after("a", 0, 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].delivery, format!("{:032x}", 0));
        assert_eq!(rows[1].status.as_deref(), Some("closed"));
        assert_eq!(
            db.outbox_after("a", rows[0].id, 1).unwrap(),
            [rows[1].clone()]
        );
        assert!(db.outbox_status_after("a", rows[0].id, 102.0).unwrap());
        assert!(!db.outbox_status_after("a", rows[0].id, 101.5).unwrap());
        assert!(!db.outbox_status_after("a", rows[1].id, 1e9).unwrap());

        let batch = db.batch().unwrap();
        assert_eq!(
            batch.forget_outbox("a", &[rows[0].id, rows[0].id]).unwrap(),
            1
        );
        assert_eq!(
            batch.forget_outbox("b", &[rows[1].id]).unwrap(),
            0,
            "not b's"
        );
        batch.commit().unwrap();
        assert_eq!(db.outbox_after("a", 0, 10).unwrap(), [rows[1].clone()]);
    }
}
