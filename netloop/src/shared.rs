//! The one-shot workers' connections: one slab shared by every worker,
//! each slot behind its own mutex and with its own generation.
//!
//! A worker *checks out* a connection to serve it (on its event, its
//! timer, or an operation by id) and checks it back in at the end of its
//! turn, re-arming its one-shot registration while still holding the slot's
//! lock. So exactly one worker has a connection at a time, and a readiness
//! event can never be lost between a re-arm and the check-in: a worker that
//! receives it waits for the lock and then finds the connection parked.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::connection::Connection;
use crate::sys::epoll::Epoll;
use crate::sys::eventfd::EventFd;
use crate::token::{ConnId, RESERVED_INDEX_BASE};

#[expect(
    clippy::large_enum_variant,
    reason = "a slot holds its connection inline: boxing it would allocate on every park"
)]
enum Held<S> {
    Free,
    /// Waiting for its next event, registered with epoll.
    Parked(Connection<S>),
    /// A worker is serving it.
    CheckedOut,
}

struct Entry<S> {
    generation: u32,
    held: Held<S>,
}

/// What a worker finds when it asks for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// It is (now) this worker's.
    Held,
    /// The id names a connection that has closed.
    Stale,
    /// Another worker is serving it right now.
    Busy,
}

pub(crate) struct SharedSlab<S> {
    entries: Box<[Mutex<Entry<S>>]>,
    free: Mutex<Vec<u32>>,
    never_used: AtomicUsize,
    open: AtomicUsize,
    /// A worker found the pool full and left the listener disarmed; the
    /// next worker to free a slot re-arms it.
    listener_waits_for_slot: AtomicBool,
    stopping: AtomicBool,
    /// Readable (level-triggered, never drained) once the pool has stopped
    /// and emptied, so that every worker wakes and exits.
    stopped: EventFd,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing a handler does runs under these locks, so a poisoned one
    // still holds a consistent entry.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S> SharedSlab<S> {
    pub(crate) fn new(capacity: usize) -> io::Result<Self> {
        let capacity = capacity.min(RESERVED_INDEX_BASE as usize);
        Ok(Self {
            entries: (0..capacity)
                .map(|_| {
                    Mutex::new(Entry {
                        generation: 0,
                        held: Held::Free,
                    })
                })
                .collect(),
            free: Mutex::new(Vec::new()),
            never_used: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            listener_waits_for_slot: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            stopped: EventFd::new()?,
        })
    }

    /// The descriptor that turns readable once the pool has stopped.
    pub(crate) fn stopped_signal(&self) -> &EventFd {
        &self.stopped
    }

    /// Wakes every worker once a stop has emptied the pool.
    fn signal_if_stopped(&self) {
        if self.is_stopping() && self.len() == 0 {
            // Cannot fail on a live eventfd; at worst a worker exits later.
            let _ = self.stopped.notify();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.entries.len()
    }

    pub(crate) fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.signal_if_stopped();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn set_listener_waiting(&self) {
        self.listener_waits_for_slot.store(true, Ordering::Release);
    }

    /// Whether the listener waited for a slot; whoever learns it re-arms.
    pub(crate) fn take_listener_waiting(&self) -> bool {
        self.listener_waits_for_slot.swap(false, Ordering::AcqRel)
    }

    fn allocate(&self) -> Option<u32> {
        if let Some(index) = lock(&self.free).pop() {
            return Some(index);
        }
        let index = self.never_used.fetch_add(1, Ordering::AcqRel);
        if index < self.entries.len() {
            Some(index as u32)
        } else {
            self.never_used.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }

    /// Takes a parked connection out of its slot.
    fn check_out(&self, id: ConnId) -> Result<Connection<S>, Acquire> {
        let Some(entry) = self.entries.get(id.index() as usize) else {
            return Err(Acquire::Stale);
        };
        let mut entry = lock(entry);
        if entry.generation != id.generation() {
            return Err(Acquire::Stale);
        }
        match std::mem::replace(&mut entry.held, Held::CheckedOut) {
            Held::Parked(conn) => Ok(conn),
            Held::CheckedOut => Err(Acquire::Busy),
            Held::Free => {
                entry.held = Held::Free;
                Err(Acquire::Stale)
            }
        }
    }
}

/// A connection a worker holds, and whether it was ever registered.
struct Out<S> {
    id: ConnId,
    conn: Connection<S>,
    registered: bool,
}

/// One worker's view of the shared slab: the connections it holds now.
pub(crate) struct Checkout<S> {
    slab: std::sync::Arc<SharedSlab<S>>,
    held: Vec<Out<S>>,
}

impl<S> Checkout<S> {
    pub(crate) fn new(slab: std::sync::Arc<SharedSlab<S>>) -> Self {
        Self {
            slab,
            held: Vec::new(),
        }
    }

    pub(crate) fn slab(&self) -> &SharedSlab<S> {
        &self.slab
    }

    fn position(&self, id: ConnId) -> Option<usize> {
        self.held.iter().position(|out| out.id == id)
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Connection<S>> {
        self.position(id).map(|i| &self.held[i].conn)
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Connection<S>> {
        let i = self.position(id)?;
        Some(&mut self.held[i].conn)
    }

    pub(crate) fn get2_mut(
        &mut self,
        a: ConnId,
        b: ConnId,
    ) -> Option<(&mut Connection<S>, &mut Connection<S>)> {
        let (i, j) = (self.position(a)?, self.position(b)?);
        let [first, second] = self.held.get_disjoint_mut([i, j]).ok()?;
        Some((&mut first.conn, &mut second.conn))
    }

    pub(crate) fn acquire(&mut self, id: ConnId) -> Acquire {
        if self.position(id).is_some() {
            return Acquire::Held;
        }
        match self.slab.check_out(id) {
            Ok(conn) => {
                self.held.push(Out {
                    id,
                    conn,
                    registered: true,
                });
                Acquire::Held
            }
            Err(found) => found,
        }
    }

    /// Checks out every parked connection (for a stop); lists all held.
    pub(crate) fn acquire_all(&mut self) -> Vec<ConnId> {
        let slab = std::sync::Arc::clone(&self.slab);
        for (index, entry) in slab.entries.iter().enumerate() {
            let generation = lock(entry).generation;
            self.acquire(ConnId::new(index as u32, generation));
        }
        self.ids()
    }

    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.held.iter().map(|out| out.id).collect()
    }

    pub(crate) fn insert(&mut self, conn: Connection<S>) -> Option<ConnId> {
        if self.slab.is_full() {
            return None;
        }
        let index = self.slab.allocate()?;
        let mut entry = lock(&self.slab.entries[index as usize]);
        entry.held = Held::CheckedOut;
        let id = ConnId::new(index, entry.generation);
        drop(entry);
        self.slab.open.fetch_add(1, Ordering::AcqRel);
        self.held.push(Out {
            id,
            conn,
            registered: false,
        });
        Some(id)
    }

    /// Frees the slot, bumping its generation so every copy of `id` is stale.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Connection<S>> {
        let out = self.held.swap_remove(self.position(id)?);
        let mut entry = lock(&self.slab.entries[id.index() as usize]);
        entry.generation = entry.generation.wrapping_add(1);
        entry.held = Held::Free;
        drop(entry);
        lock(&self.slab.free).push(id.index());
        self.slab.open.fetch_sub(1, Ordering::AcqRel);
        self.slab.signal_if_stopped();
        Some(out.conn)
    }

    /// Hands every held connection back, each registered (or re-armed) for
    /// the interest `interest_of` gives it, under its slot's lock. Returns
    /// how many were re-armed, and the connections whose registration
    /// failed, for the caller to close.
    pub(crate) fn check_in_all(
        &mut self,
        epoll: &Epoll,
        interest_of: impl Fn(&Connection<S>) -> u32,
    ) -> (u64, Vec<(ConnId, Connection<S>)>) {
        let mut failed = Vec::new();
        let mut rearmed = 0;
        for out in self.held.drain(..) {
            let interest = interest_of(&out.conn);
            let mut entry = lock(&self.slab.entries[out.id.index() as usize]);
            let fd = out.conn.fd.as_raw_fd();
            let token = out.id.to_u64();
            let armed = if out.registered {
                epoll.modify(fd, token, interest)
            } else {
                epoll.add(fd, token, interest)
            };
            match armed {
                Ok(()) => {
                    rearmed += u64::from(out.registered);
                    entry.held = Held::Parked(out.conn);
                }
                Err(e) => {
                    tracing::warn!(id = %out.id, error = %e, "cannot arm a one-shot connection");
                    failed.push((out.id, out.conn));
                }
            }
        }
        (rearmed, failed)
    }

    /// Puts back connections that `check_in_all` could not arm, so that
    /// they can be closed through the normal path.
    pub(crate) fn hold_again(&mut self, id: ConnId, conn: Connection<S>) {
        self.held.push(Out {
            id,
            conn,
            registered: true,
        });
    }
}
