//! HTTP: the router, the layers every response goes through, serving.
//!
//! `server` accepts connections (and `event_stream` writes a connection's
//! `/events` without hyper), `front` is the way every request takes
//! (headers, metrics, limits, the cached snapshot answers of `cached`),
//! `places` counts the connections each holds, the router sends the rest to
//! `api` (widgets and scripts, the forecast kept by `forecast_cache`),
//! `pages` (HTML; `readings` puts the sensors beyond temperature in
//! words), `live` (websocket and SSE), `device_socket` (a
//! device's websocket), `auth` and `members` (logins and forms), `devices`
//! (the admin page's device forms), `spaceapi`, `feeds` (the calendar and
//! the badge), `push` (Web Push's key and subscriptions), `webapp` (the
//! manifest and service worker), `assets`
//! (`/static/`); `html` holds the layout's data and the page headers,
//! `lang` picks a page's language, `client` tells who is asking, `error`
//! maps failures to codes.

mod api;
mod assets;
mod auth;
mod cached;
mod client;
mod device_socket;
mod devices;
mod error;
mod event_stream;
mod feeds;
mod forecast_cache;
mod front;
mod html;
mod lang;
mod live;
mod members;
mod pages;
mod places;
mod push;
mod readings;
mod server;
mod spaceapi;
mod webapp;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::limit::RequestBodyLimitLayer;

use crate::config::Config;
use crate::device::Devices;
use crate::escape::Shown;
use crate::limits::{PerAddress, QuietLog};
use crate::metrics::Metrics;
use crate::net::{Address, Listener};
use crate::state::State;
use crate::store;
use client::Client;

use cached::Cached;
pub use error::Error;
use forecast_cache::ForecastCache;

/// Largest request body accepted (forms are small).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest body of a login or logout form.
pub const LOGIN_BODY: usize = 8 * 1024;
/// Time a request body has to arrive whole, once its headers are in.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Responses smaller than this are not compressed.
const COMPRESS_ABOVE: u64 = 256;

/// Calendars of `/openings.ics` rendered at once.
const CALENDARS_AT_ONCE: usize = 2;

/// What every handler can reach; one reference count to clone.
#[derive(Clone)]
pub struct App(Arc<Shared>);

/// What the web shares with the rest of bitsd.
pub struct Parts {
    pub config: Arc<Config>,
    pub state: State,
    pub store: store::Handle,
    /// The connected devices, and the way in of `/device`.
    pub devices: Arc<Devices>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// Where live connections are tracked, so shutdown waits for them.
    pub tracker: TaskTracker,
    /// Web Push: its key pair, and the delivery to wake.
    pub push: Arc<crate::push::Push>,
}

impl App {
    /// The web's state: the parts it shares with the rest of bitsd, the
    /// key that signs cookies, and its own limits, caches and timers.
    pub fn new(parts: Parts, secret: &str) -> App {
        let Parts {
            config,
            state,
            store,
            devices,
            metrics,
            shutdown,
            tracker,
            push,
        } = parts;
        let options = &config.options;
        let streams =
            places::Streams::new(places::stream_places(options), metrics.streams_open.clone());
        App(Arc::new(Shared {
            per_address: PerAddress::new(options.web_max_connections_per_address as usize),
            streams,
            cached: Cached::new(&state),
            state,
            store,
            devices,
            metrics,
            shutdown,
            tracker,
            pings: tokio::sync::broadcast::channel(1).0,
            signer: crate::auth::Signer::new(secret),
            throttles: auth::Throttles::default(),
            quiet: QuietLogs::default(),
            passwords: crate::auth::PasswordChecks::start(),
            forecast: ForecastCache::default(),
            calendars: tokio::sync::Semaphore::new(CALENDARS_AT_ONCE),
            push,
            config,
        }))
    }
}

impl std::ops::Deref for App {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`App`], seen only by the web.
pub struct Shared {
    state: State,
    store: store::Handle,
    /// The devices: who is connected, and the `/device` websocket's way in.
    devices: Arc<Devices>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    /// Cancelled on shutdown; live connections close on it.
    shutdown: CancellationToken,
    /// Live connections, so shutdown can wait for their close frames.
    tracker: TaskTracker,
    /// One tick every [`live::PING_EVERY`]: websocket clients ping on it
    /// (one timer for all of them, none per connection).
    pings: tokio::sync::broadcast::Sender<()>,
    /// Signs and checks login cookies.
    signer: crate::auth::Signer,
    /// Rate limits of the login form and of MAC updates.
    throttles: auth::Throttles,
    /// Log lines strangers can cause, rate-limited.
    quiet: QuietLogs,
    /// The password checker threads.
    passwords: crate::auth::PasswordChecks,
    /// Connections open per client address.
    per_address: Arc<PerAddress>,
    /// The places of websockets and event streams.
    streams: places::Streams,
    /// The last forecast.
    forecast: ForecastCache,
    /// `/status` and `/data` of the newest snapshot.
    cached: Cached,
    /// Calendars rendered at once: each reads up to 20,000 status changes
    /// and writes megabytes at most; more requests wait their turn.
    calendars: tokio::sync::Semaphore,
    /// Web Push: its key pair, and the delivery to wake.
    push: Arc<crate::push::Push>,
}

/// Log lines strangers can cause, each kind let through ten in a row, then
/// one every six seconds.
#[derive(Default)]
struct QuietLogs {
    failed_login: QuietLog,
    refused_login: QuietLog,
    mac_update: QuietLog,
    connections: QuietLog,
    forms: QuietLog,
    sessions: QuietLog,
    messages: QuietLog,
    streams: QuietLog,
}

/// Everything but the cached snapshot answers, with the layers of bodies,
/// forms and compression; the front (`front::Front`) wraps it.
fn router(app: App) -> Router {
    let compress = SizeAbove::new(COMPRESS_ABOVE)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    let router = Router::new()
        .merge(api::router())
        .merge(auth::router())
        .merge(members::router())
        .merge(devices::router())
        .merge(spaceapi::router())
        .merge(feeds::router())
        .merge(push::router())
        .merge(pages::router())
        .merge(webapp::router())
        .nest_service("/static", assets::service(&app))
        .fallback(pages::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            same_origin_posts,
        ))
        .layer(middleware::from_fn(lang::remember))
        .layer(middleware::from_fn(body_in_time))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(CompressionLayer::new().compress_when(compress));
    // Live push outside those layers: its requests have no body and its
    // answers are never compressed, and the compression layer's body alone
    // would cost an event stream 5.6 KiB for as long as it lasts.
    Router::new()
        .merge(live::router())
        .merge(device_socket::router())
        .method_not_allowed_fallback(method_not_allowed)
        .merge(router)
        .layer(middleware::from_fn(front::tag_route))
        .with_state(app)
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// Reads a request's body whole before any handler sees it: a body that
/// takes longer than [`BODY_TIMEOUT`] is a 408 and the connection closes.
async fn body_in_time(request: Request, next: Next) -> Response {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            // The limit's error may be wrapped more than once.
            let too_long = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                .any(|s| s.is::<http_body_util::LengthLimitError>());
            if too_long {
                Error::BodyTooLarge.into_response()
            } else {
                Error::BodyUnreadable(e).into_response()
            }
        }
        Err(_) => Error::BodyTimeout.into_response(),
    }
}

/// Refuses a `POST` or `DELETE` whose `Origin` names another site: a
/// browser says where a form or a script's request came from, whatever
/// cookies the other site planted.
async fn same_origin_posts(
    AxumState(app): AxumState<App>,
    client: Client,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::POST | Method::DELETE)
        && let Some(origin) = request.headers().get(header::ORIGIN)
    {
        let trust = client::Trust::of(&app.config.options);
        let own = client::own_origin(request.headers(), &client, trust);
        let origin = origin.to_str().unwrap_or("(not text)");
        if !client::same_origin(origin, &own) {
            if let Some(held) = app.quiet.forms.pass() {
                tracing::warn!(
                    "{} {} from {} refused: Origin {} is not {}{held}",
                    request.method(),
                    Shown(request.uri().path()),
                    client.label(),
                    Shown(origin),
                    Shown(&own)
                );
            }
            return Error::Forbidden(format!(
                "this form was sent from {}, not from this site",
                Shown(origin)
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// Serves HTTP on `listener` until shutdown, then lets requests in flight
/// finish; meanwhile pings websocket clients and removes expired sessions.
pub async fn serve(listener: Listener, app: App) {
    if let Ok(Address::Tcp(address)) = listener.address()
        && app.config.options.reverse_proxied
        && !address.ip().is_loopback()
    {
        tracing::warn!(
            "reverse_proxied is on but the web port listens on {address}, not loopback: \
             a client that reaches it directly chooses its own address in X-Forwarded-For; \
             behind a proxy on this machine set web_address = \"127.0.0.1\""
        );
    }
    app.tracker.spawn(auth::sweep_sessions(
        app.store.clone(),
        app.shutdown.clone(),
    ));
    let pings = app.pings.clone();
    let ticker_shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(live::PING_EVERY);
        every.tick().await;
        loop {
            tokio::select! {
                _ = ticker_shutdown.cancelled() => return,
                _ = every.tick() => { let _ = pings.send(()); }
            }
        }
    });
    let front = front::Front::new(app.clone(), router(app.clone()));
    let shutdown = app.shutdown.clone();
    server::serve(listener, app, front, shutdown).await;
}
