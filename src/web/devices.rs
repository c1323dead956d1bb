//! The forms of the admin page's Devices section (SPEC 18): add a device,
//! give it a new claim code, revoke its key, delete it. A new code is
//! shown once, in the answer to the form that made it; the admin page
//! itself (`members`) lists the devices.

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use serde::Deserialize;

use super::auth::{Guarded, Member, XsrfField};
use super::client::Client;
use super::error::Result;
use super::lang::Lang;
use super::members::{DeviceNotice, admin_answer};
use super::{App, Error};
use crate::clock::unix_seconds;
use crate::escape::Shown;
use crate::store::{DeviceError, NewCode, User};

pub fn router() -> Router<App> {
    Router::new()
        .route("/admin/devices", post(add))
        .route("/admin/devices/{name}/code", post(new_code))
        .route("/admin/devices/{name}/revoke", post(revoke))
        .route("/admin/devices/{name}/delete", post(delete))
}

/// Where a device form sends the browser back to.
const BACK: &str = "/admin#devices";

#[derive(Deserialize)]
struct AddForm {
    name: Option<String>,
    _xsrf: Option<String>,
}

impl XsrfField for AddForm {
    fn xsrf(&self) -> Option<&str> {
        self._xsrf.as_deref()
    }
}

/// A form that carries nothing but its anti-forgery field.
#[derive(Deserialize)]
struct ButtonForm {
    _xsrf: Option<String>,
}

impl XsrfField for ButtonForm {
    fn xsrf(&self) -> Option<&str> {
        self._xsrf.as_deref()
    }
}

/// The member sending a device form, and what answering with the admin
/// page needs.
struct Asking {
    app: App,
    lang: Lang,
    user: User,
    client: Client,
    headers: HeaderMap,
}

impl FromRequestParts<App> for Asking {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let Member(user) = Member::from_request_parts(parts, app).await?;
        let lang = Lang::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let Ok(client) = Client::from_request_parts(parts, app).await;
        Ok(Asking {
            app: app.clone(),
            lang,
            user,
            client,
            headers: parts.headers.clone(),
        })
    }
}

impl Asking {
    /// The admin page with `notice`.
    async fn page(self, notice: DeviceNotice) -> Result<Response> {
        admin_answer(
            &self.app,
            self.lang,
            self.user,
            &self.client,
            &self.headers,
            Some(notice),
        )
        .await
    }

    /// The admin page showing the code just made, or why none was.
    async fn code(self, made: Result<NewCode, DeviceError>, typed: String) -> Result<Response> {
        match made {
            Ok(new) => self.page(DeviceNotice::Code(new)).await,
            Err(e) => self.refused(e, typed).await,
        }
    }

    /// The admin page saying why a form was refused (a 400); a failed
    /// database is a 500.
    async fn refused(self, e: DeviceError, typed: String) -> Result<Response> {
        match e {
            DeviceError::Store(e) => Err(Error::Store(e)),
            e => {
                let reason = e.to_string();
                self.page(DeviceNotice::Refused { reason, typed }).await
            }
        }
    }
}

async fn add(asking: Asking, Guarded(form): Guarded<AddForm>) -> Result<Response> {
    let name = form.name.unwrap_or_default().trim().to_string();
    let typed = name.clone();
    let ttl = asking.app.config.options.claim_ttl as i64;
    let now = unix_seconds();
    let made = asking
        .app
        .store
        .run(move |db| Ok(db.add_device(&name, now, ttl)))
        .await?;
    if let Ok(new) = &made {
        tracing::info!(
            "{} added the device {}",
            Shown(&asking.user.name),
            Shown(&new.device)
        );
    }
    asking.code(made, typed).await
}

async fn new_code(
    asking: Asking,
    Path(name): Path<String>,
    Guarded(_): Guarded<ButtonForm>,
) -> Result<Response> {
    let ttl = asking.app.config.options.claim_ttl as i64;
    let now = unix_seconds();
    let made = asking
        .app
        .store
        .run(move |db| Ok(db.new_claim_code(&name, now, ttl)))
        .await?;
    if let Ok(new) = &made {
        tracing::info!(
            "{} made a new claim code for the device {}",
            Shown(&asking.user.name),
            Shown(&new.device)
        );
    }
    asking.code(made, String::new()).await
}

async fn revoke(
    asking: Asking,
    Path(name): Path<String>,
    Guarded(_): Guarded<ButtonForm>,
) -> Result<Response> {
    let now = unix_seconds();
    let revoked = asking
        .app
        .store
        .run(move |db| Ok(db.revoke_device(&name, now)))
        .await?;
    let (name, had_key) = match revoked {
        Ok(revoked) => revoked,
        Err(e) => return asking.refused(e, String::new()).await,
    };
    asking.app.devices.link().recheck();
    let user = Shown(&asking.user.name);
    if had_key {
        tracing::info!("{user} revoked the key of the device {}", Shown(&name));
    } else {
        tracing::info!(
            "{user} revoked the device {}, which had no key",
            Shown(&name)
        );
    }
    Ok(Redirect::to(BACK).into_response())
}

async fn delete(
    asking: Asking,
    Path(name): Path<String>,
    Guarded(_): Guarded<ButtonForm>,
) -> Result<Response> {
    let deleted = asking
        .app
        .store
        .run(move |db| Ok(db.delete_device(&name)))
        .await?;
    let name = match deleted {
        Ok(name) => name,
        Err(e) => return asking.refused(e, String::new()).await,
    };
    asking.app.devices.link().recheck();
    tracing::info!(
        "{} deleted the device {}",
        Shown(&asking.user.name),
        Shown(&name)
    );
    Ok(Redirect::to(BACK).into_response())
}
