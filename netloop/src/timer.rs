//! Timers keyed by deadline, cancellable by id.
//!
//! A `BTreeMap` ordered by `(deadline, sequence)` gives the nearest deadline
//! in O(log n) and, unlike a binary heap, removes a cancelled timer at once,
//! so closed connections leave nothing behind (nginx keeps its timers in a
//! red-black tree for the same reason).
//!
//! One-shot workers each keep their own timers, while a connection moves
//! from worker to worker. So timer sequence numbers are unique across the
//! process, a timer cancelled by a worker that does not hold it is
//! remembered in a set the workers share until its holder meets it, and a
//! timer whose connection another worker is serving waits a turn.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::token::ConnId;

/// Names one armed timer. Cancelling a timer that already fired or was
/// cancelled is a no-op: the sequence number is never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    deadline_ns: u64,
    sequence: u64,
}

impl TimerId {
    /// An id no timer ever has: cancelling it is a no-op.
    pub(crate) const UNARMED: TimerId = TimerId {
        deadline_ns: u64::MAX,
        sequence: u64::MAX,
    };
}

/// Sequence numbers for every timer of the process.
static NEXT_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// What a timer does when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// Check a connection's idle deadline (re-armed lazily on activity).
    Idle(ConnId),
    /// A timer the handler set on a connection, with its user data.
    User { conn: ConnId, data: u64 },
    /// Give up on an outbound connect still in progress.
    ConnectTimeout(ConnId),
    /// Give up delivering a closing connection's output.
    CloseDeadline(ConnId),
    /// Check that a connection's queued output made progress lately
    /// (re-armed lazily on progress).
    Send(ConnId),
    /// Resume accepting after a pause (EMFILE and friends).
    AcceptResume,
    /// The graceful-stop deadline: close whatever is still open.
    StopDeadline,
}

impl TimerKind {
    /// The connection this timer is about, if any.
    pub(crate) fn conn(self) -> Option<ConnId> {
        match self {
            TimerKind::Idle(id)
            | TimerKind::User { conn: id, .. }
            | TimerKind::ConnectTimeout(id)
            | TimerKind::CloseDeadline(id)
            | TimerKind::Send(id) => Some(id),
            TimerKind::AcceptResume | TimerKind::StopDeadline => None,
        }
    }
}

/// Timers cancelled by a one-shot worker that did not hold them.
pub(crate) type Tombstones = Arc<Mutex<HashSet<TimerId>>>;

/// The loop's timers.
#[derive(Default)]
pub(crate) struct Timers {
    armed: BTreeMap<TimerId, TimerKind>,
    /// Expired while their connection was busy elsewhere: retried next turn.
    postponed: Vec<(TimerId, TimerKind)>,
    tombstones: Option<Tombstones>,
}

impl Timers {
    /// Timers of one one-shot worker, sharing `tombstones` with the others.
    pub(crate) fn shared_with(tombstones: Tombstones) -> Self {
        Self {
            tombstones: Some(tombstones),
            ..Self::default()
        }
    }

    /// Arms a timer for the loop-clock time `deadline_ns`.
    pub(crate) fn insert(&mut self, deadline_ns: u64, kind: TimerKind) -> TimerId {
        let id = TimerId {
            deadline_ns,
            sequence: NEXT_SEQUENCE.fetch_add(1, Ordering::Relaxed),
        };
        self.armed.insert(id, kind);
        id
    }

    /// Disarms a timer; returns whether it was still armed here.
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        if self.armed.remove(&id).is_some() {
            return true;
        }
        if let Some(i) = self.postponed.iter().position(|(p, _)| *p == id) {
            self.postponed.swap_remove(i);
            return true;
        }
        if id != TimerId::UNARMED
            && let Some(tombstones) = &self.tombstones
        {
            lock(tombstones).insert(id);
        }
        false
    }

    /// The earliest deadline, if any timer is armed.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.armed.first_key_value().map(|(id, _)| id.deadline_ns)
    }

    /// Whether timers wait to be retried next turn.
    pub(crate) fn has_postponed(&self) -> bool {
        !self.postponed.is_empty()
    }

    /// Keeps a timer whose connection was busy for the next turn.
    pub(crate) fn postpone(&mut self, id: TimerId, kind: TimerKind) {
        self.postponed.push((id, kind));
    }

    /// The timers postponed last turn.
    pub(crate) fn take_postponed(&mut self) -> Vec<(TimerId, TimerKind)> {
        std::mem::take(&mut self.postponed)
    }

    /// Removes and returns one timer due at or before `now_ns`.
    pub(crate) fn pop_expired(&mut self, now_ns: u64) -> Option<(TimerId, TimerKind)> {
        loop {
            let (id, _) = self.armed.first_key_value()?;
            if id.deadline_ns > now_ns {
                return None;
            }
            let expired = self.armed.pop_first()?;
            if !self.was_cancelled_elsewhere(expired.0) {
                return Some(expired);
            }
        }
    }

    fn was_cancelled_elsewhere(&self, id: TimerId) -> bool {
        self.tombstones
            .as_ref()
            .is_some_and(|tombstones| lock(tombstones).remove(&id))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A set of ids stays consistent whatever panicked while holding it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_in_deadline_order_and_cancel_is_exact() {
        let mut timers = Timers::default();
        let late = timers.insert(30, TimerKind::AcceptResume);
        let early = timers.insert(10, TimerKind::StopDeadline);
        let middle = timers.insert(20, TimerKind::AcceptResume);
        assert_eq!(timers.next_deadline(), Some(10));
        assert!(timers.cancel(middle));
        assert!(!timers.cancel(middle), "cancelling twice is a no-op");
        assert_eq!(timers.pop_expired(25).map(|(id, _)| id), Some(early));
        assert_eq!(timers.pop_expired(25), None);
        assert_eq!(timers.pop_expired(30).map(|(id, _)| id), Some(late));
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn a_timer_cancelled_by_another_worker_never_fires() {
        let tombstones = Tombstones::default();
        let mut holder = Timers::shared_with(Arc::clone(&tombstones));
        let mut other = Timers::shared_with(tombstones);
        let cancelled = holder.insert(10, TimerKind::AcceptResume);
        let kept = holder.insert(20, TimerKind::StopDeadline);
        assert!(!other.cancel(cancelled), "not armed in the other worker");
        assert_eq!(holder.pop_expired(30).map(|(id, _)| id), Some(kept));
        assert_eq!(holder.pop_expired(30), None);
    }
}
