//! The places connections hold: one of `web_max_connections`, and one of
//! its client address's `web_max_connections_per_address`; a websocket or an
//! event stream also one of `web_max_streams`.

use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::App;
use crate::config::Options;
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

/// The `web_max_streams` places of long-lived connections (websockets,
/// event streams), fewer than the connections, so streams never take the
/// places that requests need.
pub struct Streams {
    places: Arc<Semaphore>,
    max: usize,
    open: Gauge,
}

impl Streams {
    pub fn new(max: usize, open: Gauge) -> Streams {
        Streams {
            places: Arc::new(Semaphore::new(max)),
            max,
            open,
        }
    }

    /// A place for one more stream, or the refusal to answer with (counted
    /// and, at a bounded rate, logged).
    pub fn take(app: &App) -> Result<StreamPlace, super::Error> {
        let streams = &app.streams;
        match streams.places.clone().try_acquire_owned() {
            Ok(permit) => {
                streams.open.inc();
                Ok(StreamPlace {
                    _permit: permit,
                    open: streams.open.clone(),
                })
            }
            Err(_) => {
                app.metrics.streams_refused.inc();
                if let Some(held) = app.quiet.streams.pass() {
                    tracing::warn!(
                        "web: refused a stream: {} open (web_max_streams){held}",
                        streams.max
                    );
                }
                Err(super::Error::TooManyStreams)
            }
        }
    }
}

/// One of the `web_max_streams` places, held for as long as the stream lives.
pub struct StreamPlace {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// `web_max_streams`, lowered when needed to three quarters of
/// `web_max_connections`: streams never take the places requests need.
pub fn stream_places(options: &Options) -> usize {
    let connections = options.web_max_connections as usize;
    let most = (connections - connections / 4).max(1);
    let wanted = options.web_max_streams as usize;
    if wanted > most {
        tracing::info!(
            "web_max_streams {wanted} lowered to {most}: three quarters of web_max_connections {connections}"
        );
    }
    wanted.min(most)
}
