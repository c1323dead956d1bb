//! The members' side: the admin page (status toggle, roster, one's own
//! visibility, the registered devices), messages, and the router's MAC
//! updates.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tower_http::set_header::SetResponseHeaderLayer;

use super::auth::{Guarded, Member, Xsrf, XsrfField, with_xsrf_cookie};
use super::client::Client;
use super::error::{Form, Result};
use super::html::{Chrome, HtmlPage, render};
use super::lang::Lang;
use super::pages::not_found_in;
use super::{App, Error};
use crate::clock::unix_seconds;
use crate::escape::Shown;
use crate::limits::{AddressKey, Rate};
use crate::record::StatusValue;
use crate::state::{Event, Origin, Outcome};
use crate::store::{Device, MAX_DEVICES, NewCode, User, Visibility};
use crate::words::{self, AdminWords, AroundTime, MessageWords, Moment};

/// Longest message, in characters.
pub const MAX_MESSAGE: usize = 1000;
/// Messages one member may post: five in a row, then one every ten seconds
/// (never more than five within ten seconds).
const MESSAGES: Rate = Rate {
    burst: 5,
    every: Duration::from_secs(10),
};
/// Most MAC hashes one update may carry.
const MAX_MACS: usize = 4096;
/// Wrong `/macupdate` passwords taken from one address: five in a row,
/// then one a minute (never more than five within a minute).
const MAC_WRONG_PASSWORDS: Rate = Rate {
    burst: 5,
    every: Duration::from_secs(60),
};

pub fn router() -> Router<App> {
    // Pages that name the member, and the people present: never kept in a
    // shared cache, always asked again.
    let private = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Router::new()
        .route("/admin", get(admin_page).post(admin_toggle))
        .route("/message", get(message_form).post(message_post))
        .layer(private)
        .route("/macupdate", post(mac_update))
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    chrome: Chrome,
    words: &'static AdminWords,
    user: String,
    xsrf: String,
    open: bool,
    /// `open`, `closed` or `unknown`, as on the homepage.
    status_class: &'static str,
    /// `HH:MM` the room stays open until, as somebody said; empty for none.
    until: String,
    since: Option<AroundTime>,
    /// The `named` member who made the last status change.
    set_by: Option<String>,
    /// People present, hidden members left out.
    present: usize,
    /// The names of the `named` ones among them.
    roster: Vec<String>,
    /// The member's own visibility.
    visibility: &'static str,
    /// The registered devices, by name.
    devices: Vec<DeviceRow>,
    max_devices: i64,
    /// A claim code just made, shown this once.
    claim: Option<ClaimShown>,
    /// Why a device form was refused.
    refused: Option<String>,
    /// The name a refused add form had, typed again into it.
    typed: String,
}

/// A registered device as the admin page shows it; times as the page
/// writes them.
struct DeviceRow {
    name: String,
    connected: bool,
    /// When it last connected; none when it never did.
    last_contact: Option<Moment>,
    /// Its transport and address, when known.
    via: Option<String>,
    key: KeyState,
    code: Option<CodeState>,
    /// Whether it has a key or a code for a revoke to end.
    revocable: bool,
}

enum KeyState {
    /// Made at this time.
    Since(Moment),
    /// Revoked at this time, not claimed since.
    Revoked(Moment),
    NotClaimed,
}

enum CodeState {
    /// Pending until this time.
    Until(Moment),
    Expired,
}

/// A claim code on the admin page.
struct ClaimShown {
    device: String,
    code: String,
    expires: Moment,
}

/// What an answer to a device form adds to the admin page.
pub(super) enum DeviceNotice {
    /// A claim code just made.
    Code(NewCode),
    /// Why the form was refused, and the name it had.
    Refused { reason: String, typed: String },
}

async fn admin_page(
    AxumState(app): AxumState<App>,
    lang: Lang,
    Member(user): Member,
    client: Client,
    headers: HeaderMap,
) -> Result<Response> {
    admin_answer(&app, lang, user, &client, &headers, None).await
}

/// The admin page, with what a device form adds to it: a new claim code
/// (never stored by a cache) or a refusal (a 400).
pub(super) async fn admin_answer(
    app: &App,
    lang: Lang,
    user: User,
    client: &Client,
    headers: &HeaderMap,
    notice: Option<DeviceNotice>,
) -> Result<Response> {
    let xsrf = Xsrf::from_headers(headers);
    let id = user.id;
    let (visibility, devices) = app
        .store
        .run(move |db| Ok((db.visibility(id)?, db.devices()?)))
        .await?;
    let snapshot = app.state.snapshot();
    let all = words::of(lang);
    let clock = app.state.clock();
    let now_local = clock.now();
    let shown = |unix: i64| {
        let at = DateTime::<Utc>::from_timestamp(unix, 0).unwrap_or_default();
        Moment::new(&all.times, &clock.at(at), &now_local)
    };
    let connected = app.devices.link().registered_connected();
    let now = unix_seconds();
    let devices = devices
        .into_iter()
        .map(|d| device_row(d, &connected, now, &all.admin, &shown))
        .collect();
    let (status, claim, refused, typed) = match notice {
        None => (StatusCode::OK, None, None, String::new()),
        Some(DeviceNotice::Code(new)) => {
            let claim = ClaimShown {
                device: new.device,
                code: new.code,
                expires: shown(new.expires),
            };
            (StatusCode::OK, Some(claim), None, String::new())
        }
        Some(DeviceNotice::Refused { reason, typed }) => {
            (StatusCode::BAD_REQUEST, None, Some(reason), typed)
        }
    };
    let secret = claim.is_some();
    let page = AdminPage {
        chrome: Chrome::page(app, lang, all.admin.title),
        words: &all.admin,
        user: user.name,
        xsrf: xsrf.token.clone(),
        open: snapshot.is_open(),
        status_class: super::html::status_class(&snapshot),
        until: snapshot
            .status
            .as_ref()
            .and_then(|s| s.until)
            .map(|u| u.0.format("%H:%M").to_string())
            .unwrap_or_default(),
        since: snapshot
            .status
            .as_ref()
            .map(|s| words::admin_since(all, &s.timestamp, &now_local)),
        set_by: snapshot
            .status
            .as_ref()
            .and_then(|s| s.person.as_ref())
            .filter(|p| p.named)
            .map(|p| p.name.clone()),
        present: snapshot.roster.counted(),
        roster: snapshot.roster.named().into_iter().collect(),
        visibility: visibility.as_str(),
        devices,
        max_devices: MAX_DEVICES,
        claim,
        refused,
        typed,
    };
    let mut response = render(status, &page)?;
    if secret {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(with_xsrf_cookie(response, &xsrf, client))
}

/// `device` as the admin page lists it at `now`; `connected` names the
/// devices connected now, `shown` writes a unix time as the page does.
fn device_row(
    device: Device,
    connected: &[String],
    now: i64,
    words: &AdminWords,
    shown: &impl Fn(i64) -> Moment,
) -> DeviceRow {
    let via = match (&device.transport, &device.address) {
        (Some(transport), Some(address)) => Some(words::fill(
            words.via,
            &[("transport", transport), ("address", address)],
        )),
        (Some(only), None) | (None, Some(only)) => Some(only.clone()),
        (None, None) => None,
    };
    let key = match (device.key_made, device.revoked) {
        (Some(made), _) => KeyState::Since(shown(made)),
        (None, Some(revoked)) => KeyState::Revoked(shown(revoked)),
        (None, None) => KeyState::NotClaimed,
    };
    let code = device.code_expires.map(|expires| {
        if expires > now {
            CodeState::Until(shown(expires))
        } else {
            CodeState::Expired
        }
    });
    DeviceRow {
        connected: connected
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&device.name)),
        name: device.name,
        last_contact: device.last_seen.map(shown),
        via,
        key,
        code,
        revocable: device.key_made.is_some() || device.code_expires.is_some(),
    }
}

#[derive(Deserialize)]
struct ToggleForm {
    /// The status wanted (`open` or `closed`), so a form sent twice does not
    /// flip the room back; without it the status is toggled.
    status: Option<String>,
    /// The member's own visibility (`hidden`, `counted` or `named`): when
    /// given, that is set and the status left alone.
    visibility: Option<String>,
    /// Until when the room stays open (`HH:MM`, empty: no longer said):
    /// when given, that is set and the status left alone.
    until: Option<String>,
    /// `/` from the homepage's toggle, to go back there; else `/admin`.
    next: Option<String>,
    _xsrf: Option<String>,
}

impl XsrfField for ToggleForm {
    fn xsrf(&self) -> Option<&str> {
        self._xsrf.as_deref()
    }
}

async fn admin_toggle(
    AxumState(app): AxumState<App>,
    Member(user): Member,
    Guarded(form): Guarded<ToggleForm>,
) -> Result<Response> {
    if let Some(until) = form.until {
        let text = until.trim();
        let at = match text {
            "" => None,
            text => crate::device::protocol::until(text)
                .map_err(|e| Error::BadRequest(e.to_string()))?,
        };
        let event = Event::Until {
            at,
            origin: Origin::Web,
        };
        match app.state.apply(event).await? {
            Outcome::Applied => tracing::info!("{} set until {}", Shown(&user.name), Shown(text)),
            Outcome::Ignored(why) => {
                return Err(Error::BadRequest(format!("cannot say until when: {why}")));
            }
        }
        return Ok(Redirect::to("/admin").into_response());
    }
    if let Some(visibility) = form.visibility {
        let visibility = Visibility::parse(visibility.trim()).map_err(Error::BadRequest)?;
        let event = Event::Visibility {
            member: user.id,
            visibility,
        };
        if let Outcome::Ignored(why) = app.state.apply(event).await? {
            tracing::warn!(
                "{} set their visibility to {visibility}: {why}",
                Shown(&user.name)
            );
        } else {
            tracing::info!("{} set their visibility to {visibility}", Shown(&user.name));
        }
        return Ok(Redirect::to("/admin").into_response());
    }
    let value = match form.status.as_deref() {
        None if app.state.snapshot().is_open() => StatusValue::Closed,
        None => StatusValue::Open,
        Some(text) => StatusValue::from_state(text).ok_or_else(|| {
            Error::BadRequest(format!(
                "status must be open, members or closed, got {text:?}"
            ))
        })?,
    };
    let outcome = app
        .state
        .apply(Event::MemberStatus {
            value,
            member: user.id,
        })
        .await?;
    match outcome {
        Outcome::Applied => tracing::info!("{} set the status to {value}", Shown(&user.name)),
        Outcome::Ignored(why) => tracing::info!(
            "{} set the status to {value}: nothing to do, {why}",
            Shown(&user.name)
        ),
    }
    let back = match form.next.as_deref() {
        Some("/") => "/",
        _ => "/admin",
    };
    Ok(Redirect::to(back).into_response())
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    chrome: Chrome,
    words: &'static MessageWords,
    user: String,
    xsrf: String,
    text: String,
    max: usize,
    error: Option<String>,
    sent: bool,
}

#[derive(Deserialize)]
struct SentQuery {
    sent: Option<String>,
}

async fn message_form(
    AxumState(app): AxumState<App>,
    lang: Lang,
    Member(user): Member,
    client: Client,
    headers: HeaderMap,
    Query(query): Query<SentQuery>,
) -> Result<Response> {
    let xsrf = Xsrf::from_headers(&headers);
    let words = &words::of(lang).message;
    let page = MessagePage {
        chrome: Chrome::page(&app, lang, words.title),
        words,
        user: user.name,
        xsrf: xsrf.token.clone(),
        text: String::new(),
        max: MAX_MESSAGE,
        error: None,
        sent: query.sent.is_some(),
    };
    Ok(with_xsrf_cookie(
        render(StatusCode::OK, &page)?,
        &xsrf,
        &client,
    ))
}

#[derive(Deserialize)]
struct MessageForm {
    msgtext: Option<String>,
    _xsrf: Option<String>,
}

impl XsrfField for MessageForm {
    fn xsrf(&self) -> Option<&str> {
        self._xsrf.as_deref()
    }
}

async fn message_post(
    AxumState(app): AxumState<App>,
    lang: Lang,
    Member(user): Member,
    headers: HeaderMap,
    Guarded(form): Guarded<MessageForm>,
) -> Result<Response> {
    let text = form.msgtext.unwrap_or_default();
    let words = &words::of(lang).message;
    let count = text.chars().count();
    let refused = if text.trim().is_empty() {
        Some((StatusCode::BAD_REQUEST, words.empty.to_string()))
    } else if count > MAX_MESSAGE {
        let filled = words::fill(
            words.too_long,
            &[
                ("count", &count.to_string()),
                ("max", &MAX_MESSAGE.to_string()),
            ],
        );
        Some((StatusCode::BAD_REQUEST, filled))
    } else if let Err(wait) = app.throttles.messages.try_take(user.id, MESSAGES) {
        if let Some(held) = app.quiet.messages.pass() {
            tracing::warn!(
                "message from {} refused: too many in a row{held}",
                Shown(&user.name)
            );
        }
        let seconds = format!("{:.0}", wait.as_secs_f64().ceil().max(1.0));
        let filled = words::fill(words.too_many, &[("seconds", &seconds)]);
        Some((StatusCode::TOO_MANY_REQUESTS, filled))
    } else {
        None
    };
    if let Some((status, error)) = refused {
        let xsrf = Xsrf::from_headers(&headers);
        let page = HtmlPage::render(&MessagePage {
            chrome: Chrome::page(&app, lang, words.title),
            words,
            user: user.name,
            xsrf: xsrf.token.clone(),
            text,
            max: MAX_MESSAGE,
            error: Some(error),
            sent: false,
        })?;
        return Err(match status {
            StatusCode::TOO_MANY_REQUESTS => Error::TooManyRequestsPage(page),
            _ => Error::BadRequestPage(page),
        });
    }
    let name = user.name.clone();
    app.state
        .apply(Event::Message {
            author: Some(user),
            text,
            origin: Origin::Web,
        })
        .await?;
    tracing::info!("{} posted a message", Shown(&name));
    Ok(Redirect::to("/message?sent=1").into_response())
}

#[derive(Deserialize)]
struct MacUpdateForm {
    password: Option<String>,
    macs: Option<String>,
}

/// The router's report of the MAC hashes on the network.
async fn mac_update(
    AxumState(app): AxumState<App>,
    client: Client,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<MacUpdateForm>>,
) -> Result<Response> {
    let options = &app.config.options;
    let Some(expected) = options.mac_update_password.clone() else {
        return Ok(not_found_in(&app, &uri, &headers));
    };
    let address = client.ip.map(AddressKey::from);
    let throttles = &app.throttles;
    let interval = Rate::once_every(Duration::from_secs(options.mac_update_interval));
    if throttles.mac_update.try_take(address, interval).is_err() {
        return Err(Error::TooManyRequests(format!(
            "at most one update every {} s",
            options.mac_update_interval
        )));
    }
    // Every update counts against the wrong-password limit when it arrives
    // (a right password gives its place back): past it nothing is compared.
    if let Err(wait) = throttles.mac_wrong.try_take(address, MAC_WRONG_PASSWORDS) {
        return Err(Error::TooManyRequests(format!(
            "too many wrong passwords; wait {} s",
            wait.as_secs_f64().ceil()
        )));
    }
    let Ok(Form(form)) = form else {
        return Err(Error::BadRequest(
            "expected a form with the fields password and macs".into(),
        ));
    };
    let (Some(password), Some(macs)) = (form.password, form.macs) else {
        return Err(Error::BadRequest(
            "the fields password and macs are both required".into(),
        ));
    };
    if !bool::from(password.as_bytes().ct_eq(expected.as_bytes())) {
        if let Some(held) = app.quiet.mac_update.pass() {
            tracing::warn!(
                "MAC update from {} with a wrong password{held}",
                client.label()
            );
        }
        return Err(Error::Forbidden("wrong password".into()));
    }
    throttles.mac_wrong.forget(&address);
    let Ok(hashes) = serde_json::from_str::<Vec<String>>(&macs) else {
        return Err(Error::BadRequest(
            "macs must be a JSON array of strings".into(),
        ));
    };
    if hashes.len() > MAX_MACS {
        return Err(Error::BadRequest(format!(
            "at most {MAX_MACS} MAC hashes per update"
        )));
    }
    let hashes: Vec<String> = hashes
        .into_iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    // Hashes of nobody are dropped here, never shown or counted.
    let members = app
        .store
        .run(move |db| db.members_for_macs(&hashes))
        .await?;
    let count = members.len();
    app.state.apply(Event::MacRoster(members)).await?;
    Ok((StatusCode::OK, format!("ok: {count} member(s) present\n")).into_response())
}
