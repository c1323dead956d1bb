//! The HTTP client of the webhooks: 10 s per request, no redirects
//! followed, at most a few KiB of any answer read.

use std::time::{Duration, SystemTime};

use super::request::{Method, Request};
use super::retry;
use crate::report::Report;

/// Longest a request may take, answer included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of an answer's body read; the rest is never fetched.
const BODY_READ: usize = 4096;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot start the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    /// The cause in words, without the URL (it may hold a token).
    #[error("{0}")]
    Network(String),
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After`, when given and readable.
    pub retry_after: Option<Duration>,
    /// The first line of the body, cut and with control characters escaped.
    pub first_line: String,
}

impl Answer {
    /// `503 Service Unavailable`, and the body's first line if any.
    pub fn summary(&self) -> String {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let status = format!("{} {reason}", self.status);
        match self.first_line.as_str() {
            "" => status.trim_end().to_string(),
            line => format!("{}: {line}", status.trim_end()),
        }
    }
}

/// Sends requests; cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client trusting the system's certificate authorities.
    pub fn new() -> Result<Client, SendError> {
        Self::builder()
            .build()
            .map(|http| Client { http })
            .map_err(SendError::Client)
    }

    /// A client for addresses strangers chose (push endpoints): a name that
    /// resolves only to loopback, private or link-local addresses is not
    /// called, unless `allow_local`.
    pub fn public_only(allow_local: bool) -> Result<Client, SendError> {
        let mut builder = Self::builder();
        if !allow_local {
            builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
        }
        builder
            .build()
            .map(|http| Client { http })
            .map_err(SendError::Client)
    }

    fn builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .user_agent(concat!("bitsd/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
    }

    /// Sends `request` and reads the start of the answer.
    pub async fn send(&self, request: &Request) -> Result<Answer, SendError> {
        let method = match request.method {
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
        };
        let mut builder = self
            .http
            .request(method, &request.url)
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let mut response = builder.send().await.map_err(network)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::retry_after(v, SystemTime::now()));
        let mut body = Vec::new();
        // A receiver that streams megabytes gets its first few KiB read.
        while body.len() < BODY_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(BODY_READ)]),
                Ok(None) => break,
                // The status is what counts; a body cut short is no failure.
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&body);
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        Ok(Answer {
            status,
            retry_after,
            first_line: crate::escape::cut(first.unwrap_or_default()),
        })
    }
}

/// Resolves names as the system does, keeping only the addresses bitsd may
/// call for a stranger (see [`crate::limits::is_local`]).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<std::net::SocketAddr> =
                found.filter(|a| !crate::limits::is_local(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

fn network(e: reqwest::Error) -> SendError {
    if e.is_timeout() {
        return SendError::Timeout;
    }
    // The URL may carry a token (Telegram's), so it is left out.
    SendError::Network(Report(&e.without_url()).to_string())
}
