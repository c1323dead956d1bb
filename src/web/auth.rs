//! Login, logout, the logged-in member extractor, anti-forgery tokens and
//! the throttles that slow down guessing.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Query, State as AxumState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::App;
use super::client::Client;
use super::error::{Form, Result};
use super::pages::{Chrome, render};
use crate::auth::{self, LOGIN_COOKIE, Verified, XSRF};
use crate::store::User;

/// Most remembered clients per throttle; the oldest are forgotten first.
const THROTTLE_ENTRIES: usize = 10_000;

pub fn router() -> Router<App> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", get(logout))
}

/// Remembers when each key last did something, to refuse doing it again too
/// soon. Bounded: past [`THROTTLE_ENTRIES`] keys, stale and then oldest
/// entries are dropped.
pub struct Throttle<K> {
    last: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Default for Throttle<K> {
    fn default() -> Self {
        Throttle {
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// How long `key` must still wait, if it acted less than `interval` ago.
    pub fn wait(&self, key: &K, interval: Duration) -> Option<Duration> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = last.get(key)?.elapsed();
        (elapsed < interval).then(|| interval - elapsed)
    }

    /// Records that `key` acted now.
    pub fn record(&self, key: K, interval: Duration) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= THROTTLE_ENTRIES {
            last.retain(|_, at| at.elapsed() < interval);
            if last.len() >= THROTTLE_ENTRIES {
                let mut ages: Vec<Instant> = last.values().copied().collect();
                ages.sort();
                let cutoff = ages[ages.len() / 2];
                last.retain(|_, at| *at > cutoff);
            }
        }
        last.insert(key, Instant::now());
    }
}

/// The throttles of the login form and of `/macupdate`.
#[derive(Default)]
pub struct Throttles {
    pub login_by_address: Throttle<Option<IpAddr>>,
    pub login_by_user: Throttle<(Option<IpAddr>, String)>,
    pub mac_update: Throttle<Option<IpAddr>>,
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

async fn logged_in(headers: &HeaderMap, app: &App) -> Option<User> {
    let value = cookie_value(headers, LOGIN_COOKIE)?;
    let id = app.signer.check_login(&value, unix_now())?;
    app.reader
        .read(move |db| db.user_by_id(id))
        .await
        .ok()
        .flatten()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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

fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    Form<T>: axum::extract::FromRequest<S, Rejection = Response>,
    T: XsrfField,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let cookie = cookie_value(request.headers(), XSRF).filter(|c| is_token(c));
        let Form(form) = Form::<T>::from_request(request, state).await?;
        // Compared in constant time.
        let matches = match (cookie, form.xsrf()) {
            (Some(cookie), Some(field)) => bool::from(cookie.as_bytes().ct_eq(field.as_bytes())),
            _ => false,
        };
        if !matches {
            return Err(forbidden());
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

/// The answer to a POST whose anti-forgery token is missing or wrong.
pub fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "403 Forbidden: missing or wrong anti-forgery token (_xsrf); reload the form and try again\n",
    )
        .into_response()
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
    client: Client,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Result<Response> {
    let xsrf = Xsrf::from_headers(&headers);
    let page = LoginPage {
        chrome: Chrome::new(&app, "BITS · log in"),
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
    client: Client,
    headers: HeaderMap,
    Guarded(form): Guarded<LoginForm>,
) -> Result<Response> {
    let username = form.username.unwrap_or_default().trim().to_string();
    let password = form.password.unwrap_or_default();
    let next = safe_next(form.next.as_deref());
    let options = &app.config.options;
    let retry = Duration::from_secs(options.min_login_retry);
    let page = |status: StatusCode, error: String| {
        let xsrf = Xsrf::from_headers(&headers);
        let page = LoginPage {
            chrome: Chrome::new(&app, "BITS · log in"),
            xsrf: xsrf.token.clone(),
            next: next.clone(),
            username: username.clone(),
            error: Some(error),
        };
        render(status, &page)
    };
    let by_user = (client.ip, username.clone());
    let wait = [
        app.throttles
            .login_by_address
            .wait(&client.ip, Duration::from_secs(1)),
        app.throttles.login_by_user.wait(&by_user, retry),
    ]
    .into_iter()
    .flatten()
    .max();
    if let Some(wait) = wait {
        tracing::warn!(
            "login for {username:?} from {} refused: too many attempts",
            client.label()
        );
        let seconds = wait.as_secs_f64().ceil().max(1.0);
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many attempts. Wait {seconds:.0} s and try again."),
        );
    }
    let name = username.clone();
    let credentials = app.reader.read(move |db| db.credentials(&name)).await?;
    let checked = tokio::task::spawn_blocking(move || match credentials {
        Some(c) => (Some(c.clone()), auth::verify_password(&password, &c.hash)),
        None => {
            auth::waste_time(&password);
            (None, Verified::Wrong)
        }
    })
    .await
    .map_err(|e| crate::store::StoreError::Task(e.to_string()))?;
    let (Some(credentials), Verified::Right { rehash }) = checked else {
        app.throttles
            .login_by_address
            .record(client.ip, Duration::from_secs(1));
        app.throttles.login_by_user.record(by_user, retry);
        tracing::info!("failed login for {username:?} from {}", client.label());
        return page(
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password.".into(),
        );
    };
    let user = credentials.user.clone();
    if let Some(new_hash) = rehash {
        let old = credentials.hash.clone();
        let id = user.id;
        let upgraded = app
            .reader
            .read(move |db| db.upgrade_password(id, &old, &new_hash))
            .await?;
        if upgraded {
            tracing::info!("password of {} upgraded to argon2id", user.name);
        }
    }
    tracing::info!("{} logged in from {}", user.name, client.label());
    let days = i64::from(options.cookie_max_age_days);
    let value = app.signer.login_value(user.id, unix_now() + days * 86_400);
    let cookie = site_cookie(LOGIN_COOKIE, value, &client)
        .max_age(cookie::time::Duration::days(days))
        .build();
    let mut response = Redirect::to(&next).into_response();
    set_cookie(&mut response, cookie);
    Ok(response)
}

async fn logout(client: Client) -> Response {
    let cookie = site_cookie(LOGIN_COOKIE, String::new(), &client)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut response = Redirect::to("/").into_response();
    set_cookie(&mut response, cookie);
    response
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
    fn throttle_waits_and_stays_bounded() {
        let t = Throttle::default();
        let second = Duration::from_secs(1);
        assert_eq!(t.wait(&1u32, second), None);
        t.record(1u32, second);
        assert!(t.wait(&1u32, second).is_some());
        assert_eq!(t.wait(&2u32, second), None);
        for k in 0..(THROTTLE_ENTRIES as u32 * 3) {
            t.record(k, Duration::from_secs(3600));
        }
        assert!(t.last.lock().unwrap().len() <= THROTTLE_ENTRIES);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query_value("/admin"), "/admin");
        assert_eq!(encode_query_value("/a b&c"), "/a%20b%26c");
    }
}
