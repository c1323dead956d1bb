//! The language of a page: `?lang=en|it` (remembered in a `lang` cookie),
//! else the `lang` cookie, else the client's `Accept-Language`, else
//! `default_language`.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::Response;

use super::App;
use super::error::Error;
pub use crate::words::Lang;

/// How long the `lang` cookie lasts: a year.
const COOKIE_AGE: u32 = 365 * 24 * 3600;
/// Languages read from `Accept-Language`, at most; the rest are ignored.
const MAX_RANGES: usize = 32;

/// `lang` from the query string: `None` when absent, an error when it names
/// a language bitsd does not speak.
fn from_query(query: Option<&str>) -> Result<Option<Lang>, Error> {
    let Some(query) = query else {
        return Ok(None);
    };
    let asked = url::form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "lang");
    match asked {
        None => Ok(None),
        Some((_, value)) => Lang::from_code(&value).map(Some).ok_or_else(|| {
            Error::BadRequest(format!(
                "lang must be en or it, got {:?}",
                value.chars().take(16).collect::<String>()
            ))
        }),
    }
}

/// The `lang` cookie, when it names a language bitsd speaks.
fn from_cookie(headers: &HeaderMap) -> Option<Lang> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == "lang")
        .and_then(|c| Lang::from_code(c.value()))
}

/// The language the client prefers most among those bitsd speaks, from an
/// `Accept-Language` value (`it-IT,it;q=0.9,en;q=0.8`): the highest `q`
/// wins, the first listed among equals; `*` and unknown ones are skipped.
pub fn from_accept_language(value: &str) -> Option<Lang> {
    let mut best: Option<(Lang, f32)> = None;
    for range in value.split(',').take(MAX_RANGES) {
        let mut parts = range.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let primary = tag.split('-').next().unwrap_or("");
        let Some(lang) = Lang::from_code(primary) else {
            continue;
        };
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((lang, q));
        }
    }
    best.map(|(lang, _)| lang)
}

/// The language of a request whose `?lang=`, if any, was already read:
/// the cookie, else `Accept-Language`, else `default`.
pub fn negotiate(headers: &HeaderMap, default: Lang) -> Lang {
    let accepted = || {
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(from_accept_language)
    };
    from_cookie(headers).or_else(accepted).unwrap_or(default)
}

/// The language of a request for a page that is not the answer's main
/// point (a 404): a bad `?lang=` is passed over.
pub fn lenient(uri: &Uri, headers: &HeaderMap, default: Lang) -> Lang {
    match from_query(uri.query()) {
        Ok(Some(lang)) => lang,
        _ => negotiate(headers, default),
    }
}

/// A page's language; a `?lang=` bitsd does not speak is a 400.
impl FromRequestParts<App> for Lang {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let default = app.config.options.default_language;
        Ok(from_query(parts.uri.query())?.unwrap_or_else(|| negotiate(&parts.headers, default)))
    }
}

/// Remembers a language asked with `?lang=` in a cookie; says on every
/// answer that it may depend on the language asked.
pub async fn remember(request: Request, next: Next) -> Response {
    let asked = from_query(request.uri().query()).ok().flatten();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    // A page asked in a language; not a picture that carries the page's.
    if let Some(lang) = asked.filter(|_| is_html) {
        let cookie = format!(
            "lang={}; Path=/; Max-Age={COOKIE_AGE}; SameSite=Lax",
            lang.code()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    if is_html {
        headers.append(
            header::VARY,
            HeaderValue::from_static("Accept-Language, Cookie"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_most_wanted_language_spoken() {
        for (value, expected) in [
            ("it-IT,it;q=0.9,en;q=0.8", Some(Lang::It)),
            ("en-GB,en;q=0.9,it;q=0.8", Some(Lang::En)),
            ("de-DE,de;q=0.9,it;q=0.5,en;q=0.4", Some(Lang::It)),
            ("fr, en;q=0.1, it;q=0.2", Some(Lang::It)),
            ("it;q=0, en;q=0.3", Some(Lang::En)),
            ("en, it", Some(Lang::En)),
            ("IT", Some(Lang::It)),
            ("*", None),
            ("de, fr", None),
            ("", None),
            ("en;q=abc", Some(Lang::En)),
            (";;;,,,", None),
        ] {
            assert_eq!(from_accept_language(value), expected, "{value:?}");
        }
    }

    #[test]
    fn a_long_accept_language_reads_its_first_ranges_only() {
        let value = format!("{}it", "de,".repeat(100));
        assert_eq!(from_accept_language(&value), None);
    }

    #[test]
    fn lang_in_the_query() {
        assert!(matches!(from_query(None), Ok(None)));
        assert!(matches!(from_query(Some("a=1")), Ok(None)));
        assert!(matches!(from_query(Some("lang=it")), Ok(Some(Lang::It))));
        assert!(matches!(
            from_query(Some("x=1&lang=en")),
            Ok(Some(Lang::En))
        ));
        let error = from_query(Some("lang=fr")).unwrap_err().to_string();
        assert!(error.contains("lang must be en or it"), "{error}");
    }
}
