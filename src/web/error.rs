//! The web error type (one match from error to status code), and the form
//! extractor whose parse failures are such errors.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::html::{Chrome, render};
use crate::report::Report;
use crate::store::StoreError;

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is wrong; the text says which and why.
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    /// Refused for who is asking; the text says why.
    #[error("{0}")]
    Forbidden(String),
    /// Too many requests; the text says what the limit is.
    #[error("{0}")]
    TooManyRequests(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template")]
    Template(#[from] askama::Error),
}

impl Error {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Store(_) | Error::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status_code();
        match self {
            Error::BadRequest(why) | Error::Forbidden(why) | Error::TooManyRequests(why) => {
                (status, format!("{status}: {why}\n")).into_response()
            }
            Error::NotFound => not_found_page(Chrome::plain(NOT_FOUND_TITLE)),
            cause => {
                tracing::error!("internal error: {}", Report(&cause));
                (status, "500 Internal Server Error\n").into_response()
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The title of the 404 page.
pub const NOT_FOUND_TITLE: &str = "BITS · not found";

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage {
    chrome: Chrome,
}

/// The 404 page, in the layout `chrome` gives; plain text if it cannot be
/// rendered.
pub fn not_found_page(chrome: Chrome) -> Response {
    render(StatusCode::NOT_FOUND, &NotFoundPage { chrome }).unwrap_or_else(|e| {
        tracing::error!("the 404 page: {}", Report(&Error::Template(e)));
        (StatusCode::NOT_FOUND, "404 Not Found\n").into_response()
    })
}

/// `axum::Form`, except that a body that does not parse (a duplicate or
/// badly encoded field) is a 400 saying why rather than a 422.
pub struct Form<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Form<T>
where
    axum::Form<T>:
        axum::extract::FromRequest<S, Rejection = axum::extract::rejection::FormRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match axum::Form::<T>::from_request(request, state).await {
            Ok(axum::Form(value)) => Ok(Form(value)),
            Err(e) if e.status() == StatusCode::UNPROCESSABLE_ENTITY => {
                Err(Error::BadRequest(e.body_text()).into_response())
            }
            Err(e) => Err(e.into_response()),
        }
    }
}
