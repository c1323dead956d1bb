//! Who is asking: the peer address, or the proxy's word for it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::App;

/// The address of the connection's peer; none on a unix socket.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<SocketAddr>);

/// The client as bitsd sees it; with `reverse_proxied`, as the proxy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub https: bool,
}

impl Client {
    /// Reads the client from the peer and, only when `proxied`, the headers.
    pub fn resolve(peer: Option<SocketAddr>, headers: &HeaderMap, proxied: bool) -> Client {
        let peer_ip = peer.map(|a| a.ip().to_canonical());
        if !proxied {
            return Client {
                ip: peer_ip,
                https: false,
            };
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let ip = header("x-real-ip")
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .or_else(|| {
                header("x-forwarded-for")
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.trim().parse::<IpAddr>().ok())
            })
            .map(|ip| ip.to_canonical())
            .or(peer_ip);
        let https =
            header("x-forwarded-proto").is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        Client { ip, https }
    }

    /// The address for logs.
    pub fn label(&self) -> String {
        self.ip
            .map_or_else(|| "local".to_string(), |ip| ip.to_string())
    }
}

impl FromRequestParts<App> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .and_then(|c| c.0.0);
        Ok(Client::resolve(
            peer,
            &parts.headers,
            app.config.options.reverse_proxied,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn proxy_headers_only_when_proxied() {
        let peer = Some("127.0.0.1:5000".parse().unwrap());
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let direct = Client::resolve(peer, &h, false);
        assert_eq!(direct.ip, Some("127.0.0.1".parse().unwrap()));
        assert!(!direct.https);
        let proxied = Client::resolve(peer, &h, true);
        assert_eq!(proxied.ip, Some("203.0.113.9".parse().unwrap()));
        assert!(proxied.https);
        let h = headers(&[
            ("x-real-ip", "198.51.100.7"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            Client::resolve(peer, &h, true).ip,
            Some("198.51.100.7".parse().unwrap())
        );
        let h = headers(&[("x-real-ip", "garbage")]);
        assert_eq!(
            Client::resolve(peer, &h, true).ip,
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
