//! Messages on the `set/` topics, taken as the device's own lines.

use std::sync::Arc;

use super::topics::Topics;
use crate::limits::{QuietLog, Shown};
use crate::metrics::Metrics;
use crate::state::State;

/// Where messages on `set/` topics go.
pub struct Inbox {
    pub state: State,
    pub topics: Arc<Topics>,
    pub quiet: QuietLog,
}

impl Inbox {
    /// Applies one message from a `set/` topic, or logs why not (at a
    /// bounded rate: anyone allowed to publish there can send many). False
    /// once the state has stopped.
    pub(super) async fn take(&self, publish: &rumqttc::Publish, metrics: &Metrics) -> bool {
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
