//! Timers keyed by deadline, cancellable by id.
//!
//! A `BTreeMap` ordered by `(deadline, sequence)` gives the nearest deadline
//! in O(log n) and, unlike a binary heap, removes a cancelled timer at once,
//! so closed connections leave nothing behind (nginx keeps its timers in a
//! red-black tree for the same reason).

use std::collections::BTreeMap;

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
    /// Resume accepting after a pause (EMFILE and friends).
    AcceptResume,
    /// The graceful-stop deadline: close whatever is still open.
    StopDeadline,
}

/// The loop's timers.
#[derive(Default)]
pub(crate) struct Timers {
    armed: BTreeMap<TimerId, TimerKind>,
    next_sequence: u64,
}

impl Timers {
    /// Arms a timer for the loop-clock time `deadline_ns`.
    pub(crate) fn insert(&mut self, deadline_ns: u64, kind: TimerKind) -> TimerId {
        let id = TimerId {
            deadline_ns,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        self.armed.insert(id, kind);
        id
    }

    /// Disarms a timer; returns whether it was still armed.
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        self.armed.remove(&id).is_some()
    }

    /// The earliest deadline, if any timer is armed.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.armed.first_key_value().map(|(id, _)| id.deadline_ns)
    }

    /// Removes and returns one timer due at or before `now_ns`.
    pub(crate) fn pop_expired(&mut self, now_ns: u64) -> Option<(TimerId, TimerKind)> {
        let (id, _) = self.armed.first_key_value()?;
        if id.deadline_ns > now_ns {
            return None;
        }
        self.armed.pop_first()
    }
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
}
