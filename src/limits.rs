//! What keeps one client from taking what belongs to everyone: rate limits
//! and connections per address (client-chosen text in log lines is
//! `escape`'s), and the addresses a stranger may not make bitsd call.
//!
//! Every table here is bounded in entries, and every key in bytes, so a
//! stranger who varies addresses or names grows nothing without bound.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Most keys a [`RateLimiter`] remembers.
pub const RATE_LIMIT_ENTRIES: usize = 10_000;
/// The longest interval a rate counts with; longer ones are cut to it.
const LONGEST_INTERVAL: Duration = Duration::from_secs(365 * 86_400);

/// How often something may happen: `burst` times in a row, then once every
/// `every` (so never more than `burst` within `every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl Rate {
    /// Once, then again after `every`.
    pub const fn once_every(every: Duration) -> Rate {
        Rate { burst: 1, every }
    }

    /// `n` (at least 1) a minute on average, up to `n` in a row.
    pub const fn per_minute(n: u32) -> Rate {
        let n = if n == 0 { 1 } else { n };
        Rate {
            burst: n,
            every: Duration::from_secs(60 / n as u64),
        }
    }

    /// The interval, at most a year (so instants never overflow).
    fn every(&self) -> Duration {
        self.every.min(LONGEST_INTERVAL)
    }

    /// How far ahead of now a key's allowance may be spent.
    fn tolerance(&self) -> Duration {
        self.every() * self.burst.saturating_sub(1).min(1000)
    }
}

/// Counts what each key did, on Tokio's clock (the generic cell rate
/// algorithm: one instant per key, the time its allowance is whole again).
///
/// Past [`RATE_LIMIT_ENTRIES`] keys, those whose allowance is whole are
/// forgotten first, then the half closest to it.
pub struct RateLimiter<K> {
    whole_at: Mutex<HashMap<K, Instant>>,
    capacity: usize,
}

impl<K: Hash + Eq> Default for RateLimiter<K> {
    fn default() -> Self {
        Self::with_capacity(RATE_LIMIT_ENTRIES)
    }
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// A limiter remembering at most `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        RateLimiter {
            whole_at: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Whether `key` may act now, without counting it: how long it must
    /// wait if not.
    pub fn check(&self, key: &K, rate: Rate) -> Result<(), Duration> {
        let now = Instant::now();
        let table = self.lock();
        let whole_at = table.get(key).copied().unwrap_or(now).max(now);
        Self::allowed(whole_at, now, rate)
    }

    /// Counts one act of `key` if it may act now; otherwise how long it must
    /// wait, and nothing is counted.
    pub fn try_take(&self, key: K, rate: Rate) -> Result<(), Duration> {
        let now = Instant::now();
        let mut table = self.lock();
        let whole_at = table.get(&key).copied().unwrap_or(now).max(now);
        Self::allowed(whole_at, now, rate)?;
        if table.len() >= self.capacity && !table.contains_key(&key) {
            Self::make_room(&mut table, now, self.capacity);
        }
        table.insert(key, whole_at + rate.every());
        Ok(())
    }

    /// Forgets `key`, as if it had never acted.
    pub fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn allowed(whole_at: Instant, now: Instant, rate: Rate) -> Result<(), Duration> {
        let ahead = whole_at - now;
        if ahead > rate.tolerance() {
            Err(ahead - rate.tolerance())
        } else {
            Ok(())
        }
    }

    fn make_room(table: &mut HashMap<K, Instant>, now: Instant, capacity: usize) {
        table.retain(|_, at| *at > now);
        if table.len() >= capacity {
            let mut times: Vec<Instant> = table.values().copied().collect();
            let middle = times.len() / 2;
            let (_, cutoff, _) = times.select_nth_unstable(middle);
            let cutoff = *cutoff;
            table.retain(|_, at| *at > cutoff);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Instant>> {
        self.whole_at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A log line that strangers can cause, let through at a bounded rate; the
/// next one let through says how many were held back meanwhile.
pub struct QuietLog {
    rate: Rate,
    limiter: RateLimiter<()>,
    held: AtomicU64,
}

impl QuietLog {
    pub fn new(rate: Rate) -> QuietLog {
        QuietLog {
            rate,
            limiter: RateLimiter::with_capacity(1),
            held: AtomicU64::new(0),
        }
    }

    /// `Some` when this line may be logged; its `Display` is the note on
    /// lines held back (empty when none were).
    pub fn pass(&self) -> Option<HeldBack> {
        match self.limiter.try_take((), self.rate) {
            Ok(()) => Some(HeldBack(self.held.swap(0, Ordering::Relaxed))),
            Err(_) => {
                self.held.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Default for QuietLog {
    /// Ten lines in a row, then one every six seconds.
    fn default() -> Self {
        QuietLog::new(Rate::per_minute(10))
    }
}

/// How many lines like this one were not logged since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBack(pub u64);

impl fmt::Display for HeldBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more like this not logged)"),
        }
    }
}

/// A client address as the limits count it: an IPv4 address, or the /64
/// an IPv6 address lies in (the block one subscriber usually gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(Ipv4Addr),
    V6(u64),
}

impl From<IpAddr> for AddressKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => AddressKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

impl AddressKey {
    /// The IPv6 /48 the address lies in; `None` for IPv4.
    pub fn block(&self) -> Option<u64> {
        match self {
            AddressKey::V4(_) => None,
            AddressKey::V6(prefix) => Some(prefix >> 16),
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressKey::V4(v4) => write!(f, "{v4}"),
            AddressKey::V6(prefix) => {
                let net = std::net::Ipv6Addr::from(u128::from(*prefix) << 64);
                write!(f, "{net}/64")
            }
        }
    }
}

/// How many more connections an IPv6 /48 may hold than one of its /64s: a
/// site often gets a /48, and an attacker who owns one should not get
/// 65,536 times the limit of an address.
pub const BLOCK_FACTOR: usize = 4;

/// Open connections per client address, each at most `limit`, and per IPv6
/// /48, each at most [`BLOCK_FACTOR`] times `limit`.
pub struct PerAddress {
    limit: usize,
    open: Mutex<OpenCounts>,
}

#[derive(Default)]
struct OpenCounts {
    by_address: HashMap<AddressKey, usize>,
    /// By the first 48 bits of an IPv6 address.
    by_block: HashMap<u64, usize>,
}

impl PerAddress {
    /// Counts with room for `limit` connections per address.
    pub fn new(limit: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            limit,
            open: Mutex::new(OpenCounts::default()),
        })
    }

    /// A place for one more connection from `ip`, held until dropped;
    /// `None` when the address (or its IPv6 /48) already has all it may.
    pub fn hold(self: &Arc<Self>, ip: IpAddr) -> Option<AddressHold> {
        let key = AddressKey::from(ip);
        let block = key.block();
        let mut open = self.lock();
        if open.by_address.get(&key).copied().unwrap_or(0) >= self.limit {
            return None;
        }
        if let Some(block) = block {
            let in_block = open.by_block.get(&block).copied().unwrap_or(0);
            if in_block >= self.limit.saturating_mul(BLOCK_FACTOR) {
                return None;
            }
            *open.by_block.entry(block).or_insert(0) += 1;
        }
        *open.by_address.entry(key).or_insert(0) += 1;
        Some(AddressHold {
            owner: self.clone(),
            key,
        })
    }

    /// Connections open now from `ip`'s address.
    pub fn open(&self, ip: IpAddr) -> usize {
        let key = AddressKey::from(ip);
        self.lock().by_address.get(&key).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, OpenCounts> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One connection's place in [`PerAddress`].
pub struct AddressHold {
    owner: Arc<PerAddress>,
    key: AddressKey,
}

impl Drop for AddressHold {
    fn drop(&mut self) {
        fn release<K: Hash + Eq>(table: &mut HashMap<K, usize>, key: K) {
            if let Some(count) = table.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    table.remove(&key);
                }
            }
        }
        let mut open = self.owner.lock();
        release(&mut open.by_address, self.key);
        if let Some(block) = self.key.block() {
            release(&mut open.by_block, block);
        }
    }
}

/// Whether bitsd must not call `ip` unless told it may: loopback, private,
/// link-local, shared (carrier-grade NAT), unspecified, multicast or
/// broadcast; IPv4 inside IPv6 read as IPv4.
pub fn is_local(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7, unique local; fe80::/10, link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn once_a_second() {
        let limiter = RateLimiter::default();
        let rate = Rate::once_every(Duration::from_secs(1));
        assert_eq!(limiter.try_take(1, rate), Ok(()));
        assert_eq!(limiter.try_take(1, rate), Err(Duration::from_secs(1)));
        assert_eq!(limiter.try_take(2, rate), Ok(()), "another key");
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(limiter.check(&1, rate), Err(Duration::from_millis(600)));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(limiter.try_take(1, rate), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_a_steady_rate() {
        let limiter = RateLimiter::default();
        let rate = Rate::per_minute(5);
        for _ in 0..5 {
            assert_eq!(limiter.try_take("a", rate), Ok(()));
        }
        assert_eq!(limiter.try_take("a", rate), Err(Duration::from_secs(12)));
        assert_eq!(limiter.check(&"a", rate), Err(Duration::from_secs(12)));
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(limiter.try_take("a", rate), Ok(()));
        assert!(limiter.try_take("a", rate).is_err());
        limiter.forget(&"a");
        assert_eq!(limiter.try_take("a", rate), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_not_counted() {
        let limiter = RateLimiter::default();
        let rate = Rate::once_every(Duration::from_secs(10));
        limiter.try_take((), rate).unwrap();
        for _ in 0..100 {
            assert!(limiter.try_take((), rate).is_err());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(limiter.try_take((), rate), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded() {
        let limiter = RateLimiter::with_capacity(1000);
        let rate = Rate::once_every(Duration::from_secs(3600));
        for key in 0..5_000u32 {
            limiter.try_take(key, rate).unwrap();
            assert!(limiter.len() <= 1000);
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // The newest half stays, the oldest go.
        assert!(limiter.len() >= 500, "{}", limiter.len());
        assert!(limiter.check(&4_999, rate).is_err());
        assert!(limiter.check(&4_500, rate).is_err());
        assert_eq!(limiter.check(&0, rate), Ok(()));
        // Entries whose allowance is whole go first, all of them.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let (mut added, mut before) = (0, limiter.len());
        loop {
            limiter.try_take(1_000_000 + added, rate).unwrap();
            added += 1;
            if limiter.len() < before {
                assert_eq!(limiter.len(), added as usize, "only the fresh stay");
                break;
            }
            before = limiter.len();
            assert!(added <= 1000, "the table never made room");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_logs_say_what_they_held_back() {
        let log = QuietLog::new(Rate::per_minute(2));
        assert_eq!(log.pass(), Some(HeldBack(0)));
        assert_eq!(log.pass(), Some(HeldBack(0)));
        for _ in 0..5 {
            assert_eq!(log.pass(), None);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let held = log.pass().unwrap();
        assert_eq!(held, HeldBack(5));
        assert_eq!(held.to_string(), " (5 more like this not logged)");
        assert_eq!(HeldBack(0).to_string(), "");
    }

    #[tokio::test(start_paused = true)]
    async fn huge_intervals_do_not_overflow() {
        let limiter = RateLimiter::default();
        let rate = Rate::once_every(Duration::from_secs(u64::MAX / 4));
        assert_eq!(limiter.try_take(1, rate), Ok(()));
        assert!(limiter.try_take(1, rate).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_burst_within_the_interval() {
        let limiter = RateLimiter::default();
        let rate = Rate {
            burst: 5,
            every: Duration::from_secs(60),
        };
        let mut taken = Vec::new();
        for second in 0..600u64 {
            if limiter.try_take((), rate).is_ok() {
                taken.push(second);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        for (i, at) in taken.iter().enumerate() {
            let within = taken[i..].iter().take_while(|t| **t < at + 60).count();
            assert!(within <= 5, "{within} within a minute from {at} s");
        }
        assert_eq!(&taken[..6], &[0, 1, 2, 3, 4, 60]);
    }

    #[test]
    fn addresses_count_by_ipv4_or_ipv6_64() {
        let key = |s: &str| AddressKey::from(s.parse::<IpAddr>().unwrap());
        assert_eq!(key("192.0.2.1"), key("::ffff:192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn connections_per_address() {
        let limits = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let first = limits.hold(a).unwrap();
        let _second = limits.hold(a).unwrap();
        assert!(limits.hold(a).is_none());
        let _other = limits.hold(b).unwrap();
        assert!(limits.hold("2001:db8::2".parse().unwrap()).is_some());
        drop(first);
        assert_eq!(limits.open(a), 1);
        assert!(limits.hold(a).is_some());
    }

    #[test]
    fn an_ipv6_48_holds_four_times_an_address() {
        let limits = PerAddress::new(2);
        // Eight /64s of one /48, one connection each: the /48 is full at 8.
        let held: Vec<AddressHold> = (0..BLOCK_FACTOR as u16 * 2)
            .map(|n| {
                let ip: IpAddr = format!("2001:db8:7:{n}::1").parse().unwrap();
                limits.hold(ip).expect("within the /48's limit")
            })
            .collect();
        assert!(limits.hold("2001:db8:7:ff::1".parse().unwrap()).is_none());
        assert!(limits.hold("2001:db8:8::1".parse().unwrap()).is_some());
        assert!(limits.hold("192.0.2.1".parse().unwrap()).is_some());
        drop(held);
        assert!(limits.hold("2001:db8:7:ff::1".parse().unwrap()).is_some());
    }
}
