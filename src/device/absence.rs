//! Whether the device that set the status is still connected: once it has
//! been gone longer than `device_stale_after`, the state says since when,
//! so the homepage can say that the status may be out of date.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::DeviceLink;
use crate::clock::LocalTime;
use crate::record::{ModifiedBy, StatusChange};
use crate::state::{Origin, Snapshot, State};
use crate::store::DEVICE_USER;

/// Follows the connected devices and the status until `shutdown`, telling
/// the state when the device that set the status has been disconnected for
/// `stale_after` (never when it is zero). A device not connected since
/// bitsd started counts as gone since then. With `others_write_as_bits`
/// (automatic status, MQTT commands), a status stored before the start as
/// `BITS` is not taken to be the original device's.
pub async fn watch_absence(
    link: DeviceLink,
    state: State,
    stale_after: Duration,
    others_write_as_bits: bool,
    shutdown: CancellationToken,
) {
    let clock = state.clock();
    let mut names = link.names();
    let mut snapshots = state.watch();
    let mut absences = Absences {
        started: (clock.now(), Instant::now()),
        left: HashMap::new(),
        connected: names.borrow_and_update().clone(),
    };
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let (offline, due) = absences.of(
            status_device(&snapshot, others_write_as_bits),
            stale_after,
            Instant::now(),
        );
        if offline != snapshot.device_offline_since
            && state.set_device_offline(offline).await.is_err()
        {
            return;
        }
        let wait = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = names.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = names.borrow_and_update().clone();
                absences.connected_now(now, (clock.now(), Instant::now()));
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = wait => {}
        }
    }
}

/// When each device left, as the local time shown and the instant.
struct Absences {
    /// When bitsd started: devices never connected since are gone since.
    started: (LocalTime, Instant),
    left: HashMap<String, (LocalTime, Instant)>,
    connected: BTreeSet<String>,
}

impl Absences {
    /// The devices connected are `now` as of `at`.
    fn connected_now(&mut self, now: BTreeSet<String>, at: (LocalTime, Instant)) {
        for gone in self.connected.difference(&now) {
            self.left.insert(gone.clone(), at);
        }
        self.connected = now;
    }

    /// Since when `device` has been gone, once that is `stale_after` or
    /// longer at `now`; else when it will be, if it is gone.
    fn of(
        &self,
        device: Option<&str>,
        stale_after: Duration,
        now: Instant,
    ) -> (Option<LocalTime>, Option<Instant>) {
        let Some(device) =
            device.filter(|d| !stale_after.is_zero() && !self.connected.contains(*d))
        else {
            return (None, None);
        };
        let (since, at) = self.left.get(device).copied().unwrap_or(self.started);
        let Some(due) = at.checked_add(stale_after) else {
            return (None, None);
        };
        if now >= due {
            (Some(since), None)
        } else {
            (None, Some(due))
        }
    }
}

/// The name of the device that set the status (`BITS` for the original
/// one), if a device did. A status loaded at start says only that it came
/// from bitsd's side and which registered device, if one: the original
/// device is taken to have set it, unless `others_write_as_bits`.
fn status_device(snapshot: &Snapshot, others_write_as_bits: bool) -> Option<&str> {
    let status = snapshot.status.as_ref()?;
    device_of(
        snapshot.status_origin.as_ref(),
        status,
        others_write_as_bits,
    )
}

/// [`status_device`] of `status`, set by `origin` (none when loaded at
/// start).
fn device_of<'a>(
    origin: Option<&'a Origin>,
    status: &'a StatusChange,
    others_write_as_bits: bool,
) -> Option<&'a str> {
    match origin {
        Some(Origin::Device(name)) => Some(name.as_deref().unwrap_or(DEVICE_USER)),
        Some(_) => None,
        None => match (&status.device, status.modified_by) {
            (Some(name), _) => Some(name),
            (None, ModifiedBy::Bits) if !others_write_as_bits => Some(DEVICE_USER),
            (None, _) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StatusValue;

    #[test]
    fn a_status_loaded_at_start_is_the_device_s_unless_others_write_as_bits() {
        let stored = |by, device: Option<&str>| StatusChange {
            timestamp: LocalTime::parse("2026-12-06 17:00:00").unwrap(),
            value: StatusValue::Open,
            modified_by: by,
            device: device.map(Into::into),
            until: None,
            person: None,
        };
        let original = stored(ModifiedBy::Bits, None);
        assert_eq!(device_of(None, &original, false), Some(DEVICE_USER));
        assert_eq!(device_of(None, &original, true), None, "maybe the roster's");
        let door = stored(ModifiedBy::Bits, Some("door"));
        assert_eq!(device_of(None, &door, true), Some("door"));
        assert_eq!(device_of(None, &stored(ModifiedBy::Web, None), false), None);
        let device = Origin::Device(Some("door".into()));
        assert_eq!(device_of(Some(&device), &original, true), Some("door"));
        assert_eq!(
            device_of(Some(&Origin::ORIGINAL_DEVICE), &original, true),
            Some(DEVICE_USER)
        );
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_device_is_offline_once_gone_longer_than_the_limit() {
        let start = Instant::now();
        let at = |s: &str| LocalTime::parse(s).unwrap();
        let mut absences = Absences {
            started: (at("2026-12-06 17:00:00"), start),
            left: HashMap::new(),
            connected: BTreeSet::new(),
        };
        let minute = Duration::from_secs(60);
        // Never connected: gone since bitsd started.
        assert_eq!(
            absences.of(Some("BITS"), minute, start),
            (None, Some(start + minute))
        );
        assert_eq!(
            absences.of(Some("BITS"), minute, start + minute),
            (Some(at("2026-12-06 17:00:00")), None)
        );
        // Connected: never offline; gone again: from when it left.
        absences.connected_now(names(&["BITS", "door"]), (at("2026-12-06 17:01:00"), start));
        assert_eq!(
            absences.of(Some("BITS"), minute, start + minute * 5),
            (None, None)
        );
        let left = start + minute * 2;
        absences.connected_now(names(&["door"]), (at("2026-12-06 18:02:00"), left));
        assert_eq!(
            absences.of(Some("BITS"), minute, left + minute / 2),
            (None, Some(left + minute))
        );
        assert_eq!(
            absences.of(Some("BITS"), minute, left + minute),
            (Some(at("2026-12-06 18:02:00")), None)
        );
        assert_eq!(
            absences.of(Some("door"), minute, left + minute),
            (None, None)
        );
        // No device set the status, or the limit is zero: never.
        assert_eq!(absences.of(None, minute, left + minute), (None, None));
        assert_eq!(
            absences.of(Some("BITS"), Duration::ZERO, left + minute),
            (None, None)
        );
    }
}
