//! The device link: the miniprotocol spoken by the board in the room.
//!
//! `protocol` parses lines (pure), `listener` accepts the device and moves
//! bytes, `waiting` bounds the connections not yet authenticated (the
//! oldest gives way to the newest), `link` is the handle on the attached
//! device and the follower that tells it of the state's changes.

mod link;
mod listener;
pub mod protocol;
mod waiting;

pub use link::{DeviceLink, follow};
pub use listener::serve;
