//! Passwords, the signed login token and anti-forgery tokens; no I/O.
//!
//! Passwords are stored as argon2id PHC strings. The original server's
//! `sha512_crypt` hashes (`$6$...`) still verify, and the caller replaces
//! them with argon2id on the first successful login.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use cookie::{Cookie, CookieJar, Key};
use rand::RngCore;
use sha_crypt::ShaCrypt;
use sha2::{Digest, Sha256, Sha512};

/// Name of the login cookie.
pub const LOGIN_COOKIE: &str = "usertoken";
/// Name of the anti-forgery cookie and form field.
pub const XSRF: &str = "_xsrf";

/// What checking a password against a stored hash found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Right password; `rehash` holds an argon2id hash to store instead of
    /// an old-scheme one.
    Right {
        rehash: Option<String>,
    },
    Wrong,
}

/// An argon2id hash of `password`, as a PHC string.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .expect("argon2 with default parameters hashes any password")
}

/// Checks `password` against `stored` (argon2 PHC or `$6$` sha512_crypt).
/// Anything else, such as the device user's `!`, never verifies.
pub fn verify_password(password: &str, stored: &str) -> Verified {
    let pw = password.as_bytes();
    if stored.starts_with("$argon2") {
        return match Argon2::default().verify_password(pw, stored) {
            Ok(()) => Verified::Right { rehash: None },
            Err(_) => Verified::Wrong,
        };
    }
    if stored.starts_with("$6$") {
        return match ShaCrypt::default().verify_password(pw, stored) {
            Ok(()) => Verified::Right {
                rehash: Some(hash_password(password)),
            },
            Err(_) => Verified::Wrong,
        };
    }
    // Spend the same time as a real check so unknown and disabled accounts
    // cannot be told apart by timing.
    let _ = Argon2::default().verify_password(pw, dummy_hash());
    Verified::Wrong
}

/// Verifies against a throwaway hash: what a login for an unknown user costs.
pub fn waste_time(password: &str) {
    let _ = Argon2::default().verify_password(password.as_bytes(), dummy_hash());
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password anybody has"))
}

/// A random token, URL-safe base64 of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 hex of a MAC address written lower-case with colons, as stored
/// in `MACToUser.mac_hash`. `None` when `mac` is not six hex pairs.
pub fn mac_hash(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.trim().split([':', '-']).collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return None;
    }
    let canonical = parts.join(":").to_ascii_lowercase();
    Some(hex(&Sha256::digest(canonical.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs and checks login tokens. The cookie value carries the user id and
/// an expiry, both covered by the signature, so a cookie kept past its
/// `Max-Age` is refused anyway.
#[derive(Clone)]
pub struct Signer {
    key: Key,
}

impl Signer {
    /// A signer whose key is derived from `secret` (any length).
    pub fn new(secret: &str) -> Signer {
        let digest = Sha512::digest(secret.as_bytes());
        Signer {
            key: Key::from(digest.as_slice()),
        }
    }

    /// The signed value of a login cookie for `userid`, valid until `expires`
    /// (unix seconds).
    pub fn login_value(&self, userid: i64, expires: i64) -> String {
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.key)
            .add(Cookie::new(LOGIN_COOKIE, format!("{userid}:{expires}")));
        jar.get(LOGIN_COOKIE)
            .map(|c| c.value().to_string())
            .unwrap_or_default()
    }

    /// The user id in a login cookie value, if the signature holds and
    /// `now` (unix seconds) is before its expiry.
    pub fn check_login(&self, value: &str, now: i64) -> Option<i64> {
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(LOGIN_COOKIE, value.to_string()));
        let verified = jar.signed(&self.key).get(LOGIN_COOKIE)?;
        let (id, expires) = verified.value().split_once(':')?;
        let expires: i64 = expires.parse().ok()?;
        (now < expires).then(|| id.parse().ok()).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash_password("s3cret");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_eq!(
            verify_password("s3cret", &h),
            Verified::Right { rehash: None }
        );
        assert_eq!(verify_password("S3cret", &h), Verified::Wrong);
    }

    #[test]
    fn legacy_sha512_crypt_verifies_and_asks_for_a_rehash() {
        // `mkpasswd -m sha-512 -S saltsalt hunter2`, as the original stored.
        let legacy = legacy_hash("hunter2");
        match verify_password("hunter2", &legacy) {
            Verified::Right { rehash: Some(new) } => {
                assert!(new.starts_with("$argon2id$"));
                assert_eq!(
                    verify_password("hunter2", &new),
                    Verified::Right { rehash: None }
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(verify_password("hunter3", &legacy), Verified::Wrong);
    }

    /// A `$6$` hash made with the same algorithm the original server used.
    pub(crate) fn legacy_hash(password: &str) -> String {
        let params = sha_crypt::Params::new(5000).unwrap();
        let hash = ShaCrypt::from(params)
            .hash_password_with_salt(password.as_bytes(), b"saltsalt")
            .unwrap();
        hash.to_string()
    }

    #[test]
    fn unusable_hashes_never_verify() {
        for stored in ["!", "", "*", "$1$abc$def", "plain"] {
            assert_eq!(verify_password("!", stored), Verified::Wrong, "{stored}");
        }
    }

    #[test]
    fn login_tokens() {
        let signer = Signer::new("k");
        let value = signer.login_value(42, 2_000);
        assert_eq!(signer.check_login(&value, 1_999), Some(42));
        assert_eq!(signer.check_login(&value, 2_000), None, "expired");
        assert_eq!(
            Signer::new("other").check_login(&value, 1_000),
            None,
            "other key"
        );
        let mut tampered = value.clone();
        tampered.replace_range(tampered.len() - 7.., "43:9999");
        assert_eq!(signer.check_login(&tampered, 1_000), None);
        assert_eq!(signer.check_login("garbage", 1_000), None);
        assert_eq!(signer.check_login("", 1_000), None);
    }

    #[test]
    fn mac_hashes() {
        let a = mac_hash("AA:BB:CC:DD:EE:FF").unwrap();
        assert_eq!(a, mac_hash("aa-bb-cc-dd-ee-ff").unwrap());
        assert_eq!(a, hex(&Sha256::digest(b"aa:bb:cc:dd:ee:ff")));
        assert_eq!(a.len(), 64);
        for bad in [
            "",
            "aa:bb",
            "gg:bb:cc:dd:ee:ff",
            "aabb.ccdd.eeff",
            "aa:bb:cc:dd:ee:ff:00",
        ] {
            assert_eq!(mac_hash(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_tokens_differ() {
        assert_ne!(random_token(16), random_token(16));
        assert_eq!(random_token(32).len(), 43);
    }
}
