//! The handle on the connected device, if any, and the follower that tells
//! it of the changes it did not make.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::protocol;
use crate::escape::Shown;
use crate::limits::QuietLog;
use crate::metrics::Metrics;
use crate::record::Change;
use crate::state::{Origin, Published, Snapshot, State};

/// Lines waiting to be written to the device before new ones are dropped.
const OUTBOX: usize = 64;

/// Sends lines to the current device; at most one is attached.
#[derive(Clone)]
pub struct DeviceLink {
    inner: Arc<Inner>,
}

struct Inner {
    current: Mutex<Option<Attached>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    /// Lines not sent (no device, or one not reading) are logged at a
    /// bounded rate: members' messages and a flood must not fill the log.
    unsent: QuietLog,
}

struct Attached {
    id: u64,
    outbox: mpsc::Sender<String>,
    cancel: CancellationToken,
}

/// What a newly attached connection holds.
pub struct Attachment {
    pub id: u64,
    /// Lines to write to the device.
    pub outbox: mpsc::Receiver<String>,
    /// Cancelled when another device replaces this one, or on shutdown.
    pub cancel: CancellationToken,
}

impl DeviceLink {
    /// A link with no device attached; `metrics` shows whether one is.
    pub fn new(metrics: Arc<Metrics>) -> DeviceLink {
        metrics.device_connected.set(0);
        DeviceLink {
            inner: Arc::new(Inner {
                current: Mutex::new(None),
                next_id: AtomicU64::new(0),
                metrics,
                unsent: QuietLog::default(),
            }),
        }
    }

    /// Makes a new connection the device, closing the previous one.
    pub fn attach(&self, shutdown: &CancellationToken) -> Attachment {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOX);
        let cancel = shutdown.child_token();
        let previous = self.lock().replace(Attached {
            id,
            outbox: tx,
            cancel: cancel.clone(),
        });
        self.inner.metrics.device_connected.set(1);
        if let Some(previous) = previous {
            tracing::info!("a new device connected; closing the previous one");
            previous.cancel.cancel();
        }
        Attachment {
            id,
            outbox: rx,
            cancel,
        }
    }

    /// Forgets connection `id` if it is still the current one.
    pub fn detach(&self, id: u64) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|a| a.id == id) {
            *current = None;
            self.inner.metrics.device_connected.set(0);
        }
    }

    /// Queues `line` for the device; logs (its start, at a bounded rate)
    /// and drops it when there is no device or the device is not reading.
    /// Never waits.
    pub fn send(&self, line: String) {
        let unsent = match self.lock().as_ref() {
            None => Some((false, line)),
            Some(a) => match a.outbox.try_send(line) {
                Ok(()) => None,
                Err(
                    mpsc::error::TrySendError::Full(line) | mpsc::error::TrySendError::Closed(line),
                ) => Some((true, line)),
            },
        };
        let Some((attached, line)) = unsent else {
            return;
        };
        let Some(held) = self.inner.unsent.pass() else {
            return;
        };
        let line = Shown(&line);
        if attached {
            tracing::warn!("device is not reading; not sent: {line}{held}");
        } else {
            tracing::info!("no device connected; not sent: {line}{held}");
        }
    }

    /// The names of the registered devices connected now, sorted.
    pub fn connected(&self) -> Vec<String> {
        Vec::new()
    }

    /// Asks the device port to check at once, rather than at its next
    /// round, that every connected device's key is still valid: after a
    /// revoke or a delete in this process.
    pub fn recheck(&self) {}

    /// The metrics the device port counts in.
    pub(super) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Attached>> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tells the device of every committed change it did not make, in order,
/// until `shutdown`: the device link follows the state like any follower.
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
                            link.send(line);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let snapshot = state.snapshot();
                    // Expected in a flood from the device: not worth a warning.
                    tracing::debug!(
                        "device link fell {missed} commits behind; sending the current state"
                    );
                    for line in lines_after_lag(&snapshot, seen) {
                        link.send(line);
                    }
                    seen = snapshot.version;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The line that tells the device of `published`, when it needs telling: a
/// status or message from anyone but the device itself.
fn line_for(published: &Published) -> Option<String> {
    if published.origin == Origin::Device {
        return None;
    }
    match &*published.change {
        Change::Status(s) => Some(protocol::status_line(s.value.is_open())),
        Change::Message(m) => Some(protocol::message_line(&m.text)),
        Change::Temperature(_) => None,
    }
}

/// What the device must hear after changes newer than `seen` were missed:
/// the current status and message, when they changed since and did not come
/// from the device.
fn lines_after_lag(snapshot: &Snapshot, seen: u64) -> Vec<String> {
    let not_device = |origin: Option<Origin>| origin.is_some_and(|o| o != Origin::Device);
    let mut lines = Vec::new();
    if snapshot.status_version > seen && not_device(snapshot.status_origin) {
        lines.push(protocol::status_line(snapshot.is_open()));
    }
    if let Some(message) = &snapshot.message
        && snapshot.message_version > seen
        && not_device(snapshot.message_origin)
    {
        lines.push(protocol::message_line(&message.text));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::clock::LocalTime;
    use crate::record::{Message, ModifiedBy, StatusChange, StatusValue, TemperatureSample};
    use crate::state::Event;
    use crate::store::Db;

    fn at() -> LocalTime {
        LocalTime::parse("2026-11-30 10:00:00").unwrap()
    }

    fn status(open: bool) -> Change {
        Change::Status(StatusChange {
            timestamp: at(),
            value: if open {
                StatusValue::Open
            } else {
                StatusValue::Closed
            },
            modified_by: ModifiedBy::Bits,
        })
    }

    fn message(text: &str) -> Change {
        Change::Message(Message {
            timestamp: at(),
            user: "ada".into(),
            text: text.into(),
        })
    }

    fn published(change: Change, origin: Origin) -> Published {
        Published {
            seq: 1,
            change: Arc::new(change),
            origin,
            row: 0,
            json: bytes::Bytes::new(),
        }
    }

    #[test]
    fn the_device_hears_what_others_changed() {
        let sample = Change::Temperature(TemperatureSample {
            timestamp: at(),
            sensor: 0,
            value: 20.0,
            modified_by: ModifiedBy::Bits,
        });
        let cases = [
            (status(true), Origin::Web, Some("status 1".to_string())),
            (
                status(false),
                Origin::Automation,
                Some("status 0".to_string()),
            ),
            (status(true), Origin::Device, None),
            (
                message("ciao"),
                Origin::Web,
                Some(protocol::message_line("ciao")),
            ),
            (message("ciao"), Origin::Device, None),
            (sample, Origin::Device, None),
        ];
        for (change, origin, line) in cases {
            assert_eq!(
                line_for(&published(change.clone(), origin)),
                line,
                "{change:?} {origin:?}"
            );
        }
    }

    fn snapshot(
        status_at: u64,
        status_from: Origin,
        message_at: u64,
        message_from: Origin,
    ) -> Snapshot {
        let Change::Status(status) = status(true) else {
            unreachable!()
        };
        let Change::Message(message) = message("hello") else {
            unreachable!()
        };
        Snapshot {
            version: status_at.max(message_at),
            status: Some(status),
            status_version: status_at,
            status_origin: Some(status_from),
            sensors: Default::default(),
            temperatures: Default::default(),
            message: Some(message),
            message_version: message_at,
            message_origin: Some(message_from),
            roster: Default::default(),
            temperature_row: 0,
            data_json: bytes::Bytes::new(),
        }
    }

    #[test]
    fn after_a_lag_the_device_hears_the_current_state_it_missed() {
        let hello = protocol::message_line("hello");
        let cases = [
            // Both changed while the follower lagged, by members.
            (
                snapshot(7, Origin::Web, 9, Origin::Web),
                5,
                vec!["status 1".to_string(), hello.clone()],
            ),
            // Only the message is newer than what was seen.
            (snapshot(3, Origin::Web, 9, Origin::Web), 5, vec![hello]),
            // The device made both itself.
            (snapshot(7, Origin::Device, 9, Origin::Device), 5, vec![]),
            // Nothing newer.
            (snapshot(3, Origin::Web, 4, Origin::Web), 5, vec![]),
        ];
        for (snapshot, seen, lines) in cases {
            assert_eq!(lines_after_lag(&snapshot, seen), lines);
        }
    }

    /// The log lines written meanwhile, through a subscriber of its own.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lines_not_sent_are_logged_short_and_rarely() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let link = DeviceLink::new(Arc::new(Metrics::new()));
        // A member's longest message: a line of about 2.7 KB.
        let long = protocol::message_line(&"ciao ".repeat(400));
        assert!(long.len() > 2600);
        for _ in 0..100 {
            link.send(long.clone());
        }
        let lines = log.lines();
        assert_eq!(lines.len(), 10, "ten in a row, then quiet: {lines:?}");
        for line in &lines {
            assert!(line.contains("no device connected; not sent: \"message "));
            assert!(line.ends_with("…\""), "{line}");
            assert!(line.len() < 200, "{} bytes: {line}", line.len());
        }
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        link.send(long.clone());
        let lines = log.lines();
        assert_eq!(lines.len(), 11);
        assert!(
            lines[10].ends_with("…\" (90 more like this not logged)"),
            "{}",
            lines[10]
        );
        // A device that does not read: the same bounds.
        let shutdown = CancellationToken::new();
        let _device = link.attach(&shutdown);
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        for _ in 0..OUTBOX + 1 {
            link.send(long.clone());
        }
        let lines = log.lines();
        let stuck = lines.last().unwrap();
        assert!(
            stuck.contains("device is not reading; not sent: \"message "),
            "{lines:?}"
        );
        assert!(stuck.len() < 200, "{} bytes: {stuck}", stuck.len());
    }

    #[tokio::test]
    async fn the_attached_device_hears_what_others_did_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("bitsd.db"), false).unwrap();
        let ada = db.add_user("ada", "hash").unwrap();
        let metrics = Arc::new(Metrics::new());
        let state = State::start(
            db,
            Clock::new(chrono_tz::UTC),
            3,
            metrics.clone(),
            Vec::new(),
        )
        .unwrap();
        let link = DeviceLink::new(metrics);
        let shutdown = CancellationToken::new();
        let following = tokio::spawn(follow(link.clone(), state.clone(), shutdown.clone()));
        let mut device = link.attach(&shutdown);
        let events = [
            Event::Status {
                value: StatusValue::Open,
                origin: Origin::Device,
            },
            Event::Status {
                value: StatusValue::Closed,
                origin: Origin::Web,
            },
            Event::Temperature {
                sensor: 0,
                value: 20.5,
            },
            Event::Message {
                author: None,
                text: "from the device".into(),
                origin: Origin::Device,
            },
            Event::Status {
                value: StatusValue::Open,
                origin: Origin::Automation,
            },
            Event::Message {
                author: Some(ada),
                text: "end".into(),
                origin: Origin::Web,
            },
        ];
        for event in events {
            state.apply(event).await.unwrap();
        }
        for expected in [
            "status 0".to_string(),
            "status 1".to_string(),
            protocol::message_line("end"),
        ] {
            assert_eq!(device.outbox.recv().await, Some(expected));
        }
        shutdown.cancel();
        following.await.unwrap();
    }
}
