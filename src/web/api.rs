//! Read endpoints for widgets, apps and bots, answered from the snapshot.

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::App;
use super::forecast_cache::Rendered;
use super::lang::Lang;
use crate::presence::{self, Layout};
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

// `GET` and `HEAD` of `/status` and `/data` are answered in the front from
// the cached representation; these routes tell the router the paths exist
// (other methods get a 405 with `Allow`) and answer alike when it is asked.
async fn status(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    app.cached.answer(&app.state, |r| r.status(&headers))
}

async fn data(AxumState(app): AxumState<App>, headers: HeaderMap) -> Response {
    app.cached.answer(&app.state, |r| r.data(&headers))
}

/// The forecast from the cache, recomputed there when due.
pub(super) async fn forecast(app: &App) -> Result<std::sync::Arc<Rendered>, StoreError> {
    let version = app.state.snapshot().status_version;
    let now = app.state.clock().now();
    let weeks = app.config.options.forecast_weeks;
    let store = app.store.clone();
    app.forecast
        .get(version, || async move {
            store.run(move |db| presence::compute(db, now, weeks)).await
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
    layout: Option<String>,
}

/// The forecast as a heat map, labelled in the page's language; `?blind=1`
/// for the colour-blind palette, `?layout=tall` for weekdays across (for a
/// phone).
async fn presence_svg(
    AxumState(app): AxumState<App>,
    lang: Lang,
    Query(query): Query<SvgQuery>,
) -> Result<Response, super::Error> {
    let rendered = forecast(&app).await?;
    let blind = matches!(query.blind.as_deref(), Some("1" | "true"));
    let layout = match query.layout.as_deref() {
        Some("tall") => Layout::Tall,
        _ => Layout::Wide,
    };
    let body = rendered.svg(lang, blind, layout);
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::VARY, "Accept-Language, Cookie"),
        ],
        body.clone(),
    )
        .into_response())
}

/// Prometheus text format.
async fn metrics(AxumState(app): AxumState<App>) -> Response {
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

/// `ok` while events are stored and the database answers; a 503 with the
/// reason while events cannot be stored (a full disk).
async fn healthz(AxumState(app): AxumState<App>) -> Response {
    if let Some(why) = app.state.storage_failure() {
        let body = format!("cannot store events: {why}\n");
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    match app.store.run(|db| db.ping()).await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => super::Error::Unavailable(e).into_response(),
    }
}
