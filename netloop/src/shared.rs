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
use crate::sys::epoll::{Epoll, READABLE, WRITABLE};
use crate::sys::eventfd::EventFd;
use crate::timer::{TimerId, TimerKind};
use crate::token::{ConnId, RESERVED_INDEX_BASE};

/// A slot holds its connection inline: boxing it would allocate on every
/// park.
enum Held<S> {
    Free,
    /// Waiting for its next event, registered with epoll.
    Parked(Connection<S>),
    /// A worker is serving it; what others asked of it meanwhile waits
    /// here, in order, for that worker to carry out before it lets go.
    CheckedOut(Vec<Deferred>),
}

/// Work another worker could not do on a connection it found busy: the
/// worker holding the connection does it, in the order it was asked,
/// before handing the connection back.
#[derive(Debug)]
pub(crate) enum Deferred {
    /// Bytes from a [`LoopHandle::write`](crate::LoopHandle::write).
    Write(Vec<u8>),
    /// A [`LoopHandle::close`](crate::LoopHandle::close).
    Close,
    /// A timer of this connection that expired.
    Timer(TimerId, TimerKind),
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
    /// The stop hands the listeners over to another process.
    handing_over: AtomicBool,
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
            handing_over: AtomicBool::new(false),
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
        self.open.load(Ordering::SeqCst)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.entries.len()
    }

    pub(crate) fn begin_stop(&self, handing_over: bool) {
        // Before `stopping`, so a worker that sees the stop sees its kind.
        self.handing_over.store(handing_over, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
        self.signal_if_stopped();
    }

    pub(crate) fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Acquire)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    // The flag and the count form a handshake between a worker that finds
    // the pool full (sets the flag, then reads the count) and one that frees
    // a slot (lowers the count, then takes the flag): sequentially
    // consistent, so that at least one of the two sees the other's write.

    pub(crate) fn set_listener_waiting(&self) {
        self.listener_waits_for_slot.store(true, Ordering::SeqCst);
    }

    /// Whether the listener waited for a slot; whoever learns it re-arms.
    pub(crate) fn take_listener_waiting(&self) -> bool {
        self.listener_waits_for_slot.swap(false, Ordering::SeqCst)
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
        match std::mem::replace(&mut entry.held, Held::CheckedOut(Vec::new())) {
            Held::Parked(conn) => Ok(conn),
            held @ Held::CheckedOut(_) => {
                entry.held = held;
                Err(Acquire::Busy)
            }
            Held::Free => {
                entry.held = Held::Free;
                Err(Acquire::Stale)
            }
        }
    }

    /// Leaves `work` with the worker serving `id`; `Err` with the work
    /// when the connection is not busy after all (parked: the caller checks
    /// it out and does the work itself; free: it is stale).
    fn defer(&self, id: ConnId, work: Deferred) -> Result<(), (Acquire, Deferred)> {
        let Some(entry) = self.entries.get(id.index() as usize) else {
            return Err((Acquire::Stale, work));
        };
        let mut entry = lock(entry);
        if entry.generation != id.generation() {
            return Err((Acquire::Stale, work));
        }
        match &mut entry.held {
            Held::CheckedOut(pending) => {
                pending.push(work);
                Ok(())
            }
            Held::Parked(_) => Err((Acquire::Held, work)),
            Held::Free => Err((Acquire::Stale, work)),
        }
    }
}

/// What handing connections back left to do.
pub(crate) struct CheckIn<S> {
    /// Connections re-armed.
    pub(crate) rearmed: u64,
    /// Connections that could not be armed: to close.
    pub(crate) failed: Vec<(ConnId, Connection<S>)>,
    /// Work other workers left, for connections still held.
    pub(crate) work: Vec<(ConnId, Deferred)>,
}

/// A connection a worker holds, and whether it was ever registered.
struct Out<S> {
    id: ConnId,
    conn: Connection<S>,
    registered: bool,
}

/// A slot this worker does not hold.
const NOT_HELD: u32 = u32::MAX;

/// One worker's view of the shared slab: the connections it holds now.
pub(crate) struct Checkout<S> {
    slab: std::sync::Arc<SharedSlab<S>>,
    held: Vec<Out<S>>,
    /// Where each slot's connection is in `held`, so that finding one is
    /// O(1) even when a stop has checked out every connection.
    positions: Box<[u32]>,
}

impl<S> Checkout<S> {
    pub(crate) fn new(slab: std::sync::Arc<SharedSlab<S>>) -> Self {
        let positions = vec![NOT_HELD; slab.entries.len()].into_boxed_slice();
        Self {
            slab,
            held: Vec::new(),
            positions,
        }
    }

    pub(crate) fn slab(&self) -> &SharedSlab<S> {
        &self.slab
    }

    fn position(&self, id: ConnId) -> Option<usize> {
        let pos = *self.positions.get(id.index() as usize)?;
        let pos = usize::try_from(pos).ok()?;
        self.held
            .get(pos)
            .is_some_and(|out| out.id == id)
            .then_some(pos)
    }

    fn hold(&mut self, out: Out<S>) {
        if let Some(pos) = self.positions.get_mut(out.id.index() as usize) {
            *pos = self.held.len() as u32;
        }
        self.held.push(out);
    }

    fn let_go(&mut self, pos: usize) -> Out<S> {
        let out = self.held.swap_remove(pos);
        if let Some(gone) = self.positions.get_mut(out.id.index() as usize) {
            *gone = NOT_HELD;
        }
        if let Some(moved) = self.held.get(pos)
            && let Some(slot) = self.positions.get_mut(moved.id.index() as usize)
        {
            *slot = pos as u32;
        }
        out
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
                self.hold(Out {
                    id,
                    conn,
                    registered: true,
                });
                Acquire::Held
            }
            Err(found) => found,
        }
    }

    /// Has the worker serving `id` do `work` before it lets go of it, or,
    /// if no worker is serving it, checks it out for the caller to do it:
    /// `Held` (the caller does the work now), `Busy` (left with the
    /// holder), or `Stale`.
    pub(crate) fn defer(&mut self, id: ConnId, mut work: Deferred) -> (Acquire, Option<Deferred>) {
        loop {
            match self.acquire(id) {
                Acquire::Held => return (Acquire::Held, Some(work)),
                Acquire::Stale => return (Acquire::Stale, None),
                Acquire::Busy => {}
            }
            match self.slab.defer(id, work) {
                Ok(()) => return (Acquire::Busy, None),
                Err((Acquire::Stale, _)) => return (Acquire::Stale, None),
                // Parked again in between: check it out and do it here.
                Err((_, returned)) => work = returned,
            }
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
        entry.held = Held::CheckedOut(Vec::new());
        let id = ConnId::new(index, entry.generation);
        drop(entry);
        self.slab.open.fetch_add(1, Ordering::AcqRel);
        self.hold(Out {
            id,
            conn,
            registered: false,
        });
        Some(id)
    }

    /// Frees the slot, bumping its generation so every copy of `id` is stale.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Connection<S>> {
        let pos = self.position(id)?;
        let out = self.let_go(pos);
        let mut entry = lock(&self.slab.entries[id.index() as usize]);
        entry.generation = entry.generation.wrapping_add(1);
        entry.held = Held::Free;
        drop(entry);
        lock(&self.slab.free).push(id.index());
        self.slab.open.fetch_sub(1, Ordering::SeqCst);
        self.slab.signal_if_stopped();
        Some(out.conn)
    }

    /// Hands every held connection back, each registered (or re-armed) for
    /// the interest `interest_of` gives it, under its slot's lock; a
    /// connection with work left for it by other workers stays held, and
    /// the work is returned. Also returns how many were re-armed, and the
    /// connections whose registration failed, for the caller to close.
    pub(crate) fn check_in_all(
        &mut self,
        epoll: &Epoll,
        interest_of: impl Fn(&Connection<S>) -> u32,
    ) -> CheckIn<S> {
        let mut result = CheckIn {
            rearmed: 0,
            failed: Vec::new(),
            work: Vec::new(),
        };
        let mut kept = Vec::new();
        for out in std::mem::take(&mut self.held) {
            if let Some(pos) = self.positions.get_mut(out.id.index() as usize) {
                *pos = NOT_HELD;
            }
            let interest = interest_of(&out.conn);
            let mut entry = lock(&self.slab.entries[out.id.index() as usize]);
            if let Held::CheckedOut(pending) = &mut entry.held
                && !pending.is_empty()
            {
                result
                    .work
                    .extend(pending.drain(..).map(|work| (out.id, work)));
                kept.push(out);
                continue;
            }
            if out.conn.listed.drained {
                // Its drain notice waits for this worker's next turn, which
                // finds it only among the connections the worker holds.
                kept.push(out);
                continue;
            }
            let fd = out.conn.fd.as_raw_fd();
            let token = out.id.to_u64();
            // Waiting for nothing (reading held, nothing to write), it stays
            // disarmed: armed, a HUP or ERR would be reported at once, again
            // and again. Whoever releases it checks it out and in again.
            let waits = interest & (READABLE | WRITABLE) != 0;
            let armed = match (out.registered, waits) {
                (true, true) => epoll.modify(fd, token, interest).map(|()| 1),
                (true, false) => Ok(0),
                (false, _) => epoll.add(fd, token, interest).map(|()| 0),
            };
            match armed {
                Ok(count) => {
                    result.rearmed += count;
                    entry.held = Held::Parked(out.conn);
                }
                Err(e) => {
                    tracing::warn!(id = %out.id, error = %e, "cannot arm a one-shot connection");
                    result.failed.push((out.id, out.conn));
                }
            }
        }
        for out in kept {
            self.hold(out);
        }
        result
    }

    /// Puts back connections that `check_in_all` could not arm, so that
    /// they can be closed through the normal path.
    pub(crate) fn hold_again(&mut self, id: ConnId, conn: Connection<S>) {
        self.hold(Out {
            id,
            conn,
            registered: true,
        });
    }
}
