//! An upstream group and how a session picks from it: round-robin,
//! least-conn or a hash of the client's IP, skipping upstreams that are
//! down, and "the next upstream" for a retry (nginx's `proxy_next_upstream`).
//!
//! The group is shared by every loop of the proxy (nginx's `zone`): the
//! round-robin position and the active-session counts are atomics, each
//! upstream's health sits behind its own mutex, taken only when a session
//! picks or a connect ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::health::{Health, HealthPolicy};

/// How a session's upstream is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each upstream in turn.
    #[default]
    RoundRobin,
    /// The upstream with the fewest active sessions (ties in turn).
    LeastConn,
    /// A hash of the client's IP address (not its port), so a client
    /// sticks to one upstream while that upstream is up.
    Hash,
}

/// One upstream server and what the proxy knows of it.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    /// Sessions sent to it and not yet ended (connecting ones included,
    /// as nginx's `least_conn` counts them).
    active: AtomicUsize,
    /// Sessions ever sent to it, each try of a retry counted.
    picked: AtomicU64,
    /// Connects to it that were refused, failed or timed out.
    failures: AtomicU64,
    health: Mutex<Health>,
}

/// What [`Upstreams::snapshot`] reports of one upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Its address.
    pub addr: SocketAddr,
    /// Sessions on it now.
    pub active: usize,
    /// Connects started to it so far.
    pub picked: u64,
    /// Connects to it that failed.
    pub failures: u64,
    /// Whether it is being skipped now.
    pub down: bool,
}

impl Upstream {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // A panic elsewhere cannot leave a `Health` half-written: it is
        // replaced whole.
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a session is in its walk over the group: which upstream it tries
/// now, and how many it has considered. A retry goes on from there, so no
/// upstream is tried twice for one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    first: usize,
    considered: usize,
    current: usize,
}

impl Attempt {
    /// The index of the upstream being tried.
    pub fn index(&self) -> usize {
        self.current
    }
}

/// An upstream group, shared by all the proxy's loops.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<Upstream>,
    balance: Balance,
    policy: HealthPolicy,
    cursor: AtomicUsize,
}

impl Upstreams {
    /// A group of `addrs` (at least one), all up.
    pub fn new(addrs: &[SocketAddr], balance: Balance, policy: HealthPolicy) -> Self {
        let now = Instant::now();
        let list = addrs
            .iter()
            .map(|&addr| Upstream {
                addr,
                active: AtomicUsize::new(0),
                picked: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                health: Mutex::new(Health::new(now)),
            })
            .collect();
        Self {
            list,
            balance,
            policy,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The address of upstream `index`.
    pub fn addr(&self, index: usize) -> Option<SocketAddr> {
        self.list.get(index).map(|u| u.addr)
    }

    /// Picks the first upstream for a session from `client`; `None` when
    /// every upstream is down.
    pub fn pick(&self, client: IpAddr, now: Instant) -> Option<Attempt> {
        let n = self.list.len();
        if n == 0 {
            return None;
        }
        let start = match self.balance {
            Balance::Hash => ip_hash(client) % n,
            Balance::RoundRobin | Balance::LeastConn => {
                self.cursor.fetch_add(1, Ordering::Relaxed) % n
            }
        };
        let mut available = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| self.is_available(i, now));
        let chosen = match self.balance {
            // `min_by_key` keeps the first of equals: ties go in turn.
            Balance::LeastConn => {
                available.min_by_key(|&i| self.list[i].active.load(Ordering::Relaxed))
            }
            Balance::RoundRobin | Balance::Hash => available.next(),
        }?;
        Some(Attempt {
            first: chosen,
            considered: 1,
            current: chosen,
        })
    }

    /// The next upstream after a failed try, in the group's order from the
    /// first one tried, skipping those that are down; `None` once every
    /// upstream has been considered.
    pub fn retry(&self, attempt: Attempt, now: Instant) -> Option<Attempt> {
        let n = self.list.len();
        (attempt.considered..n).find_map(|k| {
            let i = (attempt.first + k) % n;
            self.is_available(i, now).then_some(Attempt {
                considered: k + 1,
                current: i,
                ..attempt
            })
        })
    }

    fn is_available(&self, index: usize, now: Instant) -> bool {
        self.list[index].health().is_available(now, &self.policy)
    }

    /// A connect to upstream `index` begins.
    pub fn started(&self, index: usize) {
        if let Some(u) = self.list.get(index) {
            u.active.fetch_add(1, Ordering::Relaxed);
            u.picked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection to upstream `index` (connected or not) closed.
    pub fn ended(&self, index: usize) {
        if let Some(u) = self.list.get(index) {
            // Never below zero, whatever the order of events.
            let _ = u
                .active
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| a.checked_sub(1));
        }
    }

    /// A connect to upstream `index` succeeded.
    pub fn connected(&self, index: usize, now: Instant) {
        if let Some(u) = self.list.get(index) {
            u.health().succeeded(now);
        }
    }

    /// A connect to upstream `index` was refused, failed or timed out.
    pub fn failed(&self, index: usize, now: Instant) {
        if let Some(u) = self.list.get(index) {
            u.failures.fetch_add(1, Ordering::Relaxed);
            u.health().failed(now, &self.policy);
        }
    }

    /// Every upstream's counters and health now.
    pub fn snapshot(&self) -> Vec<UpstreamStats> {
        let now = Instant::now();
        self.list
            .iter()
            .map(|u| UpstreamStats {
                addr: u.addr,
                active: u.active.load(Ordering::Relaxed),
                picked: u.picked.load(Ordering::Relaxed),
                failures: u.failures.load(Ordering::Relaxed),
                down: !u.health().is_available(now, &self.policy),
            })
            .collect()
    }
}

/// FNV-1a over the address's octets; an IPv4-mapped IPv6 address hashes
/// as the IPv4 address it maps.
fn ip_hash(ip: IpAddr) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => eat(&v4.octets()),
        IpAddr::V6(v6) => eat(&v6.octets()),
    }
    // Only the remainder modulo the group size is used.
    hash as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn group(n: u16, balance: Balance) -> Upstreams {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        Upstreams::new(&addrs, balance, HealthPolicy::default())
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn round_robin_takes_each_in_turn_and_skips_the_down() {
        let g = group(3, Balance::RoundRobin);
        let now = Instant::now();
        let picks: Vec<usize> = (0..6)
            .map(|_| g.pick(CLIENT, now).unwrap().index())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        g.failed(1, now);
        let picks: Vec<usize> = (0..6)
            .map(|_| g.pick(CLIENT, now).unwrap().index())
            .collect();
        assert!(!picks.contains(&1), "{picks:?}");
        let later = now + Duration::from_secs(10);
        assert!((0..3).any(|_| g.pick(CLIENT, later).unwrap().index() == 1));
    }

    #[test]
    fn a_retry_walks_every_other_upstream_once_then_gives_up() {
        let g = group(4, Balance::RoundRobin);
        let now = Instant::now();
        let mut attempt = g.pick(CLIENT, now).unwrap();
        let mut tried = vec![attempt.index()];
        while let Some(next) = g.retry(attempt, now) {
            tried.push(next.index());
            attempt = next;
        }
        tried.sort_unstable();
        assert_eq!(tried, [0, 1, 2, 3]);
    }

    #[test]
    fn every_upstream_down_gives_no_pick() {
        let g = group(2, Balance::LeastConn);
        let now = Instant::now();
        g.failed(0, now);
        g.failed(1, now);
        assert_eq!(g.pick(CLIENT, now), None);
    }

    #[test]
    fn least_conn_picks_the_least_busy() {
        let g = group(3, Balance::LeastConn);
        let now = Instant::now();
        g.started(0);
        g.started(0);
        g.started(2);
        for _ in 0..3 {
            assert_eq!(g.pick(CLIENT, now).unwrap().index(), 1);
        }
        g.ended(0);
        g.ended(0);
        g.ended(0);
        assert_eq!(g.snapshot()[0].active, 0, "never below zero");
    }

    #[test]
    fn hash_sticks_to_one_upstream_per_ip_and_spreads_ips() {
        let g = group(4, Balance::Hash);
        let now = Instant::now();
        let mut seen = [false; 4];
        for last in 0..=255u8 {
            let ip = IpAddr::from([10, 0, 0, last]);
            let first = g.pick(ip, now).unwrap().index();
            assert_eq!(g.pick(ip, now).unwrap().index(), first);
            seen[first] = true;
        }
        assert_eq!(seen, [true; 4]);
    }
}
