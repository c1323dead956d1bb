//! The snapshot over HTTP: `/status`, `/data` and `/badge.svg` with their
//! ETags and bodies (compressed for `/data`), made once per snapshot
//! version, not per request.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use crate::state::{Snapshot, State};

/// The representations of the newest snapshot seen.
pub struct Cached {
    /// Distinguishes ETags of this run from those of an earlier one.
    boot: String,
    current: RwLock<Representation>,
}

impl Cached {
    pub fn new(state: &State) -> Cached {
        let boot = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let current = Representation::new(&boot, state.snapshot());
        Cached {
            boot,
            current: RwLock::new(current),
        }
    }

    /// `answer` given the representation of the current snapshot (or of a
    /// newer one), made on the first request that needs it.
    pub fn answer<R>(&self, state: &State, answer: impl FnOnce(&Representation) -> R) -> R {
        let version = state.version();
        {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if current.snapshot.version >= version {
                return answer(&current);
            }
        }
        let snapshot = state.snapshot();
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // Another request may have made a newer one meanwhile.
        if current.snapshot.version < snapshot.version {
            *current = Representation::new(&self.boot, snapshot);
        }
        answer(&current)
    }
}

/// One snapshot's answers.
pub struct Representation {
    snapshot: Arc<Snapshot>,
    data_etag: HeaderValue,
    status_etag: HeaderValue,
    data_gzip: OnceLock<Bytes>,
    data_brotli: OnceLock<Bytes>,
    /// The badge with the space's own name, and compressed.
    badge: OnceLock<Bytes>,
    badge_gzip: OnceLock<Bytes>,
    badge_brotli: OnceLock<Bytes>,
    boot: Arc<str>,
}

impl Representation {
    fn new(boot: &str, snapshot: Arc<Snapshot>) -> Representation {
        Representation {
            data_etag: etag(boot, "", snapshot.version),
            status_etag: etag(boot, "s", snapshot.status_version),
            snapshot,
            data_gzip: OnceLock::new(),
            data_brotli: OnceLock::new(),
            badge: OnceLock::new(),
            badge_gzip: OnceLock::new(),
            badge_brotli: OnceLock::new(),
            boot: boot.into(),
        }
    }

    /// `GET /status`: `1` when open, `0` otherwise.
    pub fn status(&self, headers: &HeaderMap) -> Response {
        let body = Bytes::from_static(self.snapshot.status_digit().as_bytes());
        revalidated(
            headers,
            &self.status_etag,
            "text/plain; charset=utf-8",
            body,
        )
    }

    /// `GET /data`: the JSON serialised when the state changed, compressed
    /// at most once per encoding.
    pub fn data(&self, headers: &HeaderMap) -> Response {
        let (encoding, body) = match preferred_encoding(headers) {
            Some(Encoding::Brotli) => (Some("br"), self.data_brotli()),
            Some(Encoding::Gzip) => (Some("gzip"), self.data_gzip()),
            None => (None, self.snapshot.data_json.clone()),
        };
        let response = revalidated(headers, &self.data_etag, "application/json", body);
        encoded(response, encoding)
    }

    /// `GET /badge.svg`: `?label=` (checked, else a 400) or `space`, and
    /// the status; its ETag changes with both.
    pub fn badge(&self, headers: &HeaderMap, query: Option<&str>, space: &str) -> Response {
        let label = match crate::badge::label_of(query) {
            Ok(label) => label,
            Err(e) => {
                return axum::response::IntoResponse::into_response(super::Error::BadRequest(
                    e.to_string(),
                ));
            }
        };
        let own = label.is_none();
        let label = label.as_deref().unwrap_or(space);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(label, &mut hasher);
        let tag = format!(
            "\"{}-b{}-{:016x}\"",
            self.boot,
            self.snapshot.status_version,
            std::hash::Hasher::finish(&hasher)
        );
        let etag = HeaderValue::from_str(&tag).expect("hex digits make a header value");
        let open = self.snapshot.is_open();
        let mut encoding = None;
        let body = if client_has(headers, &etag) {
            Bytes::new()
        } else if own {
            // Compressed once per status, like `/data`; a label of the
            // client's own is drawn for it alone and sent as it is.
            let plain = || {
                self.badge
                    .get_or_init(|| Bytes::from(crate::badge::svg(label, open)))
                    .clone()
            };
            match preferred_encoding(headers) {
                Some(Encoding::Brotli) => {
                    encoding = Some("br");
                    self.badge_brotli.get_or_init(|| brotli(&plain())).clone()
                }
                Some(Encoding::Gzip) => {
                    encoding = Some("gzip");
                    self.badge_gzip.get_or_init(|| gzip(&plain())).clone()
                }
                None => plain(),
            }
        } else {
            Bytes::from(crate::badge::svg(label, open))
        };
        encoded(revalidated(headers, &etag, "image/svg+xml", body), encoding)
    }

    fn data_gzip(&self) -> Bytes {
        self.data_gzip
            .get_or_init(|| gzip(&self.snapshot.data_json))
            .clone()
    }

    fn data_brotli(&self) -> Bytes {
        self.data_brotli
            .get_or_init(|| brotli(&self.snapshot.data_json))
            .clone()
    }
}

/// `response` with the `encoding` of its body, when it has one (not a 304).
fn encoded(mut response: Response, encoding: Option<&'static str>) -> Response {
    let ok = response.status() == StatusCode::OK;
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = encoding.filter(|_| ok) {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

fn gzip(input: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(input);
    Bytes::from(encoder.finish().unwrap_or_default())
}

fn brotli(input: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(input.len() / 4);
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        ..Default::default()
    };
    let mut input = input;
    let _ = brotli::BrotliCompress(&mut input, &mut out, &params);
    Bytes::from(out)
}

/// `"<boot>-<kind><version>"`: unique across restarts.
fn etag(boot: &str, kind: &str, version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{boot}-{kind}{version}\""))
        .expect("hex digits and a number make a header value")
}

enum Encoding {
    Brotli,
    Gzip,
}

/// Brotli over gzip when the client accepts both; `q=0` means refused.
fn preferred_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let mut gzip = false;
    let mut brotli = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            match name {
                "br" => brotli = true,
                "gzip" => gzip = true,
                _ => {}
            }
        }
    }
    if brotli {
        Some(Encoding::Brotli)
    } else if gzip {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

/// Whether `If-None-Match` names `etag` (or `*`): the client's copy is current.
pub(super) fn client_has(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let wanted = etag.to_str().unwrap_or_default();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == wanted || tag == "*")
}

/// A widget body with an ETag, or 304 when the client already has it; any
/// origin may read it.
pub(super) fn revalidated(
    headers: &HeaderMap,
    etag: &HeaderValue,
    content_type: &'static str,
    body: Bytes,
) -> Response {
    let mut response = if client_has(headers, etag) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
