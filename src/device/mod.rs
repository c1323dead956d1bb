//! The device link: the miniprotocol spoken by the boards in the room.
//!
//! `protocol` parses lines (pure), `listener` accepts devices on the
//! control port (plain TCP, a unix socket) and `tls` on the TLS port (the
//! web's `/device` websocket hands its connections over too), `session`
//! serves one connection whatever carries it, `pairing` checks claim codes
//! and keys and watches for keys that end, `waiting` bounds the connections
//! not yet authenticated (the oldest gives way to the newest), `link` is
//! the handle on the connected devices and the follower that tells them of
//! the state's changes.

mod link;
mod listener;
mod pairing;
pub mod protocol;
mod session;
mod tls;
mod waiting;

pub use link::{DeviceLink, Who, follow};
pub use listener::serve;
pub use pairing::{Pairing, STILL_CONNECTED_EVERY, Transport, watch_keys};
pub use session::{
    AUTH_TIMEOUT, Devices, End, LineSink, LineSource, Peer, Start, run as run_session,
};
pub use tls::{TlsPort, serve_tls};
