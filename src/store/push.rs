//! Web Push subscriptions, in `bitsd_push_subscription`: an endpoint, the
//! browser's two keys, its topics and language; nothing else about the
//! subscriber.

use rusqlite::{OptionalExtension, params};

use super::{Db, StoreError};
use crate::push::{Subscription, Topic};
use crate::words::Lang;

/// Schema version 13.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE IF NOT EXISTS bitsd_push_subscription (
        id INTEGER NOT NULL PRIMARY KEY,
        endpoint TEXT NOT NULL UNIQUE,
        p256dh TEXT NOT NULL,
        auth TEXT NOT NULL,
        topics TEXT NOT NULL,
        lang TEXT NOT NULL,
        created INTEGER NOT NULL
    );
"#;

/// What became of a subscription sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// A new endpoint.
    Created,
    /// An endpoint already subscribed: its keys, topics and language
    /// replaced.
    Replaced,
    /// A new endpoint, refused: `limit` subscriptions are kept already.
    Full,
}

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub id: i64,
    pub subscription: Subscription,
}

impl Db {
    /// Whether `endpoint` is subscribed.
    pub fn push_subscribed(&self, endpoint: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM bitsd_push_subscription WHERE endpoint = ?1")?
            .query_row([endpoint], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Stores `s`, replacing what its endpoint had; a new endpoint only
    /// while fewer than `limit` are kept. One transaction, so the count
    /// holds against concurrent requests.
    pub fn push_subscribe(
        &mut self,
        s: &Subscription,
        limit: u64,
        now: i64,
    ) -> Result<Subscribed, StoreError> {
        let tx = self.conn.transaction()?;
        let topics: Vec<&str> = s.topics.iter().map(|t| t.as_str()).collect();
        let topics = topics.join(",");
        let replaced = tx.execute(
            "UPDATE bitsd_push_subscription SET p256dh = ?2, auth = ?3, topics = ?4, lang = ?5
             WHERE endpoint = ?1",
            params![s.endpoint, s.p256dh, s.auth, topics, s.lang.code()],
        )?;
        let outcome = if replaced > 0 {
            Subscribed::Replaced
        } else {
            let count: i64 =
                tx.query_row("SELECT COUNT(*) FROM bitsd_push_subscription", [], |r| {
                    r.get(0)
                })?;
            if count as u64 >= limit {
                return Ok(Subscribed::Full);
            }
            tx.execute(
                "INSERT INTO bitsd_push_subscription (endpoint, p256dh, auth, topics, lang, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![s.endpoint, s.p256dh, s.auth, topics, s.lang.code(), now],
            )?;
            Subscribed::Created
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Removes `endpoint`'s subscription; whether there was one.
    pub fn push_unsubscribe(&self, endpoint: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM bitsd_push_subscription WHERE endpoint = ?1")?
            .execute([endpoint])?
            > 0)
    }

    /// The subscriptions to `topic`, by id.
    pub fn push_subscriptions(&self, topic: Topic) -> Result<Vec<SubscriptionRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, endpoint, p256dh, auth, topics, lang FROM bitsd_push_subscription
             ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let topics: String = r.get(4)?;
            let lang: String = r.get(5)?;
            Ok(SubscriptionRow {
                id: r.get(0)?,
                subscription: Subscription {
                    endpoint: r.get(1)?,
                    p256dh: r.get(2)?,
                    auth: r.get(3)?,
                    topics: topics.split(',').filter_map(Topic::parse).collect(),
                    lang: Lang::from_code(&lang).unwrap_or_default(),
                },
            })
        })?;
        let mut found = Vec::new();
        for row in rows {
            let row = row?;
            if row.subscription.topics.contains(&topic) {
                found.push(row);
            }
        }
        Ok(found)
    }

    /// The number of subscriptions to each topic.
    pub fn push_counts(&self) -> Result<Vec<(Topic, u64)>, StoreError> {
        let mut counts = Vec::new();
        for topic in Topic::ALL {
            let n: i64 = self.conn.query_row(
                "SELECT COUNT(*) FROM bitsd_push_subscription
                 WHERE ',' || topics || ',' LIKE '%,' || ?1 || ',%'",
                [topic.as_str()],
                |r| r.get(0),
            )?;
            counts.push((topic, n as u64));
        }
        Ok(counts)
    }
}
