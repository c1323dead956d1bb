//! `/openings.ics`, the calendar of past and probable openings, and the
//! route of `/badge.svg` (answered in the front from the snapshot; the
//! router's handler is for requests that reach it anyway).

use std::hash::{Hash as _, Hasher as _};

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use axum::routing::get;
use chrono::{Duration, DurationRound, Utc};

use super::App;
use super::cached::revalidated;
use crate::calendar::{Feed, openings, probable_runs};

/// Most status changes one feed reads: the newest, when the window holds
/// more (a device toggling the room all day long).
pub const MAX_CHANGES: usize = 20_000;

pub fn router() -> Router<App> {
    Router::new()
        .route("/openings.ics", get(openings_ics))
        .route("/badge.svg", get(badge))
}

async fn openings_ics(
    AxumState(app): AxumState<App>,
    headers: HeaderMap,
) -> Result<Response, super::Error> {
    // Never closed: a permit always comes.
    let _turn = app.calendars.acquire().await.ok();
    let tz = app.config.timezone;
    let now = Utc::now()
        .duration_trunc(Duration::seconds(1))
        .unwrap_or_else(|_| Utc::now());
    let days = i64::from(app.config.options.ical_past_days);
    let from = app.state.clock().at(now - Duration::days(days));
    let (before, changes) = app
        .store
        .run(move |db| db.status_since(from, MAX_CHANGES))
        .await?;
    let forecast = super::api::forecast(&app).await?;
    let past = openings(before.as_ref(), &changes);
    let probable = probable_runs(&forecast.forecast, now, tz);
    let text = Feed {
        space: app.config.space_name(),
        tz,
        now,
        openings: &past,
        probable: &probable,
        forecast_made: forecast.made,
    }
    .render();
    // The text says everything that changes (the status, the time of an
    // opening in progress, the forecast), so its hash is the tag.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let etag = HeaderValue::from_str(&format!("\"ics-{:016x}\"", hasher.finish()))
        .expect("hex digits make a header value");
    Ok(revalidated(
        &headers,
        &etag,
        "text/calendar; charset=utf-8",
        text.into(),
    ))
}

async fn badge(AxumState(app): AxumState<App>, headers: HeaderMap, uri: Uri) -> Response {
    let space = app.config.space_name();
    app.cached
        .answer(&app.state, |r| r.badge(&headers, uri.query(), space))
}
