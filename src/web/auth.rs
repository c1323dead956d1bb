//! Login, logout, the logged-in member extractor, anti-forgery tokens, the
//! throttles that slow down guessing, and the known-browser cookie that lets
//! a member's login past strangers waiting for the password checkers.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Query, State as AxumState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::App;
use super::client::Client;
use super::error::{Error, Form, Result};
use super::html::{Chrome, HtmlPage, render};
use super::lang::Lang;
use crate::auth::{self, KNOWN_COOKIE, KnownBrowser, LOGIN_COOKIE, Lane, Verified, XSRF};
use crate::clock::unix_seconds;
use crate::escape::Shown;
use crate::limits::{AddressKey, Rate, RateLimiter};
use crate::report::Report;
use crate::store::{self, User};
use crate::words::{self, LoginWords};

/// Longest user name a login may give, in characters.
pub const MAX_NAME: usize = 64;
/// Longest password a login may give, in bytes.
pub const MAX_PASSWORD: usize = 1024;
/// Lifetime of the known-browser cookie, in days.
pub const KNOWN_DAYS: i64 = 365;
/// Wrong passwords a known-browser cookie may come with and still give
/// priority: five in a row, then one an hour.
pub const KNOWN_WRONG: Rate = Rate {
    burst: 5,
    every: Duration::from_secs(3600),
};

pub fn router() -> Router<App> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", get(logout).post(logout))
}

/// The rate limits of the login form and of `/macupdate`, by client
/// address (`None` on a unix socket without a proxy).
#[derive(Default)]
pub struct Throttles {
    /// Login attempts: one a second.
    pub login_by_address: RateLimiter<Option<AddressKey>>,
    /// Login attempts per user name: one per `min_login_retry` seconds.
    pub login_by_user: RateLimiter<(Option<AddressKey>, String)>,
    /// MAC updates: one per `mac_update_interval` seconds.
    pub mac_update: RateLimiter<Option<AddressKey>>,
    /// Wrong MAC update passwords: five a minute.
    pub mac_wrong: RateLimiter<Option<AddressKey>>,
    /// Messages per member (by user id): five within ten seconds.
    pub messages: RateLimiter<i64>,
    /// New push subscriptions: five an hour.
    pub push_subscriptions: RateLimiter<Option<AddressKey>>,
    /// Logins with each known-browser cookie (by its nonce), cleared by a
    /// right password, so that wrong ones are held to [`KNOWN_WRONG`].
    pub known_attempts: RateLimiter<String>,
}

/// A logged-in member. Extracting it from a request without a valid login
/// cookie redirects to the login page, which comes back here afterwards.
pub struct Member(pub User);

impl FromRequestParts<App> for Member {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        if let Some(user) = logged_in(&parts.headers, app).await {
            return Ok(Member(user));
        }
        let next = parts.uri.path();
        let target = format!("/login?next={}", encode_query_value(next));
        Err(Redirect::to(&target).into_response())
    }
}

/// The logged-in member, if any; a request without a valid login cookie
/// goes on as a visitor's.
pub struct MaybeMember(pub Option<User>);

impl FromRequestParts<App> for MaybeMember {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(MaybeMember(logged_in(&parts.headers, app).await))
    }
}

async fn logged_in(headers: &HeaderMap, app: &App) -> Option<User> {
    let value = cookie_value(headers, LOGIN_COOKIE)?;
    let token = app.signer.verify(&value)?;
    let hash = auth::session_hash(&token);
    let now = unix_seconds();
    match app.store.run(move |db| db.session_user(&hash, now)).await {
        Ok(user) => user,
        Err(e) => {
            // Answered as not logged in; logged at a bounded rate.
            if let Some(held) = app.quiet.sessions.pass() {
                tracing::error!("cannot look up a session: {}{held}", Report(&e));
            }
            None
        }
    }
}

/// The value of cookie `name` in the request, if present and well formed.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(|c| c.ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty())
}

/// Everything but unreserved characters and `/` is percent-encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

fn encode_query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// The anti-forgery token of a form page: the client's `_xsrf` cookie, or a
/// new one to set with [`with_xsrf_cookie`].
pub struct Xsrf {
    pub token: String,
    fresh: bool,
}

impl Xsrf {
    pub fn from_headers(headers: &HeaderMap) -> Xsrf {
        match cookie_value(headers, XSRF).filter(|t| is_token(t)) {
            Some(token) => Xsrf {
                token,
                fresh: false,
            },
            None => Xsrf {
                token: auth::random_token(24),
                fresh: true,
            },
        }
    }
}

/// A form that carries the anti-forgery field `_xsrf`.
pub trait XsrfField {
    fn xsrf(&self) -> Option<&str>;
}

/// A POSTed form whose `_xsrf` field matches the cookie; any other is a 403
/// and reaches no handler.
pub struct Guarded<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Guarded<T>
where
    Form<T>: axum::extract::FromRequest<S, Rejection = Error>,
    T: XsrfField,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self> {
        let cookie = cookie_value(request.headers(), XSRF).filter(|c| is_token(c));
        let Form(form) = Form::<T>::from_request(request, state).await?;
        // Compared in constant time.
        let matches = match (cookie, form.xsrf()) {
            (Some(cookie), Some(field)) => bool::from(cookie.as_bytes().ct_eq(field.as_bytes())),
            _ => false,
        };
        if !matches {
            return Err(Error::ForgeryToken);
        }
        Ok(Guarded(form))
    }
}

/// Whether `token` looks like one [`auth::random_token`] makes (URL-safe
/// base64); any other `_xsrf` cookie is replaced, never echoed into a page.
fn is_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Adds the `_xsrf` cookie to `response` when the token is new.
pub fn with_xsrf_cookie(mut response: Response, xsrf: &Xsrf, client: &Client) -> Response {
    if xsrf.fresh {
        set_cookie(
            &mut response,
            site_cookie(XSRF, xsrf.token.clone(), client).build(),
        );
    }
    response
}

/// A cookie for the whole site, out of scripts' reach, `Secure` over HTTPS.
fn site_cookie(
    name: &'static str,
    value: String,
    client: &Client,
) -> cookie::CookieBuilder<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(client.https)
        .same_site(SameSite::Lax)
}

fn set_cookie(response: &mut Response, cookie: Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// `next` when it is a path on this site, else `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    words: &'static LoginWords,
    xsrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_form(
    AxumState(app): AxumState<App>,
    lang: Lang,
    client: Client,
    headers: HeaderMap,
    uri: Uri,
    Query(query): Query<NextQuery>,
) -> Result<Response> {
    let xsrf = Xsrf::from_headers(&headers);
    let words = &words::of(lang).login;
    let page = LoginPage {
        chrome: Chrome::page(&app, lang, words.title).keeping(uri.query()),
        words,
        xsrf: xsrf.token.clone(),
        next: safe_next(query.next.as_deref()),
        username: String::new(),
        error: None,
    };
    Ok(with_xsrf_cookie(
        render(StatusCode::OK, &page)?,
        &xsrf,
        &client,
    ))
}

#[derive(Deserialize)]
struct LoginForm {
    username: Option<String>,
    password: Option<String>,
    next: Option<String>,
    _xsrf: Option<String>,
}

impl XsrfField for LoginForm {
    fn xsrf(&self) -> Option<&str> {
        self._xsrf.as_deref()
    }
}

async fn login(
    AxumState(app): AxumState<App>,
    lang: Lang,
    client: Client,
    headers: HeaderMap,
    Guarded(form): Guarded<LoginForm>,
) -> Result<Response> {
    let username = form.username.unwrap_or_default().trim().to_string();
    let password = form.password.unwrap_or_default();
    // Refused before any work, so a long name costs neither time nor memory.
    if username.chars().count() > MAX_NAME {
        return Err(Error::BadRequest(format!(
            "the user name is longer than {MAX_NAME} characters"
        )));
    }
    if password.len() > MAX_PASSWORD {
        return Err(Error::BadRequest(format!(
            "the password is longer than {MAX_PASSWORD} bytes"
        )));
    }
    let next = safe_next(form.next.as_deref());
    // The form again, saying why the login was refused.
    let words = &words::of(lang).login;
    let page = |error: &str| {
        let xsrf = Xsrf::from_headers(&headers);
        let page = LoginPage {
            chrome: Chrome::page(&app, lang, words.title),
            words,
            xsrf: xsrf.token.clone(),
            next: next.clone(),
            username: username.clone(),
            error: Some(error.to_string()),
        };
        HtmlPage::render(&page)
    };
    // An attempt counts when it arrives: of many sent at once from one
    // address, one is checked and the others get 429.
    let address = client.ip.map(AddressKey::from);
    let retry = Rate::once_every(Duration::from_secs(app.config.options.min_login_retry));
    let by_user = (address, username.clone());
    let allowed = app
        .throttles
        .login_by_address
        .try_take(address, Rate::once_every(Duration::from_secs(1)))
        .and_then(|()| app.throttles.login_by_user.try_take(by_user.clone(), retry));
    if let Err(wait) = allowed {
        if let Some(held) = app.quiet.refused_login.pass() {
            tracing::warn!(
                "login for {} from {} refused: too many attempts{held}",
                Shown(&username),
                client.label()
            );
        }
        let seconds = wait.as_secs_f64().ceil().max(1.0);
        let why = words::fill(words.too_many, &[("seconds", &format!("{seconds:.0}"))]);
        return Err(Error::TooManyRequestsPage(page(&why)?));
    }
    let known = known_browser(&app, &headers, &username).await;
    let lane = if known.is_some() {
        Lane::Known
    } else {
        Lane::Stranger
    };
    let store = app.store.clone();
    let name = username.clone();
    let checked = app
        .passwords
        .run(lane, move || {
            let credentials = store.run_blocking(|db| db.credentials(&name))?;
            Ok::<_, crate::store::StoreError>(match credentials {
                Some(c) => {
                    let verified = auth::verify_password(&password, &c.hash);
                    (Some(c), verified)
                }
                None => {
                    auth::waste_time(&password);
                    (None, Verified::Wrong)
                }
            })
        })
        .await;
    let Ok(checked) = checked else {
        if let Some(held) = app.quiet.refused_login.pass() {
            tracing::warn!(
                "login from {} refused: too many password checks at once{held}",
                client.label()
            );
        }
        return Err(Error::TooManyRequestsPage(page(words.too_many_at_once)?));
    };
    let checked = checked?;
    app.metrics.password_checks.inc();
    if lane == Lane::Known {
        app.metrics.password_checks_known.inc();
    }
    let (Some(credentials), Verified::Right { rehash }) = checked else {
        if let Some(held) = app.quiet.failed_login.pass() {
            tracing::info!(
                "failed login for {} from {}{held}",
                Shown(&username),
                client.label()
            );
        }
        return Err(Error::Unauthorized(page(words.wrong)?));
    };
    // A right password does not hold back this member's next login.
    app.throttles.login_by_user.forget(&by_user);
    app.throttles.login_by_address.forget(&address);
    let user = credentials.user.clone();
    let mut hash = credentials.hash.clone();
    if let Some(new_hash) = rehash {
        let (old, id, new) = (hash.clone(), user.id, new_hash.clone());
        let upgraded = app
            .store
            .run(move |db| db.upgrade_password(id, &old, &new))
            .await?;
        if upgraded {
            tracing::info!("password of {} upgraded to argon2id", Shown(&user.name));
            hash = new_hash;
        }
    }
    let days = i64::from(app.config.options.cookie_max_age_days);
    let token = auth::session_token();
    let (token_hash, session_user, now) =
        (auth::session_hash(&token), user.clone(), unix_seconds());
    let created = app
        .store
        .run(move |db| {
            db.create_session(&token_hash, &session_user, &hash, now, now + days * 86_400)
        })
        .await?;
    if !created {
        // The password changed, or the user went, while it was checked.
        return Err(Error::Unauthorized(page(words.wrong)?));
    }
    tracing::info!("{} logged in from {}", Shown(&user.name), client.label());
    let cookie = site_cookie(LOGIN_COOKIE, app.signer.sign(&token), &client)
        .max_age(cookie::time::Duration::days(days))
        .build();
    let mut response = Redirect::to(&next).into_response();
    set_cookie(&mut response, cookie);
    if let Some(old) = &known {
        app.throttles.known_attempts.forget(&old.nonce);
    }
    // A new cookie each time, naming the member who logged in last.
    let known = app
        .signer
        .sign_known(&KnownBrowser::new(user.id, &user.name));
    let known = site_cookie(KNOWN_COOKIE, known, &client)
        .max_age(cookie::time::Duration::days(KNOWN_DAYS))
        .build();
    set_cookie(&mut response, known);
    Ok(response)
}

/// The known-browser cookie of the request when it gives `username`'s login
/// priority: signed by bitsd, for that very name, still the same user (not
/// one deleted, nor a new one given the name), and not come with too many
/// wrong passwords ([`KNOWN_WRONG`]). The attempt counts against the cookie
/// as it arrives; a right password clears the count.
async fn known_browser(app: &App, headers: &HeaderMap, username: &str) -> Option<KnownBrowser> {
    let known = cookie_value(headers, KNOWN_COOKIE)
        .and_then(|value| app.signer.verify_known(&value))
        .filter(|known| known.name == username)
        .filter(|known| {
            let attempts = &app.throttles.known_attempts;
            attempts.try_take(known.nonce.clone(), KNOWN_WRONG).is_ok()
        })?;
    let name = known.name.clone();
    let user = app.store.run(move |db| db.user_by_name(&name)).await;
    match user {
        Ok(Some(user)) if user.id == known.user_id => Some(known),
        _ => None,
    }
}

/// Ends the session (a copy of the cookie no longer works), clears the
/// cookie and goes home. The known-browser cookie stays: it names the
/// browser, not a session.
async fn logout(
    AxumState(app): AxumState<App>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response> {
    if let Some(token) = cookie_value(&headers, LOGIN_COOKIE).and_then(|v| app.signer.verify(&v)) {
        let hash = auth::session_hash(&token);
        app.store.run(move |db| db.end_session(&hash)).await?;
    }
    let cookie = site_cookie(LOGIN_COOKIE, String::new(), &client)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut response = Redirect::to("/").into_response();
    set_cookie(&mut response, cookie);
    Ok(response)
}

/// How often expired sessions are removed.
const SESSION_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Removes expired sessions now and every [`SESSION_SWEEP_EVERY`].
pub async fn sweep_sessions(store: store::Handle, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(SESSION_SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = unix_seconds();
        match store.run(move |db| db.sweep_sessions(now)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} expired session(s) removed"),
            Err(e) => tracing::warn!("cannot remove expired sessions: {}", Report(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        let cases = [
            (Some("/admin"), "/admin"),
            (Some("/message?x=1"), "/message?x=1"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some("/ok\r\nSet-Cookie: x"), "/"),
            (Some(""), "/"),
            (None, "/"),
        ];
        for (next, expected) in cases {
            assert_eq!(safe_next(next), expected, "{next:?}");
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query_value("/admin"), "/admin");
        assert_eq!(encode_query_value("/a b&c"), "/a%20b%26c");
    }
}
