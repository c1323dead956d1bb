//! The connection to the broker: drives the client's event loop, reconnects
//! with backoff, tells the publisher when a connection starts and ends, and
//! turns messages on `set/` topics into events.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, Outgoing};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::topics::Topics;
use crate::limits::{QuietLog, Shown};
use crate::metrics::Metrics;
use crate::state::State;

/// Wait before the first retry; it doubles on each failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two tries.
pub const LAST_RETRY: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the wait to [`FIRST_RETRY`];
/// one the broker keeps closing at once (say, another bitsd with the same
/// client id taking it over) is retried less and less often.
const STABLE: Duration = Duration::from_secs(30);
/// How long shutdown waits for `offline` and the disconnect to go out.
pub const GOODBYE: Duration = Duration::from_millis(600);

/// Whether the broker is connected; `generation` counts connections, so the
/// publisher knows a reconnect from a connection it already served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    pub generation: u64,
}

/// The broker as log lines name it: its URL without the password, and the
/// client id bitsd uses there.
pub struct Broker {
    pub url: String,
    pub client_id: String,
}

/// Where messages on `set/` topics go.
pub struct Inbox {
    pub state: State,
    pub topics: Arc<Topics>,
    pub quiet: QuietLog,
}

/// Polls `events` until shutdown (after `offline` and the disconnect went
/// out, or [`GOODBYE`]), keeping `link` current.
pub async fn drive(
    mut events: EventLoop,
    link: watch::Sender<LinkState>,
    inbox: Option<Inbox>,
    broker: Broker,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    // What went wrong last, so a broker that stays down is logged once.
    let mut problem: Option<String> = None;
    let mut stopping: Option<Instant> = None;
    let mut connected_at: Option<Instant> = None;
    loop {
        let polled = tokio::select! {
            polled = events.poll() => polled,
            _ = shutdown.cancelled(), if stopping.is_none() => {
                if !link.borrow().up {
                    break;
                }
                stopping = Some(Instant::now() + GOODBYE);
                continue;
            }
            _ = tokio::time::sleep_until(stopping.unwrap_or_else(Instant::now)), if stopping.is_some() => break,
        };
        match polled {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                problem = None;
                tracing::info!("mqtt: connected to {} as {}", broker.url, broker.client_id);
                metrics.mqtt_connected.set(1);
                link.send_modify(|l| {
                    l.up = true;
                    l.generation += 1;
                });
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                if let Some(inbox) = &inbox
                    && stopping.is_none()
                    && !inbox.take(&publish, &metrics).await
                {
                    break;
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                metrics.mqtt_published.inc();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping.is_some() => break,
            Ok(Event::Incoming(Incoming::SubAck(ack)))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                tracing::warn!(
                    "mqtt: the broker refuses bitsd its set/ topics (check its ACL); commands over MQTT are not read"
                );
            }
            Ok(_) => {}
            Err(e) => {
                let was_up = link.borrow().up;
                link.send_modify(|l| l.up = false);
                metrics.mqtt_connected.set(0);
                if stopping.is_some() || shutdown.is_cancelled() {
                    break;
                }
                if connected_at.take().is_some_and(|at| at.elapsed() >= STABLE) {
                    retry = FIRST_RETRY;
                }
                let text = describe(&e);
                if was_up || problem.as_deref() != Some(text.as_str()) {
                    tracing::warn!(
                        "mqtt: {} as {}: {text}; retrying every {} s at most",
                        broker.url,
                        broker.client_id,
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
        }
    }
    link.send_modify(|l| l.up = false);
    metrics.mqtt_connected.set(0);
}

/// The cause of a failed or lost connection, in a few words.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorised",
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                ConnectReturnCode::RefusedProtocolVersion => "protocol version 3.1.1 refused",
                ConnectReturnCode::Success => "refused",
            };
            format!("the broker refused the connection: {why}")
        }
        ConnectionError::Io(e) => format!("cannot reach the broker: {e}"),
        ConnectionError::NetworkTimeout => "no answer from the broker".to_string(),
        other => format!("connection lost: {other}"),
    }
}

impl Inbox {
    /// Applies one message from a `set/` topic, or logs why not (at a
    /// bounded rate: anyone allowed to publish there can send many). False
    /// once the state has stopped.
    async fn take(&self, publish: &rumqttc::Publish, metrics: &Metrics) -> bool {
        match self
            .topics
            .parse_set(&publish.topic, &publish.payload, publish.retain)
        {
            Ok(event) => {
                metrics.mqtt_set_message("accepted");
                tracing::debug!("mqtt: {} applied", Shown(&publish.topic));
                self.state.submit(event).await.is_ok()
            }
            Err(reason) => {
                metrics.mqtt_set_message("rejected");
                if let Some(held) = self.quiet.pass() {
                    tracing::warn!(
                        "mqtt: message on {} skipped: {reason}{held}",
                        Shown(&publish.topic)
                    );
                }
                true
            }
        }
    }
}
