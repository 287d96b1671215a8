//! Timers keyed by deadline, cancellable by id.
//!
//! A `BTreeMap` ordered by `(deadline, sequence)` gives the nearest deadline
//! in O(log n) and, unlike a binary heap, removes a cancelled timer at once,
//! so closed connections leave nothing behind (nginx keeps its timers in a
//! red-black tree for the same reason).
//!
//! Idle timeouts are the exception: every connection has one, so they are
//! kept apart, as bare connection ids in buckets one [`IDLE_GRAIN_NS`] wide
//! (8 bytes a connection instead of a B-tree entry's ~150). An idle entry
//! fires at the end of its bucket, at most one grain late (nginx likewise
//! lets a timer be up to 300 ms lazy), and is never cancelled: a closed
//! connection's id is stale by then (its generation moved on) and the
//! expiry finds nothing; activity is checked on expiry, not re-armed.
//!
//! One-shot workers each keep their own timers, while a connection moves
//! from worker to worker. So a timer id names the worker that armed it, a
//! worker cancelling another's timer leaves the id in that worker's cancel
//! box (emptied at the start of its next expiry pass), and a timer whose
//! connection another worker is serving is left for that worker to run.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::token::ConnId;

/// Names one armed timer. Cancelling a timer that already fired or was
/// cancelled is a no-op: ids are not reused (the sequence number of a
/// process's timers would take 2^48 timers to wrap, and even then would
/// have to meet an armed timer with the same deadline to the nanosecond).
///
/// 16 bytes, and `Option<TimerId>` too: a connection keeps a few of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    deadline_ns: u64,
    /// The sequence number in the high 48 bits, the one-shot worker whose
    /// timers hold it in the low 16 (0 for a loop of its own). Never zero.
    serial: NonZeroU64,
}

impl TimerId {
    /// An id no timer ever has: cancelling it is a no-op.
    pub(crate) const UNARMED: TimerId = TimerId {
        deadline_ns: u64::MAX,
        serial: NonZeroU64::MAX,
    };

    /// The one-shot worker whose timers hold it.
    fn wheel(self) -> u16 {
        (self.serial.get() & u64::from(u16::MAX)) as u16
    }
}

/// The most one-shot workers whose timer ids stay apart (the last 16-bit
/// wheel is [`TimerId::UNARMED`]'s).
pub(crate) const MAX_WHEELS: usize = u16::MAX as usize;

/// Sequence numbers run 1 ..= 2^48 - 1, then wrap to 1.
const SEQUENCE_SPAN: u64 = (1 << 48) - 1;

/// The serial of the timer armed `sequence`-th on `wheel`: the sequence,
/// wrapped to 48 bits and never 0, above the wheel.
fn serial(sequence: u64, wheel: u16) -> NonZeroU64 {
    let sequence = sequence % SEQUENCE_SPAN + 1;
    // At least 1 << 16: never zero.
    NonZeroU64::new((sequence << 16) | u64::from(wheel)).unwrap_or(NonZeroU64::MAX)
}

/// Sequence numbers for every timer of the process, from 1.
static NEXT_SEQUENCE: AtomicU64 = AtomicU64::new(1);

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
    /// An acceptor whose loops were all full looks for room again.
    RoomCheck,
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
            TimerKind::AcceptResume | TimerKind::RoomCheck | TimerKind::StopDeadline => None,
        }
    }
}

/// One cancel box per one-shot worker: ids of its timers that other
/// workers cancelled.
pub(crate) type CancelBoxes = Arc<[Mutex<Vec<TimerId>>]>;

/// The width of an idle-timeout bucket: 2^24 ns, about 16.8 ms.
pub(crate) const IDLE_GRAIN_NS: u64 = 1 << IDLE_GRAIN_SHIFT;
const IDLE_GRAIN_SHIFT: u32 = 24;

/// The loop's timers.
#[derive(Default)]
pub(crate) struct Timers {
    armed: BTreeMap<TimerId, TimerKind>,
    /// Idle checks by bucket: bucket `b` is due at `b * IDLE_GRAIN_NS`.
    idle: BTreeMap<u64, Vec<ConnId>>,
    wheel: u16,
    cancel_boxes: Option<CancelBoxes>,
}

impl Timers {
    /// The timers of one-shot worker `wheel`, which shares `cancel_boxes`
    /// with the others.
    pub(crate) fn of_worker(wheel: u16, cancel_boxes: CancelBoxes) -> Self {
        Self {
            wheel,
            cancel_boxes: Some(cancel_boxes),
            ..Self::default()
        }
    }

    /// Arms a timer for the loop-clock time `deadline_ns`.
    pub(crate) fn insert(&mut self, deadline_ns: u64, kind: TimerKind) -> TimerId {
        let sequence = NEXT_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let id = TimerId {
            deadline_ns,
            serial: serial(sequence, self.wheel),
        };
        self.armed.insert(id, kind);
        id
    }

    /// Arms connection `id`'s idle check for `deadline_ns` or at most one
    /// [`IDLE_GRAIN_NS`] later; it cannot be cancelled (see the module docs).
    pub(crate) fn insert_idle(&mut self, deadline_ns: u64, id: ConnId) {
        let bucket = deadline_ns.div_ceil(IDLE_GRAIN_NS);
        self.idle.entry(bucket).or_default().push(id);
    }

    /// When the first idle bucket is due.
    fn next_idle(&self) -> Option<u64> {
        self.idle
            .first_key_value()
            .map(|(bucket, _)| bucket.checked_mul(IDLE_GRAIN_NS).unwrap_or(u64::MAX))
    }

    /// Disarms a timer; returns whether it was still armed. A one-shot
    /// worker's timer cancelled by another worker is disarmed by its own
    /// worker before that one's next expiry pass (and `false` is returned).
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        if id.wheel() == self.wheel {
            return self.disarm(id);
        }
        let target = self
            .cancel_boxes
            .as_ref()
            .and_then(|boxes| boxes.get(usize::from(id.wheel())));
        if let Some(cancels) = target {
            lock(cancels).push(id);
        }
        false
    }

    fn disarm(&mut self, id: TimerId) -> bool {
        self.armed.remove(&id).is_some()
    }

    /// Disarms the timers other workers cancelled (ids that already fired
    /// are simply gone).
    pub(crate) fn apply_cancels(&mut self) {
        let Some(boxes) = &self.cancel_boxes else {
            return;
        };
        let Some(own) = boxes.get(usize::from(self.wheel)) else {
            return;
        };
        let cancelled = std::mem::take(&mut *lock(own));
        for id in cancelled {
            self.disarm(id);
        }
    }

    /// The earliest deadline, if any timer is armed.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let armed = self.armed.first_key_value().map(|(id, _)| id.deadline_ns);
        match (armed, self.next_idle()) {
            (Some(a), Some(i)) => Some(a.min(i)),
            (a, i) => a.or(i),
        }
    }

    /// Removes and returns one timer due at or before `now_ns` (an idle
    /// check comes with [`TimerId::UNARMED`]: it has no id of its own).
    pub(crate) fn pop_expired(&mut self, now_ns: u64) -> Option<(TimerId, TimerKind)> {
        let armed = self.armed.first_key_value().map(|(id, _)| id.deadline_ns);
        if let Some(idle) = self.next_idle()
            && idle <= now_ns
            && armed.is_none_or(|a| idle <= a)
        {
            let mut bucket = self.idle.first_entry()?;
            let id = bucket.get_mut().pop();
            if bucket.get().is_empty() {
                bucket.remove();
            }
            // Buckets are removed as they empty, so `id` is always there.
            return id.map(|id| (TimerId::UNARMED, TimerKind::Idle(id)));
        }
        if armed? > now_ns {
            return None;
        }
        self.armed.pop_first()
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
    fn idle_checks_fire_within_one_grain_after_their_deadline_in_order_with_the_others() {
        let mut timers = Timers::default();
        let (a, b) = (ConnId::new(1, 0), ConnId::new(2, 0));
        let g = IDLE_GRAIN_NS;
        timers.insert_idle(3 * g + 1, a);
        timers.insert_idle(2 * g, b);
        let user = timers.insert(3 * g + 5, TimerKind::StopDeadline);
        assert_eq!(timers.next_deadline(), Some(2 * g));
        assert_eq!(timers.pop_expired(2 * g - 1), None, "never early");
        assert_eq!(
            timers.pop_expired(2 * g),
            Some((TimerId::UNARMED, TimerKind::Idle(b)))
        );
        assert_eq!(
            timers.pop_expired(4 * g - 1),
            Some((user, TimerKind::StopDeadline))
        );
        assert_eq!(
            timers.pop_expired(4 * g - 1),
            None,
            "a: due at 3g + 1, never early"
        );
        assert_eq!(
            timers.next_deadline(),
            Some(4 * g),
            "at most one grain late"
        );
        assert_eq!(
            timers.pop_expired(4 * g),
            Some((TimerId::UNARMED, TimerKind::Idle(a)))
        );
        assert_eq!(timers.next_deadline(), None, "emptied buckets are gone");
    }

    #[test]
    fn a_timer_cancelled_by_another_worker_never_fires_and_leaves_nothing() {
        let boxes: CancelBoxes = (0..2).map(|_| Mutex::new(Vec::new())).collect();
        let mut holder = Timers::of_worker(0, Arc::clone(&boxes));
        let mut other = Timers::of_worker(1, Arc::clone(&boxes));
        let cancelled = holder.insert(10, TimerKind::AcceptResume);
        let kept = holder.insert(20, TimerKind::StopDeadline);
        let fired = holder.insert(5, TimerKind::AcceptResume);
        assert_eq!(holder.pop_expired(5).map(|(id, _)| id), Some(fired));
        assert!(!other.cancel(cancelled), "armed in the other worker");
        assert!(!other.cancel(fired), "already fired");
        holder.apply_cancels();
        assert_eq!(holder.pop_expired(30).map(|(id, _)| id), Some(kept));
        assert_eq!(holder.pop_expired(30), None);
        assert!(
            boxes.iter().all(|b| lock(b).is_empty()),
            "nothing left behind"
        );
    }

    #[test]
    fn timer_ids_are_16_bytes_name_their_worker_and_keep_arming_order() {
        assert_eq!(std::mem::size_of::<TimerId>(), 16);
        assert_eq!(std::mem::size_of::<Option<TimerId>>(), 16);
        let boxes: CancelBoxes = (0..3).map(|_| Mutex::new(Vec::new())).collect();
        let mut worker = Timers::of_worker(2, boxes);
        let first = worker.insert(7, TimerKind::AcceptResume);
        let second = worker.insert(7, TimerKind::StopDeadline);
        assert_eq!((first.wheel(), second.wheel()), (2, 2));
        assert!(first < second, "same deadline: armed first, fires first");
        assert_eq!(
            worker.pop_expired(7),
            Some((first, TimerKind::AcceptResume))
        );
        assert_eq!(
            worker.pop_expired(7),
            Some((second, TimerKind::StopDeadline))
        );
    }

    #[test]
    fn serials_wrap_past_48_bits_without_zero_or_losing_the_wheel() {
        for sequence in [
            0,
            1,
            SEQUENCE_SPAN - 1,
            SEQUENCE_SPAN,
            SEQUENCE_SPAN + 1,
            u64::MAX,
        ] {
            for wheel in [0, 1, u16::MAX - 1] {
                let id = TimerId {
                    deadline_ns: 0,
                    serial: serial(sequence, wheel),
                };
                assert_eq!(id.wheel(), wheel, "sequence {sequence}");
                assert!(id.serial.get() >> 16 >= 1, "sequence {sequence}: zero");
            }
        }
        assert!(serial(5, 0) < serial(6, 0), "later timers sort later");
    }
}
