//! bitsd: a real-time presence server for club rooms and hackerspaces.
//!
//! Layout:
//! - `config`: every option declared once, as a clap flag that is also a
//!   `BITSD_*` variable and a key of the TOML file.
//! - `commands`: the subcommands of `bitsd` (`bootstrap`, `backup`,
//!   `device`, `fake`, ...).
//! - `auth`: password hashes and the threads that check them (strangers'
//!   attempts queued apart from known browsers'), signed login and
//!   known-browser cookies, MAC hashes.
//! - `clock`: local time in the configured zone, the timestamp formats and
//!   unix time.
//! - `record`: what a change stores (a status change, a sample, a message),
//!   the [`Change`](record::Change) that holds one, and their JSON shapes.
//! - `escape`: text made safe for HTML, XML and log lines.
//! - `store`: SQLite, migrations, the only place with SQL; also the online
//!   backup and the read-only check of a database file.
//! - `state`: the writer thread, the snapshot and the stream of committed
//!   changes that followers subscribe to.
//! - `device`: the miniprotocol (`protocol` parses, `listener` moves bytes,
//!   `waiting` holds the connections yet to authenticate, `link` is the
//!   attached device and the follower that tells it).
//! - `web`: one front for every request, HTTP endpoints, pages and live
//!   push (websocket, SSE).
//! - `fake`: the simulated device and history of `bitsd fake`.
//! - `metrics`: the Prometheus metrics.
//! - `logging`: log lines on standard error, dropped and counted (never a
//!   panic) when they cannot be written.
//! - `mqtt`: the state on an MQTT broker's retained topics, Home Assistant
//!   discovery, and `set/` topics read as device commands.
//! - `push`: Web Push, its VAPID key pair and the subscriptions browsers
//!   send; its delivery runs on a runtime of its own, on threads of lower
//!   priority, with a database connection of its own.
//! - `wiki`: markdown pages.
//! - `net`: binding TCP and unix-socket listeners.
//! - `presence`: the forecast of openings, its heat map, and the automatic
//!   status that opens and closes the room from the roster.
//! - `spaceapi`: the SpaceAPI document of the current state.
//! - `calendar`: the iCalendar feed of past and probable openings.
//! - `badge`: the open/closed status badge.
//! - `limits`: rate limits and connections per address.
//! - `report`: an error and its causes on one line.
//! - `systemd`: telling the service manager when bitsd is ready and when it
//!   stops.
//! - `usermanage`: the `usermanage` program's command line and commands.
//! - `registry`: `bitsd device ...`, the registered devices on the command
//!   line.
//! - `webhook`: the `[[webhook]]` tables, the followers that deliver
//!   committed changes from the outbox, and `bitsd webhook test`.
//! - `install`: the man pages and shell completions of both programs,
//!   written from their command lines for `make install`.
//! - `words`: every word of the pages, in each language, in one typed table.

pub mod auth;
pub mod badge;
pub mod calendar;
pub mod clock;
pub mod commands;
pub mod config;
pub mod device;
pub mod escape;
pub mod fake;
pub mod install;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod presence;
pub mod push;
pub mod record;
pub mod registry;
pub mod report;
pub mod spaceapi;
pub mod state;
pub mod store;
pub mod systemd;
pub mod usermanage;
pub mod web;
pub mod webhook;
pub mod wiki;
pub mod words;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::device::DeviceLink;
use crate::net::Listeners;
use crate::state::State;
use crate::store::Db;

/// How long shutdown waits for connections and pending writes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1000);

/// Opens the database (creating and migrating it) off the async runtime.
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let path = config.db_path.clone();
    let log_queries = config.options.log_queries;
    tokio::task::spawn_blocking(move || Db::open(&path, log_queries))
        .await?
        .with_context(|| format!("cannot open database {}", config.db_path.display()))
}

/// Runs the server on already-bound listeners until `shutdown` is cancelled,
/// then closes clients, finishes pending writes and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // The database, the state loaded from it, and what the parts share.
    let mut db = open_db(&config).await?;
    let secret = auth::cookie_secret(config.options.cookie_secret.as_deref(), &mut db)?;
    let store = store::Handle::open(&config.db_path)
        .with_context(|| format!("cannot open database {}", config.db_path.display()))?;
    let metrics = Arc::new(metrics::Metrics::new());
    let routes = webhook::routes(&config.webhooks);
    let clock = Clock::new(config.timezone);
    let show_names = config.show_names();
    let push = Arc::new(push::Push::new(push::Vapid::load(&mut db)?));
    let state = State::start(
        db,
        clock,
        config.options.jsonver,
        show_names,
        (
            Duration::from_secs(config.options.push_quiet * 60),
            push.subscribers.clone(),
        ),
        metrics.clone(),
        routes,
    )
    .context("cannot load the current state")?;
    if let Some(status) = &state.snapshot().status {
        metrics.state(status.value.state_str());
    }
    let tracker = TaskTracker::new();
    let db = std::path::absolute(&config.db_path).unwrap_or_else(|_| config.db_path.clone());
    tracing::info!("database {}", db.display());
    match &config.file {
        Some(file) => tracing::info!("configuration read from {}", file.display()),
        None => tracing::info!(
            "no configuration file read (none given with --config, and no {})",
            config::DEFAULT_CONFIG_FILE
        ),
    }
    tracing::info!("web listening on {}", listeners.web.address()?);
    tracing::info!("control listening on {}", listeners.control.address()?);
    let tls_port = listeners
        .control_tls
        .map(|listener| device::TlsPort::new(listener, &config.options))
        .transpose()?;
    if let Some(port) = &tls_port {
        tracing::info!("control TLS listening on {}", port.address()?);
    }

    // The followers of the state, before any input starts, so none misses
    // a change: the device link, the webhooks, MQTT.
    let link = DeviceLink::new(metrics.clone());
    tracker.spawn(device::follow(
        link.clone(),
        state.clone(),
        shutdown.clone(),
    ));
    // With the roster or MQTT also writing as `BITS`, a status stored
    // before a restart may not be the device's.
    let others_write_as_bits = config.options.auto_status || config.options.mqtt_subscribe;
    tracker.spawn(device::watch_absence(
        link.clone(),
        state.clone(),
        Duration::from_secs(config.options.device_stale_after),
        others_write_as_bits,
        shutdown.clone(),
    ));
    let url = config.spaceapi.as_ref().and_then(|s| s.url.as_deref());
    let site = webhook::request::Site::new(config.space_name(), url);
    webhook::spawn(
        &config.webhooks,
        site,
        &state,
        &store,
        &metrics,
        &shutdown,
        &tracker,
    )
    .context("cannot start the webhooks")?;
    let contact = config.options.push_contact.clone().or_else(|| {
        let email = config.spaceapi.as_ref().and_then(|s| s.email.as_deref());
        email
            .map(|e| format!("mailto:{e}"))
            .or_else(|| config.options.public_url.clone())
    });
    let settings = push::deliver::Settings {
        space: config.space_name().to_string(),
        contact,
        allow_local: config.options.push_allow_local,
    };
    // The delivery reads and writes on a connection of its own: its
    // threads run at a lower priority, and must never hold the web's.
    let push_store = store::Handle::open(&config.db_path)
        .with_context(|| format!("cannot open database {}", config.db_path.display()))?;
    push::deliver::start(
        push.clone(),
        settings,
        state.clone(),
        push_store,
        metrics.clone(),
        shutdown.clone(),
        &tracker,
    )
    .context("cannot start the push delivery")?;
    let web_port = match listeners.web.address()? {
        net::Address::Tcp(address) => Some(address.port()),
        net::Address::Unix(_) => None,
    };
    // MQTT reads what it missed in pages, on a connection of its own, so
    // that in a flood its pages do not hold up the web's reads.
    let mqtt_store = store::Handle::open(&config.db_path)
        .with_context(|| format!("cannot open database {}", config.db_path.display()))?;
    mqtt::start(
        &config,
        web_port,
        &state,
        &mqtt_store,
        metrics.clone(),
        &shutdown,
        &tracker,
    )
    .context("cannot start MQTT")?;

    // The inputs: the web, the device port, automatic status.
    // The devices, on every transport: the control port, the TLS port,
    // the web's `/device`.
    let pairing = device::Pairing::new(store.clone());
    device::forget_connections(&store).await;
    tracker.spawn(device::watch_keys(
        link.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let devices = device::Devices::new(
        &config.options,
        state.clone(),
        link,
        pairing,
        shutdown.clone(),
    );
    let parts = web::Parts {
        config: config.clone(),
        state: state.clone(),
        store,
        devices: devices.clone(),
        metrics,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        push: push.clone(),
    };
    let app = web::App::new(parts, &secret);
    let web = tokio::spawn(web::serve(listeners.web, app));
    tracker.spawn(device::serve(
        listeners.control,
        &config,
        devices.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    if let Some(port) = tls_port {
        tracker.spawn(device::serve_tls(
            port,
            devices,
            shutdown.clone(),
            tracker.clone(),
        ));
    }

    if config.options.auto_status {
        tracker.spawn(presence::run_auto_status(
            &config,
            state.clone(),
            shutdown.clone(),
        ));
    }
    {
        let (config, state, shutdown) = (config.clone(), state.clone(), shutdown.clone());
        tracker.spawn(async move { presence::run_close_forgotten(&config, state, shutdown).await });
    }

    // Listeners bound, database open, state loaded: `/data` answers.
    systemd::notify(systemd::READY);
    shutdown.cancelled().await;
    systemd::notify(systemd::STOPPING);
    tracing::info!("shutting down");
    tracker.close();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = web.await;
        tracker.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "connections still open after {} ms; closing them",
            SHUTDOWN_GRACE.as_millis()
        );
    }
    state.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// `bitsd bootstrap`: creates the database if missing and loads the wiki.
pub fn bootstrap(config: &Config) -> anyhow::Result<wiki::Loaded> {
    let mut db = Db::open(&config.db_path, config.options.log_queries)
        .with_context(|| format!("cannot open database {}", config.db_path.display()))?;
    wiki::load(&mut db, config.wiki_folder().as_deref())
}
