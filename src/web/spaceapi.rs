//! `/spaceapi.json`: the space's entry for the SpaceAPI directory, the
//! document of `crate::spaceapi` with this server's own origin (`public_url`,
//! or the request's `Host`).

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::App;
use super::client::{Client, public_origin};
use crate::config::SpaceApi;
use crate::spaceapi::document;

pub fn router() -> Router<App> {
    Router::new().route("/spaceapi.json", get(spaceapi))
}

async fn spaceapi(AxumState(app): AxumState<App>, client: Client, headers: HeaderMap) -> Response {
    let base = public_origin(&app.config.options, &headers, &client);
    let empty = SpaceApi::default();
    let facts = app.config.spaceapi.as_ref().unwrap_or(&empty);
    let snapshot = app.state.snapshot();
    let names = app.config.options.sensor_names();
    let document = document(facts, names, &snapshot, &base, app.config.timezone);
    (
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        document.to_string(),
    )
        .into_response()
}
