//! Tokens: a slot index and a generation, packed into `epoll_data.u64`.
//!
//! The same value is the user's handle to a connection ([`ConnId`]). Because
//! a slot's generation is bumped every time the slot is freed, an event or a
//! handle minted for an earlier occupant of the slot never matches its
//! successor: it is stale, and is dropped instead of delivered.

use std::fmt;

/// Indices from here up are not pool slots but the loop's own sources
/// (listeners, the waker). The pool never grows this far.
pub(crate) const RESERVED_INDEX_BASE: u32 = u32::MAX - 1024;

/// The token of the loop's waker.
pub(crate) const WAKER_INDEX: u32 = u32::MAX;

/// The token of the one-shot pool's "stopped" signal.
pub(crate) const EXIT_INDEX: u32 = u32::MAX - 1;

/// Identifies one connection for its whole life: `(slot index, generation)`.
///
/// A `ConnId` stays valid until its connection closes; after that every
/// operation through it is a clean [`Error::StaleConn`](crate::Error::StaleConn)
/// or a no-op, even when the slot already holds a new connection.
///
/// ```
/// use netloop::ConnId;
/// let id = ConnId::new(7, 3);
/// assert_eq!(ConnId::from_u64(id.to_u64()), id);
/// assert_eq!((id.index(), id.generation()), (7, 3));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// Makes an id from its parts.
    pub const fn new(index: u32, generation: u32) -> Self {
        Self { index, generation }
    }

    /// The pool slot this connection occupies.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation when this connection was placed in it.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// Packs the id into the 64 bits of `epoll_data.u64`.
    pub const fn to_u64(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// Unpacks an id packed by [`to_u64`](Self::to_u64).
    pub const fn from_u64(raw: u64) -> Self {
        Self {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}#{})", self.index, self.generation)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.index, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn packing_round_trips(index in any::<u32>(), generation in any::<u32>()) {
            let id = ConnId::new(index, generation);
            prop_assert_eq!(ConnId::from_u64(id.to_u64()), id);
        }
    }

    #[test]
    fn generation_distinguishes_occupants_of_one_slot() {
        let first = ConnId::new(5, 0);
        let second = ConnId::new(5, 1);
        assert_ne!(first.to_u64(), second.to_u64());
    }
}
