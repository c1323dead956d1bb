//! The forecast: how likely the room is open at each half hour of the week.
//!
//! Pure arithmetic over status changes; only [`compute`] reads them from the
//! store. Times are the stored naive local times of the configured zone, so
//! a slot is the same wall-clock half hour every week, across
//! daylight-saving changes.

use chrono::{Datelike, Duration, NaiveDateTime, Timelike};

use crate::clock::LocalTime;
use crate::record::{StatusChange, StatusValue};
use crate::store::{Db, StoreError};

/// Half-hour slots in a day.
pub const SLOTS: usize = 48;
const SLOT: i64 = 30 * 60;

/// For each weekday (Monday first) and half hour, the probability in [0, 1]
/// that the room is open.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub days: [[f64; SLOTS]; 7],
    /// Seconds of history it was computed from: from the first recorded
    /// change, or the start of its window, to now.
    pub history: i64,
}

impl Default for Forecast {
    fn default() -> Self {
        Forecast {
            days: [[0.0; SLOTS]; 7],
            history: 0,
        }
    }
}

/// Computes the forecast over `[start, now)` from `changes` (oldest first,
/// all at or after `start`), with `initial` the status in force at `start`
/// (`None` when nothing was recorded before it).
///
/// Each slot's value is the mean, over the occurrences of that weekday and
/// half hour lying wholly inside the period, of the fraction of the slot the
/// room was open. The caller starts the period no earlier than the first
/// recorded change, so weeks before it do not count.
pub fn forecast(
    changes: &[StatusChange],
    initial: Option<StatusValue>,
    start: NaiveDateTime,
    now: NaiveDateTime,
) -> Forecast {
    let mut open_seconds = [[0i64; SLOTS]; 7];
    let mut occurrences = [[0u32; SLOTS]; 7];
    // First slot boundary at or after `start`.
    let mut slot_start = ceil_to_slot(start);
    let mut open = initial.is_some_and(StatusValue::is_open);
    let mut next_change = 0;
    // Skip changes before the first whole slot, keeping the status they set.
    while next_change < changes.len() && changes[next_change].timestamp.0 <= slot_start {
        open = changes[next_change].value.is_open();
        next_change += 1;
    }
    while slot_start + Duration::seconds(SLOT) <= now {
        let slot_end = slot_start + Duration::seconds(SLOT);
        let mut cursor = slot_start;
        let mut open_in_slot = 0i64;
        while next_change < changes.len() && changes[next_change].timestamp.0 < slot_end {
            let at = changes[next_change].timestamp.0.max(cursor);
            if open {
                open_in_slot += (at - cursor).num_seconds();
            }
            cursor = at;
            open = changes[next_change].value.is_open();
            next_change += 1;
        }
        if open {
            open_in_slot += (slot_end - cursor).num_seconds();
        }
        let day = slot_start.weekday().num_days_from_monday() as usize;
        let slot = (slot_start.hour() * 2 + slot_start.minute() / 30) as usize;
        open_seconds[day][slot] += open_in_slot;
        occurrences[day][slot] += 1;
        slot_start = slot_end;
    }
    let mut result = Forecast {
        history: (now - start).num_seconds().max(0),
        ..Forecast::default()
    };
    for day in 0..7 {
        for slot in 0..SLOTS {
            let n = occurrences[day][slot];
            if n > 0 {
                result.days[day][slot] = open_seconds[day][slot] as f64 / (n as f64 * SLOT as f64);
            }
        }
    }
    result
}

/// The forecast over the `weeks` weeks before `now`, from the database.
pub fn compute(db: &Db, now: LocalTime, weeks: u32) -> Result<Forecast, StoreError> {
    let window_start = LocalTime(now.0 - Duration::weeks(i64::from(weeks)));
    let Some(first) = db.first_status()? else {
        return Ok(Forecast::default());
    };
    let start = window_start.max(first);
    let window = db.status_window(start)?;
    Ok(forecast(&window.changes, window.before, start.0, now.0))
}
fn ceil_to_slot(t: NaiveDateTime) -> NaiveDateTime {
    let midnight = t.date().and_hms_opt(0, 0, 0).expect("midnight exists");
    let seconds = (t - midnight).num_seconds();
    let nanos = t.nanosecond() % 1_000_000_000;
    let mut slots = seconds / SLOT;
    if seconds % SLOT != 0 || nanos != 0 {
        slots += 1;
    }
    midnight + Duration::seconds(slots * SLOT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::LocalTime;
    use crate::record::ModifiedBy;

    fn at(s: &str) -> NaiveDateTime {
        LocalTime::parse(s).unwrap().0
    }

    fn change(s: &str, value: StatusValue) -> StatusChange {
        StatusChange {
            timestamp: LocalTime(at(s)),
            value,
            modified_by: ModifiedBy::Bits,
            device: None,
            until: None,
            person: None,
        }
    }

    /// Every Tuesday open from `from` to `to` for `weeks` weeks, starting on
    /// Tuesday 2024-01-02.
    fn tuesdays(weeks: i64, from: &str, to: &str) -> Vec<StatusChange> {
        let first = at("2024-01-02 00:00:00");
        (0..weeks)
            .flat_map(|w| {
                let day = (first + Duration::weeks(w)).format("%Y-%m-%d").to_string();
                [
                    change(&format!("{day} {from}"), StatusValue::Open),
                    change(&format!("{day} {to}"), StatusValue::Closed),
                ]
            })
            .collect()
    }

    #[test]
    fn an_exact_tuesday_pattern() {
        let changes = tuesdays(4, "14:00:00", "16:00:00");
        let start = changes[0].timestamp.0;
        let f = forecast(&changes, None, start, at("2024-01-30 00:00:00"));
        for slot in 0..SLOTS {
            let expected = if (28..32).contains(&slot) { 1.0 } else { 0.0 };
            assert_eq!(f.days[1][slot], expected, "Tuesday slot {slot}");
        }
        for day in [0, 2, 3, 4, 5, 6] {
            assert!(f.days[day].iter().all(|v| *v == 0.0), "day {day}");
        }
    }

    #[test]
    fn half_open_slots_give_one_half() {
        let changes = tuesdays(3, "14:15:00", "15:45:00");
        let start = at("2024-01-01 00:00:00");
        let f = forecast(
            &changes,
            Some(StatusValue::Closed),
            start,
            at("2024-01-22 00:00:00"),
        );
        assert_eq!(f.days[1][28], 0.5);
        assert_eq!(f.days[1][29], 1.0);
        assert_eq!(f.days[1][30], 1.0);
        assert_eq!(f.days[1][31], 0.5);
        assert_eq!(f.days[1][27], 0.0);
    }

    #[test]
    fn open_half_the_weeks_gives_one_half() {
        let mut changes = tuesdays(1, "10:00:00", "11:00:00");
        changes.extend(tuesdays(3, "10:00:00", "11:00:00").into_iter().skip(4));
        // Open on weeks 1 and 3 of 4.
        let start = at("2024-01-01 00:00:00");
        let f = forecast(
            &changes,
            Some(StatusValue::Closed),
            start,
            at("2024-01-29 00:00:00"),
        );
        assert_eq!(f.days[1][20], 0.5);
    }

    #[test]
    fn weeks_before_the_first_event_do_not_count() {
        // One open Monday night after a long silence: with the period
        // starting at the first event, Monday evening is certain.
        let changes = vec![
            change("2024-03-04 20:00:00", StatusValue::Open),
            change("2024-03-04 22:00:00", StatusValue::Closed),
        ];
        let f = forecast(
            &changes,
            None,
            changes[0].timestamp.0,
            at("2024-03-05 00:00:00"),
        );
        assert_eq!(f.days[0][40], 1.0);
        assert_eq!(f.days[0][43], 1.0);
        assert_eq!(f.days[0][44], 0.0);
    }

    #[test]
    fn no_history_gives_zeros() {
        let f = forecast(
            &[],
            None,
            at("2024-01-01 00:00:00"),
            at("2024-02-01 00:00:00"),
        );
        assert_eq!(f.days, Forecast::default().days);
        assert_eq!(f.history, 31 * 86_400, "the period it covers");
    }

    #[test]
    fn daylight_saving_weeks_keep_wall_clock_slots() {
        // Europe/Rome springs forward on 2024-03-31 and falls back on
        // 2024-10-27, both Sundays: an 01:30-03:30 opening every Sunday.
        let mut changes = Vec::new();
        for day in [
            "2024-03-24",
            "2024-03-31",
            "2024-04-07",
            "2024-10-20",
            "2024-10-27",
            "2024-11-03",
        ] {
            changes.push(change(&format!("{day} 01:30:00"), StatusValue::Open));
            changes.push(change(&format!("{day} 03:30:00"), StatusValue::Closed));
        }
        let f = forecast(
            &changes[..6],
            None,
            changes[0].timestamp.0,
            at("2024-04-08 00:00:00"),
        );
        for slot in 3..7 {
            assert_eq!(f.days[6][slot], 1.0, "spring slot {slot}");
        }
        let f = forecast(
            &changes[6..],
            None,
            changes[6].timestamp.0,
            at("2024-11-04 00:00:00"),
        );
        for slot in 3..7 {
            assert_eq!(f.days[6][slot], 1.0, "autumn slot {slot}");
        }
        assert_eq!(f.days[6][7], 0.0);
    }

    #[test]
    fn slot_boundaries() {
        assert_eq!(
            ceil_to_slot(at("2024-01-01 10:00:00")),
            at("2024-01-01 10:00:00")
        );
        assert_eq!(
            ceil_to_slot(at("2024-01-01 10:00:01")),
            at("2024-01-01 10:30:00")
        );
        assert_eq!(
            ceil_to_slot(at("2024-01-01 10:00:00.5")),
            at("2024-01-01 10:30:00")
        );
        assert_eq!(
            ceil_to_slot(at("2024-01-01 23:45:00")),
            at("2024-01-02 00:00:00")
        );
    }
}
