//! `/static/`: files under `assets_path`, nothing outside it (no `..`, no
//! symbolic link leading out).

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use percent_encoding::percent_decode_str;
use tower_http::services::ServeDir;

use super::{App, Error, pages};
use crate::limits::Shown;

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
    let root = Arc::new(app.config.options.assets_path.clone());
    let router = Router::new()
        .fallback_service(files)
        .layer(axum::middleware::from_fn(move |request, next| {
            inside(root.clone(), request, next)
        }));
    if app.config.options.developer_mode {
        router.layer(axum::middleware::map_response(no_cache))
    } else {
        router.layer(axum::middleware::map_response(long_cache))
    }
}

/// Lets a request through only when the file it names, symbolic links
/// followed, lies under `root`; anything else is a 404 like a missing file.
/// Both are resolved on each request, so a root that is itself a link may
/// be switched while bitsd runs.
async fn inside(root: Arc<PathBuf>, request: Request, next: Next) -> Response {
    let path = percent_decode_str(request.uri().path()).decode_utf8_lossy();
    let wanted = root.join(path.trim_start_matches('/'));
    let (real_root, real) = tokio::join!(
        tokio::fs::canonicalize(&*root),
        tokio::fs::canonicalize(&wanted)
    );
    match (real_root, real) {
        (Ok(real_root), Ok(real)) if !real.starts_with(&real_root) => {
            tracing::debug!("/static/: {} leads outside assets_path", Shown(&path));
            Error::NotFound.into_response()
        }
        _ => next.run(request).await,
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
