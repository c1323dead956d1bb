//! Registered devices proving who they are (SPEC 18): a claim code traded
//! for a key, or a key, checked at most once a second per address whatever
//! the transport; what the registry remembers of their contacts; and the
//! watch that closes a device whose key ended, also when another process
//! (`bitsd device revoke`) ended it.

use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::link::{DeviceLink, Who};
use crate::clock::unix_seconds;
use crate::limits::{AddressKey, Rate, RateLimiter};
use crate::record::DeviceName;
use crate::report::Report;
use crate::store::{self, DeviceError, secret_hash};

/// Time between two checks of the connected devices' keys: a key revoked
/// by another process ends its connection within this (and a query).
pub const KEY_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Time between two notes that the connected devices are still there.
pub const STILL_CONNECTED_EVERY: Duration = Duration::from_secs(30);
/// Claim and key checks under way at once, from every address together:
/// each reads the registry, and strangers from many addresses must not
/// keep the database busy.
const CHECKS_AT_ONCE: usize = 4;
/// One claim, key or token check a second per address.
const CHECKS: Rate = Rate {
    burst: 1,
    every: Duration::from_secs(1),
};

/// How a device connection reaches bitsd, as the registry shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
    Tls,
    Websocket,
}

impl Transport {
    /// Where it comes in, as log lines begin: `control` (the control port,
    /// as before there were others), `control TLS`, `/device`.
    pub fn log_prefix(self) -> &'static str {
        match self {
            Transport::Tcp | Transport::Unix => "control",
            Transport::Tls => "control TLS",
            Transport::Websocket => "/device",
        }
    }

    /// Whether it is the control port's, where the original device and the
    /// control token are known.
    pub fn is_control_port(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Unix)
    }

    /// Its name in the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
            Transport::Tls => "tls",
            Transport::Websocket => "websocket",
        }
    }
}

/// Why a device was not let in.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    FirstLine(&'static str),
    #[error("a second token, claim or key check within a second from this address; not checked")]
    TooFast,
    #[error("{CHECKS_AT_ONCE} claim or key checks under way already; not checked")]
    Busy,
    #[error("claim refused: {0}")]
    Claim(DeviceError),
    #[error("wrong or revoked key")]
    Key,
    /// The words the original used for a wrong token, where a token is set.
    #[error("wrong auth token or device key")]
    TokenOrKey,
    #[error("the check could not be made: {0}")]
    Store(String),
}

impl Refused {
    /// Whether the device hears `error auth`: not when the check could not
    /// be made, so that a device does not give up a good key for it.
    pub fn is_an_answer(&self) -> bool {
        !matches!(self, Refused::Busy | Refused::Store(_))
    }
}

/// A registered device let in: who it is, and the key to tell it when it
/// has just claimed one.
pub struct Paired {
    pub who: Who,
    pub new_key: Option<String>,
}

/// Checks claims and keys against the registry, at a bounded rate.
pub struct Pairing {
    store: store::Handle,
    checks: RateLimiter<Option<AddressKey>>,
    under_way: Semaphore,
}

impl Pairing {
    pub fn new(store: store::Handle) -> Pairing {
        Pairing {
            store,
            checks: RateLimiter::default(),
            under_way: Semaphore::new(CHECKS_AT_ONCE),
        }
    }

    /// Takes the one check a second of `address` (across transports);
    /// false when it was taken already.
    pub fn may_check(&self, address: Option<AddressKey>) -> bool {
        self.checks.try_take(address, CHECKS).is_ok()
    }

    /// Trades the claim code `code` for a new key.
    pub async fn claim(&self, code: String) -> Result<Paired, Refused> {
        let _under_way = self.under_way.try_acquire().map_err(|_| Refused::Busy)?;
        let now = unix_seconds();
        let claimed = self
            .store
            .run(move |db| Ok(db.claim_device(&code, now)))
            .await
            .map_err(|e| Refused::Store(Report(&e).to_string()))?
            .map_err(|e| match e {
                DeviceError::Store(e) => Refused::Store(Report(&e).to_string()),
                e => Refused::Claim(e),
            })?;
        let who = Who::Registered {
            id: claimed.device.id,
            name: DeviceName::from(claimed.device.name.as_str()),
            key_hash: secret_hash(&claimed.key),
        };
        Ok(Paired {
            who,
            new_key: Some(claimed.key),
        })
    }

    /// The device whose key is `key`.
    pub async fn key(&self, key: String) -> Result<Paired, Refused> {
        let _under_way = self.under_way.try_acquire().map_err(|_| Refused::Busy)?;
        let key_hash = secret_hash(&key);
        let device = self
            .store
            .run(move |db| db.device_by_key(&key))
            .await
            .map_err(|e| Refused::Store(Report(&e).to_string()))?
            .ok_or(Refused::Key)?;
        let who = Who::Registered {
            id: device.id,
            name: DeviceName::from(device.name.as_str()),
            key_hash,
        };
        Ok(Paired { who, new_key: None })
    }

    /// Notes in the registry that device `id` connected from `address`.
    pub async fn connected(&self, id: i64, address: String, transport: Transport) {
        let now = unix_seconds();
        let noted = self
            .store
            .run(move |db| db.device_connected(id, now, &address, transport.as_str()))
            .await;
        if let Err(e) = noted {
            tracing::warn!("cannot note a device's connection: {}", Report(&e));
        }
    }

    /// Notes in the registry that device `id` disconnected.
    pub async fn disconnected(&self, id: i64) {
        let now = unix_seconds();
        let noted = self
            .store
            .run(move |db| db.device_disconnected(Some(id), now))
            .await;
        if let Err(e) = noted {
            tracing::warn!("cannot note a device's disconnection: {}", Report(&e));
        }
    }
}

/// Notes in the registry that no device is connected, before the device
/// ports open: what a bitsd that stopped left there is not true any more.
pub async fn forget_connections(store: &store::Handle) {
    let cleared = store
        .run(|db| db.device_disconnected(None, unix_seconds()))
        .await;
    if let Err(e) = cleared {
        tracing::warn!("cannot clear the devices' connections: {}", Report(&e));
    }
}

/// Until `shutdown`: every two seconds, and at once when the link
/// is asked to recheck, closes the connected devices whose key is no longer
/// valid; every half minute notes the connected ones as still there.
pub async fn watch_keys(link: DeviceLink, store: store::Handle, shutdown: CancellationToken) {
    let mut checks = tokio::time::interval(KEY_CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut notes = tokio::time::interval(STILL_CONNECTED_EVERY);
    notes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = checks.tick() => {}
            _ = link.recheck_asked() => {}
            _ = notes.tick() => {
                let ids = link.connected_ids();
                if !ids.is_empty() {
                    let now = unix_seconds();
                    if let Err(e) = store.run(move |db| db.devices_still_connected(&ids, now)).await {
                        tracing::warn!("cannot note the connected devices: {}", Report(&e));
                    }
                }
                continue;
            }
        }
        if link.connected_ids().is_empty() {
            continue;
        }
        // Connections attached from now on proved a key newer than the
        // list read next: only older ones are checked against it.
        let before = link.next_connection();
        let keys = match store.run(|db| db.device_keys()).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!("cannot check the devices' keys: {}", Report(&e));
                continue;
            }
        };
        for name in link.drop_unknown_keys(&keys, before) {
            tracing::info!("device {name}: its key was revoked, replaced or deleted; disconnected");
        }
    }
}
