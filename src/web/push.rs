//! Web Push's way in (SPEC 20): `GET /push/key` gives bitsd's VAPID public
//! key; `POST /push/subscriptions` stores a browser's subscription, also in
//! place of the one it replaces, and `DELETE /push/subscriptions` removes
//! it. No login; JSON only, so another site's page cannot send one without
//! a preflight, which bitsd does not answer, and an `Origin` of another
//! site is refused in front.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;

use super::client::Client;
use super::{App, Error};
use crate::clock::unix_time;
use crate::limits::{AddressKey, Rate};
use crate::push::subscription::{Checked, Request, Unsubscribe};
use crate::push::{MAX_SUBSCRIPTIONS, Topic};
use crate::store::Subscribed;
use crate::words::Lang;

/// New subscriptions from one address: five, then one an hour.
pub const NEW_SUBSCRIPTIONS: Rate = Rate {
    burst: 5,
    every: Duration::from_secs(3600),
};

pub fn router() -> Router<App> {
    Router::new().route("/push/key", get(key)).route(
        "/push/subscriptions",
        axum::routing::post(subscribe).delete(unsubscribe),
    )
}

/// `{"publicKey": "<base64url of the 65-byte point>"}`.
async fn key(AxumState(app): AxumState<App>) -> Response {
    let body = serde_json::json!({ "publicKey": app.push.vapid.public_key() });
    axum::Json(body).into_response()
}

/// A replacement without topics whose old endpoint is not stored.
const UNKNOWN_REPLACED: &str = "no subscription with that endpoint to replace; send topics";

/// Stores a subscription: 201 for a new endpoint, 200 for one already
/// there (its topics and keys replaced). One with `replaces` takes the
/// place of the subscription of that endpoint, and its topics and
/// language unless it sends them: 404 when there are none to take (and
/// its own endpoint is not stored either).
async fn subscribe(
    AxumState(app): AxumState<App>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let origin = super::client::public_origin(&app.config.options, &headers, &client);
    let request: Request = json(
        &headers,
        &body,
        r#"{"subscription": {"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}, "topics": ["open", "message"], "lang": "en", "replaces": "https://... (optional)"}"#,
    )?;
    let checked = request
        .check(app.config.options.push_allow_local)
        .map_err(Error::BadRequest)?;
    let endpoint = checked.endpoint().to_string();
    let taken_from = match &checked {
        Checked::Replacing(r) if r.takes_topics() => Some(r.replaces.clone()),
        _ => None,
    };
    let (known, orphan) = app
        .store
        .run(move |db| {
            let known = db.push_subscribed(&endpoint)?;
            let orphan = match taken_from {
                Some(old) => !known && !db.push_subscribed(&old)?,
                None => false,
            };
            Ok((known, orphan))
        })
        .await?;
    // A new endpoint spends one of its address's new subscriptions, also
    // when there is nothing to replace: asking which endpoints bitsd
    // keeps is as rationed as subscribing.
    if !known {
        let address = client.ip.map(AddressKey::from);
        if app
            .throttles
            .push_subscriptions
            .try_take(address, NEW_SUBSCRIPTIONS)
            .is_err()
        {
            return Err(Error::TooManyRequests(
                "at most 5 new push subscriptions an hour from one address".into(),
            ));
        }
    }
    if orphan {
        return Err(Error::Missing(UNKNOWN_REPLACED.into()));
    }
    let now = unix_time() as i64;
    let stored = app
        .store
        .run(move |db| {
            let stored = match &checked {
                Checked::Whole(s) => db.push_subscribe(s, &origin, MAX_SUBSCRIPTIONS, now)?,
                Checked::Replacing(r) => {
                    let lang = Lang::default().code();
                    db.push_replace(r, lang, &origin, MAX_SUBSCRIPTIONS, now)?
                }
            };
            Ok((stored, db.push_counts()?))
        })
        .await?;
    let stored = counted(&app, stored);
    match stored {
        Subscribed::Created => Ok(StatusCode::CREATED.into_response()),
        Subscribed::Replaced => Ok(StatusCode::OK.into_response()),
        Subscribed::Full => Err(Error::Full(format!(
            "{MAX_SUBSCRIPTIONS} push subscriptions are kept already"
        ))),
        Subscribed::NothingToReplace => Err(Error::Missing(UNKNOWN_REPLACED.into())),
    }
}

/// Removes a subscription: 204, also when there was none.
async fn unsubscribe(
    AxumState(app): AxumState<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let Unsubscribe { endpoint } = json(&headers, &body, r#"{"endpoint": "https://..."}"#)?;
    let removed = app
        .store
        .run(move |db| Ok((db.push_unsubscribe(&endpoint)?, db.push_counts()?)))
        .await?;
    counted(&app, removed);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Takes the subscriptions counted with a change, so the writer stores
/// the next event for a subscriber already answered; wakes the delivery.
fn counted<T>(app: &App, (outcome, counts): (T, Vec<(Topic, u64)>)) -> T {
    app.push.count(counts, &app.metrics);
    app.push.subscriptions_changed();
    outcome
}

/// `body` read as JSON of type `T`, sent as `application/json`; the error
/// shows `shape`.
fn json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8], shape: &str) -> Result<T, Error> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/json") {
        return Err(Error::MediaType(
            "expected a body of Content-Type: application/json".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde's words name the field and the position.
        Error::BadRequest(format!("expected JSON of the shape {shape}: {e}"))
    })
}
