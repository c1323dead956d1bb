//! The forecast: how likely the room is open at each half hour of the week.
//!
//! Pure computation over status changes. Times are the stored naive local
//! times of the configured zone, so a slot is the same wall-clock half hour
//! every week, across daylight-saving changes.

mod heat_map;

pub use heat_map::heat_map_svg;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{Datelike, Duration, NaiveDateTime, Timelike};
use tokio::time::Instant;

use crate::clock::LocalTime;
use crate::config::Lang;
use crate::event::{StatusChange, StatusValue};
use crate::report::Report;
use crate::store::{Db, StoreError};
use crate::words;

/// Half-hour slots in a day.
pub const SLOTS: usize = 48;
const SLOT: i64 = 30 * 60;

/// For each weekday (Monday first) and half hour, the probability in [0, 1]
/// that the room is open.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub days: [[f64; SLOTS]; 7],
}

impl Default for Forecast {
    fn default() -> Self {
        Forecast {
            days: [[0.0; SLOTS]; 7],
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
    let mut result = Forecast::default();
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

/// The forecast as served, with its JSON and pictures made once.
pub struct Rendered {
    pub forecast: Forecast,
    pub json: Bytes,
    /// The heat maps in each language, in the standard and the colour-blind
    /// palette.
    svgs: Vec<(Lang, [Bytes; 2])>,
    /// The status version it was computed at.
    pub status_version: u64,
    pub computed: Instant,
    /// When it was computed, on the wall clock, to the second.
    pub made: chrono::DateTime<chrono::Utc>,
}

impl Rendered {
    pub fn new(forecast: Forecast, status_version: u64) -> Rendered {
        let days: Vec<&[f64]> = forecast.days.iter().map(|d| d.as_slice()).collect();
        let json = serde_json::json!({ "forecast": days }).to_string();
        let svgs = Lang::ALL
            .into_iter()
            .map(|lang| {
                let words = &words::of(lang).heat_map;
                let map = |blind| Bytes::from(heat_map_svg(&forecast, blind, words));
                (lang, [map(false), map(true)])
            })
            .collect();
        Rendered {
            json: Bytes::from(json),
            svgs,
            forecast,
            status_version,
            computed: Instant::now(),
            made: chrono::DurationRound::duration_trunc(chrono::Utc::now(), Duration::seconds(1))
                .unwrap_or_else(|_| chrono::Utc::now()),
        }
    }
}

impl Rendered {
    /// The heat map in `lang`, in the colour-blind palette with `blind`.
    pub fn svg(&self, lang: Lang, blind: bool) -> &Bytes {
        let (_, maps) = self
            .svgs
            .iter()
            .find(|(l, _)| *l == lang)
            .unwrap_or(&self.svgs[0]);
        &maps[usize::from(blind)]
    }
}

/// The least time between two forecasts after the status changed.
const RECOMPUTE_AFTER_CHANGE: std::time::Duration = std::time::Duration::from_secs(60);
/// The age at which a forecast is recomputed anyway, as the window slides.
const RECOMPUTE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// The last forecast, recomputed when the status changed (at most once a
/// minute) or when it is an hour old, on Tokio's clock.
#[derive(Default)]
pub struct ForecastCache {
    current: tokio::sync::Mutex<Option<Arc<Rendered>>>,
}

impl ForecastCache {
    /// The cached forecast, after recomputing it with `compute` if due.
    pub async fn get<F, Fut>(
        &self,
        status_version: u64,
        compute: F,
    ) -> Result<Arc<Rendered>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Forecast, StoreError>>,
    {
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref() {
            let age = cached.computed.elapsed();
            let changed = cached.status_version != status_version;
            let due = (changed && age >= RECOMPUTE_AFTER_CHANGE) || age >= RECOMPUTE_AFTER;
            if !due {
                return Ok(cached.clone());
            }
        }
        let rendered = Arc::new(Rendered::new(compute().await?, status_version));
        *current = Some(rendered.clone());
        Ok(rendered)
    }
}

/// What automatic status looks at: is anybody in, is the room open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    pub occupied: bool,
    pub open: bool,
}

/// Opens the room once it has been occupied for `open_after` while closed,
/// and closes it once it has been empty for `close_after` while open, by
/// calling `set` with the status wanted. Runs on Tokio's clock until
/// `shutdown` or until `occupancy` has no sender.
pub async fn auto_status<F, Fut>(
    mut occupancy: tokio::sync::watch::Receiver<Occupancy>,
    open_after: std::time::Duration,
    close_after: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut set: F,
) where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut last = *occupancy.borrow_and_update();
    let mut since = Instant::now();
    loop {
        let deadline = match (last.occupied, last.open) {
            (true, false) => Some(since + open_after),
            (false, true) => Some(since + close_after),
            _ => None,
        };
        let due = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = occupancy.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *occupancy.borrow_and_update();
                if now != last {
                    last = now;
                    since = Instant::now();
                }
            }
            _ = due => {
                set(!last.open).await;
                // Whatever became of it, wait a full delay before trying again.
                since = Instant::now();
            }
        }
    }
}

/// Automatic status for `state`: follows its roster and applies status
/// events from the automation, which are stored, broadcast and sent to the
/// device like any other.
pub async fn run_auto_status(
    state: crate::state::State,
    open_after: std::time::Duration,
    close_after: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let occupancy_of = |s: &crate::state::Snapshot| Occupancy {
        // Hidden members too: visibility governs what is shown, not this.
        occupied: s.roster.occupied(),
        open: s.is_open(),
    };
    let (tx, rx) = tokio::sync::watch::channel(occupancy_of(&state.snapshot()));
    let mut snapshots = state.watch();
    let follow = async move {
        while snapshots.changed().await.is_ok() {
            let now = occupancy_of(&snapshots.borrow_and_update());
            tx.send_if_modified(|current| std::mem::replace(current, now) != now);
        }
    };
    let act = auto_status(rx, open_after, close_after, shutdown.clone(), |open| {
        let state = state.clone();
        async move {
            let value = if open {
                StatusValue::Open
            } else {
                StatusValue::Closed
            };
            tracing::info!("automatic status: {value}");
            let event = crate::state::Event::Status {
                value,
                origin: crate::state::Origin::Automation,
            };
            if let Err(e) = state.apply(event).await {
                tracing::error!("automatic status failed: {}", Report(&e));
            }
        }
    });
    tokio::select! {
        _ = follow => {}
        _ = act => {}
        _ = shutdown.cancelled() => {}
    }
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
    use crate::event::ModifiedBy;

    fn at(s: &str) -> NaiveDateTime {
        LocalTime::parse(s).unwrap().0
    }

    fn change(s: &str, value: StatusValue) -> StatusChange {
        StatusChange {
            timestamp: LocalTime(at(s)),
            value,
            modified_by: ModifiedBy::Bits,
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
        assert_eq!(f, Forecast::default());
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

    /// Runs auto status on a paused clock, recording what it asks for.
    struct AutoHarness {
        occupancy: tokio::sync::watch::Sender<Occupancy>,
        asked: std::sync::Arc<std::sync::Mutex<Vec<(u64, bool)>>>,
        started: tokio::time::Instant,
    }

    impl AutoHarness {
        fn start(open: bool) -> AutoHarness {
            let (tx, rx) = tokio::sync::watch::channel(Occupancy {
                occupied: false,
                open,
            });
            let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let started = tokio::time::Instant::now();
            let (record, sender) = (asked.clone(), tx.clone());
            tokio::spawn(auto_status(
                rx,
                std::time::Duration::from_secs(300),
                std::time::Duration::from_secs(900),
                tokio_util::sync::CancellationToken::new(),
                move |open| {
                    let elapsed = started.elapsed().as_secs();
                    record.lock().unwrap().push((elapsed, open));
                    // The status change comes back as the state would send it.
                    sender.send_modify(|o| o.open = open);
                    std::future::ready(())
                },
            ));
            AutoHarness {
                occupancy: tx,
                asked,
                started,
            }
        }

        async fn at(&self, second: u64, occupied: bool) {
            tokio::time::sleep_until(self.started + std::time::Duration::from_secs(second)).await;
            self.occupancy.send_modify(|o| o.occupied = occupied);
        }

        async fn until(&self, second: u64) -> Vec<(u64, bool)> {
            tokio::time::sleep_until(self.started + std::time::Duration::from_secs(second)).await;
            self.asked.lock().unwrap().clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn auto_status_opens_and_closes_after_the_delays() {
        let h = AutoHarness::start(false);
        h.at(10, true).await;
        assert_eq!(h.until(309).await, vec![], "not before 300 s of presence");
        assert_eq!(h.until(311).await, vec![(310, true)]);
        h.at(400, false).await;
        assert_eq!(
            h.until(1299).await,
            vec![(310, true)],
            "not before 900 s of absence"
        );
        assert_eq!(h.until(1301).await, vec![(310, true), (1300, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn auto_status_ignores_short_visits_and_gaps() {
        let h = AutoHarness::start(false);
        // In for 200 s, out, in again: the clock starts over.
        h.at(0, true).await;
        h.at(200, false).await;
        h.at(250, true).await;
        assert_eq!(h.until(549).await, vec![]);
        assert_eq!(h.until(551).await, vec![(550, true)]);
        // A gap of 600 s in the roster does not close the room.
        h.at(600, false).await;
        h.at(1200, true).await;
        assert_eq!(h.until(5000).await, vec![(550, true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn auto_status_leaves_a_consistent_room_alone() {
        let h = AutoHarness::start(true);
        h.at(0, true).await;
        assert_eq!(
            h.until(10_000).await,
            vec![],
            "occupied and open: nothing to do"
        );
    }

    /// A forecast cache on a paused clock, counting its computations.
    struct CacheHarness {
        cache: ForecastCache,
        computed: std::sync::atomic::AtomicU32,
        started: tokio::time::Instant,
    }

    impl CacheHarness {
        fn new() -> CacheHarness {
            CacheHarness {
                cache: ForecastCache::default(),
                computed: Default::default(),
                started: tokio::time::Instant::now(),
            }
        }

        /// Asks for the forecast at `second` with the status at
        /// `status_version`; which computation it comes from.
        async fn get(&self, second: u64, status_version: u64) -> u32 {
            tokio::time::sleep_until(self.started + std::time::Duration::from_secs(second)).await;
            let rendered = self
                .cache
                .get(status_version, || async {
                    let n = 1 + self
                        .computed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut f = Forecast::default();
                    f.days[0][0] = f64::from(n);
                    Ok(f)
                })
                .await
                .unwrap();
            rendered.forecast.days[0][0] as u32
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_forecast_is_recomputed_a_minute_after_a_change() {
        let h = CacheHarness::new();
        assert_eq!(h.get(0, 1).await, 1);
        assert_eq!(h.get(30, 1).await, 1, "nothing changed");
        assert_eq!(h.get(59, 2).await, 1, "changed, but less than a minute ago");
        assert_eq!(h.get(60, 2).await, 2, "changed a minute ago");
        assert_eq!(h.get(61, 3).await, 2, "changed again at once");
        assert_eq!(h.get(120, 3).await, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_forecast_is_recomputed_when_an_hour_old() {
        let h = CacheHarness::new();
        assert_eq!(h.get(0, 1).await, 1);
        assert_eq!(h.get(3599, 1).await, 1);
        assert_eq!(h.get(3600, 1).await, 2, "an hour old, unchanged");
        assert_eq!(h.get(7199, 1).await, 2);
        assert_eq!(h.get(7200, 1).await, 3);
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
