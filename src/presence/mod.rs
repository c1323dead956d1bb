//! Presence: what the room's history and roster say about its openings.
//!
//! `forecast` computes how likely the room is open at each half hour of the
//! week (arithmetic over the status changes `compute` reads), `heat_map`
//! draws it as an SVG, `auto_status` opens and closes the room from the
//! roster.

mod auto_status;
mod forecast;
mod heat_map;

pub use auto_status::run_auto_status;
pub use forecast::{Forecast, SLOTS, compute};
pub use heat_map::{ENOUGH_HISTORY, Layout, heat_map_svg};
