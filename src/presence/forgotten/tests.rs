//! The forgotten room closed on a paused clock.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::*;

fn at(text: &str) -> LocalTime {
    LocalTime::parse(text).unwrap()
}

/// Runs [`close_forgotten`] with `promise` at 21:00 on a paused clock:
/// the watch's sender, the times (Tokio's) `close` was called, and the
/// promises it was called with.
#[allow(clippy::type_complexity)]
fn started(
    promise: Option<Promise>,
) -> (
    tokio::sync::watch::Sender<Option<Promise>>,
    Arc<Mutex<Vec<(std::time::Duration, Promise)>>>,
    Instant,
) {
    let (tx, rx) = tokio::sync::watch::channel(promise);
    let start = Instant::now();
    let base = at("2026-12-06 21:00:00");
    let now = move || LocalTime(base.0 + chrono::Duration::from_std(start.elapsed()).unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    tokio::spawn(close_forgotten(
        rx,
        chrono::Duration::minutes(60),
        now,
        CancellationToken::new(),
        move |p| {
            seen.lock().unwrap().push((start.elapsed(), p));
            async {}
        },
    ));
    (tx, calls, start)
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn the_room_closes_an_hour_after_its_until() {
    let promise = Promise {
        set: at("2026-12-06 20:00:00"),
        until: at("2026-12-06 22:00:00"),
    };
    let (_tx, calls, _) = started(Some(promise));
    tokio::time::sleep(2 * HOUR - std::time::Duration::from_secs(1)).await;
    assert!(calls.lock().unwrap().is_empty(), "not a second early");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(calls.lock().unwrap().clone(), [(2 * HOUR, promise)]);
    // Once only.
    tokio::time::sleep(10 * HOUR).await;
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_promise_long_past_closes_at_once() {
    // bitsd restarted at 21:00; the room was to close at 19:30.
    let promise = Promise {
        set: at("2026-12-06 18:00:00"),
        until: at("2026-12-06 19:30:00"),
    };
    let (_tx, calls, _) = started(Some(promise));
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    assert_eq!(
        calls.lock().unwrap().clone(),
        [(std::time::Duration::ZERO, promise)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_promise_or_a_closed_room_takes_the_old_one_back() {
    let first = Promise {
        set: at("2026-12-06 20:00:00"),
        until: at("2026-12-06 21:30:00"),
    };
    let (tx, calls, _) = started(Some(first));
    tokio::time::sleep(HOUR).await;
    // Said again: until 23:00, so the close is at midnight.
    let later = Promise {
        until: at("2026-12-06 23:00:00"),
        ..first
    };
    tx.send(Some(later)).unwrap();
    tokio::time::sleep(HOUR).await;
    assert!(calls.lock().unwrap().is_empty(), "not at 22:30");
    tokio::time::sleep(HOUR + std::time::Duration::from_secs(1)).await;
    assert_eq!(calls.lock().unwrap().clone(), [(3 * HOUR, later)]);
    // A room closed meanwhile has nothing to close.
    let (tx, calls, _) = started(Some(first));
    tx.send(None).unwrap();
    tokio::time::sleep(5 * HOUR).await;
    assert!(calls.lock().unwrap().is_empty());
}
