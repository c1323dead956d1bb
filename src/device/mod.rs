//! The device link: the miniprotocol spoken by the boards in the room.
//!
//! `protocol` parses lines (pure), `listener` accepts devices on the
//! control port (plain TCP, a unix socket) and `tls` on the TLS port (the
//! web's `/device` websocket hands its connections over too), `lines`
//! reads and writes a connection's lines whatever carries them, `session`
//! serves one connection, `pairing` checks claim codes
//! and keys and watches for keys that end, `waiting` bounds the connections
//! not yet authenticated (the oldest gives way to the newest), `link` is
//! the handle on the connected devices and the follower that tells them of
//! the state's changes, `absence` tells the state when the device that set
//! the status has been gone too long.

mod absence;
mod lines;
mod link;
mod listener;
mod pairing;
pub mod protocol;
mod session;
mod tls;
mod waiting;

pub use absence::watch_absence;
pub use lines::{End, LineSink, LineSource};
pub use link::{DeviceLink, Who, follow};
pub use listener::serve;
pub use pairing::{
    Paired, Pairing, Refused, STILL_CONNECTED_EVERY, Transport, forget_connections, watch_keys,
};
pub use session::{AUTH_TIMEOUT, Devices, Peer, Start, run as run_session};
pub use tls::{TlsPort, serve_tls};
