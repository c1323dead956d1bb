//! The handles on the connected devices (the original one and each
//! registered one, all at once), and the follower that tells them of the
//! changes they did not make. Its tests are in `tests`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::protocol;
use crate::escape::Shown;
use crate::limits::QuietLog;
use crate::metrics::Metrics;
use crate::record::{Change, DeviceName};
use crate::state::{Origin, Published, Snapshot, State};
use crate::store::DEVICE_USER;

/// Lines waiting to be written to a device before new ones are dropped.
const OUTBOX: usize = 64;

/// Which device a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The original device (`BITS`): not registered, at most one.
    Original,
    /// A registered device, with the hash of the key it proved itself with.
    Registered {
        id: i64,
        name: DeviceName,
        key_hash: String,
    },
}

impl Who {
    /// The device's name: `BITS` for the original one.
    pub fn name(&self) -> &str {
        match self {
            Who::Original => DEVICE_USER,
            Who::Registered { name, .. } => name,
        }
    }

    /// Where its lines come from, for the state.
    pub fn origin(&self) -> Origin {
        match self {
            Who::Original => Origin::ORIGINAL_DEVICE,
            Who::Registered { name, .. } => Origin::Device(Some(name.clone())),
        }
    }

    /// Its id in the registry, when it is registered.
    pub fn registered_id(&self) -> Option<i64> {
        match self {
            Who::Original => None,
            Who::Registered { id, .. } => Some(*id),
        }
    }

    /// What tells one device's connections from another's.
    fn slot(&self) -> Slot {
        match self {
            Who::Original => Slot::Original,
            Who::Registered { id, .. } => Slot::Registered(*id),
        }
    }
}

/// Where a connection stands among the attached ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    /// The original device's connection.
    Original,
    /// A connection on a control port without a token that has not said
    /// yet whether it is the original device: it hears what the devices
    /// hear, but replaces no one until [`DeviceLink::confirm`].
    Candidate(u64),
    Registered(i64),
}

/// Sends lines to the connected devices: at most one connection per device.
#[derive(Clone)]
pub struct DeviceLink {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection of each device connected, by where it stands.
    attached: Mutex<HashMap<Slot, Attached>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    /// Lines not sent (no device, or one not reading) are logged at a
    /// bounded rate: members' messages and a flood must not fill the log.
    unsent: QuietLog,
    /// Woken to check the connected devices' keys at once.
    recheck: Notify,
    /// The names of the devices connected, as they change.
    names: watch::Sender<BTreeSet<String>>,
}

struct Attached {
    id: u64,
    who: Who,
    outbox: mpsc::Sender<String>,
    cancel: CancellationToken,
}

/// What a newly attached connection holds.
pub struct Attachment {
    pub id: u64,
    /// Lines to write to the device.
    pub outbox: mpsc::Receiver<String>,
    /// Cancelled when another connection of the same device replaces this
    /// one, when its key ends, or on shutdown.
    pub cancel: CancellationToken,
    /// Its lines by result: `accepted`, `skipped`.
    pub accepted: Counter,
    pub skipped: Counter,
}

impl DeviceLink {
    /// A link with no device attached; `metrics` shows which are.
    pub fn new(metrics: Arc<Metrics>) -> DeviceLink {
        metrics.device_connected(DEVICE_USER).set(0);
        DeviceLink {
            inner: Arc::new(Inner {
                attached: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                metrics,
                unsent: QuietLog::default(),
                recheck: Notify::new(),
                names: watch::Sender::new(BTreeSet::new()),
            }),
        }
    }

    /// Makes a new connection the device `who`, closing that device's
    /// previous one.
    pub fn attach(&self, who: Who, shutdown: &CancellationToken) -> Attachment {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = who.slot();
        self.attach_at(slot, id, who, shutdown)
    }

    /// Attaches a connection that may be the original device, or may yet
    /// prove to be a registered one: it replaces the original device's
    /// connection only when [`DeviceLink::confirm`]ed.
    pub fn attach_candidate(&self, shutdown: &CancellationToken) -> Attachment {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.attach_at(Slot::Candidate(id), id, Who::Original, shutdown)
    }

    /// Makes candidate connection `id` the original device, closing the
    /// one before it; a candidate older than the original device's
    /// connection is closed instead (the newest connection wins).
    pub fn confirm(&self, id: u64) {
        let mut attached = self.lock();
        let Some(candidate) = attached.remove(&Slot::Candidate(id)) else {
            return;
        };
        if let Some(current) = attached.get(&Slot::Original)
            && current.id > id
        {
            tracing::info!("device BITS: an older connection; closing it");
            candidate.cancel.cancel();
            return;
        }
        let previous = attached.insert(Slot::Original, candidate);
        self.tell_names(&attached);
        if let Some(previous) = previous {
            tracing::info!("device BITS: a new connection; closing the previous one");
            previous.cancel.cancel();
        }
    }

    /// The id the next connection attached will have: those attached
    /// before have smaller ones.
    pub(super) fn next_connection(&self) -> u64 {
        self.inner.next_id.load(Ordering::Relaxed)
    }

    fn attach_at(&self, slot: Slot, id: u64, who: Who, shutdown: &CancellationToken) -> Attachment {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let cancel = shutdown.child_token();
        let metrics = &self.inner.metrics;
        let connected = metrics.device_connected(who.name());
        let accepted = metrics.device_lines(who.name(), "accepted");
        let skipped = metrics.device_lines(who.name(), "skipped");
        let name = who.name().to_string();
        let attached = Attached {
            id,
            who,
            outbox: tx,
            cancel: cancel.clone(),
        };
        let mut all = self.lock();
        connected.set(1);
        let previous = all.insert(slot, attached);
        self.tell_names(&all);
        drop(all);
        if let Some(previous) = previous {
            tracing::info!(
                "device {}: a new connection; closing the previous one",
                Shown(&name)
            );
            previous.cancel.cancel();
        }
        Attachment {
            id,
            outbox: rx,
            cancel,
            accepted,
            skipped,
        }
    }

    /// Forgets connection `id` of device `who` if it is still that
    /// device's current one.
    pub fn detach(&self, who: &Who, id: u64) {
        let mut attached = self.lock();
        attached.remove(&Slot::Candidate(id));
        let slot = who.slot();
        if attached.get(&slot).is_some_and(|a| a.id == id) {
            attached.remove(&slot);
        }
        let still = attached.values().any(|a| a.who.name() == who.name());
        if !still {
            self.inner.metrics.device_connected(who.name()).set(0);
        }
        self.tell_names(&attached);
    }

    /// The names of the devices connected (`BITS` for the original one,
    /// once confirmed), with a notification each time they change.
    pub fn names(&self) -> watch::Receiver<BTreeSet<String>> {
        self.inner.names.subscribe()
    }

    fn tell_names(&self, attached: &HashMap<Slot, Attached>) {
        // A candidate is not yet known to be the original device.
        let names: BTreeSet<String> = attached
            .iter()
            .filter(|(slot, _)| !matches!(slot, Slot::Candidate(_)))
            .map(|(_, a)| a.who.name().to_string())
            .collect();
        self.inner.names.send_if_modified(|before| {
            let changed = *before != names;
            *before = names;
            changed
        });
    }

    /// Queues `line` for every connected device; logs (its start, at a
    /// bounded rate) and drops it for a device that is not reading, or when
    /// there is none. Never waits.
    pub fn send(&self, line: String) {
        self.send_except(line, None);
    }

    /// Queues `line` for every connected device but the one `except` names
    /// (the device a change came from).
    fn send_except(&self, line: String, except: Option<&Origin>) {
        let mut not_reading = Vec::new();
        let mut sent_to = 0;
        for attached in self.lock().values() {
            if except.is_some_and(|origin| *origin == attached.who.origin()) {
                continue;
            }
            sent_to += 1;
            if attached.outbox.try_send(line.clone()).is_err() {
                not_reading.push(attached.who.name().to_string());
            }
        }
        if sent_to > 0 && not_reading.is_empty() {
            return;
        }
        let Some(held) = self.inner.unsent.pass() else {
            return;
        };
        let line = Shown(&line);
        if sent_to == 0 {
            if except.is_none() {
                tracing::info!("no device connected; not sent: {line}{held}");
            }
        } else {
            let names = not_reading.join(", ");
            tracing::warn!("device {names} is not reading; not sent: {line}{held}");
        }
    }

    /// The names of the registered devices connected now, sorted.
    pub fn registered_connected(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .values()
            .filter(|a| a.who != Who::Original)
            .map(|a| a.who.name().to_string())
            .collect();
        names.sort_unstable();
        names
    }

    /// The registered ids connected now.
    pub(super) fn connected_ids(&self) -> Vec<i64> {
        let attached = self.lock();
        let ids = attached.keys().filter_map(|slot| match slot {
            Slot::Registered(id) => Some(*id),
            Slot::Original | Slot::Candidate(_) => None,
        });
        ids.collect()
    }

    /// Closes the connection of every registered device attached before
    /// connection `before` whose key is no longer among `keys` (id, key
    /// hash): revoked, deleted, or claimed anew. Returns their names.
    pub(super) fn drop_unknown_keys(&self, keys: &[(i64, String)], before: u64) -> Vec<String> {
        let mut gone = Vec::new();
        let mut attached = self.lock();
        attached.retain(|_, a| {
            let Who::Registered { id, key_hash, .. } = &a.who else {
                return true;
            };
            if a.id >= before {
                return true;
            }
            let valid = keys.iter().any(|(i, h)| i == id && h == key_hash);
            if !valid {
                a.cancel.cancel();
                self.inner.metrics.device_connected(a.who.name()).set(0);
                gone.push(a.who.name().to_string());
            }
            valid
        });
        gone
    }

    /// Asks the device port to check at once, rather than at its next
    /// round, that every connected device's key is still valid: after a
    /// revoke or a delete in this process.
    pub fn recheck(&self) {
        self.inner.recheck.notify_one();
    }

    /// Resolves at the next [`DeviceLink::recheck`].
    pub(super) async fn recheck_asked(&self) {
        self.inner.recheck.notified().await
    }

    /// The metrics the device port counts in.
    pub(super) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Attached>> {
        self.inner
            .attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// Tells the devices of every committed change, in order, until
/// `shutdown`, each device of those it did not make: the device link
/// follows the state like any follower.
/// It subscribes when called, so call it before anything can change the
/// state.
pub fn follow(
    link: DeviceLink,
    state: State,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let mut changes = state.subscribe();
    let mut seen = state.snapshot().version;
    async move {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = changes.recv() => next,
            };
            match next {
                Ok(commit) => {
                    let after = seen;
                    for published in commit.iter().filter(|p| p.seq > after) {
                        seen = published.seq;
                        if let Some(line) = line_for(published) {
                            link.send_except(line, device_of(&published.origin));
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let snapshot = state.snapshot();
                    // Expected in a flood from the device: not worth a warning.
                    tracing::debug!(
                        "device link fell {missed} commits behind; sending the current state"
                    );
                    for (line, origin) in lines_after_lag(&snapshot, seen) {
                        link.send_except(line, device_of(origin));
                    }
                    seen = snapshot.version;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The line that tells the devices of `published`, when they need telling:
/// a status or a message (not sent back to the device it came from).
fn line_for(published: &Published) -> Option<String> {
    match &*published.change {
        Change::Status(s) => Some(protocol::status_line(s.value.is_open())),
        Change::Message(m) => Some(protocol::message_line(&m.text)),
        Change::Until(_) | Change::Temperature(_) | Change::Sensor(_) => None,
    }
}

/// `origin` when it is a device, which is not told of its own change.
fn device_of(origin: &Origin) -> Option<&Origin> {
    matches!(origin, Origin::Device(_)).then_some(origin)
}

/// What the devices must hear after changes newer than `seen` were missed:
/// the current status and message when they changed since, each with where
/// it came from.
fn lines_after_lag(snapshot: &Snapshot, seen: u64) -> Vec<(String, &Origin)> {
    let mut lines = Vec::new();
    if let Some(origin) = &snapshot.status_origin
        && snapshot.status_version > seen
    {
        lines.push((protocol::status_line(snapshot.is_open()), origin));
    }
    if let Some(message) = &snapshot.message
        && let Some(origin) = &snapshot.message_origin
        && snapshot.message_version > seen
    {
        lines.push((protocol::message_line(&message.text), origin));
    }
    lines
}

#[cfg(test)]
mod tests;
