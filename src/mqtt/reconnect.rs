//! The connection to the broker: connects, hands each connection to the
//! publisher, and reconnects with backoff when it is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::inbox::Inbox;
use super::publisher::{Ended, Publisher};
use super::session::{Dial, Session};
use crate::metrics::Metrics;
use crate::state::{Changes, State};

/// Wait before the first retry; it doubles on each failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two tries.
pub const LAST_RETRY: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the wait to [`FIRST_RETRY`];
/// one the broker keeps closing at once (say, another bitsd with the same
/// client id taking it over) is retried less and less often.
const STABLE: Duration = Duration::from_secs(30);

/// The broker as log lines name it: its URL without the password.
pub struct Broker {
    pub url: String,
    pub dial: Dial,
}

/// Connects and serves connections until shutdown (after `offline` and the
/// disconnect went out). `changes` is subscribed before any input started.
pub async fn run(
    broker: Broker,
    mut publisher: Publisher,
    inbox: Option<Inbox>,
    state: State,
    mut changes: broadcast::Receiver<Changes>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    // What went wrong last, so a broker that stays down is logged once.
    let mut problem: Option<String> = None;
    let client_id = &broker.dial.client_id;
    loop {
        let connected = tokio::select! {
            connected = Session::connect(&broker.dial) => connected,
            _ = shutdown.cancelled() => break,
        };
        let error = match connected {
            Ok(session) => {
                problem = None;
                tracing::info!("mqtt: connected to {} as {client_id}", broker.url);
                metrics.mqtt_connected.set(1);
                let since = Instant::now();
                let ended = publisher
                    .serve(
                        session,
                        &state,
                        &mut changes,
                        inbox.as_ref(),
                        &metrics,
                        &shutdown,
                    )
                    .await;
                metrics.mqtt_connected.set(0);
                if since.elapsed() >= STABLE {
                    retry = FIRST_RETRY;
                }
                match ended {
                    Ended::Shutdown => break,
                    // Said even when it is the same as before: the
                    // connection was up in between.
                    Ended::Lost(e) => e,
                }
            }
            Err(e) => e,
        };
        let text = error.to_string();
        if problem.as_deref() != Some(text.as_str()) {
            tracing::warn!(
                "mqtt: {} as {client_id}: {text}; retrying every {} s at most",
                broker.url,
                LAST_RETRY.as_secs()
            );
            problem = Some(text);
        }
        tracing::debug!("mqtt: next try in {} s", retry.as_secs());
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.cancelled() => break,
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
    metrics.mqtt_connected.set(0);
}
