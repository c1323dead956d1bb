//! Automatic status: opens the room once somebody has been in for a while
//! and closes it once it has been empty for a while.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::record::StatusValue;
use crate::report::Report;
use crate::state::{Event, Origin, Snapshot, State};

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
    open_after: Duration,
    close_after: Duration,
    shutdown: CancellationToken,
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
/// `auto_open_after` and `auto_close_after` come from `config`.
pub fn run_auto_status(
    config: &Config,
    state: State,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + use<> {
    let open_after = Duration::from_secs(config.options.auto_open_after);
    let close_after = Duration::from_secs(config.options.auto_close_after);
    follow_roster(state, open_after, close_after, shutdown)
}

async fn follow_roster(
    state: State,
    open_after: Duration,
    close_after: Duration,
    shutdown: CancellationToken,
) {
    let occupancy_of = |s: &Snapshot| Occupancy {
        // Hidden members too: visibility governs what is shown, not this.
        occupied: s.roster.occupied(),
        // Members only is open here: it is never opened to everyone by the
        // roster, and it closes once the room is empty.
        open: s.status.as_ref().is_some_and(|s| s.value.lets_members_in()),
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
            let event = Event::Status {
                value,
                origin: Origin::Automation,
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

#[cfg(test)]
mod tests {
    use super::*;

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
                Duration::from_secs(300),
                Duration::from_secs(900),
                CancellationToken::new(),
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
            tokio::time::sleep_until(self.started + Duration::from_secs(second)).await;
            self.occupancy.send_modify(|o| o.occupied = occupied);
        }

        async fn until(&self, second: u64) -> Vec<(u64, bool)> {
            tokio::time::sleep_until(self.started + Duration::from_secs(second)).await;
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
}
