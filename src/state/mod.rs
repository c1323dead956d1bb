//! The current state: events in, committed changes out.
//!
//! Every input (device line, web form, automation) becomes an [`Event`] sent
//! to one writer thread (`writer`). The writer groups whatever is queued into
//! one transaction, commits it, then updates the in-memory [`Snapshot`]
//! (`snapshot`), then publishes each committed change once, serialised once.
//! Followers (live clients, the device link) subscribe to that stream;
//! readers never query the database for the current state. Webhooks are
//! the exception: their deliveries must survive a crash, so the writer puts
//! them in the outbox table in the change's transaction (`routes` says
//! which hooks follow which changes).
//! While writes fail (a full disk), events are lost, counted and the cause
//! kept for `/healthz`; the next event stored clears it.

mod routes;
mod snapshot;
mod writer;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};

use crate::clock::{Clock, LocalTime};
use crate::metrics::Metrics;
use crate::record::sensors::SensorKind;
use crate::record::{Change, DeviceName, ModifiedBy, StatusValue};
use crate::store::{DEVICE_USER, Db, StoreError, User, Visibility};

pub use routes::Route;
use routes::Routes;
use snapshot::Model;
pub use snapshot::{HISTORY_SAMPLES, Roster, Snapshot};
use writer::Writer;

/// Events waiting for the writer before senders wait their turn.
const QUEUE: usize = 8192;
/// Bytes of message text waiting for (or in) the writer before senders wait
/// their turn: messages are long, so they are counted by size as well.
const MESSAGE_BUDGET: usize = 1 << 20;
/// Messages of the stream a follower may fall behind before it must
/// resynchronise from the snapshot. A message is one commit, or a part of
/// one of at most [`CHUNK_CHANGES`] changes and about [`CHUNK_BYTES`] held:
/// the ring keeps what the slowest follower has not read, at most a few MiB,
/// and a follower that keeps up with the writer on average (the MQTT link in
/// a device flood) sees every change.
const BROADCAST_CAPACITY: usize = 64;
/// Most changes in one message of the stream.
const CHUNK_CHANGES: usize = 256;
/// Bytes held (JSON and message text) past which a message of the stream is
/// closed: 256 samples stay well under it, messages are counted by size.
const CHUNK_BYTES: usize = 64 << 10;

/// Something that changes the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Open or close the room.
    Status { value: StatusValue, origin: Origin },
    /// A member (by id) opens or closes the room from `/admin`
    /// (`Origin::Web`): the change records who.
    MemberStatus { value: StatusValue, member: i64 },
    /// Until when the room stays open: the next time `at` of day (none:
    /// not said). Only while the room is open or open for members.
    Until {
        at: Option<chrono::NaiveTime>,
        origin: Origin,
    },
    /// Close the room left open well past its "until": only while the
    /// status `set` then is still the current one.
    CloseForgotten { set: LocalTime },
    /// A sample from a sensor of a device (`device`: the registered one
    /// that sent it, if one did).
    Temperature {
        sensor: i64,
        value: f64,
        device: Option<DeviceName>,
    },
    /// A sample of a sensor beyond temperature, its value within its
    /// kind's range (`device`: the registered one that sent it, if one did).
    Sensor {
        kind: SensorKind,
        sensor: i64,
        value: f64,
        device: Option<DeviceName>,
    },
    /// A message from a member (`author`), or else stored under the device's
    /// user; `origin` says where it came from.
    Message {
        author: Option<User>,
        text: String,
        origin: Origin,
    },
    /// A member typed their number on the keypad on arriving.
    Enter(i64),
    /// A member typed their number on the keypad on leaving.
    Leave(i64),
    /// The members (by id) whose MAC hashes the last MAC update saw.
    MacRoster(BTreeSet<i64>),
    /// A member sets who sees them; stored, and applied to the roster at once.
    Visibility { member: i64, visibility: Visibility },
}

/// Where a change comes from: it decides a status change's `modified_by`,
/// and followers use it (the device link tells each device only what it
/// does not know already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A device (`BITS`): a registered one by name, or `None`, the original
    /// device.
    Device(Option<DeviceName>),
    /// A member on the web (`web`).
    Web,
    /// Automatic status from the roster (`BITS`).
    Automation,
    /// A `set/` topic of the MQTT broker (`BITS`): like a device line, but
    /// the device itself has not seen it.
    Mqtt,
}

impl Origin {
    /// The original device's lines.
    pub const ORIGINAL_DEVICE: Origin = Origin::Device(None);

    fn modified_by(&self) -> ModifiedBy {
        match self {
            Origin::Web => ModifiedBy::Web,
            Origin::Device(_) | Origin::Automation | Origin::Mqtt => ModifiedBy::Bits,
        }
    }

    /// The registered device it is, if it is one.
    pub fn device(&self) -> Option<&DeviceName> {
        match self {
            Origin::Device(name) => name.as_ref(),
            _ => None,
        }
    }
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (when it is stored at all) and applied.
    Applied,
    /// Nothing changed, for the reason given.
    Ignored(&'static str),
}

/// A committed change as every follower receives it.
#[derive(Debug, Clone)]
pub struct Published {
    /// Position in the stream; the snapshot with `version >= seq` includes it.
    pub seq: u64,
    /// What changed.
    pub change: Arc<Change>,
    /// Who caused it.
    pub origin: Origin,
    /// The row it was stored at, in its table ([`Snapshot::temperature_row`]).
    pub row: i64,
    /// `{"status": {...}}` and the like, serialised once for every client.
    pub json: Bytes,
}

/// Changes of one commit, in order, as one message of the stream.
pub type Changes = Arc<[Published]>;

/// Where the writer sends its answer about one event.
type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

enum Job {
    Event(Event, Option<Reply>, Option<OwnedSemaphorePermit>),
    Flush(oneshot::Sender<()>),
    /// Webhook deliveries done with: the hook and its outbox rows.
    Forget(Arc<str>, Vec<i64>),
    /// Since when the device that set the status has been gone too long,
    /// or `None`; not stored.
    DeviceOffline(Option<LocalTime>),
}

struct Shared {
    jobs: mpsc::Sender<Job>,
    snapshot: Arc<watch::Sender<Arc<Snapshot>>>,
    changes: broadcast::Sender<Changes>,
    clock: Clock,
    message_budget: Arc<Semaphore>,
    storing: Arc<Storing>,
    /// The live clients' message of the device's absence, as it changes.
    device_offline: watch::Receiver<Bytes>,
}

/// Whether events are being stored: the cause of the last failed write,
/// until the writer stores an event again.
#[derive(Debug, Default)]
struct Storing {
    failure: Mutex<Option<Arc<str>>>,
}

impl Storing {
    /// Writes fail for `why`; the cause before, if they were failing already.
    fn fail(&self, why: Arc<str>) -> Option<Arc<str>> {
        self.lock().replace(why)
    }

    /// An event was stored; whether writes were failing until now.
    fn recover(&self) -> bool {
        self.lock().take().is_some()
    }

    fn failure(&self) -> Option<Arc<str>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<str>>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle on the state; cheap to clone.
#[derive(Clone)]
pub struct State {
    shared: Arc<Shared>,
}

impl State {
    /// Loads the current state from `db` and starts the writer thread;
    /// each stored change gets an outbox row for each of `routes` that
    /// follows it, and each message and opening after `push.0` closed a
    /// push event, while somebody subscribes to its topic (`push.1`). With `show_names`, a status names its `named` member.
    pub fn start(
        mut db: Db,
        clock: Clock,
        jsonver: u32,
        show_names: bool,
        push: (std::time::Duration, Arc<crate::record::push::Subscribers>),
        metrics: Arc<Metrics>,
        routes: Vec<Route>,
    ) -> Result<State, StoreError> {
        let model = Model {
            show_names,
            ..Model::load(&db)?
        };
        let mut routes = Routes::load(&mut db, routes, &metrics)?;
        routes.push_quiet = push.0.as_secs() as i64;
        routes.subscribers = push.1;
        let device_user = db
            .user_by_name(DEVICE_USER)?
            .ok_or_else(|| StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))?;
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        let snapshot = Arc::new(watch::Sender::new(Arc::new(model.snapshot(jsonver))));
        let storing = Arc::new(Storing::default());
        let (device_offline, device_offline_rx) =
            watch::channel(snapshot::device_offline_json(None));
        let writer = Writer {
            db,
            model,
            snapshot: snapshot.clone(),
            changes: changes.clone(),
            device_user,
            stamper: writer::Stamper::new(clock),
            metrics,
            jsonver,
            routes,
            storing: storing.clone(),
            lost: 0,
            device_offline,
        };
        std::thread::Builder::new()
            .name("bitsd-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(StoreError::WriterThread)?;
        Ok(State {
            shared: Arc::new(Shared {
                jobs,
                snapshot,
                changes,
                clock,
                message_budget: Arc::new(Semaphore::new(MESSAGE_BUDGET)),
                storing,
                device_offline: device_offline_rx,
            }),
        })
    }

    /// Queues `event` without waiting for its commit; waits only while the
    /// queue (or the budget for message text) is full.
    pub async fn submit(&self, event: Event) -> Result<(), StoreError> {
        let budget = self.message_budget(&event).await?;
        self.shared
            .jobs
            .send(Job::Event(event, None, budget))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Applies `event` and waits until it is committed and broadcast.
    pub async fn apply(&self, event: Event) -> Result<Outcome, StoreError> {
        let budget = self.message_budget(&event).await?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .jobs
            .send(Job::Event(event, Some(tx), budget))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// For a message, its share of [`MESSAGE_BUDGET`], held until the writer
    /// is done with it.
    async fn message_budget(
        &self,
        event: &Event,
    ) -> Result<Option<OwnedSemaphorePermit>, StoreError> {
        let Event::Message { text, .. } = event else {
            return Ok(None);
        };
        let bytes = text.len().clamp(1, MESSAGE_BUDGET) as u32;
        let permit = self
            .shared
            .message_budget
            .clone()
            .acquire_many_owned(bytes)
            .await;
        permit.map(Some).map_err(|_| StoreError::Closed)
    }

    /// Says since when the device that set the status has been gone too
    /// long (`None`: it is not, or no device set it): in the snapshot, and
    /// to live clients.
    pub async fn set_device_offline(&self, since: Option<LocalTime>) -> Result<(), StoreError> {
        self.shared
            .jobs
            .send(Job::DeviceOffline(since))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// `{"device_offline_since": ...}` each time it changes: mark the
    /// current one seen before taking the snapshot, which includes it.
    pub fn device_offline(&self) -> watch::Receiver<Bytes> {
        self.shared.device_offline.clone()
    }

    /// Waits until every event queued before this call is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.jobs.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Removes outbox rows `ids` of `hook` (delivered or given up) in the
    /// writer's next batch, without waiting for it.
    pub async fn forget(&self, hook: Arc<str>, ids: Vec<i64>) -> Result<(), StoreError> {
        self.shared
            .jobs
            .send(Job::Forget(hook, ids))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// The current state.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.borrow().clone()
    }

    /// The version of the current snapshot, without taking it.
    pub fn version(&self) -> u64 {
        self.shared.snapshot.borrow().version
    }

    /// The snapshot, with a notification each time a new one is published.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.snapshot.subscribe()
    }

    /// Committed changes from now on, a commit at a time. Subscribe before
    /// taking the snapshot and skip changes with `seq <= snapshot.version`; a
    /// follower that falls further behind than the stream keeps is told it
    /// lagged and resynchronises from the snapshot.
    pub fn subscribe(&self) -> broadcast::Receiver<Changes> {
        self.shared.changes.subscribe()
    }

    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// Why events cannot be stored (SQLite's words: "database or disk is
    /// full"), from a failed write until an event is stored again.
    pub fn storage_failure(&self) -> Option<Arc<str>> {
        self.shared.storing.failure()
    }
}
