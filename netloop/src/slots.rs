//! Where a loop keeps its connections.
//!
//! A loop of its own owns a [`Pool`]. The one-shot workers share one slab
//! instead, and each worker holds the connections it is serving checked out
//! of it (see [`shared`](crate::shared)); both look the same to the loop.

use crate::connection::Connection;
use crate::pool::Pool;
pub(crate) use crate::shared::Acquire;
use crate::shared::{Checkout, Deferred, SharedSlab};
use crate::token::ConnId;

pub(crate) enum Slots<S> {
    /// A pool owned by one loop.
    Owned(Pool<Connection<S>>),
    /// A one-shot worker's share of the slab all workers use.
    Shared(Checkout<S>),
}

impl<S> Slots<S> {
    pub(crate) fn owned(capacity: usize) -> Self {
        Slots::Owned(Pool::with_capacity(capacity))
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Connection<S>> {
        match self {
            Slots::Owned(pool) => pool.get(id),
            Slots::Shared(checkout) => checkout.get(id),
        }
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Connection<S>> {
        match self {
            Slots::Owned(pool) => pool.get_mut(id),
            Slots::Shared(checkout) => checkout.get_mut(id),
        }
    }

    pub(crate) fn get2_mut(
        &mut self,
        a: ConnId,
        b: ConnId,
    ) -> Option<(&mut Connection<S>, &mut Connection<S>)> {
        match self {
            Slots::Owned(pool) => pool.get2_mut(a, b),
            Slots::Shared(checkout) => checkout.get2_mut(a, b),
        }
    }

    /// Makes `id` reachable by this loop if it is current: always so for
    /// an owned pool; a one-shot worker checks it out of the shared slab,
    /// unless another worker is serving it.
    pub(crate) fn acquire(&mut self, id: ConnId) -> Acquire {
        match self {
            Slots::Owned(pool) if pool.contains(id) => Acquire::Held,
            Slots::Owned(_) => Acquire::Stale,
            Slots::Shared(checkout) => checkout.acquire(id),
        }
    }

    /// Gets `work` done on `id`: returned (with `Held`) for the caller to do
    /// now, or left with the one-shot worker serving it (`Busy`), or
    /// dropped (`Stale`).
    pub(crate) fn defer(&mut self, id: ConnId, work: Deferred) -> (Acquire, Option<Deferred>) {
        match self {
            Slots::Owned(pool) if pool.contains(id) => (Acquire::Held, Some(work)),
            Slots::Owned(_) => (Acquire::Stale, None),
            Slots::Shared(checkout) => checkout.defer(id, work),
        }
    }

    /// Makes every open connection reachable (for a stop) and lists them.
    pub(crate) fn acquire_all(&mut self) -> Vec<ConnId> {
        match self {
            Slots::Owned(pool) => pool.ids(),
            Slots::Shared(checkout) => checkout.acquire_all(),
        }
    }

    /// Whether `id` is reachable now (see [`acquire`](Self::acquire)).
    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    /// Places a new connection; `None` (dropping it) when the pool is full.
    pub(crate) fn insert(&mut self, conn: Connection<S>) -> Option<ConnId> {
        match self {
            Slots::Owned(pool) => pool.insert(conn).ok(),
            Slots::Shared(checkout) => checkout.insert(conn),
        }
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Connection<S>> {
        match self {
            Slots::Owned(pool) => pool.remove(id),
            Slots::Shared(checkout) => checkout.remove(id),
        }
    }

    /// Open connections (all workers' together, one-shot).
    pub(crate) fn len(&self) -> usize {
        match self {
            Slots::Owned(pool) => pool.len(),
            Slots::Shared(checkout) => checkout.slab().len(),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        match self {
            Slots::Owned(pool) => pool.is_full(),
            Slots::Shared(checkout) => checkout.slab().is_full(),
        }
    }

    /// The connections reachable now.
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        match self {
            Slots::Owned(pool) => pool.ids(),
            Slots::Shared(checkout) => checkout.ids(),
        }
    }

    /// The slab one-shot workers share, for a one-shot worker.
    pub(crate) fn shared_slab(&self) -> Option<&SharedSlab<S>> {
        match self {
            Slots::Owned(_) => None,
            Slots::Shared(checkout) => Some(checkout.slab()),
        }
    }

    /// Whether a new connection is registered with epoll as it is inserted
    /// (a checked-out one is registered when it is handed back).
    pub(crate) fn registers_on_insert(&self) -> bool {
        matches!(self, Slots::Owned(_))
    }
}
