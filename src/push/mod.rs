//! Web Push (SPEC 20): bitsd's VAPID key pair, and the subscriptions of
//! browsers that asked to be told when the room opens or a message comes.
//!
//! `subscription` checks what a browser sends before anything is stored;
//! the writer stores each event to push in its own transaction (`store`'s
//! `push`), and `deliver` sends them to every subscriber of their topic.

pub mod deliver;
pub mod subscription;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike as _, ES256KeyPair};

pub use subscription::{Subscription, Topic};

use crate::store::{Db, StoreError};

/// The setting holding the private key, base64url of its 32-byte scalar.
const KEY_SETTING: &str = "vapid_private_key";

/// Most subscriptions kept in all.
pub const MAX_SUBSCRIPTIONS: u64 = 10_000;

/// Web Push as the web, the delivery and the writer share it.
pub struct Push {
    pub vapid: Vapid,
    /// How many subscribe to each topic, for the writer.
    pub subscribers: Arc<crate::record::push::Subscribers>,
    /// Wakes the delivery when subscriptions change.
    changed: tokio::sync::Notify,
}

impl Push {
    pub fn new(vapid: Vapid) -> Push {
        Push {
            vapid,
            subscribers: Arc::default(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Tells the delivery that subscriptions were added or removed.
    pub fn subscriptions_changed(&self) {
        self.changed.notify_one();
    }

    /// Takes the number of subscribers of each topic, counted after a
    /// change: for the writer, and for `/metrics`.
    pub fn count(&self, counts: Vec<(Topic, u64)>, metrics: &crate::metrics::Metrics) {
        for (topic, n) in counts {
            metrics.push_subscriptions(topic.as_str()).set(n as i64);
            self.subscribers.set(topic, n);
        }
    }
}

/// bitsd's VAPID key pair (RFC 8292), made on first start and kept in the
/// database so subscriptions outlive restarts.
pub struct Vapid {
    pair: ES256KeyPair,
    /// The public key as `/push/key` gives it: base64url of the 65-byte
    /// uncompressed point.
    public: String,
}

impl Vapid {
    /// The key pair stored in `db`, made and stored first if there is none.
    pub fn load(db: &mut Db) -> Result<Vapid, StoreError> {
        let fresh = URL_SAFE_NO_PAD.encode(ES256KeyPair::generate().to_bytes());
        let stored = db.setting_or_insert(KEY_SETTING, &fresh)?;
        let pair = URL_SAFE_NO_PAD
            .decode(&stored)
            .ok()
            .and_then(|bytes| ES256KeyPair::from_bytes(&bytes).ok())
            .ok_or(StoreError::BadSetting(KEY_SETTING))?;
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().public_key().to_bytes_uncompressed());
        Ok(Vapid { pair, public })
    }

    /// The public key, base64url of the 65-byte uncompressed point.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    pub fn pair(&self) -> &ES256KeyPair {
        &self.pair
    }
}
