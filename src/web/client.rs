//! Who is asking: the peer address, or the proxy's word for it, and the
//! origin the client reached.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::App;
use crate::config::Options;

/// The address of the connection's peer; none on a unix socket.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<SocketAddr>);

/// Which proxy headers are believed: none, or those of `hops` proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Peer,
    Proxies { hops: u32 },
}

impl Trust {
    pub fn of(options: &Options) -> Trust {
        if options.reverse_proxied {
            Trust::Proxies {
                hops: options.trusted_proxy_hops.max(1),
            }
        } else {
            Trust::Peer
        }
    }
}

/// The client as bitsd sees it; with `reverse_proxied`, as the proxy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub https: bool,
}

impl Client {
    /// Reads the client from the peer and, only when proxies are trusted,
    /// the headers they set.
    ///
    /// Behind `hops` proxies the client is the address `hops` places from
    /// the right of `X-Forwarded-For`: whatever stands left of it was sent
    /// by the client and proves nothing. `X-Real-IP` is read only when
    /// `X-Forwarded-For` is absent.
    pub fn resolve(peer: Option<SocketAddr>, headers: &HeaderMap, trust: Trust) -> Client {
        let peer_ip = peer.map(|a| a.ip().to_canonical());
        let Trust::Proxies { hops } = trust else {
            return Client {
                ip: peer_ip,
                https: false,
            };
        };
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        let chosen = if forwarded.is_empty() {
            headers.get("x-real-ip").and_then(|v| v.to_str().ok())
        } else {
            // Fewer entries than proxies: the leftmost is the best there is.
            let from_right = (hops as usize).min(forwarded.len());
            Some(forwarded[forwarded.len() - from_right])
        };
        let ip = chosen
            .and_then(parse_address)
            .map(|ip| ip.to_canonical())
            .or(peer_ip);
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        Client { ip, https }
    }

    /// The address for logs.
    pub fn label(&self) -> String {
        self.ip
            .map_or_else(|| "local".to_string(), |ip| ip.to_string())
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:5000`,
/// `2001:db8::1` or `[2001:db8::1]:5000`.
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
}

/// This server's own origin as the client reached it: scheme, host and
/// port, from `Host` (`X-Forwarded-Host` behind a proxy).
pub fn own_origin(headers: &HeaderMap, client: &Client, trust: Trust) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
    };
    let host = matches!(trust, Trust::Proxies { .. })
        .then(|| header("x-forwarded-host"))
        .flatten()
        .or_else(|| header("host"))
        .unwrap_or_else(|| "localhost".into());
    let scheme = if client.https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The origin of the absolute URLs this server writes: `public_url` when
/// set, so no client chooses them; else [`own_origin`].
pub fn public_origin(options: &Options, headers: &HeaderMap, client: &Client) -> String {
    match &options.public_url {
        Some(url) => url.clone(),
        None => own_origin(headers, client, Trust::of(options)),
    }
}

/// Whether `origin` (an `Origin` header) names the same origin as `own`:
/// scheme, host and port alike, a default port written or not.
pub fn same_origin(origin: &str, own: &str) -> bool {
    match (canonical_origin(origin), canonical_origin(own)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn canonical_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    // The port follows the last colon outside an IPv6 literal's brackets.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (authority, default),
    };
    Some((scheme, host.to_ascii_lowercase(), port))
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
            Trust::of(&app.config.options),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const ONE: Trust = Trust::Proxies { hops: 1 };

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn proxy_headers_only_when_proxied() {
        let peer = Some("127.0.0.1:5000".parse().unwrap());
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let direct = Client::resolve(peer, &h, Trust::Peer);
        assert_eq!(direct.ip, ip("127.0.0.1"));
        assert!(!direct.https);
        let proxied = Client::resolve(peer, &h, ONE);
        assert_eq!(proxied.ip, ip("10.0.0.1"), "the rightmost address");
        assert!(proxied.https);
    }

    #[test]
    fn the_client_cannot_choose_its_address() {
        let peer = Some("127.0.0.1:5000".parse().unwrap());
        // The client wrote the first entry; the proxy appended the second.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7")]);
        assert_eq!(Client::resolve(peer, &h, ONE).ip, ip("198.51.100.7"));
        let two = Trust::Proxies { hops: 2 };
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(Client::resolve(peer, &h, two).ip, ip("198.51.100.7"));
        // Several header lines read as one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.8"),
        ]);
        assert_eq!(Client::resolve(peer, &h, ONE).ip, ip("198.51.100.8"));
        // Fewer entries than proxies: the leftmost.
        let h = headers(&[("x-forwarded-for", "198.51.100.9")]);
        assert_eq!(Client::resolve(peer, &h, two).ip, ip("198.51.100.9"));
        // X-Real-IP counts only without X-Forwarded-For.
        let h = headers(&[
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(Client::resolve(peer, &h, ONE).ip, ip("198.51.100.7"));
        let h = headers(&[("x-real-ip", "198.51.100.6")]);
        assert_eq!(Client::resolve(peer, &h, ONE).ip, ip("198.51.100.6"));
        // Empty entries are no entries.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.4, "),
            ("x-forwarded-for", ""),
        ]);
        assert_eq!(Client::resolve(peer, &h, ONE).ip, ip("198.51.100.4"));
        let h = headers(&[("x-forwarded-for", ""), ("x-real-ip", "198.51.100.5")]);
        assert_eq!(Client::resolve(peer, &h, ONE).ip, ip("198.51.100.5"));
        // Garbage falls back to the peer; ports and brackets are understood.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, garbage")]);
        assert_eq!(Client::resolve(peer, &h, ONE).ip, ip("127.0.0.1"));
        for (text, expected) in [
            ("192.0.2.1:5000", "192.0.2.1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::2]", "2001:db8::2"),
            ("::ffff:192.0.2.3", "192.0.2.3"),
        ] {
            let h = headers(&[("x-forwarded-for", text)]);
            assert_eq!(Client::resolve(peer, &h, ONE).ip, ip(expected), "{text}");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let own = "http://bits.example:8008";
        assert!(same_origin("http://bits.example:8008", own));
        assert!(same_origin("HTTP://Bits.Example:8008", own));
        assert!(!same_origin("https://bits.example:8008", own));
        assert!(!same_origin("http://bits.example:8009", own));
        assert!(!same_origin("http://evil.example:8008", own));
        assert!(!same_origin("null", own));
        assert!(!same_origin("http://bits.example:8008@evil.example", own));
        assert!(same_origin(
            "https://bits.example",
            "https://bits.example:443"
        ));
        assert!(same_origin("http://bits.example:80", "http://bits.example"));
        assert!(same_origin("http://[::1]:8008", "http://[::1]:8008"));
        assert!(!same_origin("http://[::1]:8008", "http://[::1]"));
        assert!(!same_origin("", own));
    }

    #[test]
    fn own_origin_honours_the_proxy_only_when_trusted() {
        let h = headers(&[
            ("host", "127.0.0.1:8008"),
            ("x-forwarded-host", "bits.example"),
        ]);
        let plain = Client {
            ip: None,
            https: false,
        };
        assert_eq!(own_origin(&h, &plain, Trust::Peer), "http://127.0.0.1:8008");
        let secure = Client {
            ip: None,
            https: true,
        };
        assert_eq!(own_origin(&h, &secure, ONE), "https://bits.example");
    }
}
