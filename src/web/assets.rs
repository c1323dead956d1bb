//! `/static/`: files under `assets_path`, nothing outside it.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use tower_http::services::ServeDir;

use super::{App, pages};

/// How long browsers keep static files; page links carry `?v=<version>`.
const CACHE_CONTROL: &str = "public, max-age=604800";

/// The `/static/` service. `ServeDir` refuses `..` and its encoded forms;
/// files are read from disk on every request, so developer mode needs only
/// to leave out the cache headers.
pub fn service(app: &App) -> Router {
    let not_found = any(pages::not_found).with_state(app.clone());
    let files = ServeDir::new(&app.config.options.assets_path)
        .append_index_html_on_directories(false)
        .not_found_service(not_found);
    let router = Router::new().fallback_service(files);
    if app.config.options.developer_mode {
        router.layer(axum::middleware::map_response(no_cache))
    } else {
        router.layer(axum::middleware::map_response(long_cache))
    }
}

/// Developer mode: no caching headers at all, not even a validator, so a
/// reload always shows the file as it is on disk.
async fn no_cache(mut response: Response) -> Response {
    response.headers_mut().remove(header::LAST_MODIFIED);
    response
}

async fn long_cache(mut response: Response) -> Response {
    if matches!(response.status(), StatusCode::OK | StatusCode::NOT_MODIFIED) {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
    }
    response
}
