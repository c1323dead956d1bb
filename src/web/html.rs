//! HTML responses: what the shared layout needs, and the headers every
//! rendered page carries.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::App;
use crate::state::Snapshot;
use crate::words::Lang;
use crate::words::{self, LayoutWords};

/// Scripts only from this origin; styles and images likewise, plus images
/// from anywhere for wiki pages.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: https:; connect-src 'self'; object-src 'none'; \
    base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// The name of a space whose configuration names none.
pub const DEFAULT_SPACE: &str = "BITS";

/// What the shared layout needs.
pub struct Chrome {
    pub(super) title: String,
    /// The space's name, at the head of every page.
    pub(super) space: String,
    pub(super) lang: Lang,
    /// The other language, offered in the header, and the link to this
    /// page in it.
    pub(super) other: Lang,
    pub(super) other_href: String,
    pub(super) words: &'static LayoutWords,
    pub(super) debug: bool,
    pub(super) version: &'static str,
    /// The favicon's name: the [`status_class`].
    pub(super) icon: &'static str,
    pub(super) blind: bool,
}

impl Chrome {
    /// The layout in `lang`, with `title` as the window's whole title.
    pub fn new(app: &App, lang: Lang, title: impl Into<String>) -> Chrome {
        Chrome {
            space: app.config.space_name().to_string(),
            icon: status_class(&app.state.snapshot()),
            debug: app.config.options.developer_mode,
            ..Chrome::plain(lang, title)
        }
    }

    /// The layout of a page titled `page` after the space's name.
    pub fn page(app: &App, lang: Lang, page: &str) -> Chrome {
        let title = words::fill(
            words::of(lang).layout.title,
            &[("space", app.config.space_name()), ("page", page)],
        );
        Chrome::new(app, lang, title)
    }

    /// The same, for a page whose query matters (`/log?offset=40`,
    /// `/login?next=/admin`): the link to the other language keeps it.
    pub fn keeping(mut self, query: Option<&str>) -> Chrome {
        let kept = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .filter(|(key, _)| key != "lang");
        self.other_href = format!(
            "?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(kept)
                .append_pair("lang", self.other.code())
                .finish()
        );
        self
    }

    /// The layout where no state is at hand: the default name, the room
    /// shown closed, no developer mode.
    pub fn plain(lang: Lang, title: impl Into<String>) -> Chrome {
        let other = match lang {
            Lang::En => Lang::It,
            Lang::It => Lang::En,
        };
        Chrome {
            title: title.into(),
            space: DEFAULT_SPACE.to_string(),
            lang,
            other,
            other_href: format!("?lang={}", other.code()),
            words: &words::of(lang).layout,
            debug: false,
            version: env!("CARGO_PKG_VERSION"),
            icon: "closed",
            blind: false,
        }
    }
}

/// `open`, `members`, `closed`, or `unknown` before any status is
/// recorded: the status's class on the homepage, and the favicon's name.
pub fn status_class(snapshot: &Snapshot) -> &'static str {
    match &snapshot.status {
        None => "unknown",
        Some(s) => s.value.state_str(),
    }
}

/// A page rendered to HTML, not yet given a status.
#[derive(Debug)]
pub struct HtmlPage(String);

impl HtmlPage {
    pub fn render(page: &impl Template) -> Result<HtmlPage, askama::Error> {
        Ok(HtmlPage(page.render()?))
    }

    /// The page with `status` and the security headers of HTML pages.
    pub fn with_status(self, status: StatusCode) -> Response {
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            self.0,
        )
            .into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        // Links to other sites do not carry a page's path and query.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        response
    }
}

/// Renders `page` with `status` and the security headers of HTML pages.
pub fn render(status: StatusCode, page: &impl Template) -> Result<Response, askama::Error> {
    Ok(HtmlPage::render(page)?.with_status(status))
}
