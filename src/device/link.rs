//! The handle on the connected device, if any.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Lines waiting to be written to the device before new ones are dropped.
const OUTBOX: usize = 64;

/// Sends lines to the current device; at most one is attached.
#[derive(Clone, Default)]
pub struct DeviceLink {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    current: Mutex<Option<Attached>>,
    next_id: AtomicU64,
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
        }
    }

    /// Whether a device is connected.
    pub fn is_connected(&self) -> bool {
        self.lock().is_some()
    }

    /// Queues `line` for the device; logs and drops it when there is no
    /// device or the device is not reading. Never waits.
    pub fn send(&self, line: String) {
        let current = self.lock();
        match current.as_ref() {
            None => tracing::info!("no device connected; not sent: {line}"),
            Some(a) => {
                if let Err(e) = a.outbox.try_send(line) {
                    let line = match e {
                        mpsc::error::TrySendError::Full(l)
                        | mpsc::error::TrySendError::Closed(l) => l,
                    };
                    tracing::warn!("device is not reading; not sent: {line}");
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Attached>> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}
