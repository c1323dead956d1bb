//! `/static/`: the files built into the binary from the project's `assets/`,
//! each replaced by a file of the same name under `assets_path` when there
//! is one (nothing outside that folder: no `..`, no symbolic link leading
//! out). Developer mode reads the checkout's own `assets/`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use percent_encoding::percent_decode_str;
use tower_http::services::ServeDir;

use super::{App, Error, cached, pages};
use crate::escape::Shown;

/// How long browsers keep a built-in file: it changes only with the
/// version, and page links carry `?v=<version>`. A file of `assets_path`
/// may change any time, so browsers revalidate it (`Last-Modified`).
const CACHE_CONTROL: &str = "public, max-age=604800";

/// The files compiled into `bitsd`.
#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct BuiltIn;

/// The `/static/` service: the configured folder's file when it has one,
/// else the built-in file. Files on disk are read on every request, so
/// developer mode needs only to leave out the validators.
pub fn service(app: &App) -> Router {
    let built_in = any(built_in).with_state(app.clone());
    let router = match app.config.assets_folder() {
        Some(root) => {
            let files = ServeDir::new(&root)
                .append_index_html_on_directories(false)
                .fallback(built_in);
            let root = Arc::new(root);
            let app = app.clone();
            Router::new()
                .fallback_service(files)
                .layer(axum::middleware::from_fn(move |request, next| {
                    inside(app.clone(), root.clone(), request, next)
                }))
        }
        None => Router::new().fallback_service(built_in),
    };
    if app.config.options.developer_mode {
        router.layer(axum::middleware::map_response(no_validators))
    } else {
        router.layer(axum::middleware::map_response(revalidate_folder_files))
    }
}

/// The built-in file `name`, for a route outside `/static/` that browsers
/// must not keep (the front adds `Cache-Control: no-cache`).
pub fn built_in_file(name: &str, content_type: &'static str) -> Response {
    match BuiltIn::get(name) {
        Some(file) => (
            [(header::CONTENT_TYPE, content_type)],
            Body::from(file.data),
        )
            .into_response(),
        None => Error::NotFound.into_response(),
    }
}

/// A built-in file, with an ETag from its contents.
async fn built_in(AxumState(app): AxumState<App>, request: Request) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Error::MethodNotAllowed.into_response();
    }
    let path = percent_decode_str(request.uri().path()).decode_utf8_lossy();
    let Some(file) = BuiltIn::get(path.trim_start_matches('/')) else {
        return pages::not_found_in(&app, request.uri(), request.headers());
    };
    let hash = file.metadata.sha256_hash();
    let etag = HeaderValue::try_from(format!("\"{}\"", hex::encode(&hash[..12])))
        .expect("hex is a header value");
    let mut response = if cached::client_has(request.headers(), &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(file.data));
        if let Ok(mime) = HeaderValue::from_str(file.metadata.mimetype()) {
            response.headers_mut().insert(header::CONTENT_TYPE, mime);
        }
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    if !app.config.options.developer_mode {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
    }
    response
}

/// Lets a request through only when the file it names, symbolic links
/// followed, lies under `root`; anything else is a 404 like a missing file.
/// Both are resolved on each request, so a root that is itself a link may
/// be switched while bitsd runs.
async fn inside(app: App, root: Arc<PathBuf>, request: Request, next: Next) -> Response {
    let path = percent_decode_str(request.uri().path()).decode_utf8_lossy();
    let wanted = root.join(path.trim_start_matches('/'));
    let (real_root, real) = tokio::join!(
        tokio::fs::canonicalize(&*root),
        tokio::fs::canonicalize(&wanted)
    );
    match (real_root, real) {
        (Ok(real_root), Ok(real)) if !real.starts_with(&real_root) => {
            tracing::debug!("/static/: {} leads outside assets_path", Shown(&path));
            pages::not_found_in(&app, request.uri(), request.headers())
        }
        _ => next.run(request).await,
    }
}

/// Developer mode: no validators, so a reload always shows the file as it
/// is on disk (the front adds `Cache-Control: no-cache`).
async fn no_validators(mut response: Response) -> Response {
    response.headers_mut().remove(header::LAST_MODIFIED);
    response.headers_mut().remove(header::ETAG);
    response
}

/// A file of `assets_path` (no `Cache-Control` of its own) is revalidated
/// on every use, so a club's new `style.css` shows at the next reload.
async fn revalidate_folder_files(mut response: Response) -> Response {
    if matches!(response.status(), StatusCode::OK | StatusCode::NOT_MODIFIED) {
        response
            .headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-cache"));
    }
    response
}
