//! Prometheus metrics, rendered in the text format at `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::{LazyLock, RwLock};

/// Log lines that could not be written (stderr closed, its disk full).
/// Global, because logging starts before the server and its [`Metrics`].
pub static LOG_LINES_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

type EventLabels = [(&'static str, &'static str); 1];
/// `state="open"` and the like.
type StateLabels = [(&'static str, &'static str); 1];
type RequestLabels = ([(&'static str, &'static str); 1], [(&'static str, u16); 1]);
type HookLabels = [(&'static str, String); 1];
type DeliveryLabels = (HookLabels, [(&'static str, &'static str); 1]);
type DeviceLabels = [(&'static str, String); 1];
type DeviceLineLabels = (DeviceLabels, [(&'static str, &'static str); 1]);

/// Every metric bitsd exports.
pub struct Metrics {
    registry: Registry,
    pub websocket_clients: Gauge,
    pub sse_clients: Gauge,
    device_connected: Family<DeviceLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    device_lines: Family<DeviceLineLabels, Counter<u64, AtomicU64>>,
    events: Family<EventLabels, Counter<u64, AtomicU64>>,
    sensor_samples: Family<EventLabels, Counter<u64, AtomicU64>>,
    /// 1 for the room's state (`open`, `members` or `closed`), 0 for the others.
    state: Family<StateLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    http_requests: Family<RequestLabels, Counter<u64, AtomicU64>>,
    /// Route patterns seen so far, kept so labels need no allocation.
    routes: RwLock<Vec<&'static str>>,
    pub commit_seconds: Histogram,
    /// Password hashes computed for logins.
    pub password_checks: Counter,
    /// Of those, the logins from known browsers, checked before strangers'.
    pub password_checks_known: Counter,
    /// Connections closed at once because their address had too many.
    pub connections_refused: Counter,
    /// Websockets and event streams refused with 503: streams at their cap.
    pub streams_refused: Counter,
    /// Websockets and event streams open now.
    pub streams_open: Gauge,
    /// Connections on the device port closed while waiting to authenticate
    /// to make room for a newer one.
    pub device_waiting_evicted: Counter,
    /// Events that could not be stored (a commit failed), so were never applied.
    pub events_not_stored: Counter,
    webhook_deliveries: Family<DeliveryLabels, Counter<u64, AtomicU64>>,
    webhook_queue: Family<HookLabels, Gauge>,
    push_subscriptions: Family<EventLabels, Gauge>,
    push_deliveries: Family<EventLabels, Counter<u64, AtomicU64>>,
    /// MQTT: whether bitsd is connected to the broker, messages it
    /// published, and `set/` messages it read, by result.
    pub mqtt_connected: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub mqtt_published: Counter,
    mqtt_received: Family<EventLabels, Counter<u64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bitsd");
        let websocket_clients = Gauge::default();
        let sse_clients = Gauge::default();
        let device_connected = Family::default();
        let device_lines = Family::default();
        let events = Family::default();
        let http_requests = Family::default();
        // 50 µs to about 1.6 s.
        let commit_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "websocket_clients",
            "Live websocket clients",
            websocket_clients.clone(),
        );
        registry.register(
            "sse_clients",
            "Live Server-Sent Events clients",
            sse_clients.clone(),
        );
        registry.register(
            "device_connected",
            "Whether each device is connected (0 or 1); BITS is the original device",
            device_connected.clone(),
        );
        registry.register(
            "device_lines",
            "Lines received from each device, by result (accepted, skipped)",
            device_lines.clone(),
        );
        registry.register("events", "Events committed, by kind", events.clone());
        let sensor_samples = Family::default();
        let state = Family::default();
        registry.register(
            "state",
            "The room's state: 1 for the current one (open, members, closed), 0 for the others",
            state.clone(),
        );
        registry.register(
            "sensor_samples",
            "Samples of sensors beyond temperature committed, by kind (humidity, carbondioxide, power_consumption, barometer, door_locked)",
            sensor_samples.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        registry.register(
            "db_commit_seconds",
            "Time to write and commit one batch of events",
            commit_seconds.clone(),
        );
        let password_checks = Counter::default();
        registry.register(
            "password_checks",
            "Password hashes computed for login attempts",
            password_checks.clone(),
        );
        let password_checks_known = Counter::default();
        registry.register(
            "password_checks_known_browser",
            "Password hashes computed for login attempts from known browsers, checked before strangers'",
            password_checks_known.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "web_connections_refused_per_address",
            "Connections closed at once because their address held web_max_connections_per_address",
            connections_refused.clone(),
        );
        let streams_refused = Counter::default();
        registry.register(
            "web_streams_refused",
            "Websockets and event streams refused with 503 because web_max_streams were open",
            streams_refused.clone(),
        );
        let streams_open = Gauge::default();
        registry.register(
            "web_streams",
            "Websockets and event streams open (counted against web_max_streams)",
            streams_open.clone(),
        );
        let device_waiting_evicted = Counter::default();
        registry.register(
            "device_waiting_evicted",
            "Device-port connections closed before authenticating to make room for a newer one",
            device_waiting_evicted.clone(),
        );
        let events_not_stored = Counter::default();
        registry.register(
            "events_not_stored",
            "Events lost because the database could not commit them (a full disk, say)",
            events_not_stored.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines that could not be written to stderr",
            LOG_LINES_DROPPED.clone(),
        );
        let webhook_deliveries = Family::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by hook and result (delivered, retried, failed, superseded)",
            webhook_deliveries.clone(),
        );
        let push_subscriptions = Family::default();
        registry.register(
            "push_subscriptions",
            "Web Push subscriptions, by topic",
            push_subscriptions.clone(),
        );
        let push_deliveries = Family::default();
        registry.register(
            "push_deliveries",
            "Web Push deliveries by result (delivered, retried, failed, gone)",
            push_deliveries.clone(),
        );
        let webhook_queue = Family::default();
        registry.register(
            "webhook_queue",
            "Webhook deliveries waiting, by hook",
            webhook_queue.clone(),
        );
        let mqtt_connected = Gauge::default();
        registry.register(
            "mqtt_connected",
            "Whether bitsd is connected to the MQTT broker (0 or 1)",
            mqtt_connected.clone(),
        );
        let mqtt_published = Counter::default();
        registry.register(
            "mqtt_published",
            "Messages published to the MQTT broker",
            mqtt_published.clone(),
        );
        let mqtt_received = Family::default();
        registry.register(
            "mqtt_set_messages",
            "Messages read on the MQTT set/ topics, by result (accepted, rejected, too_large)",
            mqtt_received.clone(),
        );
        Metrics {
            registry,
            webhook_deliveries,
            webhook_queue,
            push_subscriptions,
            push_deliveries,
            mqtt_connected,
            mqtt_published,
            mqtt_received,
            password_checks,
            password_checks_known,
            connections_refused,
            streams_refused,
            streams_open,
            device_waiting_evicted,
            events_not_stored,
            websocket_clients,
            sse_clients,
            device_connected,
            device_lines,
            events,
            sensor_samples,
            state,
            http_requests,
            commit_seconds,
            routes: RwLock::new(Vec::new()),
        }
    }

    /// The gauge of whether the device `name` is connected.
    pub fn device_connected(&self, name: &str) -> Gauge<i64, std::sync::atomic::AtomicI64> {
        self.device_connected
            .get_or_create(&[("device", name.to_string())])
            .clone()
    }

    /// The counter of lines from the device `name` that ended in `result`.
    pub fn device_lines(&self, name: &str, result: &'static str) -> Counter {
        let labels = ([("device", name.to_string())], [("result", result)]);
        self.device_lines.get_or_create(&labels).clone()
    }

    /// Counts a committed event of `kind` (`status`, `tempint`, `sensor`,
    /// `message`).
    pub fn event(&self, kind: &'static str) {
        self.events.get_or_create(&[("kind", kind)]).inc();
    }

    /// Says the room is now in `current` (`open`, `members` or `closed`).
    pub fn state(&self, current: &'static str) {
        for state in ["open", "members", "closed"] {
            let gauge = self.state.get_or_create(&[("state", state)]);
            gauge.set(i64::from(state == current));
        }
    }

    /// Counts a committed sample of a sensor of `kind` (`humidity`, ...).
    pub fn sensor_sample(&self, kind: &'static str) {
        self.sensor_samples.get_or_create(&[("kind", kind)]).inc();
    }

    /// The counter of `hook`'s deliveries that ended in `result`.
    /// The gauge of subscriptions to `topic`.
    pub fn push_subscriptions(&self, topic: &'static str) -> Gauge {
        self.push_subscriptions
            .get_or_create(&[("topic", topic)])
            .clone()
    }

    /// The counter of push deliveries that came to `result`.
    pub fn push_deliveries(&self, result: &'static str) -> Counter {
        self.push_deliveries
            .get_or_create(&[("result", result)])
            .clone()
    }

    pub fn webhook_deliveries(&self, hook: &str, result: &'static str) -> Counter {
        let labels = ([("hook", hook.to_string())], [("result", result)]);
        self.webhook_deliveries.get_or_create(&labels).clone()
    }

    /// The gauge of `hook`'s deliveries waiting.
    pub fn webhook_queue(&self, hook: &str) -> Gauge {
        self.webhook_queue
            .get_or_create(&[("hook", hook.to_string())])
            .clone()
    }

    /// Counts a message read on an MQTT `set/` topic: `accepted`, `rejected`
    /// or `too_large`.
    pub fn mqtt_set_message(&self, result: &'static str) {
        self.mqtt_received
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// Counts an answered request. `route` is a route pattern (never a raw
    /// path), so the set of labels stays small.
    pub fn http_request(&self, route: &str, status: u16) {
        let route = self.intern(route);
        self.http_requests
            .get_or_create(&([("route", route)], [("status", status)]))
            .inc();
    }

    fn intern(&self, route: &str) -> &'static str {
        let known = self.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = known.iter().find(|r| **r == route) {
            return r;
        }
        drop(known);
        let mut known = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = known.iter().find(|r| **r == route) {
            return r;
        }
        // Bounded by the number of routes in the router.
        let leaked: &'static str = Box::leak(route.to_string().into_boxed_str());
        known.push(leaked);
        leaked
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
