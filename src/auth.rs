//! Passwords (checked on threads of their own), session tokens and their
//! signed cookie, anti-forgery tokens, MAC hashes.
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
    Some(hex::encode(Sha256::digest(canonical.as_bytes())))
}

/// Signs login cookies. The cookie carries a session token; the signature
/// lets bitsd refuse a forged or damaged cookie before looking it up.
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

    /// The signed cookie value carrying `token`.
    pub fn sign(&self, token: &str) -> String {
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.key)
            .add(Cookie::new(LOGIN_COOKIE, token.to_string()));
        jar.get(LOGIN_COOKIE)
            .map(|c| c.value().to_string())
            .unwrap_or_default()
    }

    /// The session token in a signed cookie value, if the signature holds.
    pub fn verify(&self, value: &str) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(LOGIN_COOKIE, value.to_string()));
        let verified = jar.signed(&self.key).get(LOGIN_COOKIE)?;
        Some(verified.value().to_string())
    }
}

/// A new session token: 256 random bits.
pub fn session_token() -> String {
    random_token(32)
}

/// What the database keeps of a session token: its SHA-256, in hex.
pub fn session_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Password checks at once in the whole process; each holds argon2's 19 MiB.
pub const PASSWORD_CHECKERS: usize = 2;
/// Password checks that may wait their turn; past them a login is refused.
pub const PASSWORD_QUEUE: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

/// Runs password checks on [`PASSWORD_CHECKERS`] threads of their own, with
/// room for [`PASSWORD_QUEUE`] more waiting. Owning the threads (rather
/// than borrowing the runtime's blocking pool) keeps argon2's memory in two
/// threads' allocators, reused from one check to the next.
pub struct PasswordChecks {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// Every checker is busy and the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once")]
pub struct Busy;

impl PasswordChecks {
    /// Starts the checker threads; they end when this is dropped.
    pub fn start() -> PasswordChecks {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(PASSWORD_QUEUE);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for _ in 0..PASSWORD_CHECKERS {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name("bitsd-password".into())
                .spawn(move || {
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = next else { return };
                        // A check that panics must not take its thread along.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a password check panicked");
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a password checker thread: {e}");
            }
        }
        PasswordChecks { jobs }
    }

    /// Runs `check` on a checker thread, or refuses at once when
    /// [`PASSWORD_QUEUE`] checks are already waiting.
    pub async fn run<R, F>(&self, check: F) -> Result<R, Busy>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(check());
        });
        self.jobs.try_send(job).map_err(|_| Busy)?;
        result.await.map_err(|_| Busy)
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
    fn signed_session_cookies() {
        let signer = Signer::new("k");
        let token = session_token();
        assert!(token.len() >= 22, "at least 128 bits");
        let value = signer.sign(&token);
        assert_eq!(signer.verify(&value), Some(token.clone()));
        assert_eq!(Signer::new("other").verify(&value), None, "other key");
        let mut tampered = value.clone();
        tampered.replace_range(tampered.len() - 3.., "abc");
        assert_eq!(signer.verify(&tampered), None);
        assert_eq!(signer.verify("garbage"), None);
        assert_eq!(signer.verify(""), None);
        assert_ne!(session_token(), token);
        assert_eq!(session_hash(&token).len(), 64);
        assert_ne!(session_hash(&token), token);
    }

    #[tokio::test]
    async fn two_checks_run_sixteen_wait_and_more_are_refused() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Barrier};
        let checks = Arc::new(PasswordChecks::start());
        let running = Arc::new(AtomicUsize::new(0));
        // Holds the two checkers until every attempt has been made.
        let gate = Arc::new(Barrier::new(PASSWORD_CHECKERS + 1));
        let submit = |i: usize, hold: bool| {
            let (checks, running, gate) = (checks.clone(), running.clone(), gate.clone());
            tokio::spawn(async move {
                checks
                    .run(move || {
                        running.fetch_add(1, Ordering::SeqCst);
                        if hold {
                            gate.wait();
                        }
                        i
                    })
                    .await
            })
        };
        let mut admitted: Vec<_> = (0..PASSWORD_CHECKERS).map(|i| submit(i, true)).collect();
        while running.load(Ordering::SeqCst) < PASSWORD_CHECKERS {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        for i in PASSWORD_CHECKERS..(PASSWORD_CHECKERS + PASSWORD_QUEUE) {
            admitted.push(submit(i, false));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(running.load(Ordering::SeqCst), PASSWORD_CHECKERS);
        assert_eq!(checks.run(|| 99).await, Err(Busy), "the queue is full");
        gate.wait();
        for (i, task) in admitted.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok(i));
        }
        assert_eq!(checks.run(|| 7).await, Ok(7));
    }

    #[test]
    fn mac_hashes() {
        let a = mac_hash("AA:BB:CC:DD:EE:FF").unwrap();
        assert_eq!(a, mac_hash("aa-bb-cc-dd-ee-ff").unwrap());
        assert_eq!(a, hex::encode(Sha256::digest(b"aa:bb:cc:dd:ee:ff")));
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
