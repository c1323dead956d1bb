//! `bitsd device ...`: the registered devices on the command line.
//!
//! Safe while bitsd runs on the same database: each command is one
//! transaction on a connection of its own, and SQLite serialises the writes.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::clock::Clock;
use crate::commands::DeviceCommand;
use crate::config::Config;
use crate::device::STILL_CONNECTED_EVERY;
use crate::report::Report;
use crate::store::{Db, Device, DeviceError, NewCode, check_device_name};

/// Carries out one command at `now` (unix seconds): the text to print, or
/// the reason it was refused, in one line.
pub fn run(config: &Config, command: DeviceCommand, now: i64) -> Result<String, String> {
    // A bad name is refused before the database is opened.
    if let DeviceCommand::Add { name } = &command {
        check_device_name(name).map_err(|e| e.to_string())?;
    }
    let path = config.existing_db()?;
    let mut db =
        Db::open(path, false).map_err(|e| format!("{}: {}", path.display(), Report(&e)))?;
    let refused = |e: DeviceError| Report(&e).to_string();
    let ttl = config.options.claim_ttl as i64;
    let tz = config.timezone;
    match command {
        DeviceCommand::Add { name } => {
            let new = db.add_device(&name, now, ttl).map_err(refused)?;
            Ok(format!(
                "added device {}\n{}",
                new.device,
                code_lines(&new, now, tz)
            ))
        }
        DeviceCommand::Claim { name } => {
            let new = db.new_claim_code(&name, now, ttl).map_err(refused)?;
            Ok(format!(
                "new claim code for {}; its key, if any, works until the code is claimed\n{}",
                new.device,
                code_lines(&new, now, tz)
            ))
        }
        DeviceCommand::List => {
            let devices = db.devices().map_err(|e| Report(&e).to_string())?;
            Ok(listing(&devices, now, tz))
        }
        DeviceCommand::Revoke { name } => {
            let (name, had_key) = db.revoke_device(&name, now).map_err(refused)?;
            Ok(if had_key {
                format!("revoked the key of {name}")
            } else {
                format!("{name} had no key; any claim code of it is void")
            })
        }
        DeviceCommand::Delete { name } => {
            let name = db.delete_device(&name).map_err(refused)?;
            Ok(format!("deleted device {name}"))
        }
    }
}

/// The code and when it expires, as `add` and `claim` print them.
fn code_lines(new: &NewCode, now: i64, tz: Tz) -> String {
    format!(
        "claim code: {}\nexpires: {} {tz} (in {}), valid once",
        new.code,
        local(new.expires, tz),
        span(new.expires - now)
    )
}

/// One line per device under a header, columns aligned.
fn listing(devices: &[Device], now: i64, tz: Tz) -> String {
    if devices.is_empty() {
        return "no devices registered".to_string();
    }
    let header = ["NAME", "SEEN", "ADDRESS", "TRANSPORT", "KEY"].map(String::from);
    let rows: Vec<[String; 5]> = devices
        .iter()
        .map(|d| {
            [
                d.name.clone(),
                seen(d, now, tz),
                d.address.clone().unwrap_or_else(|| "-".into()),
                d.transport.clone().unwrap_or_else(|| "-".into()),
                key_state(d, now, tz),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!("(times in {tz})"));
    out
}

/// "connected since ..." while a running bitsd says so, else the last
/// contact, or "never".
fn seen(d: &Device, now: i64, tz: Tz) -> String {
    // A bitsd that stopped without a word leaves `connected` set: it
    // counts only while the server keeps renewing `last_seen`.
    let fresh = 3 * STILL_CONNECTED_EVERY.as_secs() as i64;
    match (d.connected, d.last_seen) {
        (Some(since), Some(seen)) if now - seen <= fresh => {
            format!("connected since {}", local(since, tz))
        }
        (_, Some(seen)) => local(seen, tz),
        (_, None) => "never".to_string(),
    }
}

/// When the key was made, or why there is none, and a pending code.
fn key_state(d: &Device, now: i64, tz: Tz) -> String {
    let key = match (d.key_made, d.revoked) {
        (Some(made), _) => format!("made {}", local(made, tz)),
        (None, Some(revoked)) => format!("revoked {}", local(revoked, tz)),
        (None, None) => "not claimed yet".to_string(),
    };
    match d.code_expires {
        Some(expires) if expires > now => format!("{key}; code until {}", local(expires, tz)),
        Some(_) => format!("{key}; code expired"),
        None => key,
    }
}

/// Unix seconds as local time in `tz`, `YYYY-MM-DD HH:MM:SS`.
fn local(unix: i64, tz: Tz) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .map_or_else(|| unix.to_string(), |t| Clock::new(tz).at(t).display())
}

/// A number of seconds in the largest unit that divides it.
fn span(seconds: i64) -> String {
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds % size == 0)
        .map_or((seconds, "second"), |(size, unit)| (seconds / size, unit));
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_in_the_largest_unit() {
        assert_eq!(span(900), "15 minutes");
        assert_eq!(span(60), "1 minute");
        assert_eq!(span(3_600), "1 hour");
        assert_eq!(span(604_800), "7 days");
        assert_eq!(span(90), "90 seconds");
    }

    #[test]
    fn the_listing_is_aligned_and_says_what_each_key_is() {
        let device = |name: &str| Device {
            id: 1,
            name: name.into(),
            created: 0,
            key_made: None,
            code_expires: None,
            revoked: None,
            last_seen: None,
            address: None,
            transport: None,
            connected: None,
        };
        let pending = Device {
            code_expires: Some(1_000),
            ..device("door")
        };
        let claimed = Device {
            key_made: Some(0),
            last_seen: Some(60),
            address: Some("192.0.2.7".into()),
            transport: Some("tls".into()),
            ..device("temperature-lab")
        };
        let text = listing(&[pending, claimed], 100, chrono_tz::UTC);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME             SEEN                 ADDRESS    TRANSPORT  KEY",
                "door             never                -          -          not claimed yet; code until 1970-01-01 00:16:40",
                "temperature-lab  1970-01-01 00:01:00  192.0.2.7  tls        made 1970-01-01 00:00:00",
                "(times in UTC)",
            ]
        );
        assert_eq!(listing(&[], 0, chrono_tz::UTC), "no devices registered");
    }
}
