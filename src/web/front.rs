//! The one way every request takes through bitsd.
//!
//! [`Front`] holds what every response shares: the per-address limit behind
//! a proxy, the metrics and access log, a handler's panic turned into a 500,
//! and the security and caching headers. Inside it, `GET /status` and `GET /data`
//! (and `/badge.svg`) are answered from the cached representation of the snapshot (widgets
//! poll them; the router would only add work), and everything else goes on
//! to the router with its own layers (bodies, forms, compression).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Either};
use std::future::Ready;

use super::App;
use super::client::{self, Client, PeerAddr, Trust};
use super::places::{ConnectionSlot, refuse_crowded};
use crate::escape::Shown;
use crate::limits::AddressHold;

/// `Cache-Control` of responses that set none: the state changes at any
/// moment, so a cache must ask again.
const DEFAULT_CACHE: &str = "no-cache";
/// The policy of every SVG answer: its own inline styles and nothing else.
pub const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// The service hyper calls for every request: one per connection, so a
/// request answered from the snapshot costs no allocation and touches no
/// count shared with other connections.
#[derive(Clone)]
pub struct Front {
    app: App,
    router: Router,
    proxied: Option<Trust>,
    peer: PeerAddr,
    slot: Option<ConnectionSlot>,
}

impl Front {
    pub fn new(app: App, router: Router) -> Front {
        let trust = Trust::of(&app.config.options);
        let proxied = (trust != Trust::Peer).then_some(trust);
        Front {
            app,
            router,
            proxied,
            peer: PeerAddr(None),
            slot: None,
        }
    }

    /// The front of one connection from `peer`, holding `slot`.
    pub fn for_connection(&self, peer: PeerAddr, slot: ConnectionSlot) -> Front {
        Front {
            peer,
            slot: Some(slot),
            ..self.clone()
        }
    }
}

/// An answer made without waiting.
type Answered = Ready<Result<Response, Infallible>>;

/// The snapshot answers served before the router.
#[derive(Clone, Copy)]
enum SnapshotRoute {
    Status,
    Data,
    Badge,
}

impl SnapshotRoute {
    fn of(method: &Method, uri: &Uri) -> Option<(SnapshotRoute, &'static str)> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        match uri.path() {
            "/status" => Some((SnapshotRoute::Status, "/status")),
            "/data" => Some((SnapshotRoute::Data, "/data")),
            "/badge.svg" => Some((SnapshotRoute::Badge, "/badge.svg")),
            _ => None,
        }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Front
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Answered, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        self.answer(request)
    }
}

impl Front {
    /// Answers one request.
    pub fn answer<B>(
        &self,
        mut request: axum::http::Request<B>,
    ) -> Either<Answered, BoxFuture<'static, Result<Response, Infallible>>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let app = &self.app;
        let observation = Observation::begin(
            app,
            request.method(),
            request.uri(),
            request.headers(),
            self.peer,
        );
        let mut slot = self.slot.clone();
        if let Some(trust) = self.proxied {
            match client_place(app, request.headers(), self.peer, trust) {
                ClientPlace::Held(hold) => {
                    if let Some(slot) = &mut slot {
                        slot.hold = Some(Arc::new(hold));
                    }
                }
                ClientPlace::Unknown => {}
                ClientPlace::Crowded => {
                    let refused = super::Error::TooManyConnections.into_response();
                    let response = finish(app, observation, "refused", refused);
                    return Either::Left(std::future::ready(Ok(response)));
                }
            }
        }
        if let Some((answer, route)) = SnapshotRoute::of(request.method(), request.uri()) {
            let headers = request.headers();
            let response = app
                .cached
                .answer(&app.state, |representation| match answer {
                    SnapshotRoute::Status => representation.status(headers),
                    SnapshotRoute::Data => representation.data(headers),
                    SnapshotRoute::Badge => representation.badge(
                        headers,
                        request.uri().query(),
                        app.config.space_name(),
                    ),
                });
            return Either::Left(std::future::ready(Ok(finish(
                app,
                observation,
                route,
                response,
            ))));
        }
        let app = app.clone();
        // Static files set their own caching (none at all in developer mode)
        // and count as one route.
        let own_caching = request.uri().path().starts_with("/static/");
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(self.peer));
        if let Some(slot) = slot {
            extensions.insert(slot);
        }
        let routed = tower::Service::call(&mut self.router.clone(), request.map(Body::new));
        Either::Right(Box::pin(async move {
            let mut response = match std::panic::AssertUnwindSafe(routed).catch_unwind().await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(cause) => panic_response(cause),
            };
            // Files and their revalidations say how long they keep.
            let file = matches!(response.status(), StatusCode::OK | StatusCode::NOT_MODIFIED);
            if own_caching && file {
                return Ok(stamp(&app, observation, "/static", response));
            }
            if own_caching {
                return Ok(finish(&app, observation, "/static", response));
            }
            let route = response.extensions_mut().remove::<Route>();
            let route = route.as_ref().map_or("unmatched", |r| r.0.as_str());
            Ok(finish(&app, observation, route, response))
        }))
    }
}

/// What a request behind a proxy gets of its client address's places.
enum ClientPlace {
    /// One place, held for as long as the request (or the stream it
    /// becomes) lasts.
    Held(AddressHold),
    /// The proxy named no address: nothing to count.
    Unknown,
    /// The address holds all it may.
    Crowded,
}

fn client_place(app: &App, headers: &HeaderMap, peer: PeerAddr, trust: Trust) -> ClientPlace {
    let Some(ip) = Client::resolve(peer.0, headers, trust).ip else {
        return ClientPlace::Unknown;
    };
    match app.per_address.hold(ip) {
        Some(hold) => ClientPlace::Held(hold),
        None => {
            refuse_crowded(app, ip);
            ClientPlace::Crowded
        }
    }
}

/// What every response carries, then the metrics and the access log; a
/// response that says nothing of caching must be revalidated.
fn finish(app: &App, observation: Observation, route: &str, mut response: Response) -> Response {
    let h = response.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(DEFAULT_CACHE),
        );
    }
    stamp(app, observation, route, response)
}

/// The security header every response carries, then the metrics and the
/// access log. (HTML pages add theirs, `web::html`, and SVG images theirs
/// here; no other header is added: a seventh header makes the `/data`
/// answer's header map reallocate past the allocator's fast sizes.)
fn stamp(app: &App, observation: Observation, route: &str, mut response: Response) -> Response {
    observation.finish(app, route, response.status().as_u16());
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let svg = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"image/svg+xml"));
    if svg {
        // An SVG opened on its own is a document: no script, nothing loaded.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SVG_CSP),
        );
    }
    response
}

/// A handler panicked: log it, answer 500, keep serving.
fn panic_response(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = cause
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    super::Error::Panicked(what).into_response()
}

/// The route a response answered, as the metrics name it.
#[derive(Clone)]
struct Route(RouteName);

#[derive(Clone)]
enum RouteName {
    Static(&'static str),
    Pattern(MatchedPath),
}

impl RouteName {
    fn as_str(&self) -> &str {
        match self {
            RouteName::Static(s) => s,
            RouteName::Pattern(p) => p.as_str(),
        }
    }
}

/// Inside the router: marks each response with the route pattern matched.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => RouteName::Pattern(path.clone()),
        None => RouteName::Static("unmatched"),
    };
    let mut response = next.run(request).await;
    response.extensions_mut().insert(Route(route));
    response
}

/// What the metrics and the access log need from a request, taken before
/// it is answered.
struct Observation {
    started: Instant,
    logged: Option<(Client, Method, Uri)>,
}

impl Observation {
    fn begin(app: &App, method: &Method, uri: &Uri, headers: &HeaderMap, peer: PeerAddr) -> Self {
        let options = &app.config.options;
        Observation {
            started: Instant::now(),
            logged: options.log_requests.then(|| {
                let client = Client::resolve(peer.0, headers, client::Trust::of(options));
                (client, method.clone(), uri.clone())
            }),
        }
    }

    /// Counts the request under its route pattern and, with `log_requests`,
    /// logs one line: client, method, path, status, time taken.
    fn finish(self, app: &App, route: &str, status: u16) {
        app.metrics.http_request(route, status);
        if let Some((client, method, uri)) = self.logged {
            tracing::info!(
                target: "bitsd::access",
                "{} {} {} {status} {:.1}ms",
                client.label(),
                Shown(method.as_str()),
                Shown(&uri.to_string()),
                self.started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}
