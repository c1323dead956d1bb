//! Presence: what the room's history and roster say about its openings.
//!
//! `forecast` computes how likely the room is open at each half hour of the
//! week (arithmetic over the status changes `compute` reads), `heat_map`
//! draws it as an SVG, `auto_status` opens and closes the room from the
//! roster, `forgotten` closes a room left open well past the time somebody
//! said it would stay open until.

mod auto_status;
mod forecast;
mod forgotten;
mod heat_map;

pub use auto_status::run_auto_status;
pub use forecast::{Forecast, SLOTS, compute};
pub use forgotten::run_close_forgotten;
pub use heat_map::{ENOUGH_HISTORY, Layout, heat_map_svg};
