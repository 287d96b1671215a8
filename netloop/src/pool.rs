//! A fixed-capacity slab of connection slots with a LIFO free list.
//!
//! The most recently freed slot is handed out first, exactly the reuse that
//! turns a stale event into a wrong delivery in a pool without generations;
//! here every free bumps the slot's generation, so old ids never match.

use crate::token::{ConnId, RESERVED_INDEX_BASE};

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A slab of at most `capacity` values addressed by [`ConnId`].
pub(crate) struct Pool<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    capacity: usize,
    len: usize,
}

impl<T> Pool<T> {
    /// Creates an empty pool that will hold at most `capacity` values.
    ///
    /// Slots are created on first use, so an unused capacity costs no memory.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.min(RESERVED_INDEX_BASE as usize);
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
            len: 0,
        }
    }

    /// The number of occupied slots.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether another value fits.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Places `value` in a slot and returns its id, or gives it back when full.
    pub(crate) fn insert(&mut self, value: T) -> Result<ConnId, T> {
        if self.is_full() {
            return Err(value);
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.value = Some(value);
        self.len += 1;
        Ok(ConnId::new(index, slot.generation))
    }

    /// The value `id` names, if it is still the slot's current occupant.
    pub(crate) fn get(&self, id: ConnId) -> Option<&T> {
        let slot = self.slots.get(id.index() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.value.as_ref()
    }

    /// Mutable access to the value `id` names, if current.
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.index() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.value.as_mut()
    }

    /// Mutable access to two different current occupants at once.
    pub(crate) fn get2_mut(&mut self, a: ConnId, b: ConnId) -> Option<(&mut T, &mut T)> {
        if a.index() == b.index() || !self.contains(a) || !self.contains(b) {
            return None;
        }
        let [first, second] = self
            .slots
            .get_disjoint_mut([a.index() as usize, b.index() as usize])
            .ok()?;
        Some((first.value.as_mut()?, second.value.as_mut()?))
    }

    /// Whether `id` names a current occupant.
    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    /// Frees the slot `id` names, bumping its generation so every copy of
    /// `id` becomes stale; returns the value, or `None` if `id` was stale.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<T> {
        let slot = self.slots.get_mut(id.index() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index());
        self.len -= 1;
        Some(value)
    }

    /// The ids of every occupied slot, in slot order.
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(index, slot)| ConnId::new(index as u32, slot.generation))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_slot_is_reused_first_with_a_new_generation() {
        let mut pool = Pool::with_capacity(4);
        let a = pool.insert("a").unwrap();
        let c = pool.insert("c").unwrap();
        assert_eq!(pool.remove(c), Some("c"));
        let b = pool.insert("b").unwrap();
        assert_eq!(b.index(), c.index(), "LIFO: the slot just freed comes back");
        assert_ne!(b.generation(), c.generation());
        assert_eq!(pool.get(c), None, "the old id is stale");
        assert_eq!(pool.get(b), Some(&"b"));
        assert_eq!(pool.get(a), Some(&"a"));
    }

    #[test]
    fn slot_reused_twice_never_matches_the_first_id() {
        let mut pool = Pool::with_capacity(1);
        let c = pool.insert(1).unwrap();
        pool.remove(c);
        let b = pool.insert(2).unwrap();
        pool.remove(b);
        let b2 = pool.insert(3).unwrap();
        assert_eq!(b2.index(), c.index());
        // A one-bit instance flag would have flipped back to c's value here.
        assert_eq!(b2.generation() & 1, c.generation() & 1);
        assert!(pool.get(c).is_none());
        assert!(pool.get(b).is_none());
        assert_eq!(
            pool.remove(c),
            None,
            "a stale remove leaves the occupant alone"
        );
        assert_eq!(pool.get(b2), Some(&3));
    }

    #[test]
    fn two_occupants_at_once_but_never_the_same_or_a_stale_one() {
        let mut pool = Pool::with_capacity(4);
        let a = pool.insert(1).unwrap();
        let b = pool.insert(2).unwrap();
        if let Some((x, y)) = pool.get2_mut(a, b) {
            std::mem::swap(x, y);
        }
        assert_eq!((pool.get(a), pool.get(b)), (Some(&2), Some(&1)));
        assert!(pool.get2_mut(a, a).is_none());
        pool.remove(b);
        assert!(pool.get2_mut(a, b).is_none(), "b is stale");
    }

    #[test]
    fn full_pool_refuses_and_recovers() {
        let mut pool = Pool::with_capacity(2);
        let a = pool.insert(1).unwrap();
        pool.insert(2).unwrap();
        assert_eq!(pool.insert(3), Err(3));
        pool.remove(a);
        assert!(pool.insert(4).is_ok());
        assert_eq!(pool.len(), 2);
    }
}
