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
use crate::presence::{self, Rendered};
use crate::store::StoreError;
use axum::extract::Query;

pub fn router() -> Router<App> {
    Router::new()
        .route("/status", get(status))
        .route("/data", get(data))
        .route("/data.php", get(device_clock))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/presence", get(presence))
        .route("/presence.svg", get(presence_svg))
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

/// The forecast from the cache, recomputed there when due.
async fn forecast(app: &App) -> Result<std::sync::Arc<Rendered>, StoreError> {
    let version = app.state.snapshot().status_version;
    let now = app.state.clock().now();
    let weeks = app.config.options.forecast_weeks;
    let reader = app.reader.clone();
    app.forecast
        .get(version, || async move {
            reader
                .read(move |db| presence::compute(db, now, weeks))
                .await
        })
        .await
}

/// `{"forecast": [[48 numbers] x 7]}`, Monday first.
async fn presence(AxumState(app): AxumState<App>) -> Result<Response, super::Error> {
    let rendered = forecast(&app).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        rendered.json.clone(),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
struct SvgQuery {
    blind: Option<String>,
}

/// The forecast as a heat map; `?blind=1` for the colour-blind palette.
async fn presence_svg(
    AxumState(app): AxumState<App>,
    Query(query): Query<SvgQuery>,
) -> Result<Response, super::Error> {
    let rendered = forecast(&app).await?;
    let blind = matches!(query.blind.as_deref(), Some("1" | "true"));
    let body = if blind {
        &rendered.svg_blind
    } else {
        &rendered.svg
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body.clone(),
    )
        .into_response())
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
        Err(e) => super::Error::Unavailable(e).into_response(),
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
