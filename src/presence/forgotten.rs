//! The door nobody remembered to close: once the room has stayed open
//! `close_after_until` minutes past the time somebody said it would stay
//! open until, bitsd closes it itself. The time is stored with the status,
//! so a restart meanwhile changes nothing.

use tokio_util::sync::CancellationToken;

use crate::clock::LocalTime;
use crate::config::Config;
use crate::report::Report;
use crate::state::{Event, Outcome, Snapshot, State};

/// The open status to watch: when it was set, and until when it was to
/// stay open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promise {
    pub set: LocalTime,
    pub until: LocalTime,
}

/// Calls `close` with the promise once `after` has passed since its
/// `until` by `now`, unless `promises` says another first; runs on Tokio's
/// clock until `shutdown` or until `promises` has no sender.
pub async fn close_forgotten<N, F, Fut>(
    mut promises: tokio::sync::watch::Receiver<Option<Promise>>,
    after: chrono::Duration,
    now: N,
    shutdown: CancellationToken,
    mut close: F,
) where
    N: Fn() -> LocalTime,
    F: FnMut(Promise) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut closed = None;
    loop {
        let promise = *promises.borrow_and_update();
        let due = async {
            match promise.filter(|p| closed != Some(*p)) {
                Some(p) => {
                    let left = (p.until.0 + after - now().0).to_std().unwrap_or_default();
                    tokio::time::sleep(left).await;
                    p
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = promises.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            p = due => {
                close(p).await;
                // Once is enough for this promise, whatever became of it.
                closed = Some(p);
            }
        }
    }
}

/// The promise of `snapshot`'s status, while the room is open.
fn promise_of(snapshot: &Snapshot) -> Option<Promise> {
    let status = snapshot
        .status
        .as_ref()
        .filter(|s| s.value.lets_members_in())?;
    Some(Promise {
        set: status.timestamp,
        until: status.until?,
    })
}

/// `close_forgotten` for `state`, with `close_after_until` from `config`
/// (never when it is zero).
pub async fn run_close_forgotten(config: &Config, state: State, shutdown: CancellationToken) {
    let minutes = config.options.close_after_until;
    if minutes == 0 {
        return;
    }
    let after = chrono::Duration::minutes(minutes as i64);
    let (tx, rx) = tokio::sync::watch::channel(promise_of(&state.snapshot()));
    let mut snapshots = state.watch();
    let follow = async move {
        while snapshots.changed().await.is_ok() {
            let now = promise_of(&snapshots.borrow_and_update());
            tx.send_if_modified(|current| std::mem::replace(current, now) != now);
        }
    };
    let clock = state.clock();
    let act = close_forgotten(
        rx,
        after,
        move || clock.now(),
        shutdown.clone(),
        |p| {
            let state = state.clone();
            async move {
                let event = Event::CloseForgotten { set: p.set };
                match state.apply(event).await {
                    Ok(Outcome::Applied) => tracing::info!(
                        "closing the room: it was to be open until {}, {minutes} minutes ago",
                        p.until.display()
                    ),
                    Ok(Outcome::Ignored(why)) => tracing::debug!("not closing the room: {why}"),
                    Err(e) => tracing::error!("closing a forgotten room failed: {}", Report(&e)),
                }
            }
        },
    );
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = follow => {}
        _ = act => {}
    }
}

#[cfg(test)]
mod tests;
