//! Read endpoints for widgets, apps and bots, answered from the snapshot.

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use super::client::PeerAddr;
use super::{App, Observation};

pub fn router() -> Router<App> {
    Router::new()
        .route("/status", get(status))
        .route("/data", get(data))
        .route("/data.php", get(device_clock))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

/// Answers `GET /status` and `GET /data` without the router: the hot read
/// paths widgets poll. Everything else (HEAD included) goes to the router,
/// which reaches the same functions.
pub fn hot_path(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: PeerAddr,
) -> Option<Response> {
    if method != Method::GET {
        return None;
    }
    let answer: fn(&App, &HeaderMap) -> Response = match uri.path() {
        "/status" => status_response,
        "/data" => data_response,
        _ => return None,
    };
    let observation = Observation::begin(app, method, uri, headers, peer);
    let mut response = answer(app, headers);
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    observation.finish(app, uri.path(), response.status().as_u16());
    Some(response)
}

async fn status(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    status_response(&app, &headers)
}

async fn data(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    data_response(&app, &headers)
}

/// `1` when open, `0` otherwise.
fn status_response(app: &App, headers: &HeaderMap) -> Response {
    let snapshot = app.state.snapshot();
    let body = Bytes::from_static(snapshot.status_digit().as_bytes());
    revalidated(
        headers,
        &snapshot.status_etag,
        "text/plain; charset=utf-8",
        body,
    )
}

/// The `/data` JSON, serialised when the state changed, not per request,
/// and compressed at most once per encoding and state.
fn data_response(app: &App, headers: &HeaderMap) -> Response {
    let snapshot = app.state.snapshot();
    let (encoding, body) = match preferred_encoding(headers) {
        Some(Encoding::Brotli) => (Some("br"), snapshot.data_brotli()),
        Some(Encoding::Gzip) => (Some("gzip"), snapshot.data_gzip()),
        None => (None, snapshot.data_json.clone()),
    };
    let mut response = revalidated(headers, &snapshot.data_etag, "application/json", body);
    let ok = response.status() == StatusCode::OK;
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = encoding.filter(|_| ok) {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

enum Encoding {
    Brotli,
    Gzip,
}

/// Brotli over gzip when the client accepts both; `q=0` means refused.
fn preferred_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let mut gzip = false;
    let mut brotli = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            match name {
                "br" => brotli = true,
                "gzip" => gzip = true,
                _ => {}
            }
        }
    }
    if brotli {
        Some(Encoding::Brotli)
    } else if gzip {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

/// Prometheus text format.
async fn metrics(AxumState(app): AxumState<App>) -> Response {
    let connected = i64::from(app.state.device().is_connected());
    app.metrics.device_connected.set(connected);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// The server's local time, for the device's clock.
async fn device_clock(AxumState(app): AxumState<App>) -> Response {
    let now = app.state.clock().now().display();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], now).into_response()
}

/// `ok` while the database answers.
async fn healthz(AxumState(app): AxumState<App>) -> Response {
    match app.reader.read(|db| db.ping()).await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!("health check failed: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// A widget body with an ETag, or 304 when the client already has it; any
/// origin may read it.
fn revalidated(
    headers: &HeaderMap,
    etag: &HeaderValue,
    content_type: &'static str,
    body: Bytes,
) -> Response {
    let wanted = etag.to_str().unwrap_or_default();
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == wanted || tag == "*");
    let mut response = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
