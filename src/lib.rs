//! bitsd: a real-time presence server for club rooms and hackerspaces.
//!
//! Layout:
//! - `config`: every option declared once, as a clap flag that is also a
//!   `BITSD_*` variable and a key of the TOML file.
//! - `auth`: password hashes and the threads that check them (strangers'
//!   attempts queued apart from known browsers'), signed login and
//!   known-browser cookies, MAC hashes.
//! - `clock`: local time in the configured zone and the timestamp formats.
//! - `event`: the records a change produces and their JSON shapes.
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
//! - `webhook`: the `[[webhook]]` followers that deliver committed changes
//!   from the outbox, and `bitsd webhook test`.
//! - `install`: the man pages and shell completions of both programs,
//!   written from their command lines for `make install`.
//! - `words`: every word of the pages, in each language, in one typed table.

pub mod auth;
pub mod badge;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod device;
pub mod escape;
pub mod event;
pub mod fake;
pub mod install;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod presence;
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
use crate::device::{DeviceLink, DeviceSettings};
use crate::net::Listeners;
use crate::report::Report;
use crate::state::State;
use crate::store::{Db, Reader};

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
    let mut db = open_db(&config).await?;
    let secret = match &config.options.cookie_secret {
        Some(secret) => secret.clone(),
        // Generated once and kept, so logins survive restarts.
        None => db.setting_or_insert("cookie_secret", &auth::random_token(48))?,
    };
    let reader = Reader::open(&config.db_path)
        .with_context(|| format!("cannot open database {}", config.db_path.display()))?;
    let clock = Clock::new(config.timezone);
    let metrics = Arc::new(metrics::Metrics::new());
    let routes = webhook::routes(&config.webhooks);
    let state = State::start(db, clock, config.options.jsonver, metrics.clone(), routes)
        .context("cannot load the current state")?;
    let link = DeviceLink::new(metrics.clone());
    let tracker = TaskTracker::new();
    // Before any input starts, so the device link misses no change.
    tracker.spawn(device::follow(
        link.clone(),
        state.clone(),
        shutdown.clone(),
    ));
    let url = config.spaceapi.as_ref().and_then(|s| s.url.as_deref());
    let site = webhook::request::Site::new(config.space_name(), url);
    webhook::spawn(
        &config.webhooks,
        site,
        &state,
        &reader,
        &metrics,
        &shutdown,
        &tracker,
    )
    .context("cannot start the webhooks")?;
    tracing::info!("database {}", config.db_path.display());
    tracing::info!("web listening on {}", listeners.web.address()?);
    tracing::info!("control listening on {}", listeners.control.address()?);
    if let net::Address::Tcp(address) = listeners.web.address()?
        && config.options.reverse_proxied
        && !address.ip().is_loopback()
    {
        tracing::warn!(
            "reverse_proxied is on but the web port listens on {address}, not loopback: \
             a client that reaches it directly chooses its own address in X-Forwarded-For; \
             behind a proxy on this machine set web_address = \"127.0.0.1\""
        );
    }
    // Also before any input starts, for the same reason.
    let web_port = match listeners.web.address()? {
        net::Address::Tcp(address) => Some(address.port()),
        net::Address::Unix(_) => None,
    };
    mqtt::start(
        &config,
        web_port,
        &state,
        metrics.clone(),
        &shutdown,
        &tracker,
    )
    .context("cannot start MQTT")?;

    tracker.spawn(sweep_sessions(reader.clone(), shutdown.clone()));
    let streams =
        web::places::Streams::new(stream_places(&config.options), metrics.streams_open.clone());
    let app = web::App::new(web::Shared {
        state: state.clone(),
        reader,
        config: config.clone(),
        metrics,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        pings: tokio::sync::broadcast::channel(1).0,
        signer: auth::Signer::new(&secret),
        throttles: web::auth::Throttles::default(),
        quiet: web::QuietLogs::default(),
        passwords: auth::PasswordChecks::start(),
        per_address: limits::PerAddress::new(
            config.options.web_max_connections_per_address as usize,
        ),
        streams,
        forecast: web::ForecastCache::default(),
        calendars: tokio::sync::Semaphore::new(web::CALENDARS_AT_ONCE),
        cached: web::Cached::new(&state),
    });
    let web = tokio::spawn(web::serve(listeners.web, app, shutdown.clone()));
    let settings = DeviceSettings {
        allow: config.options.control_remote_address.clone(),
        token: config.options.control_token.clone(),
        idle_timeout: match config.options.control_idle_timeout {
            0 => None,
            seconds => Some(Duration::from_secs(seconds)),
        },
    };
    tracker.spawn(device::serve(
        listeners.control,
        state.clone(),
        link,
        settings,
        shutdown.clone(),
        tracker.clone(),
    ));

    if config.options.auto_status {
        tracker.spawn(presence::run_auto_status(
            state.clone(),
            Duration::from_secs(config.options.auto_open_after),
            Duration::from_secs(config.options.auto_close_after),
            shutdown.clone(),
        ));
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

/// `web_max_streams`, lowered when needed to three quarters of
/// `web_max_connections`: streams never take the places requests need.
fn stream_places(options: &config::Options) -> usize {
    let connections = options.web_max_connections as usize;
    let most = (connections - connections / 4).max(1);
    let wanted = options.web_max_streams as usize;
    if wanted > most {
        tracing::info!(
            "web_max_streams {wanted} lowered to {most}: three quarters of web_max_connections {connections}"
        );
    }
    wanted.min(most)
}

/// How often expired sessions are removed.
pub const SESSION_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Removes expired sessions now and every [`SESSION_SWEEP_EVERY`].
async fn sweep_sessions(reader: Reader, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(SESSION_SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = clock::unix_seconds();
        match reader.read(move |db| db.sweep_sessions(now)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} expired session(s) removed"),
            Err(e) => tracing::warn!("cannot remove expired sessions: {}", Report(&e)),
        }
    }
}

/// `bitsd bootstrap`: creates the database if missing and loads the wiki.
pub fn bootstrap(config: &Config) -> anyhow::Result<wiki::Loaded> {
    let mut db = Db::open(&config.db_path, config.options.log_queries)
        .with_context(|| format!("cannot open database {}", config.db_path.display()))?;
    wiki::load(&mut db, config.wiki_folder().as_deref())
}
