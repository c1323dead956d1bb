//! The places connections hold: one of `web_max_connections`, and one of
//! its client address's `web_max_connections_per_address`.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::App;
use crate::limits::{AddressHold, AddressKey};

/// One of the `web_max_connections` places and of its address's
/// `web_max_connections_per_address`, held for as long as the connection
/// (or the websocket or event stream it became) lives.
#[derive(Clone)]
pub struct ConnectionSlot {
    _permit: Arc<OwnedSemaphorePermit>,
    pub(super) hold: Option<Arc<AddressHold>>,
}

impl ConnectionSlot {
    pub fn new(permit: OwnedSemaphorePermit, hold: Option<AddressHold>) -> ConnectionSlot {
        ConnectionSlot {
            _permit: Arc::new(permit),
            hold: hold.map(Arc::new),
        }
    }
}

/// Counts a refused connection and says so (at a bounded rate).
pub fn refuse_crowded(app: &App, ip: IpAddr) {
    app.metrics.connections_refused.inc();
    if let Some(held) = app.quiet.connections.pass() {
        tracing::warn!(
            "web: refused a connection from {}: it holds {} (web_max_connections_per_address){held}",
            AddressKey::from(ip),
            app.config.options.web_max_connections_per_address
        );
    }
}
