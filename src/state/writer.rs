//! The single writer thread: one transaction per batch of events, then the
//! snapshot, then the stream of committed changes. A batch that cannot be
//! written changes nothing but the count of events not stored and the
//! cause `/healthz` shows.
//!
//! `status` decides what a status event changes: the state, its "until"
//! and who set it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, watch};

use self::status::{status_change, until_change};
use super::routes::{Deltas, Routes};
use super::snapshot::{Model, Roster};
use super::{
    CHUNK_BYTES, CHUNK_CHANGES, Changes, Event, Job, Origin, Outcome, Published, Reply, Snapshot,
    Storing,
};
use crate::clock::{Clock, LocalTime};
use crate::metrics::Metrics;
use crate::record::sensors::SensorSample;
use crate::record::{Change, DeviceName, Message, ModifiedBy, StatusValue, TemperatureSample};
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
    pub routes: Routes,
    /// Why writes fail, shared with `/healthz`.
    pub storing: Arc<Storing>,
    /// Events lost since writes began to fail.
    pub lost: u64,
    /// Tells live clients of the device's absence.
    pub device_offline: watch::Sender<Bytes>,
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
        // The device's absence is not stored: it holds whether the batch
        // commits or not.
        let (absences, jobs): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|job| matches!(job, Job::DeviceOffline(_)));
        let mut absent = false;
        for job in absences {
            if let Job::DeviceOffline(since) = job {
                absent |= self.model.device_offline(since);
            }
        }
        let mut flushes = Vec::new();
        let mut pending = Vec::with_capacity(jobs.len());
        // Message budget comes back when the batch is done, not before.
        let mut budgets: Vec<OwnedSemaphorePermit> = Vec::new();
        // Work on a copy so a failed commit leaves the model as it was.
        let mut model = self.model.clone();
        let mut stamper = self.stamper.clone();
        let mut deltas = self.routes.deltas();
        let mut tally = Tally::default();
        let events = jobs
            .iter()
            .filter(|job| matches!(job, Job::Event(..)))
            .count();
        let committed = (|| -> Result<(), StoreError> {
            let batch = self.db.batch()?;
            let mut writing = Writing {
                batch: &batch,
                routes: &self.routes,
                deltas: &mut deltas,
                failed: None,
                tally: &mut tally,
            };
            for job in jobs {
                // Once the batch has failed, nothing more is written: the
                // transaction may be gone, and a row written after it would
                // be stored on its own.
                let doomed = writing.failed.is_some();
                match job {
                    Job::Flush(tx) => flushes.push(tx),
                    // Taken out above, before the batch.
                    Job::DeviceOffline(_) => {}
                    Job::Forget(..) if doomed => {}
                    Job::Forget(hook, ids) => {
                        self.routes.forget(&batch, &hook, &ids, writing.deltas);
                    }
                    Job::Event(event, reply, budget) => {
                        budgets.extend(budget);
                        let (stored, outcome) = if doomed {
                            writing.tally.lost += 1;
                            (None, Outcome::Ignored("not stored"))
                        } else {
                            prepare(
                                &mut writing,
                                &mut model,
                                &mut stamper,
                                &self.device_user,
                                event,
                            )
                        };
                        pending.push(Pending {
                            stored,
                            reply,
                            outcome,
                        });
                    }
                }
            }
            // A change must not commit without its deliveries, nor a batch
            // whose transaction SQLite may have cancelled: it is rolled
            // back whole, as a failed commit is.
            if let Some(e) = writing.failed {
                return Err(e);
            }
            commit(batch)
        })();
        if let Err(e) = committed {
            // Every event that would have changed something is lost with
            // the batch (those whose own row failed are counted already),
            // and so are those not reached when the batch failed to begin.
            let applied = pending
                .iter()
                .filter(|p| p.outcome == Outcome::Applied)
                .count();
            let unreached = events - pending.len();
            self.not_stored(applied + tally.lost + unreached, &e);
            let e = Arc::new(e);
            for p in pending {
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(StoreError::NotCommitted(e.clone())));
                }
            }
            if absent {
                self.snapshot
                    .send_replace(Arc::new(self.model.snapshot(self.jsonver)));
                self.tell_device_offline();
            }
            for tx in flushes {
                let _ = tx.send(());
            }
            return;
        }
        match tally.why {
            Some(e) => self.not_stored(tally.lost, &e),
            None if tally.written > 0 => self.stored_again(),
            None => {}
        }
        let stored = pending.iter().filter(|p| p.stored.is_some()).count();
        if stored > 0 {
            let elapsed = started.elapsed();
            self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
            tracing::debug!("committed {stored} changes in {} us", elapsed.as_micros());
        }
        self.model = model;
        self.stamper = stamper;
        self.routes.committed(&deltas);
        self.snapshot
            .send_replace(Arc::new(self.model.snapshot(self.jsonver)));
        if absent {
            self.tell_device_offline();
        }
        self.publish(pending);
        for tx in flushes {
            let _ = tx.send(());
        }
    }

    /// Tells live clients of the device's absence, after the snapshot.
    fn tell_device_offline(&self) {
        let json = super::snapshot::device_offline_json(self.model.device_offline_since);
        self.device_offline.send_replace(json);
    }

    /// Counts `events` lost to `e` and keeps its cause for `/healthz`;
    /// logged when writes begin to fail, or fail for another cause.
    fn not_stored(&mut self, events: usize, e: &StoreError) {
        self.metrics.events_not_stored.inc_by(events as u64);
        self.lost += events as u64;
        let why: Arc<str> = cause(e).into();
        let before = self.storing.fail(why.clone());
        if before.as_deref() == Some(&*why) {
            tracing::debug!("{events} more event(s) not stored: {why}");
        } else {
            tracing::error!("cannot store events: {}; {events} event(s) lost", Report(e));
        }
    }

    /// An event is stored: writes that failed work again.
    fn stored_again(&mut self) {
        if self.storing.recover() {
            tracing::warn!(
                "events are stored again; {} event(s) were lost meanwhile",
                self.lost
            );
        }
        self.lost = 0;
    }

    /// Publishes the stored changes in order, a commit in as few messages of
    /// the stream as their size allows, then answers their senders.
    fn publish(&self, pending: Vec<Pending>) {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut replies = Vec::with_capacity(pending.len());
        for p in pending {
            if let Some(stored) = p.stored {
                let change = stored.change;
                self.metrics.event(change.kind());
                if let Change::Sensor(s) = &change {
                    self.metrics.sensor_sample(s.kind.as_str());
                }
                if let Change::Status(s) = &change {
                    self.metrics.state(s.value.state_str());
                }
                let json = stored
                    .json
                    .unwrap_or_else(|| Bytes::from(change.to_json(self.model.show_names)));
                bytes += json.len();
                if let Change::Message(m) = &change {
                    bytes += m.text.len();
                }
                let (seq, origin, row) = (stored.seq, stored.origin, stored.row);
                let change = Arc::new(change);
                chunk.push(Published {
                    seq,
                    change,
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
    routes: &'a Routes,
    deltas: &'a mut Deltas,
    /// A write that dooms the batch (an outbox row, or a row whose error
    /// may have cancelled the transaction): the batch must not commit.
    failed: Option<StoreError>,
    tally: &'a mut Tally,
}

/// The rows of a batch: events written, events not written, and why the
/// first was not when that cost it alone (the batch commits the others).
#[derive(Default)]
struct Tally {
    written: usize,
    lost: usize,
    why: Option<StoreError>,
}

impl Writing<'_, '_> {
    /// An event whose row could not be written. A full disk, an I/O error,
    /// no memory or a busy database may have cancelled the whole
    /// transaction (SQLite decides): the batch then fails whole. Another
    /// error (a constraint) costs this event only.
    fn lost(&mut self, e: StoreError) {
        tracing::debug!("event not stored: {}", Report(&e));
        self.tally.lost += 1;
        if cancels_transaction(&e) {
            self.failed.get_or_insert(e);
        } else {
            self.tally.why.get_or_insert(e);
        }
    }
}

fn cancels_transaction(e: &StoreError) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DiskFull, OutOfMemory, SystemIoFailure};
    let StoreError::Sqlite(e) = e else {
        return false;
    };
    matches!(
        e.sqlite_error_code(),
        Some(DiskFull | SystemIoFailure | OutOfMemory | DatabaseBusy)
    )
}

/// Why a write failed, in SQLite's own words ("database or disk is full").
fn cause(e: &StoreError) -> String {
    match e {
        StoreError::Sqlite(e) => e.to_string(),
        StoreError::NotCommitted(e) => cause(e),
        e => Report(e).to_string(),
    }
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
        Event::Status { value, origin } => {
            let person = status::automation_opener(model, value, &origin);
            status_change(model, value, origin, person, stamper)
        }
        Event::MemberStatus { value, member } => {
            let person = status::member(batch, member);
            status_change(model, value, Origin::Web, person, stamper)
        }
        Event::Until { at, origin } => until_change(model, at, origin, stamper.clock.now()),
        Event::CloseForgotten { set } => match &model.status {
            Some(s) if s.timestamp == set && s.value.lets_members_in() && s.until.is_some() => {
                status_change(
                    model,
                    StatusValue::Closed,
                    Origin::Automation,
                    None,
                    stamper,
                )
            }
            _ => Err("the status changed meanwhile"),
        },
        Event::Temperature {
            sensor,
            value,
            device,
        } => Ok(temperature(sensor, value, device, stamper)),
        Event::Sensor {
            kind,
            sensor,
            value,
            device,
        } => {
            let sample = SensorSample {
                timestamp: stamper.next(),
                kind,
                sensor,
                value,
                modified_by: ModifiedBy::Bits,
                device: device.clone(),
            };
            Ok((Change::Sensor(sample), Origin::Device(device)))
        }
        Event::Message {
            author,
            text,
            origin,
        } => {
            author_id = author.as_ref().map_or(device_user.id, |a| a.id);
            Ok(message(author, text, origin, device_user, stamper))
        }
        Event::Enter(id) => {
            let outcome = roster_change(batch, &mut model.roster, |r| enter(batch, r, id));
            if outcome == Outcome::Applied && !model.keypad_order.contains(&id) {
                model.keypad_order.push(id);
            }
            return (None, outcome);
        }
        Event::Leave(id) => {
            let outcome = roster_change(batch, &mut model.roster, |r| leave(r, id));
            let keypad = &model.roster.keypad;
            model.keypad_order.retain(|id| keypad.contains_key(id));
            return (None, outcome);
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
            let outcome = roster_change(batch, &mut model.roster, |_| {
                set_visibility(writing, member, visibility)
            });
            // Whether the status names them follows at once: `/data` and
            // the pages change with it.
            if outcome == Outcome::Applied
                && let Some(person) = model.status.as_mut().and_then(|s| s.person.as_mut())
                && person.id == member
            {
                person.named = visibility == Visibility::Named;
                model.seq += 1;
                model.status_seq = model.seq;
            }
            return (None, outcome);
        }
    };
    let (change, origin) = match decided {
        Ok(decided) => decided,
        Err(why) => return (None, Outcome::Ignored(why)),
    };
    match store(batch, &change, author_id) {
        Ok(row) => {
            writing.tally.written += 1;
            // Serialised once, for the outboxes and for the stream.
            let follows = writing.routes.follows(&change);
            let pushed = writing.routes.pushes(&change);
            let json = (follows || pushed).then(|| {
                let json = change.to_json(model.show_names);
                let mut recorded = Ok(());
                if follows {
                    recorded = writing.routes.record(batch, &change, &json, writing.deltas);
                }
                if pushed && recorded.is_ok() {
                    let before = model.status.as_ref();
                    recorded = writing.routes.record_push(batch, &change, before, &json);
                }
                if let Err(e) = recorded {
                    writing.failed.get_or_insert(e);
                }
                Bytes::from(json)
            });
            let seq = model.apply(&change, origin.clone(), row);
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
            writing.lost(e);
            (None, Outcome::Ignored("not stored"))
        }
    }
}

fn temperature(
    sensor: i64,
    value: f64,
    device: Option<DeviceName>,
    stamper: &mut Stamper,
) -> (Change, Origin) {
    let sample = TemperatureSample {
        timestamp: stamper.next(),
        sensor,
        value,
        modified_by: ModifiedBy::Bits,
        device: device.clone(),
    };
    (Change::Temperature(sample), Origin::Device(device))
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
        device: origin.device().cloned(),
    };
    (Change::Message(message), origin)
}

/// Writes a change into the batch, a message under user `author_id`; the
/// sample's row (0 for the others).
fn store(batch: &Batch<'_>, change: &Change, author_id: i64) -> Result<i64, StoreError> {
    match change {
        Change::Status(s) => batch.insert_status(s).map(|()| 0),
        Change::Until(s) => batch.set_until(s.until).map(|()| 0),
        Change::Temperature(t) => batch.insert_temperature(t),
        Change::Sensor(s) => batch.insert_sensor(s),
        Change::Message(m) => batch
            .insert_message(author_id, m.timestamp, &m.text, m.device.as_deref())
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
fn set_visibility(writing: &mut Writing<'_, '_>, id: i64, visibility: Visibility) -> Outcome {
    match writing.batch.set_visibility(id, visibility) {
        Ok(true) => {
            writing.tally.written += 1;
            Outcome::Applied
        }
        Ok(false) => Outcome::Ignored("no such user"),
        Err(e) => {
            writing.lost(e);
            Outcome::Ignored("not stored")
        }
    }
}

/// A member typed their number on arriving.
fn enter(batch: &Batch<'_>, roster: &mut Roster, id: i64) -> Outcome {
    match batch.user_by_id(id) {
        Ok(Some(user)) => {
            tracing::info!("{} entered (keypad)", crate::escape::Shown(&user.name));
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
            tracing::info!("{} left (keypad)", crate::escape::Shown(&person.name));
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

mod status;
#[cfg(test)]
mod tests;
