//! The device link: the miniprotocol spoken by the board in the room.
//!
//! `protocol` parses lines (pure), `listener` accepts the device and moves
//! bytes, `link` is the handle the rest of bitsd uses to talk to the device.

mod link;
mod listener;
pub mod protocol;

pub use link::DeviceLink;
pub use listener::{DeviceSettings, serve};
