//! A push subscription as a browser sends it, checked whole before anything
//! is stored: an endpoint bitsd may call, keys that encrypt, topics it
//! knows; or one sent in place of the browser's old subscription, which
//! may leave the topics and language to the old one.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

pub use crate::limits::is_local;
pub use crate::record::push::{Replacement, Subscription, Topic};
use crate::words::Lang;

/// Longest endpoint URL accepted, in bytes.
pub const MAX_ENDPOINT: usize = 1024;

/// `POST /push/subscriptions`, as JSON. With `replaces`, the endpoint of
/// the subscription it takes the place of, `topics` and `lang` may be left
/// out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub subscription: Keyed,
    pub topics: Option<Vec<String>>,
    pub lang: Option<String>,
    pub replaces: Option<String>,
}

/// A subscription sent, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Stored as sent.
    Whole(Subscription),
    /// Stored in place of another.
    Replacing(Replacement),
}

impl Checked {
    /// The endpoint of the subscription sent.
    pub fn endpoint(&self) -> &str {
        match self {
            Checked::Whole(s) => &s.endpoint,
            Checked::Replacing(r) => &r.endpoint,
        }
    }
}

/// The browser's `PushSubscription.toJSON()`; `expirationTime` is read and
/// ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Keyed {
    pub endpoint: String,
    pub keys: Keys,
    #[serde(default)]
    pub expiration_time: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct Keys {
    pub p256dh: String,
    pub auth: String,
}

/// `DELETE /push/subscriptions`, as JSON.
#[derive(Debug, Deserialize)]
pub struct Unsubscribe {
    pub endpoint: String,
}

impl Request {
    /// The subscription, or what is wrong with it in one sentence.
    /// `allow_local` lets `http://` and loopback, private and link-local
    /// hosts through.
    pub fn check(self, allow_local: bool) -> Result<Checked, String> {
        let endpoint = check_endpoint(&self.subscription.endpoint, allow_local)?;
        let p256dh = key_bytes("p256dh", &self.subscription.keys.p256dh, 65)?;
        if web_push_native::p256::PublicKey::from_sec1_bytes(&p256dh).is_err() {
            return Err("keys.p256dh: not a point of the P-256 curve".into());
        }
        let auth = key_bytes("auth", &self.subscription.keys.auth, 16)?;
        if let Some(replaces) = &self.replaces
            && replaces.len() > MAX_ENDPOINT
        {
            return Err(format!("replaces: longer than {MAX_ENDPOINT} bytes"));
        }
        let mut topics = Vec::new();
        for text in self.topics.iter().flatten() {
            let topic = Topic::parse(text).ok_or_else(|| {
                format!(
                    "topics: unknown topic {}; known: open, message",
                    quoted(text)
                )
            })?;
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        // Left out, they are the replaced subscription's.
        let taken = self.topics.is_none() && self.replaces.is_some();
        if topics.is_empty() && !taken {
            return Err("topics: expected at least one of open, message".into());
        }
        topics.sort();
        let lang = match self.lang.as_deref() {
            None => Lang::default(),
            Some(code) => Lang::from_code(code)
                .ok_or_else(|| format!("lang: expected en or it, got {}", quoted(code)))?,
        };
        let (p256dh, auth) = (URL_SAFE_NO_PAD.encode(p256dh), URL_SAFE_NO_PAD.encode(auth));
        Ok(match self.replaces {
            None => Checked::Whole(Subscription {
                endpoint,
                p256dh,
                auth,
                topics,
                lang: lang.code().to_string(),
            }),
            Some(replaces) => Checked::Replacing(Replacement {
                endpoint,
                p256dh,
                auth,
                topics: self.topics.is_some().then_some(topics),
                lang: self.lang.is_some().then(|| lang.code().to_string()),
                replaces,
            }),
        })
    }
}

/// The endpoint as given, if bitsd may call it.
pub fn check_endpoint(endpoint: &str, allow_local: bool) -> Result<String, String> {
    if endpoint.len() > MAX_ENDPOINT {
        return Err(format!(
            "subscription.endpoint: longer than {MAX_ENDPOINT} bytes"
        ));
    }
    let url =
        url::Url::parse(endpoint).map_err(|_| "subscription.endpoint: not a URL".to_string())?;
    let scheme_fine = url.scheme() == "https" || (allow_local && url.scheme() == "http");
    if !scheme_fine {
        return Err("subscription.endpoint: expected an https:// URL".into());
    }
    let local = match url.host() {
        None => return Err("subscription.endpoint: no host".into()),
        Some(url::Host::Ipv4(ip)) => is_local(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_local(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if local && !allow_local {
        return Err(
            "subscription.endpoint: a loopback, private or link-local address is not a push service"
                .into(),
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("subscription.endpoint: no user or password in the URL".into());
    }
    Ok(endpoint.to_string())
}

/// What a client sent, quoted for an error message: its first 40
/// characters.
fn quoted(text: &str) -> String {
    let short: String = text.chars().take(40).collect();
    format!("{short:?}")
}

/// `text` as base64url (padded or not) of exactly `len` bytes.
fn key_bytes(name: &str, text: &str, len: usize) -> Result<Vec<u8>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("keys.{name}: not base64url"))?;
    if bytes.len() != len {
        return Err(format!(
            "keys.{name}: expected {len} bytes, got {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real P-256 point, as a browser sends it.
    const P256DH: &str =
        "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY";
    const AUTH: &str = "_ordMnz7uTCmrpBTeUV4Bw";

    fn request(endpoint: &str, p256dh: &str, auth: &str, topics: &[&str]) -> Request {
        Request {
            subscription: Keyed {
                endpoint: endpoint.into(),
                keys: Keys {
                    p256dh: p256dh.into(),
                    auth: auth.into(),
                },
                expiration_time: None,
            },
            topics: Some(topics.iter().map(|t| t.to_string()).collect()),
            lang: Some("it".into()),
            replaces: None,
        }
    }

    /// The subscription of a request without `replaces`.
    fn whole(checked: Checked) -> Subscription {
        match checked {
            Checked::Whole(s) => s,
            Checked::Replacing(r) => panic!("a replacement: {r:?}"),
        }
    }

    #[test]
    fn a_browsers_subscription_is_taken() {
        let push = "https://fcm.googleapis.com/fcm/send/abc:def";
        let taken = whole(
            request(push, P256DH, AUTH, &["message", "open", "open"])
                .check(false)
                .unwrap(),
        );
        assert_eq!(taken.topics, [Topic::Open, Topic::Message]);
        assert_eq!(taken.lang, "it");
        assert_eq!(taken.p256dh, P256DH);
        // Padding is read too.
        let padded = format!("{AUTH}==");
        assert!(
            request(push, P256DH, &padded, &["open"])
                .check(false)
                .is_ok()
        );
    }

    #[test]
    fn each_fault_is_named() {
        let push = "https://push.example/x";
        let cases = [
            (
                request("http://push.example/x", P256DH, AUTH, &["open"]),
                "https://",
            ),
            (
                request("https://127.0.0.1/x", P256DH, AUTH, &["open"]),
                "loopback",
            ),
            (
                request("https://10.1.2.3/x", P256DH, AUTH, &["open"]),
                "private",
            ),
            (
                request("https://[fe80::1]/x", P256DH, AUTH, &["open"]),
                "link-local",
            ),
            (
                request("https://[::ffff:192.168.0.1]/x", P256DH, AUTH, &["open"]),
                "private",
            ),
            (
                request("https://push.localhost/x", P256DH, AUTH, &["open"]),
                "loopback",
            ),
            (
                request("https://u:p@push.example/x", P256DH, AUTH, &["open"]),
                "password",
            ),
            (
                request(
                    &format!("https://push.example/{}", "a".repeat(1024)),
                    P256DH,
                    AUTH,
                    &["open"],
                ),
                "1024 bytes",
            ),
            (request("not a url", P256DH, AUTH, &["open"]), "not a URL"),
            (
                request(push, &P256DH[..40], AUTH, &["open"]),
                "keys.p256dh: expected 65 bytes",
            ),
            (
                request(push, &format!("BA{}", &P256DH[2..]), AUTH, &["open"]),
                "P-256",
            ),
            (
                request(push, P256DH, "!!", &["open"]),
                "keys.auth: not base64url",
            ),
            (
                request(push, P256DH, &AUTH[..8], &["open"]),
                "keys.auth: expected 16 bytes",
            ),
            (request(push, P256DH, AUTH, &["close"]), "unknown topic"),
            (request(push, P256DH, AUTH, &[]), "at least one"),
        ];
        for (request, says) in cases {
            let why = request.check(false).unwrap_err();
            assert!(why.contains(says), "{why:?} does not say {says:?}");
        }
        let mut unknown_lang = request(push, P256DH, AUTH, &["open"]);
        unknown_lang.lang = Some("fr".into());
        assert!(unknown_lang.check(false).unwrap_err().contains("lang"));
        let mut no_topics = request(push, P256DH, AUTH, &[]);
        no_topics.topics = None;
        let why = no_topics.check(false).unwrap_err();
        assert!(why.contains("topics: expected at least one"), "{why}");
        let mut long_old = request(push, P256DH, AUTH, &["open"]);
        long_old.replaces = Some(format!("https://push.example/{}", "a".repeat(1010)));
        let why = long_old.check(false).unwrap_err();
        assert_eq!(why, "replaces: longer than 1024 bytes");
    }

    #[test]
    fn a_replacement_takes_what_it_leaves_out_from_the_one_it_replaces() {
        const DEFAULT: &str = "en";
        let old = "https://push.example/old";
        let mut sent = request("https://push.example/new", P256DH, AUTH, &[]);
        (sent.topics, sent.lang, sent.replaces) = (None, None, Some(old.into()));
        let Checked::Replacing(bare) = sent.check(false).unwrap() else {
            panic!("not a replacement");
        };
        assert_eq!(bare.replaces, old);
        assert!(bare.takes_topics() && bare.lang.is_none());
        let stored = (vec![Topic::Open, Topic::Message], "it".to_string());
        let taken = bare.taking(Some(stored.clone()), DEFAULT).unwrap();
        assert_eq!(taken.endpoint, "https://push.example/new");
        assert_eq!((taken.topics, taken.lang), stored);
        assert_eq!(bare.taking(None, DEFAULT), None, "no topics from anywhere");

        // What is sent wins.
        let mut full = request("https://push.example/new", P256DH, AUTH, &["message"]);
        full.replaces = Some(old.into());
        let Checked::Replacing(full) = full.check(false).unwrap() else {
            panic!("not a replacement");
        };
        assert!(!full.takes_topics() && full.lang.is_some());
        let english = (vec![Topic::Open], "en".to_string());
        let taken = full.taking(Some(english.clone()), DEFAULT).unwrap();
        assert_eq!(
            (taken.topics, taken.lang.as_str()),
            (vec![Topic::Message], "it")
        );
        let alone = full.taking(None, DEFAULT).unwrap();
        assert_eq!(alone.topics, [Topic::Message]);
        // A language left out is the old one's, else the default.
        let mut no_lang = request("https://push.example/new", P256DH, AUTH, &["open"]);
        (no_lang.lang, no_lang.replaces) = (None, Some(old.into()));
        let Checked::Replacing(no_lang) = no_lang.check(false).unwrap() else {
            panic!("not a replacement");
        };
        let stored = (vec![Topic::Message], "it".to_string());
        assert_eq!(no_lang.taking(Some(stored), DEFAULT).unwrap().lang, "it");
        assert_eq!(no_lang.taking(None, DEFAULT).unwrap().lang, "en");
    }

    #[test]
    fn local_endpoints_only_when_allowed() {
        let local = request("http://127.0.0.1:8080/push/1", P256DH, AUTH, &["open"]);
        assert!(local.check(true).is_ok());
        assert!(is_local("100.64.0.1".parse().unwrap()));
        assert!(is_local("fd00::1".parse().unwrap()));
        assert!(!is_local("8.8.8.8".parse().unwrap()));
        assert!(!is_local("2a00:1450::1".parse().unwrap()));
    }
}
