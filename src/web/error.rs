//! The web error type: every error status bitsd answers, from one match;
//! the 404 page; the form extractor whose parse failures are such errors.

use askama::Template;
use axum::body::Body;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::html::{Chrome, DEFAULT_SPACE, HtmlPage, render};
use super::{BODY_TIMEOUT, MAX_BODY};
use crate::report::Report;
use crate::store::StoreError;
use crate::words::Lang;
use crate::words::{self, NotFoundWords};

/// Seconds a refused stream is asked to wait before trying again.
const STREAMS_RETRY_AFTER: &str = "10";

/// What a request can fail with. Text answers read `<status>: <message>`;
/// 5xx answers say nothing of the cause, which goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is wrong; the text says which and why.
    #[error("{0}")]
    BadRequest(String),
    /// A form shown again with what is wrong in it.
    #[error("the form was refused")]
    BadRequestPage(HtmlPage),
    /// The request body could not be read; the connection closes.
    #[error("the body could not be read")]
    BodyUnreadable(#[source] axum::Error),
    /// The login form shown again: wrong user name or password.
    #[error("the credentials were refused")]
    Unauthorized(HtmlPage),
    /// Refused for who is asking; the text says why.
    #[error("{0}")]
    Forbidden(String),
    /// A POSTed form without the anti-forgery token of its cookie.
    #[error("missing or wrong anti-forgery token (_xsrf); reload the form and try again")]
    ForgeryToken,
    /// The 404 page, drawn without the live state (the room shown closed).
    #[error("not found")]
    NotFound,
    /// What the request names is not there; the text says what.
    #[error("{0}")]
    Missing(String),
    /// The path exists, but not for this method (axum adds `Allow`).
    #[error("this path does not answer that method")]
    MethodNotAllowed,
    /// The request body did not arrive in time; the connection closes.
    #[error("the body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
    BodyTimeout,
    /// The request body is too long; the connection closes.
    #[error("the body is over {} KiB", MAX_BODY / 1024)]
    BodyTooLarge,
    /// A form body axum refuses before parsing it (a wrong content type).
    #[error(transparent)]
    FormRejected(FormRejection),
    /// A websocket handshake for another version than 13.
    #[error("websocket version 13 only")]
    WebsocketVersion,
    /// A `/device` upgrade whose `Authorization` key is wrong or revoked.
    #[error("wrong or revoked device key")]
    DeviceKey,
    /// Too many requests; the text says what the limit is.
    #[error("{0}")]
    TooManyRequests(String),
    /// A body of another type than the one the path reads; the text names
    /// the type expected.
    #[error("{0}")]
    MediaType(String),
    /// Everything there is room for is taken; the text says what.
    #[error("{0}")]
    Full(String),
    /// A form shown again with the limit it ran into.
    #[error("too many attempts")]
    TooManyRequestsPage(HtmlPage),
    /// The client's address holds all the connections it may; this one
    /// closes.
    #[error("too many connections from your address")]
    TooManyConnections,
    /// Every `web_max_streams` place is taken; requests are still served.
    #[error("too many live connections at the moment; try again later")]
    TooManyStreams,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A handler panicked; the server goes on.
    #[error("a handler panicked: {0}")]
    Panicked(String),
    /// A page could not be rendered.
    #[error("template")]
    Template(#[from] askama::Error),
    /// The database does not answer the health check.
    #[error("database unavailable")]
    Unavailable(#[source] StoreError),
}

impl Error {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::BadRequestPage(_) | Error::BodyUnreadable(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::Unauthorized(_) | Error::DeviceKey => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::ForgeryToken => StatusCode::FORBIDDEN,
            Error::NotFound | Error::Missing(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::FormRejected(rejection) => rejection.status(),
            Error::WebsocketVersion => StatusCode::UPGRADE_REQUIRED,
            Error::TooManyRequests(_)
            | Error::TooManyRequestsPage(_)
            | Error::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Error::Store(_) | Error::Template(_) | Error::Panicked(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Error::Unavailable(_) | Error::TooManyStreams | Error::Full(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Whether the connection closes after the answer: what the client was
    /// still sending is left unread, or its address may not hold it, or it
    /// came for a stream there is no place for.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Error::BodyUnreadable(_)
                | Error::BodyTimeout
                | Error::BodyTooLarge
                | Error::TooManyConnections
                | Error::TooManyStreams
        )
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let closes = self.closes_connection();
        // A refused stream is a limit at work, logged where it is counted.
        if status.is_server_error() && !matches!(self, Error::TooManyStreams | Error::Full(_)) {
            tracing::error!("{status}: {}", Report(&self));
        }
        let mut response = match self {
            Error::BadRequestPage(page)
            | Error::Unauthorized(page)
            | Error::TooManyRequestsPage(page) => page.with_status(status),
            Error::NotFound => {
                let words = words::of(Lang::En);
                let title = words::fill(
                    words.layout.title,
                    &[("space", DEFAULT_SPACE), ("page", words.not_found.title)],
                );
                not_found_page(Chrome::plain(Lang::En, title))
            }
            Error::FormRejected(rejection) => rejection.into_response(),
            Error::WebsocketVersion => (
                status,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                format!("{status}: {self}\n"),
            )
                .into_response(),
            Error::BadRequest(_)
            | Error::Forbidden(_)
            | Error::ForgeryToken
            | Error::Missing(_)
            | Error::MethodNotAllowed
            | Error::DeviceKey
            | Error::TooManyRequests(_)
            | Error::MediaType(_)
            | Error::Full(_) => (status, format!("{status}: {self}\n")).into_response(),
            Error::BodyUnreadable(_)
            | Error::BodyTimeout
            | Error::BodyTooLarge
            | Error::TooManyConnections => {
                let mut response = Response::new(Body::from(format!("{status}: {self}\n")));
                *response.status_mut() = status;
                response
            }
            Error::Store(_) | Error::Template(_) | Error::Panicked(_) => {
                (status, format!("{status}\n")).into_response()
            }
            Error::Unavailable(_) => (status, "database unavailable\n").into_response(),
            Error::TooManyStreams => (
                status,
                [(header::RETRY_AFTER, STREAMS_RETRY_AFTER)],
                format!("{status}: {self}\n"),
            )
                .into_response(),
        };
        if closes {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage {
    chrome: Chrome,
    words: &'static NotFoundWords,
}

/// The 404 page, in the layout `chrome` gives; plain text if it cannot be
/// rendered.
pub fn not_found_page(chrome: Chrome) -> Response {
    let words = &words::of(chrome.lang).not_found;
    render(StatusCode::NOT_FOUND, &NotFoundPage { chrome, words }).unwrap_or_else(|e| {
        tracing::error!("the 404 page: {}", Report(&Error::Template(e)));
        (StatusCode::NOT_FOUND, "404 Not Found\n").into_response()
    })
}

/// `axum::Form`, except that a body that does not parse (a duplicate or
/// badly encoded field) is a 400 saying why rather than a 422.
pub struct Form<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Form<T>
where
    axum::Form<T>: axum::extract::FromRequest<S, Rejection = FormRejection>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self> {
        match axum::Form::<T>::from_request(request, state).await {
            Ok(axum::Form(value)) => Ok(Form(value)),
            Err(e) if e.status() == StatusCode::UNPROCESSABLE_ENTITY => {
                Err(Error::BadRequest(e.body_text()))
            }
            Err(e) => Err(Error::FormRejected(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Template)]
    #[template(source = "<p>{{ why }}</p>", ext = "html")]
    struct Sample {
        why: &'static str,
    }

    fn page() -> HtmlPage {
        HtmlPage::render(&Sample { why: "try again" }).unwrap()
    }

    fn database_failure() -> StoreError {
        StoreError::Sqlite(rusqlite::Error::InvalidQuery)
    }

    /// Every variant, with its status and whether it closes the connection.
    fn every_variant() -> Vec<(Error, u16, bool)> {
        let reset = || axum::Error::new(std::io::Error::other("connection reset"));
        let content_type = FormRejection::InvalidFormContentType(Default::default());
        vec![
            (
                Error::BadRequest("limit must be at least 1".into()),
                400,
                false,
            ),
            (Error::BadRequestPage(page()), 400, false),
            (Error::BodyUnreadable(reset()), 400, true),
            (Error::Unauthorized(page()), 401, false),
            (Error::Forbidden("wrong password".into()), 403, false),
            (Error::ForgeryToken, 403, false),
            (Error::NotFound, 404, false),
            (Error::MethodNotAllowed, 405, false),
            (Error::BodyTimeout, 408, true),
            (Error::BodyTooLarge, 413, true),
            (Error::FormRejected(content_type), 415, false),
            (Error::WebsocketVersion, 426, false),
            (
                Error::TooManyRequests("at most one update every 60 s".into()),
                429,
                false,
            ),
            (Error::TooManyRequestsPage(page()), 429, false),
            (Error::TooManyConnections, 429, true),
            (Error::Store(database_failure()), 500, false),
            (Error::Template(askama::Error::Fmt), 500, false),
            (Error::Panicked("index out of bounds".into()), 500, false),
            (Error::Unavailable(database_failure()), 503, false),
        ]
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn each_variant_answers_its_status_and_says_whether_it_closes() {
        for (error, status, closes) in every_variant() {
            let name = format!("{error:?}");
            assert_eq!(error.status_code().as_u16(), status, "{name}");
            assert_eq!(error.closes_connection(), closes, "{name}");
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            let connection = response.headers().get(header::CONNECTION);
            assert_eq!(connection.is_some_and(|v| v == "close"), closes, "{name}");
        }
    }

    #[tokio::test]
    async fn text_answers_name_the_status_and_the_reason() {
        let cases = [
            (
                Error::BadRequest("offset must be a non-negative integer".into()),
                "400 Bad Request: offset must be a non-negative integer\n",
            ),
            (
                Error::ForgeryToken,
                "403 Forbidden: missing or wrong anti-forgery token (_xsrf); reload the form and try again\n",
            ),
            (
                Error::BodyTimeout,
                "408 Request Timeout: the body did not arrive within 10 s\n",
            ),
            (
                Error::BodyTooLarge,
                "413 Payload Too Large: the body is over 64 KiB\n",
            ),
            (
                Error::TooManyConnections,
                "429 Too Many Requests: too many connections from your address\n",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(body(error.into_response()).await, expected);
        }
        let response = Error::WebsocketVersion.into_response();
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(
            body(response).await,
            "426 Upgrade Required: websocket version 13 only\n"
        );
    }

    #[tokio::test]
    async fn server_errors_keep_their_cause_out_of_the_body() {
        let cases = [
            (
                Error::Store(database_failure()),
                "500 Internal Server Error\n",
            ),
            (
                Error::Template(askama::Error::Fmt),
                "500 Internal Server Error\n",
            ),
            (
                Error::Unavailable(database_failure()),
                "database unavailable\n",
            ),
        ];
        for (error, expected) in cases {
            let logged = Report(&error).to_string();
            assert_eq!(body(error.into_response()).await, expected, "{logged}");
        }
        // What the log gets instead: each cause once.
        assert_eq!(
            Report(&Error::Unavailable(database_failure())).to_string(),
            "database unavailable: database: Query is not read-only"
        );
        assert_eq!(
            Report(&Error::Store(database_failure())).to_string(),
            "database: Query is not read-only"
        );
    }

    #[tokio::test]
    async fn pages_are_html_with_the_page_headers() {
        for error in [
            Error::BadRequestPage(page()),
            Error::Unauthorized(page()),
            Error::TooManyRequestsPage(page()),
            Error::NotFound,
        ] {
            let response = error.into_response();
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
            let html = body(response).await;
            assert!(
                html == "<p>try again</p>" || html.contains("<h1>Not found</h1>"),
                "{html}"
            );
        }
    }
}
