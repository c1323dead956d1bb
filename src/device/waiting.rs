//! Connections on the device port that have not authenticated yet: a
//! bounded queue, oldest first. When it is full, the oldest waiting
//! connection gives way to the newest, so strangers who keep it busy cannot
//! keep the device out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::limits::AddressKey;

/// The connections waiting to authenticate, in the order they arrived.
pub struct Waiting {
    /// Most connections waiting at once...
    limit: usize,
    /// ...and from one address (peers on a unix socket have no such share).
    per_address: usize,
    queue: Mutex<VecDeque<Waiter>>,
    next_id: AtomicU64,
}

struct Waiter {
    id: u64,
    address: Option<AddressKey>,
    /// Who it is, for the log line when it is closed.
    name: String,
    evicted: CancellationToken,
}

/// One connection's place in [`Waiting`], given up when dropped.
pub struct Ticket {
    waiting: Arc<Waiting>,
    id: u64,
    evicted: CancellationToken,
}

impl Waiting {
    /// Room for `limit` connections, at most `per_address` from one address.
    pub fn new(limit: usize, per_address: usize) -> Arc<Waiting> {
        Arc::new(Waiting {
            limit: limit.max(1),
            per_address: per_address.max(1),
            queue: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Places a new connection from `address`. When the queue (or that
    /// address's share of it) is full, the oldest waiting connection of
    /// that address, else the oldest of all, is evicted to make room: its
    /// ticket's [`Ticket::evicted`] resolves, and its name is returned.
    pub fn enter(
        self: &Arc<Self>,
        address: Option<AddressKey>,
        name: String,
    ) -> (Ticket, Option<String>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut queue = self.lock();
        let victim = self
            .victim(&queue, address)
            .and_then(|at| queue.remove(at))
            .map(|waiter| {
                waiter.evicted.cancel();
                waiter.name
            });
        queue.push_back(Waiter {
            id,
            address,
            name,
            evicted: evicted.clone(),
        });
        drop(queue);
        let ticket = Ticket {
            waiting: self.clone(),
            id,
            evicted,
        };
        (ticket, victim)
    }

    /// Connections waiting now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Where in `queue` the connection that must give way to a newcomer
    /// from `address` stands, if one must.
    fn victim(&self, queue: &VecDeque<Waiter>, address: Option<AddressKey>) -> Option<usize> {
        let oldest_here = queue.iter().position(|w| w.address == address);
        let here = queue.iter().filter(|w| w.address == address).count();
        if address.is_some() && here >= self.per_address {
            oldest_here
        } else if queue.len() >= self.limit {
            oldest_here.or(Some(0))
        } else {
            None
        }
    }

    /// Takes connection `id` out of the queue; false when it was not there
    /// (it had been evicted).
    fn remove(&self, id: u64) -> bool {
        let mut queue = self.lock();
        match queue.iter().position(|w| w.id == id) {
            Some(at) => {
                queue.remove(at);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Ticket {
    /// Resolves when this connection was evicted to make room for a newer one.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }

    /// Leaves the queue (the connection authenticated, or is refused);
    /// false when it had been evicted meanwhile and must close.
    pub fn leave(self) -> bool {
        self.waiting.remove(self.id)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiting.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> Option<AddressKey> {
        Some(AddressKey::from(ip.parse::<std::net::IpAddr>().unwrap()))
    }

    /// Places a connection and returns its ticket and whom it evicted.
    fn enter(waiting: &Arc<Waiting>, ip: &str, name: &str) -> (Ticket, Option<String>) {
        let address = if ip == "unix" { None } else { key(ip) };
        waiting.enter(address, name.to_string())
    }

    #[test]
    fn below_the_limits_nobody_is_evicted() {
        let waiting = Waiting::new(4, 2);
        let mut held = Vec::new();
        for (ip, name) in [("10.0.0.1", "a1"), ("10.0.0.1", "a2"), ("10.0.0.2", "b1")] {
            let (ticket, evicted) = enter(&waiting, ip, name);
            assert_eq!(evicted, None, "{name}");
            held.push(ticket);
        }
        assert_eq!(waiting.len(), 3);
        drop(held.pop());
        assert_eq!(waiting.len(), 2, "a dropped ticket leaves");
    }

    #[test]
    fn the_oldest_of_the_newcomer_s_address_goes_first() {
        // (address, name) of those waiting, the newcomer, whom it evicts.
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            (&'a str, &'a str),
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            // The address is at its share: its own oldest goes.
            (
                &[("10.0.0.1", "a1"), ("10.0.0.2", "b1"), ("10.0.0.1", "a2")],
                ("10.0.0.1", "a3"),
                Some("a1"),
            ),
            // The queue is full and the address has one waiting: that one.
            (
                &[
                    ("10.0.0.2", "b1"),
                    ("10.0.0.3", "c1"),
                    ("10.0.0.1", "a1"),
                    ("10.0.0.3", "c2"),
                ],
                ("10.0.0.1", "a2"),
                Some("a1"),
            ),
            // The queue is full and the address has none: the oldest of all.
            (
                &[
                    ("10.0.0.2", "b1"),
                    ("10.0.0.3", "c1"),
                    ("10.0.0.2", "b2"),
                    ("10.0.0.3", "c2"),
                ],
                ("10.0.0.1", "a1"),
                Some("b1"),
            ),
            // Unix socket peers have no share of their own, but give way
            // to each other first.
            (
                &[("unix", "u1"), ("unix", "u2"), ("10.0.0.2", "b1")],
                ("unix", "u3"),
                None,
            ),
            (
                &[
                    ("10.0.0.2", "b1"),
                    ("unix", "u1"),
                    ("unix", "u2"),
                    ("unix", "u3"),
                ],
                ("unix", "u4"),
                Some("u1"),
            ),
        ];
        for (before, (ip, name), expected) in cases {
            let waiting = Waiting::new(4, 2);
            let held: Vec<_> = before
                .iter()
                .map(|(ip, name)| enter(&waiting, ip, name).0)
                .collect();
            let (_ticket, evicted) = enter(&waiting, ip, name);
            assert_eq!(evicted.as_deref(), *expected, "{name} after {before:?}");
            let gone = held
                .into_iter()
                .filter(|t| t.evicted.is_cancelled())
                .count();
            assert_eq!(gone, usize::from(expected.is_some()), "{name}");
            assert!(waiting.len() <= 4);
        }
    }

    #[tokio::test]
    async fn an_evicted_ticket_hears_it_and_cannot_leave() {
        let waiting = Waiting::new(1, 1);
        let (first, _) = enter(&waiting, "10.0.0.1", "first");
        let (second, evicted) = enter(&waiting, "10.0.0.2", "second");
        assert_eq!(evicted.as_deref(), Some("first"));
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .expect("the evicted one is told at once");
        assert!(!first.leave(), "it was evicted");
        assert_eq!(waiting.len(), 1);
        assert!(second.leave());
        assert_eq!(waiting.len(), 0);
    }

    #[test]
    fn churn_never_grows_the_queue() {
        let waiting = Waiting::new(32, 4);
        let mut held = VecDeque::new();
        let mut evictions = 0;
        for i in 0..10_000u32 {
            let ip = format!("10.0.{}.{}", i % 7, i % 13);
            let (ticket, evicted) = enter(&waiting, &ip, "peer");
            evictions += usize::from(evicted.is_some());
            held.push_back(ticket);
            // Tickets of evicted connections are dropped by their tasks.
            held.retain(|t| !t.evicted.is_cancelled());
            assert!(waiting.len() <= 32);
        }
        assert_eq!(held.len(), waiting.len());
        assert_eq!(evictions, 10_000 - waiting.len());
    }
}
