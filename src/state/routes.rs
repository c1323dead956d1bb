//! Which webhooks follow each change, as the writer keeps them: a stored
//! change gets one row in the outbox (`store::outbox`) for each hook that
//! follows its kind, in the change's own transaction, so a delivery
//! exists exactly when its change does. Hooks remove their rows
//! through the writer too, and the writer counts what each has pending.
//! A message, and an opening after `push_quiet`, likewise get one row for
//! Web Push (`store::push`), whatever the number of subscribers.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

use crate::clock::unix_time;
use crate::metrics::Metrics;
use crate::record::push::{Subscribers, Topic};
use crate::record::{Change, HookEvent, StatusChange};
use crate::report::Report;
use crate::store::{Batch, Db, StoreError};

/// A hook as the writer knows it: its name and what it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub hook: Arc<str>,
    pub events: Vec<HookEvent>,
}

struct Queue {
    route: Route,
    /// Rows committed and not yet removed.
    pending: i64,
    gauge: Gauge,
}

/// Every route, with what it has pending.
pub(super) struct Routes {
    queues: Vec<Queue>,
    /// Seconds the room must have been other than open for its opening
    /// to be pushed (`push_quiet`).
    pub push_quiet: i64,
    /// Who subscribes to what: events of a topic nobody subscribes to are
    /// not stored.
    pub subscribers: Arc<Subscribers>,
}

/// Rows added (or removed, negative) per route by a batch not yet committed.
pub(super) type Deltas = Vec<i64>;

impl Routes {
    /// The routes with the rows they have pending in `db`; rows of hooks no
    /// longer configured are removed.
    pub fn load(db: &mut Db, routes: Vec<Route>, metrics: &Metrics) -> Result<Routes, StoreError> {
        let names: Vec<&str> = routes.iter().map(|r| &*r.hook).collect();
        let (counts, dropped) = db.outbox_counts(&names)?;
        for (hook, n) in dropped {
            tracing::warn!(
                "{n} webhook deliveries for {}, no longer configured, dropped",
                crate::escape::Shown(&hook)
            );
        }
        let queues = routes
            .into_iter()
            .map(|route| {
                let pending = counts
                    .iter()
                    .find(|(hook, _)| *hook == *route.hook)
                    .map_or(0, |(_, n)| *n as i64);
                let gauge = metrics.webhook_queue(&route.hook);
                gauge.set(pending);
                Queue {
                    route,
                    pending,
                    gauge,
                }
            })
            .collect();
        Ok(Routes {
            queues,
            push_quiet: 0,
            subscribers: Arc::default(),
        })
    }

    /// A batch's count of changes per route, all zero.
    pub fn deltas(&self) -> Deltas {
        vec![0; self.queues.len()]
    }

    /// Whether any hook follows `change`.
    pub fn follows(&self, change: &Change) -> bool {
        let Some(event) = change.hook_event() else {
            return false;
        };
        self.queues.iter().any(|q| q.route.events.contains(&event))
    }

    /// Writes one row per hook that follows `change`, whose JSON is `json`.
    pub fn record(
        &self,
        batch: &Batch<'_>,
        change: &Change,
        json: &str,
        deltas: &mut Deltas,
    ) -> Result<(), StoreError> {
        let Some(event) = change.hook_event() else {
            return Ok(());
        };
        // What a status delivery says, for the debounce: another delivery
        // saying the same is not sent again.
        let status = match change {
            Change::Status(s) | Change::Until(s) => Some(match s.until {
                Some(until) => format!("{} until {}", s.value.state_str(), until.stored()),
                None => s.value.state_str().to_string(),
            }),
            _ => None,
        };
        let created = unix_time();
        for (queue, delta) in self.queues.iter().zip(deltas.iter_mut()) {
            if !queue.route.events.contains(&event) {
                continue;
            }
            let delivery = format!("{:032x}", rand::random::<u128>());
            batch.insert_outbox(
                &queue.route.hook,
                &delivery,
                event.as_str(),
                json,
                status.as_deref(),
                created,
            )?;
            *delta += 1;
        }
        Ok(())
    }

    /// Whether `change` may be pushed: a status or a message, while somebody
    /// subscribes to its topic.
    pub fn pushes(&self, change: &Change) -> bool {
        match change {
            Change::Status(_) => self.subscribers.any(Topic::Open),
            Change::Message(_) => self.subscribers.any(Topic::Message),
            _ => false,
        }
    }

    /// Writes the push event of `change` (whose JSON is `json`), if it is
    /// one: a message, or the room opening after [`Routes::push_quiet`]
    /// seconds of not being open (`before` is the status it follows).
    pub fn record_push(
        &self,
        batch: &Batch<'_>,
        change: &Change,
        before: Option<&StatusChange>,
        json: &str,
    ) -> Result<(), StoreError> {
        let topic = match change {
            Change::Message(_) => Topic::Message,
            Change::Status(s) if s.value.is_open() => {
                let quiet = before.is_none_or(|b| {
                    (s.timestamp.0 - b.timestamp.0).num_seconds() >= self.push_quiet
                });
                if !quiet {
                    return Ok(());
                }
                Topic::Open
            }
            _ => return Ok(()),
        };
        if !self.subscribers.any(topic) {
            return Ok(());
        }
        batch.insert_push_event(topic, json, unix_time())
    }

    /// Removes rows `ids` of `hook`.
    pub fn forget(&self, batch: &Batch<'_>, hook: &str, ids: &[i64], deltas: &mut Deltas) {
        let Some(at) = self.queues.iter().position(|q| &*q.route.hook == hook) else {
            return;
        };
        match batch.forget_outbox(hook, ids) {
            Ok(n) => deltas[at] -= n as i64,
            Err(e) => tracing::error!("webhook {hook}: deliveries not removed: {}", Report(&e)),
        }
    }

    /// Takes a committed batch's changes into the counts.
    pub fn committed(&mut self, deltas: &Deltas) {
        for (queue, delta) in self.queues.iter_mut().zip(deltas) {
            if *delta != 0 {
                queue.pending += delta;
                queue.gauge.set(queue.pending);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::{broadcast, watch};

    use super::*;
    use crate::clock::Clock;
    use crate::record::StatusValue;
    use crate::state::snapshot::Model;
    use crate::state::writer::{Stamper, Writer};
    use crate::state::{Event, Job, Origin};
    use crate::store::DEVICE_USER;

    fn route(hook: &str, events: &[HookEvent]) -> Route {
        Route {
            hook: Arc::from(hook),
            events: events.to_vec(),
        }
    }

    fn writer(path: &std::path::Path, metrics: &Arc<Metrics>) -> Writer {
        let mut db = Db::open(path, false).unwrap();
        let model = Model::load(&db).unwrap();
        let routes = vec![
            route("a", &[HookEvent::Status]),
            route("b", &[HookEvent::Status, HookEvent::Message]),
        ];
        let routes = Routes::load(&mut db, routes, metrics).unwrap();
        let device_user = db.user_by_name(DEVICE_USER).unwrap().unwrap();
        Writer {
            db,
            snapshot: Arc::new(watch::Sender::new(Arc::new(model.snapshot(3)))),
            model,
            changes: broadcast::channel(16).0,
            device_user,
            stamper: Stamper::new(Clock::new(chrono_tz::UTC)),
            metrics: metrics.clone(),
            jsonver: 3,
            routes,
            storing: Arc::default(),
            lost: 0,
            device_offline: watch::channel(bytes::Bytes::new()).0,
        }
    }

    fn events() -> Vec<Job> {
        let status = Event::Status {
            value: StatusValue::Open,
            origin: Origin::ORIGINAL_DEVICE,
        };
        let message = Event::Message {
            author: None,
            text: "hi".into(),
            origin: Origin::ORIGINAL_DEVICE,
        };
        let sample = Event::Temperature {
            sensor: 0,
            value: 20.0,
            device: None,
        };
        [status, message, sample]
            .into_iter()
            .map(|e| Job::Event(e, None, None))
            .collect()
    }

    fn queued(db: &Db, hook: &str) -> Vec<crate::store::OutboxRow> {
        db.outbox_after(hook, 0, 100).unwrap()
    }

    #[test]
    fn rows_are_written_with_their_change_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let metrics = Arc::new(Metrics::new());
        let mut writer = writer(&path, &metrics);
        let mut follower = writer.changes.subscribe();
        writer.process(events(), |batch| batch.commit());
        let published = follower.try_recv().unwrap();

        let reader = Db::open(&path, false).unwrap();
        let a = queued(&reader, "a");
        let b = queued(&reader, "b");
        assert_eq!(a.len(), 1);
        let kinds: Vec<_> = b.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(kinds, ["status", "message"]);
        assert_eq!(a[0].record.as_bytes(), &published[0].json[..], "one JSON");
        assert_eq!(b[1].record.as_bytes(), &published[1].json[..]);
        assert_eq!(a[0].status.as_deref(), Some("open"));
        assert_eq!(b[1].status, None);
        assert_ne!(a[0].delivery, b[0].delivery);
        assert_eq!(a[0].delivery.len(), 32);
        let shown = metrics.render();
        assert!(
            shown.contains("bitsd_webhook_queue{hook=\"b\"} 2"),
            "{shown}"
        );

        writer.process(vec![Job::Forget(Arc::from("b"), vec![b[0].id])], |batch| {
            batch.commit()
        });
        assert_eq!(queued(&reader, "b"), [b[1].clone()]);
        assert!(
            metrics
                .render()
                .contains("bitsd_webhook_queue{hook=\"b\"} 1")
        );
    }

    #[test]
    fn a_failed_commit_loses_rows_only_with_their_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let metrics = Arc::new(Metrics::new());
        let mut writer = writer(&path, &metrics);
        writer.process(events(), |batch| batch.commit());
        let reader = Db::open(&path, false).unwrap();
        let a = queued(&reader, "a");

        let mut jobs = vec![Job::Forget(Arc::from("a"), vec![a[0].id])];
        jobs.push(Job::Event(
            Event::Status {
                value: StatusValue::Closed,
                origin: Origin::Web,
            },
            None,
            None,
        ));
        writer.process(jobs, |batch| {
            drop(batch);
            Err(StoreError::Closed)
        });
        assert_eq!(queued(&reader, "a"), a, "neither removed nor added");
        assert_eq!(reader.status_count().unwrap(), 1);
        assert!(
            metrics
                .render()
                .contains("bitsd_webhook_queue{hook=\"a\"} 1")
        );

        // Restarted with hook b gone: its rows go, a's stay and are counted.
        drop(writer);
        let mut db = Db::open(&path, false).unwrap();
        let metrics = Metrics::new();
        Routes::load(&mut db, vec![route("a", &[HookEvent::Status])], &metrics).unwrap();
        assert!(queued(&db, "b").is_empty());
        assert_eq!(queued(&db, "a"), a);
        assert!(
            metrics
                .render()
                .contains("bitsd_webhook_queue{hook=\"a\"} 1")
        );
    }

    #[test]
    fn a_change_whose_delivery_cannot_be_written_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let metrics = Arc::new(Metrics::new());
        let mut writer = writer(&path, &metrics);
        let mut follower = writer.changes.subscribe();
        // Any insert into the outbox now fails, as on a full disk.
        let blocker = rusqlite::Connection::open(&path).unwrap();
        blocker
            .execute_batch(
                "CREATE TRIGGER no_room BEFORE INSERT ON webhook_outbox
                 BEGIN SELECT RAISE(ABORT, 'no room'); END;",
            )
            .unwrap();
        writer.process(events(), |batch| batch.commit());
        assert!(follower.try_recv().is_err(), "no follower hears of it");
        let reader = Db::open(&path, false).unwrap();
        assert_eq!(
            reader.status_count().unwrap(),
            0,
            "the change is not stored"
        );
        assert!(writer.snapshot.borrow().status.is_none());
    }
}
