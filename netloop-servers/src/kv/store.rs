//! The keyspace: shards behind mutexes, and expiry on a millisecond clock.
//!
//! A command locks every shard it touches, in index order, for its whole
//! run, so multi-key commands (MSET, MGET, DEL, ...) are atomic across
//! threads and two commands can never wait on each other.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The shard of a key is the top bits of its hash, so that ordering keys by
/// hash also orders them by shard: SCAN's cursor is a position in that order.
const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// A value and when it expires (milliseconds on the store's clock).
pub(crate) struct Entry {
    pub(crate) value: Vec<u8>,
    pub(crate) expires_at: Option<i64>,
}

impl Entry {
    pub(crate) fn new(value: Vec<u8>, expires_at: Option<i64>) -> Self {
        Self { value, expires_at }
    }

    /// Redis treats a key as expired once the time is past its deadline.
    fn live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| now <= at)
    }
}

type Map = HashMap<Vec<u8>, Entry>;

/// Unix time in milliseconds that never goes backwards: the wall clock read
/// once at start, advanced by the monotonic clock. Deadlines are kept in
/// these units so that expiry arithmetic overflows exactly where Redis'
/// does (Redis adds to the Unix time in milliseconds).
struct Clock {
    origin: Instant,
    origin_ms: i64,
}

impl Clock {
    fn new() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
        let origin_ms = since_epoch.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            origin: Instant::now(),
            origin_ms,
        }
    }

    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.origin_ms.saturating_add(elapsed)
    }
}

/// The keyspace, in shards so that loops on several threads rarely meet.
pub struct Store {
    shards: Vec<Mutex<Map>>,
    hasher: RandomState,
    clock: Clock,
    client_ids: AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty keyspace.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            clock: Clock::new(),
            client_ids: AtomicU64::new(1),
        }
    }

    /// A fresh client id, as HELLO and CLIENT ID report.
    pub(crate) fn next_client_id(&self) -> u64 {
        self.client_ids.fetch_add(1, Ordering::Relaxed)
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        // The shift leaves SHARD_BITS bits, so the value is below SHARDS.
        (self.hash(key) >> (u64::BITS - SHARD_BITS)) as usize
    }

    /// Locks the shards of `key` for one command.
    pub(crate) fn lock_one(&self, key: &[u8]) -> Locked<'_> {
        let index = self.shard_of(key);
        Locked {
            store: self,
            guards: Guards::One(index, self.lock_shard(index)),
            now: self.clock.now_ms(),
        }
    }

    /// Locks the shards of all `keys` for one command, in index order.
    pub(crate) fn lock<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> Locked<'_> {
        let mut indexes: Vec<usize> = keys.into_iter().map(|key| self.shard_of(key)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        self.lock_indexes(indexes)
    }

    /// Locks every shard, for commands over the whole keyspace.
    pub(crate) fn lock_all(&self) -> Locked<'_> {
        self.lock_indexes((0..SHARDS).collect())
    }

    fn lock_indexes(&self, indexes: Vec<usize>) -> Locked<'_> {
        let guards = indexes
            .into_iter()
            .map(|index| (index, self.lock_shard(index)))
            .collect();
        Locked {
            store: self,
            guards: Guards::Many(guards),
            now: self.clock.now_ms(),
        }
    }

    fn lock_shard(&self, index: usize) -> MutexGuard<'_, Map> {
        // A panic elsewhere cannot leave a HashMap half-updated; carry on.
        self.shards[index % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The guards one command holds; one shard needs no allocation.
enum Guards<'s> {
    One(usize, MutexGuard<'s, Map>),
    /// Sorted by shard index.
    Many(Vec<(usize, MutexGuard<'s, Map>)>),
}

/// The shards a command locked, and the command's time (one reading per
/// command, as Redis takes one).
pub(crate) struct Locked<'s> {
    store: &'s Store,
    guards: Guards<'s>,
    now: i64,
}

impl Locked<'_> {
    /// The command's time, in milliseconds on the store's clock.
    pub(crate) fn now(&self) -> i64 {
        self.now
    }

    /// The shard of `key`, which the command must have locked.
    fn map(&mut self, key: &[u8]) -> Option<&mut Map> {
        let index = self.store.shard_of(key);
        let map = match &mut self.guards {
            Guards::One(held, guard) => (*held == index).then_some(&mut **guard),
            Guards::Many(guards) => guards
                .binary_search_by_key(&index, |(held, _)| *held)
                .ok()
                .and_then(|at| guards.get_mut(at))
                .map(|(_, guard)| &mut **guard),
        };
        debug_assert!(map.is_some(), "a command used a key it did not lock");
        map
    }

    /// The live entry of `key` (an expired one is removed on the way).
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let now = self.now;
        let map = self.map(key)?;
        if map.get(key).is_some_and(|entry| !entry.live(now)) {
            map.remove(key);
        }
        map.get_mut(key)
    }

    /// Whether `key` is live.
    pub(crate) fn exists(&mut self, key: &[u8]) -> bool {
        self.get_mut(key).is_some()
    }

    /// Stores `entry` under `key`, replacing any value.
    pub(crate) fn insert(&mut self, key: &[u8], entry: Entry) {
        if let Some(map) = self.map(key) {
            map.insert(key.to_vec(), entry);
        }
    }

    /// Removes `key`; returns its entry if it was live.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let now = self.now;
        self.map(key)?.remove(key).filter(|entry| entry.live(now))
    }

    fn maps(&mut self) -> impl Iterator<Item = &mut Map> {
        let maps: Vec<&mut Map> = match &mut self.guards {
            Guards::One(_, guard) => vec![&mut **guard],
            Guards::Many(guards) => guards.iter_mut().map(|(_, guard)| &mut **guard).collect(),
        };
        maps.into_iter()
    }

    /// Live keys in the locked shards (expired ones are removed).
    pub(crate) fn len(&mut self) -> usize {
        let now = self.now;
        self.maps()
            .map(|map| {
                map.retain(|_, entry| entry.live(now));
                map.len()
            })
            .sum()
    }

    /// Removes every key in the locked shards.
    pub(crate) fn clear(&mut self) {
        self.maps().for_each(HashMap::clear);
    }

    /// Every live key in the locked shards that `keep` accepts.
    pub(crate) fn keys(&mut self, mut keep: impl FnMut(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let now = self.now;
        let mut found = Vec::new();
        for map in self.maps() {
            let live = map.iter().filter(|(_, entry)| entry.live(now));
            found.extend(live.map(|(key, _)| key).filter(|key| keep(key)).cloned());
        }
        found
    }

    /// One SCAN step: live keys in hash order from `cursor` on, until at
    /// least `count` (keys with one hash are never split), and the cursor
    /// of the next step (0 when done). Keys present for the whole scan are
    /// returned at least once, however the maps grow or shrink in between.
    pub(crate) fn scan(&mut self, cursor: u64, count: usize) -> (u64, Vec<Vec<u8>>) {
        let (now, store) = (self.now, self.store);
        let first = usize::try_from(cursor >> (u64::BITS - SHARD_BITS)).unwrap_or(SHARDS);
        let mut found: Vec<Vec<u8>> = Vec::new();
        let mut last_hash = None;
        let Guards::Many(guards) = &mut self.guards else {
            return (0, found);
        };
        for (_, map) in guards.iter().filter(|(index, _)| *index >= first) {
            let mut batch: Vec<(u64, &Vec<u8>)> = map
                .iter()
                .filter(|(_, entry)| entry.live(now))
                .map(|(key, _)| (store.hash(key), key))
                .filter(|(hash, _)| *hash >= cursor)
                .collect();
            batch.sort_unstable();
            for (hash, key) in batch {
                if found.len() >= count && last_hash != Some(hash) {
                    return (hash, found);
                }
                last_hash = Some(hash);
                found.push(key.clone());
            }
        }
        (0, found)
    }
}
