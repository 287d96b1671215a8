//! Which connection occupies each pool slot, readable from any thread, so
//! that a handle on another thread can refuse a stale `ConnId` at once
//! instead of having its bytes silently dropped later.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::token::ConnId;

/// No connection: the value a slot's entry has while the slot is free.
const FREE: u64 = u64::MAX;

pub(crate) struct Occupants {
    slots: Box<[AtomicU64]>,
    open: AtomicUsize,
}

impl Occupants {
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| AtomicU64::new(FREE)).collect(),
            open: AtomicUsize::new(0),
        }
    }

    /// Records that `id` now occupies its slot.
    pub(crate) fn publish_open(&self, id: ConnId) {
        if let Some(slot) = self.slots.get(id.index() as usize) {
            slot.store(id.to_u64(), Ordering::Release);
            self.open.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Records that `id` has left its slot.
    pub(crate) fn publish_close(&self, id: ConnId) {
        if let Some(slot) = self.slots.get(id.index() as usize) {
            // Only if `id` is still the one recorded: a one-shot worker may
            // have placed a new connection in the freed slot meanwhile.
            let _ = slot.compare_exchange(id.to_u64(), FREE, Ordering::AcqRel, Ordering::Acquire);
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether another connection fits (read by an acceptor on another thread).
    pub(crate) fn has_room(&self) -> bool {
        self.open.load(Ordering::Acquire) < self.slots.len()
    }

    pub(crate) fn is_open(&self, id: ConnId) -> bool {
        self.slots
            .get(id.index() as usize)
            .is_some_and(|slot| slot.load(Ordering::Acquire) == id.to_u64())
    }
}
