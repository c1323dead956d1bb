//! Messages on the `set/` topics, taken as the device's own lines; those
//! too large to read are counted and logged.

use std::sync::Arc;

use super::session::MAX_PAYLOAD;
use super::topics::Topics;
use crate::escape::Shown;
use crate::limits::QuietLog;
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

    /// Counts and logs (at the same bounded rate) a message whose payload
    /// of `size` bytes was skipped unread.
    pub(super) fn too_large(&self, topic: &str, size: usize, metrics: &Metrics) {
        metrics.mqtt_set_message("too_large");
        if let Some(held) = self.quiet.pass() {
            tracing::warn!(
                "mqtt: message on {} skipped: payload of {size} bytes, over the {} KiB limit{held}",
                Shown(topic),
                MAX_PAYLOAD >> 10
            );
        }
    }
}
