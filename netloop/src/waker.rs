//! Waking a loop from another thread: an eventfd, an "already woken" flag so
//! a burst of wakes costs one `write`, and an inbox of commands.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Error;
use crate::event_loop::Ctx;
use crate::sys::eventfd::EventFd;
use crate::token::ConnId;

/// A task run on the loop's thread with access to its connections.
pub type Task<S> = Box<dyn for<'a> FnOnce(&mut Ctx<'a, S>) + Send>;

/// What another thread asks a loop to do.
pub(crate) enum Command<S> {
    Stop,
    Write(ConnId, Vec<u8>),
    Close(ConnId),
    Run(Task<S>),
    Adopt(OwnedFd, Option<SocketAddr>),
}

/// No connection: the value a slot's published id has while it is free.
const FREE: u64 = u64::MAX;

pub(crate) struct Shared<S> {
    eventfd: EventFd,
    woken: AtomicBool,
    stopped: AtomicBool,
    inbox: Mutex<Vec<Command<S>>>,
    /// The id of each slot's current occupant, published by the loop on
    /// every open and close, so another thread can tell a stale `ConnId`
    /// at once instead of having its bytes silently dropped later.
    occupants: Box<[AtomicU64]>,
}

impl<S> Shared<S> {
    pub(crate) fn new(slots: usize) -> io::Result<Self> {
        Ok(Self {
            eventfd: EventFd::new()?,
            woken: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            inbox: Mutex::new(Vec::new()),
            occupants: (0..slots).map(|_| AtomicU64::new(FREE)).collect(),
        })
    }

    /// Records that `id` now occupies its slot.
    pub(crate) fn publish_open(&self, id: ConnId) {
        if let Some(slot) = self.occupants.get(id.index() as usize) {
            slot.store(id.to_u64(), Ordering::Release);
        }
    }

    /// Records that `id` has left its slot.
    pub(crate) fn publish_close(&self, id: ConnId) {
        if let Some(slot) = self.occupants.get(id.index() as usize) {
            slot.store(FREE, Ordering::Release);
        }
    }

    fn is_open(&self, id: ConnId) -> bool {
        self.occupants
            .get(id.index() as usize)
            .is_some_and(|slot| slot.load(Ordering::Acquire) == id.to_u64())
    }

    fn send_to(&self, id: ConnId, command: Command<S>) -> Result<(), Error> {
        if !self.is_open(id) {
            return Err(Error::StaleConn(id));
        }
        self.send(command)
    }

    pub(crate) fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    fn inbox(&self) -> MutexGuard<'_, Vec<Command<S>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, command: Command<S>) -> Result<(), Error> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::LoopStopped);
        }
        self.inbox().push(command);
        // Only the first wake of a burst writes the eventfd; the loop clears
        // the flag before it empties the inbox, so nothing is left unseen.
        if !self.woken.swap(true, Ordering::SeqCst) {
            self.eventfd.notify()?;
        }
        Ok(())
    }

    /// Called by the loop when the eventfd fires: takes every queued command.
    ///
    /// The order matters. The counter is drained *before* the flag is
    /// cleared: a sender that finds the flag clear writes the eventfd after
    /// this drain, so its wake-up survives. Clearing first would let a
    /// sender set the flag, have its write swallowed by the drain, and leave
    /// the flag set with nobody to clear it: every later sender would skip
    /// its write, and the loop would sleep on a non-empty inbox.
    pub(crate) fn take_commands(&self, into: &mut Vec<Command<S>>) {
        self.drain_wakeups();
        self.clear_woken();
        self.take_inbox(into);
    }

    fn drain_wakeups(&self) {
        // An error here would mean a closed fd, which the loop never does.
        let _ = self.eventfd.drain();
    }

    fn clear_woken(&self) {
        self.woken.store(false, Ordering::SeqCst);
    }

    fn take_inbox(&self, into: &mut Vec<Command<S>>) {
        into.append(&mut self.inbox());
    }

    /// Marks the loop as gone, so later sends fail instead of piling up.
    pub(crate) fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
        self.inbox().clear();
    }
}

/// A `Send + Clone` handle to a loop, usable from any thread.
///
/// Everything it does is carried out on the loop's own thread at its next
/// turn. Operations on a connection that has closed by then are dropped.
pub struct LoopHandle<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for LoopHandle<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for LoopHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("stopped", &self.shared.stopped.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S> LoopHandle<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        Self { shared }
    }

    /// Asks the loop to stop gracefully: stop accepting, let connections
    /// drain until the stop deadline, then close the rest.
    pub fn stop(&self) -> Result<(), Error> {
        self.shared.send(Command::Stop)
    }

    /// Queues `bytes` for the connection `id`.
    ///
    /// `Err(StaleConn)` if the connection has already closed, even if its
    /// slot holds a new connection. A connection that closes after this
    /// check but before the loop's next turn drops the bytes; the loop
    /// counts that in [`Stats::stale_commands`](crate::Stats::stale_commands).
    pub fn write(&self, id: ConnId, bytes: Vec<u8>) -> Result<(), Error> {
        self.shared.send_to(id, Command::Write(id, bytes))
    }

    /// Closes the connection `id` once its queued output is written;
    /// `Err(StaleConn)` if it has already closed.
    pub fn close(&self, id: ConnId) -> Result<(), Error> {
        self.shared.send_to(id, Command::Close(id))
    }

    /// Whether `id` names a connection that is open now.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.shared.is_open(id)
    }

    /// Hands a connected socket to the loop, which serves it as if it had
    /// accepted it (the acceptor-and-loops mode).
    pub fn adopt(&self, stream: TcpStream) -> Result<(), Error> {
        let peer = stream.peer_addr().ok();
        self.adopt_fd(OwnedFd::from(stream), peer)
    }

    pub(crate) fn adopt_fd(&self, fd: OwnedFd, peer: Option<SocketAddr>) -> Result<(), Error> {
        self.shared.send(Command::Adopt(fd, peer))
    }

    /// Runs `task` on the loop's thread.
    pub fn post(
        &self,
        task: impl for<'a> FnOnce(&mut Ctx<'a, S>) + Send + 'static,
    ) -> Result<(), Error> {
        self.shared.send(Command::Run(Box::new(task)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Step<'a> = &'a dyn Fn(&mut Vec<Command<()>>);

    /// The loop's three steps, in order, with a sender's `send` possibly
    /// landing before, between or after them.
    fn receive_with_send_at(point: usize) -> (usize, u64) {
        let shared = Shared::<()>::new(1).expect("shared");
        let mut taken = Vec::new();
        shared.send(Command::Stop).expect("first wake");
        let steps: [Step<'_>; 3] = [
            &|_| shared.drain_wakeups(),
            &|_| shared.clear_woken(),
            &|into| shared.take_inbox(into),
        ];
        for (i, step) in steps.iter().enumerate() {
            if i == point {
                shared.send(Command::Stop).expect("send");
            }
            step(&mut taken);
        }
        if point == steps.len() {
            shared.send(Command::Stop).expect("send");
        }
        // The loop goes back to sleep; one more command arrives.
        shared.send(Command::Stop).expect("send");
        let waiting = shared.inbox().len();
        let counter = shared.eventfd.drain().expect("drain");
        (waiting, counter)
    }

    #[test]
    fn no_command_is_left_behind_a_swallowed_wakeup() {
        for point in 0..=3 {
            let (waiting, counter) = receive_with_send_at(point);
            assert!(waiting > 0);
            assert!(
                counter > 0,
                "send at point {point}: {waiting} commands wait but the eventfd is silent"
            );
        }
    }
}
