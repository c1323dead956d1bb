//! The current state: events in, committed changes out.
//!
//! Every input (device line, web form, automation) becomes an [`Event`] sent
//! to one writer thread. The writer groups whatever is queued into one
//! transaction, commits it, then updates the in-memory [`Snapshot`], then
//! broadcasts each change, serialised once. Readers never query the database
//! for the current state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::http::HeaderValue;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};

use crate::clock::{Clock, LocalTime};
use crate::device::{DeviceLink, protocol};
use crate::event::{
    Change, Message, MessageJson, ModifiedBy, StatusChange, StatusJson, StatusValue,
    TemperatureJson, TemperatureSample,
};
use crate::metrics::Metrics;
use crate::report::Report;
use crate::store::{DEVICE_USER, Db, StoreError, User};

/// Samples kept for `tempinthist`.
pub const HISTORY_SAMPLES: usize = 100;
/// Most events grouped into one transaction.
const MAX_BATCH: usize = 4096;
/// Events waiting for the writer before senders wait their turn.
const QUEUE: usize = 8192;
/// Bytes of message text waiting for (or in) the writer before senders wait
/// their turn: messages are long, so they are counted by size as well.
const MESSAGE_BUDGET: usize = 1 << 20;
/// Changes a live client may fall behind before it is resynchronised.
const BROADCAST_CAPACITY: usize = 1024;

/// Something that changes the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Open or close the room.
    Status { value: StatusValue, origin: Origin },
    /// A sample from a sensor of the device.
    Temperature { sensor: i64, value: f64 },
    /// A message from the device (`author` None) or from a member.
    Message { author: Option<User>, text: String },
    /// A member typed their number on the keypad on arriving.
    Enter(i64),
    /// A member typed their number on the keypad on leaving.
    Leave(i64),
    /// The names seen by the last MAC update.
    MacRoster(BTreeSet<String>),
}

/// Where a status change comes from, which decides its `modified_by` and
/// whether the device is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The device itself (`BITS`; it knows already).
    Device,
    /// A member on the admin page (`web`; the device is told).
    Web,
    /// Automatic status from the roster (`BITS`; the device is told).
    Automation,
}

impl Origin {
    fn modified_by(self) -> ModifiedBy {
        match self {
            Origin::Web => ModifiedBy::Web,
            Origin::Device | Origin::Automation => ModifiedBy::Bits,
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

/// A committed change as live clients receive it.
#[derive(Debug, Clone)]
pub struct Published {
    /// Position in the stream; the snapshot with `version >= seq` includes it.
    pub seq: u64,
    pub kind: &'static str,
    /// `{"status": {...}}` and the like, serialised once for every client.
    pub json: Bytes,
}

/// Who is in the room: by keypad and by MAC address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roster {
    pub keypad: BTreeMap<i64, String>,
    pub macs: BTreeSet<String>,
}

impl Roster {
    /// Distinct names, sorted.
    pub fn names(&self) -> BTreeSet<String> {
        self.keypad.values().chain(&self.macs).cloned().collect()
    }
}

/// The current state, as of change `version`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub status: Option<StatusChange>,
    /// Sequence number of the last status change (0 before any).
    pub status_version: u64,
    /// Newest sample of each sensor.
    pub sensors: BTreeMap<i64, TemperatureSample>,
    /// Up to [`HISTORY_SAMPLES`] samples, newest first.
    pub temperatures: VecDeque<TemperatureSample>,
    pub message: Option<Message>,
    pub roster: Roster,
    /// The `/data` body.
    pub data_json: Bytes,
    /// ETag of `/data`.
    pub data_etag: HeaderValue,
    /// ETag of `/status`.
    pub status_etag: HeaderValue,
    data_gzip: OnceLock<Bytes>,
    data_brotli: OnceLock<Bytes>,
}

impl Snapshot {
    pub fn is_open(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.value.is_open())
    }

    /// The `/status` body: `1` or `0`.
    pub fn status_digit(&self) -> &'static str {
        if self.is_open() { "1" } else { "0" }
    }

    /// The `/data` body compressed with gzip, computed on first use.
    pub fn data_gzip(&self) -> Bytes {
        self.data_gzip
            .get_or_init(|| {
                use std::io::Write as _;
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                let _ = encoder.write_all(&self.data_json);
                Bytes::from(encoder.finish().unwrap_or_default())
            })
            .clone()
    }

    /// The `/data` body compressed with brotli, computed on first use.
    pub fn data_brotli(&self) -> Bytes {
        self.data_brotli
            .get_or_init(|| {
                let mut out = Vec::with_capacity(self.data_json.len() / 4);
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 5,
                    ..Default::default()
                };
                let mut input = &self.data_json[..];
                let _ = brotli::BrotliCompress(&mut input, &mut out, &params);
                Bytes::from(out)
            })
            .clone()
    }
}

#[derive(Serialize)]
struct DataJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tempint: Option<TemperatureJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<MessageJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tempinthist: Vec<TemperatureJson>,
    version: u32,
}

/// The mutable state the writer owns.
#[derive(Debug, Clone, Default)]
struct Model {
    seq: u64,
    status: Option<StatusChange>,
    status_seq: u64,
    sensors: BTreeMap<i64, TemperatureSample>,
    temperatures: VecDeque<TemperatureSample>,
    message: Option<Message>,
    roster: Roster,
}

impl Model {
    fn snapshot(&self, jsonver: u32, boot: &str) -> Snapshot {
        let data = DataJson {
            status: self.status.as_ref().map(StatusJson::from),
            tempint: self.temperatures.front().map(TemperatureJson::from),
            message: self.message.as_ref().map(MessageJson::from),
            tempinthist: self
                .temperatures
                .iter()
                .map(TemperatureJson::from)
                .collect(),
            version: jsonver,
        };
        Snapshot {
            version: self.seq,
            status: self.status.clone(),
            status_version: self.status_seq,
            sensors: self.sensors.clone(),
            temperatures: self.temperatures.clone(),
            message: self.message.clone(),
            roster: self.roster.clone(),
            data_json: Bytes::from(serde_json::to_vec(&data).expect("snapshot serialises")),
            data_etag: etag(boot, "", self.seq),
            status_etag: etag(boot, "s", self.status_seq),
            data_gzip: OnceLock::new(),
            data_brotli: OnceLock::new(),
        }
    }

    fn apply(&mut self, change: &Change) {
        self.seq += 1;
        match change {
            Change::Status(s) => {
                self.status = Some(s.clone());
                self.status_seq = self.seq;
            }
            Change::Temperature(t) => {
                self.sensors.insert(t.sensor, t.clone());
                self.temperatures.push_front(t.clone());
                self.temperatures.truncate(HISTORY_SAMPLES);
            }
            Change::Message(m) => self.message = Some(m.clone()),
        }
    }
}

/// `"<boot>-<kind><version>"`: unique across restarts.
fn etag(boot: &str, kind: &str, version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{boot}-{kind}{version}\""))
        .expect("hex digits and a number make a header value")
}

enum Job {
    Event(
        Event,
        Option<oneshot::Sender<Result<Outcome, StoreError>>>,
        Option<OwnedSemaphorePermit>,
    ),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    jobs: mpsc::Sender<Job>,
    snapshot: tokio::sync::watch::Sender<Arc<Snapshot>>,
    changes: broadcast::Sender<Published>,
    device: DeviceLink,
    clock: Clock,
    message_budget: Arc<Semaphore>,
}

/// Handle on the state; cheap to clone.
#[derive(Clone)]
pub struct State {
    shared: Arc<Shared>,
}

impl State {
    /// Loads the current state from `db` and starts the writer thread.
    pub fn start(
        db: Db,
        clock: Clock,
        jsonver: u32,
        device: DeviceLink,
        metrics: Arc<Metrics>,
    ) -> Result<State, StoreError> {
        let latest = db.latest(HISTORY_SAMPLES)?;
        let device_user = db
            .user_by_name(DEVICE_USER)?
            .ok_or_else(|| StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))?;
        let model = Model {
            seq: 0,
            status: latest.status,
            status_seq: 0,
            sensors: latest
                .per_sensor
                .into_iter()
                .map(|t| (t.sensor, t))
                .collect(),
            temperatures: latest.temperatures.into(),
            message: latest.message,
            roster: Roster::default(),
        };
        // Distinguishes ETags of this run from those of an earlier one.
        let boot = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            jobs,
            snapshot: tokio::sync::watch::Sender::new(Arc::new(model.snapshot(jsonver, &boot))),
            changes,
            device,
            clock,
            message_budget: Arc::new(Semaphore::new(MESSAGE_BUDGET)),
        });
        let writer = Writer {
            db,
            rx,
            model,
            shared: Arc::downgrade(&shared),
            changes: shared.changes.clone(),
            device: shared.device.clone(),
            device_user,
            stamper: Stamper { clock, last: None },
            metrics,
            jsonver,
            boot,
        };
        std::thread::Builder::new()
            .name("bitsd-writer".into())
            .spawn(move || writer.run())
            .map_err(StoreError::WriterThread)?;
        Ok(State { shared })
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

    /// Waits until every event queued before this call is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.jobs.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The current state.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.borrow().clone()
    }

    /// The snapshot, with a notification each time a new one is published.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.shared.snapshot.subscribe()
    }

    /// Committed changes from now on. Subscribe before taking the snapshot
    /// and skip changes with `seq <= snapshot.version`.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.shared.changes.subscribe()
    }

    pub fn device(&self) -> &DeviceLink {
        &self.shared.device
    }

    pub fn clock(&self) -> Clock {
        self.shared.clock
    }
}

/// The single writer: owns the connection and the model.
struct Writer {
    db: Db,
    rx: mpsc::Receiver<Job>,
    model: Model,
    shared: std::sync::Weak<Shared>,
    changes: broadcast::Sender<Published>,
    device: DeviceLink,
    device_user: User,
    stamper: Stamper,
    metrics: Arc<Metrics>,
    jsonver: u32,
    boot: String,
}

/// An event that passed validation in a batch, with what it produced.
struct Pending {
    change: Option<Change>,
    to_device: Option<String>,
    reply: Option<oneshot::Sender<Result<Outcome, StoreError>>>,
    outcome: Outcome,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.process(jobs);
        }
        tracing::debug!("writer stopped");
    }

    fn process(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        let mut flushes = Vec::new();
        let mut pending = Vec::with_capacity(jobs.len());
        // Message budget comes back when the batch is done, not before.
        let mut budgets = Vec::new();
        // Work on a copy so a failed commit leaves the model as it was.
        let mut model = self.model.clone();
        let committed = (|| -> Result<(), StoreError> {
            let batch = self.db.batch()?;
            for job in jobs {
                match job {
                    Job::Flush(tx) => flushes.push(tx),
                    Job::Event(event, reply, budget) => {
                        budgets.extend(budget);
                        let p = prepare(
                            &batch,
                            &mut model,
                            &mut self.stamper,
                            &self.device_user,
                            event,
                            reply,
                        );
                        pending.push(p);
                    }
                }
            }
            batch.commit()
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
            return;
        }
        let stored = pending.iter().filter(|p| p.change.is_some()).count();
        if stored > 0 {
            let elapsed = started.elapsed();
            self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
            tracing::debug!("committed {stored} changes in {elapsed:?}");
        }
        let first_seq = self.model.seq;
        self.model = model;
        if let Some(shared) = self.shared.upgrade() {
            let snapshot = Arc::new(self.model.snapshot(self.jsonver, &self.boot));
            shared.snapshot.send_replace(snapshot);
        }
        let mut seq = first_seq;
        for p in pending {
            if let Some(change) = &p.change {
                seq += 1;
                self.metrics.event(change.kind());
                // No receivers is fine: nobody is listening.
                let _ = self.changes.send(Published {
                    seq,
                    kind: change.kind(),
                    json: Bytes::from(change.to_json()),
                });
            }
            if let Some(line) = p.to_device {
                self.device.send(line);
            }
            if let Some(reply) = p.reply {
                let _ = reply.send(Ok(p.outcome));
            }
        }
        for tx in flushes {
            let _ = tx.send(());
        }
    }
}

/// Validates `event` against the model, writes it into the batch and
/// applies it to `model`.
fn prepare(
    batch: &crate::store::Batch<'_>,
    model: &mut Model,
    stamper: &mut Stamper,
    device_user: &User,
    event: Event,
    reply: Option<oneshot::Sender<Result<Outcome, StoreError>>>,
) -> Pending {
    let mut p = Pending {
        change: None,
        to_device: None,
        reply,
        outcome: Outcome::Applied,
    };
    let result = match event {
        Event::Status { value, origin } => {
            let current = model.status.as_ref().map(|s| s.value.is_open());
            if current == Some(value.is_open()) {
                p.outcome = Outcome::Ignored("the status is already that");
                return p;
            }
            let change = StatusChange {
                timestamp: stamper.next(),
                value,
                modified_by: origin.modified_by(),
            };
            if origin != Origin::Device {
                p.to_device = Some(protocol::status_line(value.is_open()));
            }
            batch
                .insert_status(&change)
                .map(|()| Change::Status(change))
        }
        Event::Temperature { sensor, value } => {
            let sample = TemperatureSample {
                timestamp: stamper.next(),
                sensor,
                value,
                modified_by: ModifiedBy::Bits,
            };
            batch
                .insert_temperature(&sample)
                .map(|()| Change::Temperature(sample))
        }
        Event::Message { author, text } => {
            let timestamp = stamper.next();
            let from_member = author.is_some();
            let user = author.unwrap_or_else(|| device_user.clone());
            if from_member {
                p.to_device = Some(protocol::message_line(&text));
            }
            batch.insert_message(user.id, timestamp, &text).map(|()| {
                Change::Message(Message {
                    timestamp,
                    user: user.name,
                    text,
                })
            })
        }
        Event::Enter(id) => {
            match batch.user_by_id(id) {
                Ok(Some(user)) => {
                    tracing::info!("{} entered (keypad)", crate::limits::Shown(&user.name));
                    model.roster.keypad.insert(id, user.name);
                }
                Ok(None) => {
                    tracing::warn!("keypad: no user with id {id}; enter ignored");
                    p.outcome = Outcome::Ignored("no such user");
                }
                Err(e) => {
                    tracing::error!("keypad: looking up user {id}: {}", Report(&e));
                    p.outcome = Outcome::Ignored("lookup failed");
                }
            }
            return p;
        }
        Event::Leave(id) => {
            match model.roster.keypad.remove(&id) {
                Some(name) => {
                    tracing::info!("{} left (keypad)", crate::limits::Shown(&name));
                }
                None => {
                    tracing::warn!("keypad: user {id} left without entering; ignored");
                    p.outcome = Outcome::Ignored("not in the room");
                }
            }
            return p;
        }
        Event::MacRoster(names) => {
            model.roster.macs = names;
            return p;
        }
    };
    match result {
        Ok(change) => {
            model.apply(&change);
            p.change = Some(change);
        }
        Err(e) => {
            tracing::error!("event not stored: {}", Report(&e));
            p.to_device = None;
            p.outcome = Outcome::Ignored("not stored");
        }
    }
    p
}

/// Hands out event timestamps.
struct Stamper {
    clock: Clock,
    last: Option<LocalTime>,
}

impl Stamper {
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
