//! Where a loop keeps its connections.
//!
//! A loop of its own owns a [`Pool`]. The one-shot workers share one slab
//! instead, and each worker holds the connections it is serving checked out
//! of it (see [`shared`](crate::shared)); both look the same to the loop.

use crate::connection::Connection;
use crate::pool::Pool;
use crate::token::ConnId;

pub(crate) enum Slots<S> {
    /// A pool owned by one loop.
    Owned(Pool<Connection<S>>),
}

impl<S> Slots<S> {
    pub(crate) fn owned(capacity: usize) -> Self {
        Slots::Owned(Pool::with_capacity(capacity))
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Connection<S>> {
        match self {
            Slots::Owned(pool) => pool.get(id),
        }
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Connection<S>> {
        match self {
            Slots::Owned(pool) => pool.get_mut(id),
        }
    }

    pub(crate) fn get2_mut(
        &mut self,
        a: ConnId,
        b: ConnId,
    ) -> Option<(&mut Connection<S>, &mut Connection<S>)> {
        match self {
            Slots::Owned(pool) => pool.get2_mut(a, b),
        }
    }

    /// Makes `id` reachable by this loop if it is current: always so for
    /// an owned pool; a one-shot worker checks it out of the shared slab.
    /// `false` means the id is stale (or, one-shot, served elsewhere now).
    pub(crate) fn acquire(&mut self, id: ConnId) -> bool {
        match self {
            Slots::Owned(pool) => pool.contains(id),
        }
    }

    /// Makes every open connection reachable (for a stop) and lists them.
    pub(crate) fn acquire_all(&mut self) -> Vec<ConnId> {
        match self {
            Slots::Owned(pool) => pool.ids(),
        }
    }

    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    pub(crate) fn insert(&mut self, conn: Connection<S>) -> Result<ConnId, Connection<S>> {
        match self {
            Slots::Owned(pool) => pool.insert(conn),
        }
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Connection<S>> {
        match self {
            Slots::Owned(pool) => pool.remove(id),
        }
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        match self {
            Slots::Owned(pool) => pool.len(),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        match self {
            Slots::Owned(pool) => pool.is_full(),
        }
    }

    /// The connections this loop can reach now.
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        match self {
            Slots::Owned(pool) => pool.ids(),
        }
    }

    /// Whether a new connection is registered with epoll as it is inserted
    /// (a checked-out one is registered when it is handed back).
    pub(crate) fn registers_on_insert(&self) -> bool {
        matches!(self, Slots::Owned(_))
    }
}
