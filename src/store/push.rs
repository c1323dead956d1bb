//! Web Push, in two tables: `bitsd_push_subscription` holds each
//! subscriber's endpoint, the browser's two keys, its topics and language
//! (nothing else about the subscriber), with the origin it subscribed on and
//! the last push event handled for it; `bitsd_push_event` is the outbox the
//! writer fills in the change's own transaction, one row per event pushed,
//! kept a day.

use rusqlite::{OptionalExtension, params};

use super::{Batch, Db, StoreError};
use crate::record::push::{Replacement, Subscription, Topic};

/// Schema version 13.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE IF NOT EXISTS bitsd_push_subscription (
        id INTEGER NOT NULL PRIMARY KEY,
        endpoint TEXT NOT NULL UNIQUE,
        p256dh TEXT NOT NULL,
        auth TEXT NOT NULL,
        topics TEXT NOT NULL,
        lang TEXT NOT NULL,
        created INTEGER NOT NULL,
        origin TEXT NOT NULL,
        delivered INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS bitsd_push_event (
        id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        record TEXT NOT NULL,
        created REAL NOT NULL
    );
"#;

/// An event to push, as the writer stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushEvent {
    pub id: i64,
    pub topic: Topic,
    /// The change's JSON, `{"status": {...}}` or `{"message": {...}}`.
    pub record: String,
    /// Unix seconds.
    pub created: f64,
}

/// A subscription with pushes to make: what it is, where it subscribed,
/// and the last event handled for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub row: SubscriptionRow,
    pub origin: String,
    pub delivered: i64,
}

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
    /// A replacement without topics, where neither its endpoint nor the
    /// one it replaces is subscribed: there is nothing to take them from.
    NothingToReplace,
}

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub id: i64,
    pub subscription: Subscription,
}

impl Batch<'_> {
    /// Writes an event to push to the subscribers of `topic`.
    pub fn insert_push_event(
        &self,
        topic: Topic,
        record: &str,
        created: f64,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO bitsd_push_event (topic, record, created) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![topic.as_str(), record, created])?;
        Ok(())
    }
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
        origin: &str,
        limit: u64,
        now: i64,
    ) -> Result<Subscribed, StoreError> {
        let tx = self.conn.transaction()?;
        let outcome = store_subscription(&tx, s, origin, limit, now, None)?;
        if outcome != Subscribed::Full {
            tx.commit()?;
        }
        Ok(outcome)
    }

    /// Stores `r` in place of the subscription of `r.replaces`, in one
    /// transaction: the new one takes the old one's topics and language
    /// where `r` leaves them out, and its place in the outbox, so it hears
    /// what the old one had still to hear; the old one is removed, which
    /// frees its place for the new. Sent again once the old one is gone,
    /// the new one keeps what it has.
    pub fn push_replace(
        &mut self,
        r: &Replacement,
        default_lang: &str,
        origin: &str,
        limit: u64,
        now: i64,
    ) -> Result<Subscribed, StoreError> {
        // It reads before it writes: the lock from the start, so no other
        // connection's commit comes between.
        let tx = self.immediate()?;
        let stored = |endpoint: &str| -> Result<Option<(String, String, i64)>, StoreError> {
            Ok(tx
                .prepare_cached(
                    "SELECT topics, lang, delivered FROM bitsd_push_subscription
                     WHERE endpoint = ?1",
                )?
                .query_row([endpoint], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?)
        };
        let old = stored(&r.replaces)?;
        let choice = match &old {
            Some(old) => Some(old.clone()),
            None => stored(&r.endpoint)?,
        };
        let taken = choice.map(|(topics, lang, _)| (topics_of(&topics), lang));
        let Some(s) = r.taking(taken, default_lang) else {
            return Ok(Subscribed::NothingToReplace);
        };
        if old.is_some() && r.replaces != s.endpoint {
            tx.execute(
                "DELETE FROM bitsd_push_subscription WHERE endpoint = ?1",
                [&r.replaces],
            )?;
        }
        let delivered = old.map(|(_, _, delivered)| delivered);
        let outcome = store_subscription(&tx, &s, origin, limit, now, delivered)?;
        if outcome != Subscribed::Full {
            tx.commit()?;
        }
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

    /// The subscriptions with events after the last one handled for them,
    /// by id.
    pub fn push_pending(&self) -> Result<Vec<Pending>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, endpoint, p256dh, auth, topics, lang, origin, delivered
             FROM bitsd_push_subscription
             WHERE delivered < (SELECT COALESCE(MAX(id), 0) FROM bitsd_push_event)
             ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let topics: String = r.get(4)?;
            Ok(Pending {
                row: SubscriptionRow {
                    id: r.get(0)?,
                    subscription: Subscription {
                        endpoint: r.get(1)?,
                        p256dh: r.get(2)?,
                        auth: r.get(3)?,
                        topics: topics_of(&topics),
                        lang: r.get(5)?,
                    },
                },
                origin: r.get(6)?,
                delivered: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The first `limit` events after `after`, oldest first.
    pub fn push_events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<PushEvent>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, topic, record, created FROM bitsd_push_event WHERE id > ?1
             ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            let topic: String = r.get(1)?;
            Ok((r.get(0)?, topic, r.get(2)?, r.get(3)?))
        })?;
        let mut events = Vec::new();
        for row in rows {
            let (id, topic, record, created) = row?;
            // A topic bitsd does not know is no event of its own.
            if let Some(topic) = Topic::parse(&topic) {
                events.push(PushEvent {
                    id,
                    topic,
                    record,
                    created,
                });
            }
        }
        Ok(events)
    }

    /// Records, in one transaction, the last event handled for each
    /// subscription (by id), and removes the subscriptions `gone`; the
    /// events every subscription has handled are removed too (a new one
    /// hears only of later events), as are those older than `before` (unix
    /// seconds), given up by then.
    pub fn push_handled(
        &mut self,
        handled: &[(i64, i64)],
        gone: &[i64],
        before: f64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut set = tx.prepare_cached(
                "UPDATE bitsd_push_subscription SET delivered = MAX(delivered, ?2) WHERE id = ?1",
            )?;
            for (id, event) in handled {
                set.execute([id, event])?;
            }
            let mut delete =
                tx.prepare_cached("DELETE FROM bitsd_push_subscription WHERE id = ?1")?;
            for id in gone {
                delete.execute([id])?;
            }
            tx.execute(
                "DELETE FROM bitsd_push_event WHERE created < ?1
                 OR id <= (SELECT COALESCE(MIN(delivered), (SELECT MAX(id) FROM bitsd_push_event))
                           FROM bitsd_push_subscription)",
                [before],
            )?;
        }
        tx.commit()?;
        Ok(())
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

/// Stores `s` in `tx`, replacing what its endpoint had; a new endpoint only
/// while fewer than `limit` are kept, handled up to `delivered` if given.
fn store_subscription(
    tx: &rusqlite::Transaction<'_>,
    s: &Subscription,
    origin: &str,
    limit: u64,
    now: i64,
    delivered: Option<i64>,
) -> Result<Subscribed, StoreError> {
    let topics: Vec<&str> = s.topics.iter().map(|t| t.as_str()).collect();
    let topics = topics.join(",");
    let replaced = tx.execute(
        "UPDATE bitsd_push_subscription SET p256dh = ?2, auth = ?3, topics = ?4, lang = ?5
         WHERE endpoint = ?1",
        params![s.endpoint, s.p256dh, s.auth, topics, s.lang.as_str()],
    )?;
    if replaced > 0 {
        return Ok(Subscribed::Replaced);
    }
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM bitsd_push_subscription", [], |r| {
        r.get(0)
    })?;
    if count as u64 >= limit {
        return Ok(Subscribed::Full);
    }
    // Else it hears of what happens from now on: event ids are never used
    // again, so the last one given is where it starts.
    tx.execute(
        "INSERT INTO bitsd_push_subscription
             (endpoint, p256dh, auth, topics, lang, created, origin, delivered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
                 COALESCE(?8, (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence
                               WHERE name = 'bitsd_push_event')))",
        params![
            s.endpoint,
            s.p256dh,
            s.auth,
            topics,
            s.lang.as_str(),
            now,
            origin,
            delivered
        ],
    )?;
    Ok(Subscribed::Created)
}

/// The topics stored as `open,message`.
fn topics_of(text: &str) -> Vec<Topic> {
    text.split(',').filter_map(Topic::parse).collect()
}
