//! The single writer thread: one transaction per batch of events, then the
//! snapshot, then the stream of committed changes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, watch};

use super::outbox::{Deltas, Outbox};
use super::snapshot::{Model, Roster};
use super::{
    CHUNK_BYTES, CHUNK_CHANGES, Changes, Event, Job, Origin, Outcome, Published, Reply, Snapshot,
};
use crate::clock::{Clock, LocalTime};
use crate::event::{Change, Message, ModifiedBy, StatusChange, StatusValue, TemperatureSample};
use crate::metrics::Metrics;
use crate::report::Report;
use crate::store::{Batch, Db, Person, StoreError, User, Visibility};

/// Most events grouped into one transaction.
const MAX_BATCH: usize = 4096;

/// Owns the connection and the model.
pub(super) struct Writer {
    pub db: Db,
    pub model: Model,
    pub snapshot: Arc<watch::Sender<Arc<Snapshot>>>,
    pub changes: broadcast::Sender<Changes>,
    /// Device messages are stored under this user.
    pub device_user: User,
    pub stamper: Stamper,
    pub metrics: Arc<Metrics>,
    pub jsonver: u32,
    pub outbox: Outbox,
}

/// What an event came to while its batch was being written.
struct Pending {
    /// The change stored, if any.
    stored: Option<Stored>,
    reply: Option<Reply>,
    outcome: Outcome,
}

impl Writer {
    /// Takes batches of jobs until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.process(jobs, |batch| batch.commit());
        }
        tracing::debug!("writer stopped");
    }

    /// Writes `jobs` in one transaction ended by `commit`; only once it is
    /// committed do the snapshot, the stream and the senders hear of it.
    pub(super) fn process(
        &mut self,
        jobs: Vec<Job>,
        commit: impl FnOnce(Batch<'_>) -> Result<(), StoreError>,
    ) {
        let started = Instant::now();
        let mut flushes = Vec::new();
        let mut pending = Vec::with_capacity(jobs.len());
        // Message budget comes back when the batch is done, not before.
        let mut budgets: Vec<OwnedSemaphorePermit> = Vec::new();
        // Work on a copy so a failed commit leaves the model as it was.
        let mut model = self.model.clone();
        let mut stamper = self.stamper.clone();
        let mut deltas = self.outbox.deltas();
        let committed = (|| -> Result<(), StoreError> {
            let batch = self.db.batch()?;
            let mut writing = Writing {
                batch: &batch,
                outbox: &self.outbox,
                deltas: &mut deltas,
                failed: None,
            };
            for job in jobs {
                match job {
                    Job::Flush(tx) => flushes.push(tx),
                    Job::Forget(hook, ids) => {
                        self.outbox.forget(&batch, &hook, &ids, writing.deltas);
                    }
                    Job::Event(event, reply, budget) => {
                        budgets.extend(budget);
                        let (stored, outcome) = prepare(
                            &mut writing,
                            &mut model,
                            &mut stamper,
                            &self.device_user,
                            event,
                        );
                        pending.push(Pending {
                            stored,
                            reply,
                            outcome,
                        });
                    }
                }
            }
            // A change must not commit without its deliveries: the batch
            // is rolled back whole, as a failed commit is.
            if let Some(e) = writing.failed {
                return Err(e);
            }
            commit(batch)
        })();
        if let Err(e) = committed {
            tracing::error!(
                "commit failed, {} events lost: {}",
                pending.len(),
                Report(&e)
            );
            let e = Arc::new(e);
            for p in pending {
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(StoreError::NotCommitted(e.clone())));
                }
            }
            for tx in flushes {
                let _ = tx.send(());
            }
            return;
        }
        let stored = pending.iter().filter(|p| p.stored.is_some()).count();
        if stored > 0 {
            let elapsed = started.elapsed();
            self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
            tracing::debug!("committed {stored} changes in {} us", elapsed.as_micros());
        }
        self.model = model;
        self.stamper = stamper;
        self.outbox.committed(&deltas);
        self.snapshot
            .send_replace(Arc::new(self.model.snapshot(self.jsonver)));
        self.publish(pending);
        for tx in flushes {
            let _ = tx.send(());
        }
    }

    /// Publishes the stored changes in order, a commit in as few messages of
    /// the stream as their size allows, then answers their senders.
    fn publish(&self, pending: Vec<Pending>) {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut replies = Vec::with_capacity(pending.len());
        for p in pending {
            if let Some(Stored {
                seq,
                change,
                origin,
                row,
                json,
            }) = p.stored
            {
                self.metrics.event(change.kind());
                let json = json.unwrap_or_else(|| Bytes::from(change.to_json()));
                bytes += json.len();
                if let Change::Message(m) = &change {
                    bytes += m.text.len();
                }
                chunk.push(Published {
                    seq,
                    change: Arc::new(change),
                    origin,
                    row,
                    json,
                });
                if chunk.len() == CHUNK_CHANGES || bytes >= CHUNK_BYTES {
                    self.send(std::mem::take(&mut chunk));
                    bytes = 0;
                }
            }
            if let Some(reply) = p.reply {
                replies.push((reply, p.outcome));
            }
        }
        if !chunk.is_empty() {
            self.send(chunk);
        }
        for (reply, outcome) in replies {
            let _ = reply.send(Ok(outcome));
        }
    }

    fn send(&self, chunk: Vec<Published>) {
        // No receivers is fine: nobody is following.
        let _ = self.changes.send(Changes::from(chunk));
    }
}

/// A batch being written, with the outbox rows it adds.
struct Writing<'a, 'b> {
    batch: &'a Batch<'b>,
    outbox: &'a Outbox,
    deltas: &'a mut Deltas,
    /// An outbox row that could not be written: the batch must not commit.
    failed: Option<StoreError>,
}

/// A change written to the batch and applied to the model.
struct Stored {
    seq: u64,
    change: Change,
    origin: Origin,
    /// Its row in its table.
    row: i64,
    /// Serialised when the outbox needed it.
    json: Option<Bytes>,
}

/// What [`prepare`] makes of an event.
type Prepared = (Option<Stored>, Outcome);

/// Writes `event` into the batch, with its outbox rows, and applies it to
/// `model`: the change stored (if any) and what became of the event.
fn prepare(
    writing: &mut Writing<'_, '_>,
    model: &mut Model,
    stamper: &mut Stamper,
    device_user: &User,
    event: Event,
) -> Prepared {
    let batch = writing.batch;
    let mut author_id = device_user.id;
    let decided = match event {
        Event::Status { value, origin } => status_change(model, value, origin, stamper),
        Event::Temperature { sensor, value } => Ok(temperature(sensor, value, stamper)),
        Event::Message {
            author,
            text,
            origin,
        } => {
            author_id = author.as_ref().map_or(device_user.id, |a| a.id);
            Ok(message(author, text, origin, device_user, stamper))
        }
        Event::Enter(id) => {
            return (
                None,
                roster_change(batch, &mut model.roster, |r| enter(batch, r, id)),
            );
        }
        Event::Leave(id) => {
            return (
                None,
                roster_change(batch, &mut model.roster, |r| leave(r, id)),
            );
        }
        Event::MacRoster(ids) => {
            return (
                None,
                roster_change(batch, &mut model.roster, |r| {
                    r.macs = ids.into_iter().map(|id| (id, Person::default())).collect();
                    Outcome::Applied
                }),
            );
        }
        Event::Visibility { member, visibility } => {
            return (
                None,
                roster_change(batch, &mut model.roster, |_| {
                    set_visibility(batch, member, visibility)
                }),
            );
        }
    };
    let (change, origin) = match decided {
        Ok(decided) => decided,
        Err(why) => return (None, Outcome::Ignored(why)),
    };
    match store(batch, &change, author_id) {
        Ok(row) => {
            // Serialised once, for the outbox and for the stream.
            let json = writing.outbox.follows(&change).then(|| {
                let json = change.to_json();
                if let Err(e) = writing.outbox.record(batch, &change, &json, writing.deltas) {
                    writing.failed.get_or_insert(e);
                }
                Bytes::from(json)
            });
            let seq = model.apply(&change, origin, row);
            let stored = Stored {
                seq,
                change,
                origin,
                row,
                json,
            };
            (Some(stored), Outcome::Applied)
        }
        Err(e) => {
            tracing::error!("event not stored: {}", Report(&e));
            (None, Outcome::Ignored("not stored"))
        }
    }
}

/// A status change, unless the room is already so.
fn status_change(
    model: &Model,
    value: StatusValue,
    origin: Origin,
    stamper: &mut Stamper,
) -> Result<(Change, Origin), &'static str> {
    let current = model.status.as_ref().map(|s| s.value.is_open());
    if current == Some(value.is_open()) {
        return Err("the status is already that");
    }
    let change = StatusChange {
        timestamp: stamper.next(),
        value,
        modified_by: origin.modified_by(),
    };
    Ok((Change::Status(change), origin))
}

fn temperature(sensor: i64, value: f64, stamper: &mut Stamper) -> (Change, Origin) {
    let sample = TemperatureSample {
        timestamp: stamper.next(),
        sensor,
        value,
        modified_by: ModifiedBy::Bits,
    };
    (Change::Temperature(sample), Origin::Device)
}

/// A message from a member (`author`), or else under the device's user.
fn message(
    author: Option<User>,
    text: String,
    origin: Origin,
    device_user: &User,
    stamper: &mut Stamper,
) -> (Change, Origin) {
    let user = author.unwrap_or_else(|| device_user.clone());
    let message = Message {
        timestamp: stamper.next(),
        user: user.name,
        text,
    };
    (Change::Message(message), origin)
}

/// Writes a change into the batch, a message under user `author_id`; the
/// sample's row (0 for the others).
fn store(batch: &Batch<'_>, change: &Change, author_id: i64) -> Result<i64, StoreError> {
    match change {
        Change::Status(s) => batch.insert_status(s).map(|()| 0),
        Change::Temperature(t) => batch.insert_temperature(t),
        Change::Message(m) => batch
            .insert_message(author_id, m.timestamp, &m.text)
            .map(|()| 0),
    }
}

/// Applies a roster change with `change`, then reads every present
/// member's name and visibility afresh, so a visibility changed elsewhere
/// (`usermanage`) shows at the next roster change, and a member deleted
/// meanwhile leaves the roster.
fn roster_change(
    batch: &Batch<'_>,
    roster: &mut Roster,
    change: impl FnOnce(&mut Roster) -> Outcome,
) -> Outcome {
    let outcome = change(roster);
    match batch.members(roster.ids()) {
        Ok(members) => {
            for part in [&mut roster.keypad, &mut roster.macs] {
                part.retain(|id, _| members.contains_key(id));
                for (id, person) in part.iter_mut() {
                    person.clone_from(&members[id]);
                }
            }
        }
        Err(e) => tracing::error!("roster: looking up members: {}", Report(&e)),
    }
    outcome
}

/// A member sets who sees them.
fn set_visibility(batch: &Batch<'_>, id: i64, visibility: Visibility) -> Outcome {
    match batch.set_visibility(id, visibility) {
        Ok(true) => Outcome::Applied,
        Ok(false) => Outcome::Ignored("no such user"),
        Err(e) => {
            tracing::error!("visibility of user {id} not stored: {}", Report(&e));
            Outcome::Ignored("not stored")
        }
    }
}

/// A member typed their number on arriving.
fn enter(batch: &Batch<'_>, roster: &mut Roster, id: i64) -> Outcome {
    match batch.user_by_id(id) {
        Ok(Some(user)) => {
            tracing::info!("{} entered (keypad)", crate::limits::Shown(&user.name));
            roster.keypad.insert(
                id,
                Person {
                    name: user.name,
                    visibility: Visibility::default(),
                },
            );
            Outcome::Applied
        }
        Ok(None) => {
            tracing::warn!("keypad: no user with id {id}; enter ignored");
            Outcome::Ignored("no such user")
        }
        Err(e) => {
            tracing::error!("keypad: looking up user {id}: {}", Report(&e));
            Outcome::Ignored("lookup failed")
        }
    }
}

/// A member typed their number on leaving.
fn leave(roster: &mut Roster, id: i64) -> Outcome {
    match roster.keypad.remove(&id) {
        Some(person) => {
            tracing::info!("{} left (keypad)", crate::limits::Shown(&person.name));
            Outcome::Applied
        }
        None => {
            tracing::warn!("keypad: user {id} left without entering; ignored");
            Outcome::Ignored("not in the room")
        }
    }
}

/// Hands out event timestamps.
#[derive(Clone)]
pub(super) struct Stamper {
    clock: Clock,
    last: Option<LocalTime>,
}

impl Stamper {
    pub fn new(clock: Clock) -> Stamper {
        Stamper { clock, last: None }
    }

    /// Now, strictly after the previous timestamp when the clock has not
    /// moved on (the original tables key rows by timestamp).
    fn next(&mut self) -> LocalTime {
        let mut now = self.clock.now();
        if let Some(last) = self.last
            && now <= last
            && (last.0 - now.0) < chrono::Duration::seconds(1)
        {
            now = LocalTime(last.0 + chrono::Duration::microseconds(1));
        }
        self.last = Some(now);
        now
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tokio::sync::oneshot;

    use super::*;
    use crate::event::StatusValue::{Closed, Open};
    use crate::state::HISTORY_SAMPLES;
    use crate::store::DEVICE_USER;

    /// A writer over a fresh database, with a follower and a reader of its
    /// snapshots.
    struct Rig {
        writer: Writer,
        follower: broadcast::Receiver<Changes>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bitsd.db");
        let mut db = Db::open(&path, false).unwrap();
        let model = Model::load(&db).unwrap();
        let metrics = Arc::new(Metrics::new());
        let outbox = Outbox::load(&mut db, Vec::new(), &metrics).unwrap();
        let device_user = db.user_by_name(DEVICE_USER).unwrap().unwrap();
        let snapshot = Arc::new(watch::Sender::new(Arc::new(model.snapshot(3))));
        let (changes, follower) = broadcast::channel(1024);
        let clock = Clock::new(chrono_tz::Europe::Rome);
        let writer = Writer {
            db,
            model,
            snapshot: snapshot.clone(),
            changes,
            device_user,
            stamper: Stamper::new(clock),
            metrics,
            jsonver: 3,
            outbox,
        };
        Rig {
            writer,
            follower,
            snapshot: snapshot.subscribe(),
            path,
            _dir: dir,
        }
    }

    type Answer = oneshot::Receiver<Result<Outcome, StoreError>>;

    impl Rig {
        /// Runs `events` as one batch, committed; their answers in order.
        fn batch(&mut self, events: Vec<Event>) -> Vec<Result<Outcome, StoreError>> {
            self.batch_ending(events, |batch| batch.commit())
        }

        fn batch_ending(
            &mut self,
            events: Vec<Event>,
            commit: impl FnOnce(Batch<'_>) -> Result<(), StoreError>,
        ) -> Vec<Result<Outcome, StoreError>> {
            let (jobs, answers): (Vec<Job>, Vec<Answer>) = events
                .into_iter()
                .map(|event| {
                    let (tx, rx) = oneshot::channel();
                    (Job::Event(event, Some(tx), None), rx)
                })
                .unzip();
            self.writer.process(jobs, commit);
            answers
                .into_iter()
                .map(|mut rx| rx.try_recv().expect("every event is answered"))
                .collect()
        }

        fn published(&mut self) -> Vec<Published> {
            std::iter::from_fn(|| self.follower.try_recv().ok())
                .flat_map(|changes| changes.to_vec())
                .collect()
        }

        fn snapshot(&self) -> Arc<Snapshot> {
            self.snapshot.borrow().clone()
        }

        /// The database as a new reader sees it.
        fn stored(&self) -> (Vec<StatusChange>, crate::store::Latest) {
            let db = Db::open(&self.path, false).unwrap();
            (db.status_log(0, 100).unwrap(), db.latest(1000).unwrap())
        }
    }

    fn status(value: StatusValue, origin: Origin) -> Event {
        Event::Status { value, origin }
    }

    fn applied(answers: &[Result<Outcome, StoreError>]) -> Vec<Outcome> {
        answers
            .iter()
            .map(|a| a.as_ref().expect("committed").clone())
            .collect()
    }

    #[test]
    fn status_changes_are_stored_once_and_published_in_order() {
        let mut rig = rig();
        let answers = rig.batch(vec![
            status(Open, Origin::Web),
            status(Open, Origin::Device),
            status(Closed, Origin::Automation),
        ]);
        assert_eq!(
            applied(&answers),
            [
                Outcome::Applied,
                Outcome::Ignored("the status is already that"),
                Outcome::Applied
            ]
        );
        let published = rig.published();
        let seen: Vec<_> = published.iter().map(|p| (p.seq, p.origin)).collect();
        assert_eq!(seen, [(1, Origin::Web), (2, Origin::Automation)]);
        assert!(
            std::str::from_utf8(&published[0].json)
                .unwrap()
                .contains("\"open\"")
        );
        let snapshot = rig.snapshot();
        assert_eq!(snapshot.version, 2);
        assert_eq!(snapshot.status_version, 2);
        assert_eq!(snapshot.status_origin, Some(Origin::Automation));
        assert!(!snapshot.is_open());
        let (log, _) = rig.stored();
        let rows: Vec<_> = log.iter().map(|s| (s.value, s.modified_by)).collect();
        assert_eq!(rows, [(Closed, ModifiedBy::Bits), (Open, ModifiedBy::Web)]);
        assert!(log[1].timestamp < log[0].timestamp);
    }

    #[test]
    fn messages_are_stored_under_their_author() {
        let mut rig = rig();
        let member = rig.writer.db.add_user("ada", "hash").unwrap();
        rig.batch(vec![Event::Message {
            author: Some(member),
            text: "from the web".into(),
            origin: Origin::Web,
        }]);
        let (_, latest) = rig.stored();
        assert_eq!(latest.message.unwrap().user, "ada");
        rig.batch(vec![Event::Message {
            author: None,
            text: "from the device".into(),
            origin: Origin::Device,
        }]);
        let origins: Vec<_> = rig.published().iter().map(|p| p.origin).collect();
        assert_eq!(origins, [Origin::Web, Origin::Device]);
        let snapshot = rig.snapshot();
        let message = snapshot.message.as_ref().unwrap();
        assert_eq!(
            (message.user.as_str(), message.text.as_str()),
            (DEVICE_USER, "from the device")
        );
        assert_eq!(
            (snapshot.message_version, snapshot.message_origin),
            (2, Some(Origin::Device))
        );
        let (_, latest) = rig.stored();
        assert_eq!(latest.message.unwrap().text, "from the device");
    }

    #[test]
    fn the_keypad_roster_changes_nothing_stored() {
        let mut rig = rig();
        let member = rig.writer.db.add_user("bob", "hash").unwrap();
        let carol = rig.writer.db.add_user("carol", "hash").unwrap();
        let answers = rig.batch(vec![
            Event::Enter(member.id + 100),
            Event::Enter(member.id),
            Event::Leave(member.id),
            Event::Leave(member.id),
            Event::MacRoster(BTreeSet::from([carol.id, carol.id + 100])),
        ]);
        assert_eq!(
            applied(&answers),
            [
                Outcome::Ignored("no such user"),
                Outcome::Applied,
                Outcome::Applied,
                Outcome::Ignored("not in the room"),
                Outcome::Applied
            ]
        );
        assert!(rig.published().is_empty());
        let snapshot = rig.snapshot();
        assert_eq!(snapshot.version, 0);
        assert!(snapshot.roster.keypad.is_empty());
        // An id of nobody is dropped; carol is counted, not named.
        assert_eq!(snapshot.roster.ids(), BTreeSet::from([carol.id]));
        assert_eq!(snapshot.roster.counted(), 1);
        assert!(snapshot.roster.named().is_empty());
    }

    #[test]
    fn visibility_applies_to_the_roster_at_once_and_at_the_next_change() {
        let mut rig = rig();
        let named = rig.writer.db.add_user("nina", "hash").unwrap();
        let hidden = rig.writer.db.add_user("hugo", "hash").unwrap();
        let answers = rig.batch(vec![
            Event::Enter(named.id),
            Event::Enter(hidden.id),
            Event::Visibility {
                member: named.id,
                visibility: Visibility::Named,
            },
            Event::Visibility {
                member: hidden.id,
                visibility: Visibility::Hidden,
            },
            Event::Visibility {
                member: hidden.id + 100,
                visibility: Visibility::Named,
            },
        ]);
        assert_eq!(
            applied(&answers)[2..],
            [
                Outcome::Applied,
                Outcome::Applied,
                Outcome::Ignored("no such user")
            ]
        );
        let roster = rig.snapshot().roster.clone();
        assert!(roster.occupied());
        assert_eq!(roster.counted(), 1);
        assert_eq!(roster.named(), BTreeSet::from(["nina".to_string()]));
        // Changed outside the writer (usermanage): seen at the next change.
        rig.writer
            .db
            .set_visibility_of("hugo", Visibility::Named)
            .unwrap();
        assert_eq!(rig.snapshot().roster.counted(), 1);
        rig.batch(vec![Event::MacRoster(BTreeSet::new())]);
        assert_eq!(rig.snapshot().roster.counted(), 2);
        // A member deleted meanwhile leaves the roster.
        rig.writer.db.delete_user("nina").unwrap();
        rig.batch(vec![Event::Leave(hidden.id)]);
        assert!(!rig.snapshot().roster.occupied());
        let stored = rig.writer.db.users().unwrap();
        assert!(stored.iter().all(|(u, _, _)| u.name != "nina"));
    }

    #[test]
    fn temperature_history_keeps_the_newest_samples() {
        let mut rig = rig();
        let samples = (0..150)
            .map(|i| Event::Temperature {
                sensor: i % 3,
                value: i as f64,
            })
            .collect();
        rig.batch(samples);
        let seqs: Vec<_> = rig.published().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, (1..=150).collect::<Vec<_>>());
        let snapshot = rig.snapshot();
        assert_eq!(snapshot.temperatures.len(), HISTORY_SAMPLES);
        assert_eq!(snapshot.temperatures[0].value, 149.0);
        assert_eq!(snapshot.sensors.len(), 3);
        assert_eq!(snapshot.sensors[&0].value, 147.0);
        let (_, latest) = rig.stored();
        assert_eq!(latest.temperatures.len(), 150);
    }

    #[test]
    fn a_big_commit_reaches_followers_in_bounded_messages() {
        let mut rig = rig();
        let samples = (0..600)
            .map(|i| Event::Temperature {
                sensor: 0,
                value: i as f64,
            })
            .collect();
        rig.batch(samples);
        let messages: Vec<Changes> = std::iter::from_fn(|| rig.follower.try_recv().ok()).collect();
        let sizes: Vec<usize> = messages.iter().map(|m| m.len()).collect();
        assert_eq!(
            sizes,
            [CHUNK_CHANGES, CHUNK_CHANGES, 600 - 2 * CHUNK_CHANGES]
        );
        let seqs: Vec<u64> = messages
            .iter()
            .flat_map(|m| m.iter().map(|p| p.seq))
            .collect();
        assert_eq!(seqs, (1..=600).collect::<Vec<_>>());

        let text = "<".repeat(1000);
        let messages = (0..100)
            .map(|_| Event::Message {
                author: None,
                text: text.clone(),
                origin: Origin::Device,
            })
            .collect();
        rig.batch(messages);
        let chunks: Vec<Changes> = std::iter::from_fn(|| rig.follower.try_recv().ok()).collect();
        assert!(chunks.len() > 1, "closed by size before the count");
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(|p| p.json.len()).sum();
            assert!(bytes < CHUNK_BYTES, "{bytes}");
        }
    }

    #[test]
    fn a_failed_commit_is_seen_by_no_one() {
        let mut rig = rig();
        rig.batch(vec![status(Open, Origin::Device)]);
        rig.published();
        let before = rig.snapshot();

        let answers = rig.batch_ending(
            vec![
                status(Closed, Origin::Web),
                Event::Temperature {
                    sensor: 0,
                    value: 21.5,
                },
                Event::Message {
                    author: None,
                    text: "lost".into(),
                    origin: Origin::Device,
                },
            ],
            // The transaction is dropped, so rolled back, and the commit fails.
            |batch| {
                drop(batch);
                Err(StoreError::Closed)
            },
        );
        assert!(answers.iter().all(Result::is_err));
        assert!(rig.published().is_empty(), "no follower hears of it");
        let after = rig.snapshot();
        assert_eq!(after.version, before.version);
        assert_eq!(after.data_json, before.data_json);
        assert!(after.is_open());
        let (log, latest) = rig.stored();
        assert_eq!(log.len(), 1);
        assert!(latest.temperatures.is_empty() && latest.message.is_none());

        // The next batch goes on from where the last commit left off.
        rig.batch(vec![status(Closed, Origin::Web)]);
        let published = rig.published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].seq, 2);
        assert!(!rig.snapshot().is_open());
    }

    #[test]
    fn timestamps_never_repeat() {
        let mut stamper = Stamper::new(Clock::new(chrono_tz::UTC));
        let stamps: Vec<_> = (0..1000).map(|_| stamper.next()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
    }
}
