//! The homepage as an installable web app: its manifest, and the service
//! worker that keeps the page and the last `/data` for a phone without
//! network.

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::App;
use super::assets;
use super::lang::Lang;
use crate::words;

/// Colours of the app's frame: the page's background and the logo's.
const BACKGROUND: &str = "#f7f7f5";
const THEME: &str = "#1d1f21";

pub fn router() -> Router<App> {
    Router::new()
        .route("/manifest.webmanifest", get(manifest))
        .route("/sw.js", get(service_worker))
}

/// The manifest, named after the space, in the page's language.
async fn manifest(AxumState(app): AxumState<App>, lang: Lang) -> Response {
    let space = app.config.space_name();
    let icon = |size: u32| {
        json!({
            "src": format!("/static/icon-{size}.png"),
            "sizes": format!("{size}x{size}"),
            "type": "image/png",
            "purpose": "any",
        })
    };
    let body = json!({
        "name": space,
        "short_name": space.chars().take(12).collect::<String>(),
        "description": words::of(lang).layout.app_description,
        "lang": lang.code(),
        "id": "/",
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "background_color": BACKGROUND,
        "theme_color": THEME,
        "icons": [icon(192), icon(512)],
    });
    let mut response = (
        [(header::CONTENT_TYPE, "application/manifest+json")],
        body.to_string(),
    )
        .into_response();
    response.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("Accept-Language, Cookie"),
    );
    response
}

/// The service worker, from the root so that it may keep the homepage.
/// Browsers check it for changes on every visit (and the front says
/// `no-cache`), so a new bitsd's worker takes over at once.
async fn service_worker() -> Response {
    assets::built_in_file("sw.js", "text/javascript; charset=utf-8")
}
