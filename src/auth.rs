//! Passwords (checked on threads of their own, strangers' attempts queued
//! apart from known browsers'), session tokens and their signed cookie, the
//! signed known-browser cookie, anti-forgery tokens, MAC hashes.
//!
//! Passwords are stored as argon2id PHC strings. The original server's
//! `sha512_crypt` hashes (`$6$...`) still verify, and the caller replaces
//! them with argon2id on the first successful login.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use cookie::{Cookie, CookieJar, Key};
use rand::RngCore;
use sha_crypt::ShaCrypt;
use sha2::{Digest, Sha256, Sha512};

/// Name of the login cookie.
pub const LOGIN_COOKIE: &str = "usertoken";
/// Name of the known-browser cookie.
pub const KNOWN_COOKIE: &str = "bitsd_known";
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

/// The key that signs cookies: `cookie_secret` when set, or else one made
/// once and kept in the database, so logins survive restarts.
pub fn cookie_secret(
    configured: Option<&str>,
    db: &mut crate::store::Db,
) -> Result<String, crate::store::StoreError> {
    match configured {
        Some(secret) => Ok(secret.to_string()),
        None => db.setting_or_insert("cookie_secret", &random_token(48)),
    }
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

/// Signs cookies: the login cookie, whose session token the signature lets
/// bitsd refuse before looking it up, and the known-browser cookie, which
/// only a signature makes worth anything.
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

    /// The signed value of a known-browser cookie.
    pub fn sign_known(&self, known: &KnownBrowser) -> String {
        self.sign(&known.encode())
    }

    /// What a known-browser cookie value says, if the signature holds.
    pub fn verify_known(&self, value: &str) -> Option<KnownBrowser> {
        KnownBrowser::decode(&self.verify(value)?)
    }
}

/// What the known-browser cookie says: this browser once logged in as this
/// user. It holds nothing secret; only its signature makes it worth anything,
/// and only a right password gets one signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBrowser {
    pub user_id: i64,
    pub name: String,
    /// Random, so that each browser's cookie is counted on its own.
    pub nonce: String,
}

/// Starts every known-browser payload; a session token (URL-safe base64)
/// never does, so one signed value is never taken for the other.
const KNOWN_TAG: &str = "known.";

impl KnownBrowser {
    /// A new cookie for a browser that has just logged in as `user_id`.
    pub fn new(user_id: i64, name: &str) -> KnownBrowser {
        KnownBrowser {
            user_id,
            name: name.to_string(),
            nonce: random_token(16),
        }
    }

    /// `known.ID.NONCE.NAME`, the name in URL-safe base64 (any name a
    /// cookie could not carry as it is).
    fn encode(&self) -> String {
        let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.name);
        format!("{KNOWN_TAG}{}.{}.{name}", self.user_id, self.nonce)
    }

    fn decode(payload: &str) -> Option<KnownBrowser> {
        let mut parts = payload.strip_prefix(KNOWN_TAG)?.split('.');
        let (id, nonce, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || nonce.is_empty() {
            return None;
        }
        let name = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(name)
            .ok()?;
        Some(KnownBrowser {
            user_id: id.parse().ok()?,
            name: String::from_utf8(name).ok()?,
            nonce: nonce.to_string(),
        })
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
/// Strangers' password checks that may wait their turn; past them a
/// stranger's login is refused.
pub const PASSWORD_QUEUE: usize = 16;
/// Known browsers' password checks that may wait their turn, apart from
/// strangers' and served before them.
pub const KNOWN_QUEUE: usize = 4;

/// Which queue a password check waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Anybody's login: up to [`PASSWORD_QUEUE`] wait.
    Stranger,
    /// A login from a browser with a known-browser cookie for that user: up
    /// to [`KNOWN_QUEUE`] wait, and each is checked before any stranger's.
    Known,
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs password checks on [`PASSWORD_CHECKERS`] threads of their own, which
/// serve two queues: known browsers' first, then strangers'. Owning the
/// threads (rather than borrowing the runtime's blocking pool) keeps
/// argon2's memory in two threads' allocators, reused from one check to the
/// next.
pub struct PasswordChecks {
    queues: Arc<Queues>,
}

struct Queues {
    waiting: Mutex<Waiting>,
    /// Signalled when a check is queued, and when the checkers should end.
    ready: Condvar,
}

#[derive(Default)]
struct Waiting {
    known: VecDeque<Job>,
    strangers: VecDeque<Job>,
    closed: bool,
}

impl Queues {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next check, known browsers' first; `None` once closed and empty.
    fn next(&self) -> Option<Job> {
        let mut waiting = self.lock();
        loop {
            if let Some(job) = waiting.known.pop_front() {
                return Some(job);
            }
            if let Some(job) = waiting.strangers.pop_front() {
                return Some(job);
            }
            if waiting.closed {
                return None;
            }
            waiting = self.ready.wait(waiting).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Every checker is busy and the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once")]
pub struct Busy;

impl PasswordChecks {
    /// Starts the checker threads; they end when this is dropped.
    pub fn start() -> PasswordChecks {
        Self::with_checkers(PASSWORD_CHECKERS)
    }

    fn with_checkers(checkers: usize) -> PasswordChecks {
        let queues = Arc::new(Queues {
            waiting: Mutex::new(Waiting::default()),
            ready: Condvar::new(),
        });
        for _ in 0..checkers {
            let queues = queues.clone();
            let spawned = std::thread::Builder::new()
                .name("bitsd-password".into())
                .spawn(move || {
                    while let Some(job) = queues.next() {
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
        PasswordChecks { queues }
    }

    /// Runs `check` on a checker thread, or refuses at once when the queue
    /// of `lane` is full.
    pub async fn run<R, F>(&self, lane: Lane, check: F) -> Result<R, Busy>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(check());
        });
        {
            let mut waiting = self.queues.lock();
            let (queue, room) = match lane {
                Lane::Known => (&mut waiting.known, KNOWN_QUEUE),
                Lane::Stranger => (&mut waiting.strangers, PASSWORD_QUEUE),
            };
            if queue.len() >= room {
                return Err(Busy);
            }
            queue.push_back(job);
        }
        self.queues.ready.notify_one();
        result.await.map_err(|_| Busy)
    }
}

impl Drop for PasswordChecks {
    /// The checkers finish the checks already queued, then end.
    fn drop(&mut self) {
        self.queues.lock().closed = true;
        self.queues.ready.notify_all();
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
                    .run(Lane::Stranger, move || {
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
        assert_eq!(
            checks.run(Lane::Stranger, || 99).await,
            Err(Busy),
            "the queue is full"
        );
        gate.wait();
        for (i, task) in admitted.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok(i));
        }
        assert_eq!(checks.run(Lane::Stranger, || 7).await, Ok(7));
    }

    /// Waits until `done` says so, for ten seconds at most.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
            tokio::task::yield_now().await;
        }
    }

    /// Waits until `known` and `strangers` checks are queued.
    async fn until_queued(checks: &PasswordChecks, known: usize, strangers: usize) {
        until(&format!("{known} and {strangers} queued"), || {
            let waiting = checks.queues.lock();
            (waiting.known.len(), waiting.strangers.len()) == (known, strangers)
        })
        .await;
    }

    #[tokio::test]
    async fn both_lanes_share_the_two_checkers() {
        use std::sync::Barrier;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let checks = Arc::new(PasswordChecks::start());
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let gate = Arc::new(Barrier::new(PASSWORD_CHECKERS + 1));
        let submit = |lane: Lane, hold: bool| {
            let (checks, running, most, gate) =
                (checks.clone(), running.clone(), most.clone(), gate.clone());
            tokio::spawn(async move {
                checks
                    .run(lane, move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        if hold {
                            gate.wait();
                        } else {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                        lane
                    })
                    .await
            })
        };
        // Strangers hold both checkers; both queues fill behind them.
        let mut admitted: Vec<_> = (0..PASSWORD_CHECKERS)
            .map(|_| submit(Lane::Stranger, true))
            .collect();
        until("both checkers busy", || {
            running.load(Ordering::SeqCst) == PASSWORD_CHECKERS
        })
        .await;
        admitted.extend((0..PASSWORD_QUEUE).map(|_| submit(Lane::Stranger, false)));
        until_queued(&checks, 0, PASSWORD_QUEUE).await;
        assert_eq!(
            checks.run(Lane::Stranger, || Lane::Stranger).await,
            Err(Busy),
            "the strangers' queue is full"
        );
        admitted.extend((0..KNOWN_QUEUE).map(|_| submit(Lane::Known, false)));
        until_queued(&checks, KNOWN_QUEUE, PASSWORD_QUEUE).await;
        assert_eq!(
            checks.run(Lane::Known, || Lane::Known).await,
            Err(Busy),
            "the known browsers' queue is full"
        );
        assert_eq!(running.load(Ordering::SeqCst), PASSWORD_CHECKERS);
        gate.wait();
        for task in admitted {
            assert!(task.await.unwrap().is_ok());
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            PASSWORD_CHECKERS,
            "never more checks at once than checkers, whatever the lane"
        );
        assert_eq!(checks.run(Lane::Known, || 7).await, Ok(7));
        assert_eq!(checks.run(Lane::Stranger, || 8).await, Ok(8));
    }

    #[tokio::test]
    async fn known_browsers_are_checked_before_strangers() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::mpsc;
        let checks = Arc::new(PasswordChecks::with_checkers(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let taken = Arc::new(AtomicBool::new(false));
        let (release, hold) = mpsc::channel::<()>();
        let submit = |lane: Lane, label: &'static str, hold: Option<mpsc::Receiver<()>>| {
            let (checks, order, taken) = (checks.clone(), order.clone(), taken.clone());
            tokio::spawn(async move {
                checks
                    .run(lane, move || {
                        if let Some(hold) = hold {
                            taken.store(true, Ordering::SeqCst);
                            let _ = hold.recv();
                        }
                        order.lock().unwrap().push(label);
                    })
                    .await
            })
        };
        let mut tasks = vec![submit(Lane::Stranger, "first", Some(hold))];
        until("the checker busy", || taken.load(Ordering::SeqCst)).await;
        // Queued one by one behind the one busy checker.
        let (mut known, mut strangers) = (0, 0);
        for (lane, label) in [
            (Lane::Stranger, "s1"),
            (Lane::Stranger, "s2"),
            (Lane::Known, "k1"),
            (Lane::Stranger, "s3"),
            (Lane::Known, "k2"),
        ] {
            tasks.push(submit(lane, label, None));
            match lane {
                Lane::Known => known += 1,
                Lane::Stranger => strangers += 1,
            }
            until_queued(&checks, known, strangers).await;
        }
        release.send(()).unwrap();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["first", "k1", "k2", "s1", "s2", "s3"]
        );
    }

    #[test]
    fn known_browser_cookies() {
        let signer = Signer::new("k");
        for name in [
            "alice",
            "ünïcödé.name-1",
            "spaced name; with=odd\"chars\"",
            "",
        ] {
            let known = KnownBrowser::new(42, name);
            let value = signer.sign_known(&known);
            assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b'"'),
                "a plain cookie value: {value}"
            );
            assert_eq!(signer.verify_known(&value), Some(known.clone()), "{name}");
            assert_eq!(Signer::new("other").verify_known(&value), None);
            let mut tampered = value.clone();
            tampered.replace_range(tampered.len() - 2.., "AA");
            assert_eq!(signer.verify_known(&tampered), None, "{name}");
        }
        let (a, b) = (KnownBrowser::new(1, "a"), KnownBrowser::new(1, "a"));
        assert_ne!(a.nonce, b.nonce, "each browser's cookie is its own");
        // A session cookie is never a known-browser cookie, nor the reverse
        // a session.
        let session = signer.sign(&session_token());
        assert_eq!(signer.verify_known(&session), None);
        let known = signer.verify(&signer.sign_known(&a)).unwrap();
        assert!(known.starts_with(KNOWN_TAG) && known.contains('.'));
        assert_eq!(signer.verify_known("garbage"), None);
        assert_eq!(signer.verify_known(""), None);
        for payload in [
            "known.x.n.YQ",
            "known.1..YQ",
            "known.1.n.YQ.x",
            "known.1.n.!!",
            "1.n.YQ",
        ] {
            assert_eq!(
                signer.verify_known(&signer.sign(payload)),
                None,
                "{payload}"
            );
        }
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
