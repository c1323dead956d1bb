//! MQTT: keeps the state on a broker's retained topics (with Home
//! Assistant's discovery configs) and, with `mqtt_subscribe`, reads `set/`
//! topics as the device's own commands.
//!
//! One task follows the stream of committed changes like any other
//! follower: `reconnect` connects and reconnects with backoff, `publisher`
//! serves each connection, `session` speaks the protocol (`frame` tells an
//! oversized message from its headers), `inbox` takes the `set/` messages;
//! `topics` holds, without I/O, the topic names, payloads, discovery
//! configs and `set/` commands.
//! While the broker is away nothing is queued; each new connection starts
//! from the current snapshot.

mod frame;
mod inbox;
mod publisher;
mod reconnect;
mod session;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::LastWill;
use rumqttc::mqttbytes::QoS;
use rumqttc::tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, MqttUrl};
use crate::limits::QuietLog;
use crate::metrics::Metrics;
use crate::state::State;
use crate::store;
use inbox::Inbox;
use publisher::{Publisher, SpaceApiFacts};
use reconnect::Broker;
use session::Dial;
use topics::{Discovery, OFFLINE, Topics};

pub use reconnect::{FIRST_RETRY, LAST_RETRY};

const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Why MQTT could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Starts MQTT when `mqtt_url` is set. It subscribes to the state at once:
/// call it before any input starts. `web_port` is the port the web server
/// is bound to, when it is on TCP.
pub fn start(
    config: &Config,
    web_port: Option<u16>,
    state: &State,
    store: &store::Handle,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), MqttError> {
    let Some(url) = &config.options.mqtt_url else {
        return Ok(());
    };
    let options = &config.options;
    let topics = Arc::new(Topics::new(&options.mqtt_topic_prefix));
    let facts = config.spaceapi.clone().unwrap_or_default();
    let base = own_url(config, web_port);
    let discovery = options.mqtt_homeassistant.then(|| {
        let space = facts.name();
        Discovery::new(
            &options.mqtt_homeassistant_prefix,
            &options.mqtt_topic_prefix,
            space,
            Some(&base),
        )
        .with_names(options.sensor_names().clone())
    });
    // The same for every run with the same prefix, so a restarted bitsd
    // takes over its old session at once: the old one's last will is then
    // published before the new `online`, not after it.
    let client_id = topics::node_id(&options.mqtt_topic_prefix);
    let broker = Broker {
        url: url.to_string(),
        dial: dial(url, client_id, &topics)?,
    };
    metrics.mqtt_connected.set(0);
    let inbox = options.mqtt_subscribe.then(|| Inbox {
        state: state.clone(),
        topics: topics.clone(),
        quiet: QuietLog::default(),
    });
    let publisher = Publisher::new(
        topics,
        discovery,
        SpaceApiFacts {
            facts,
            names: options.sensor_names().clone(),
            base,
            timezone: config.timezone,
        },
        options.mqtt_subscribe,
        KEEP_ALIVE,
        store.clone(),
    );
    tracing::info!(
        "mqtt: publishing under {}/ on {url}",
        options.mqtt_topic_prefix
    );
    tracker.spawn(reconnect::run(
        broker,
        publisher,
        inbox,
        state.clone(),
        state.subscribe(),
        metrics,
        shutdown.clone(),
    ));
    Ok(())
}

/// How to connect: clean sessions (each connection starts from the
/// snapshot), `offline` as the retained last will.
fn dial(url: &MqttUrl, client_id: String, topics: &Topics) -> Result<Dial, MqttError> {
    Ok(Dial {
        host: url.host.clone(),
        port: url.port,
        tls: if url.tls {
            Some(Arc::new(tls_config()?))
        } else {
            None
        },
        client_id,
        login: url
            .username
            .clone()
            .map(|user| (user, url.password.clone().unwrap_or_default())),
        keep_alive: KEEP_ALIVE,
        will: LastWill::new(topics.availability.clone(), OFFLINE, QoS::AtLeastOnce, true),
    })
}

/// TLS with the ring provider, checked against the system's authorities.
fn tls_config() -> Result<rustls::ClientConfig, MqttError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("mqtt: system certificates: {error}");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "mqtt: no system certificate authorities found; mqtts:// cannot verify the broker"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The base of bitsd's own URLs on MQTT (the logo, icons and calendar of
/// `P/spaceapi`, Home Assistant's `configuration_url`): `public_url` when
/// set; else the `[spaceapi] url`, the space's website, which often is
/// this server; else `http://<host name>[:<web port>]`, as a client on the
/// network reaches this server without a proxy.
fn own_url(config: &Config, web_port: Option<u16>) -> String {
    if let Some(url) = &config.options.public_url {
        return url.clone();
    }
    if let Some(url) = config.spaceapi.as_ref().and_then(|s| s.url.as_deref()) {
        return url.trim_end_matches('/').to_string();
    }
    let host = host_name().unwrap_or_else(|| "localhost".to_string());
    match web_port {
        Some(80) | None => format!("http://{host}"),
        Some(port) => format!("http://{host}:{port}"),
    }
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is cut there.
    let done = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if done != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::own_url;
    use crate::config::{Config, SpaceApi};

    #[test]
    fn tls_is_set_up_with_the_ring_provider() {
        super::tls_config().unwrap();
    }

    #[test]
    fn own_urls_are_the_public_url_before_the_spaces_website() {
        let args = ["bitsd", "--public-url", "https://bits.example.org/"];
        let (mut config, _) = Config::from_args(args).unwrap();
        assert_eq!(own_url(&config, Some(8080)), "https://bits.example.org");
        config.spaceapi = Some(SpaceApi {
            url: Some("https://lab.example/".into()),
            ..SpaceApi::default()
        });
        assert_eq!(own_url(&config, Some(8080)), "https://bits.example.org");
        config.options.public_url = None;
        assert_eq!(own_url(&config, Some(8080)), "https://lab.example");
        config.spaceapi = None;
        let by_host = own_url(&config, Some(8080));
        assert!(
            by_host.starts_with("http://") && by_host.ends_with(":8080"),
            "{by_host}"
        );
    }
}
