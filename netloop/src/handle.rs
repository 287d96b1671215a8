//! Reaching a loop from another thread: [`LoopHandle`], and the commands it
//! leaves in the loop's mailbox.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::ctx::Ctx;
use crate::error::Error;
use crate::occupants::Occupants;
use crate::token::ConnId;
use crate::waker::Mailbox;

/// A task run on the loop's thread with access to its connections.
pub type Task<S> = Box<dyn for<'a> FnOnce(&mut Ctx<'a, S>) + Send>;

/// How a stop treats the listening sockets and the open connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// As the loop's `StopStyle` says; listeners stop listening.
    Drain,
    /// Another process took over the listening sockets: they are closed
    /// here but must keep listening, and every open connection is left to
    /// finish on its own (until the stop deadline).
    HandOver,
}

/// What another thread asks a loop to do.
pub(crate) enum Command<S> {
    Stop(StopKind),
    Write(ConnId, Vec<u8>),
    Close(ConnId),
    Run(Task<S>),
    Adopt(OwnedFd, Option<SocketAddr>),
    /// Makes the loop panic outside any handler callback, as a bug in the
    /// loop would: for tests of what a server does when a loop dies.
    #[cfg(feature = "testing")]
    Crash,
}

/// A `Send + Clone` handle to a loop, usable from any thread.
///
/// Everything it does is carried out on the loop's own thread at its next
/// turn. Operations on a connection that has closed by then are dropped
/// (and counted in [`Stats::stale_commands`](crate::Stats::stale_commands)).
pub struct LoopHandle<S> {
    mailbox: Arc<Mailbox<Command<S>>>,
    occupants: Arc<Occupants>,
}

impl<S> Clone for LoopHandle<S> {
    fn clone(&self) -> Self {
        Self {
            mailbox: Arc::clone(&self.mailbox),
            occupants: Arc::clone(&self.occupants),
        }
    }
}

impl<S> fmt::Debug for LoopHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("stopped", &self.mailbox.is_closed())
            .finish()
    }
}

impl<S> LoopHandle<S> {
    pub(crate) fn new(mailbox: Arc<Mailbox<Command<S>>>, occupants: Arc<Occupants>) -> Self {
        Self { mailbox, occupants }
    }

    fn send_to(&self, id: ConnId, command: Command<S>) -> Result<(), Error> {
        if !self.occupants.is_open(id) {
            return Err(Error::StaleConn(id));
        }
        self.mailbox.send(command)
    }

    /// Asks the loop to stop gracefully: stop accepting, let connections
    /// drain until the stop deadline, then close the rest.
    pub fn stop(&self) -> Result<(), Error> {
        self.mailbox.send(Command::Stop(StopKind::Drain))
    }

    /// Asks the loop to stop because another process now serves its
    /// listening sockets (a live upgrade): it stops accepting and closes its
    /// copies of the listeners without shutting them down (the other
    /// process accepts from them, and their backlogs), and lets every open
    /// connection finish on its own until the stop deadline, whatever the
    /// loop's [`StopStyle`](crate::StopStyle).
    pub fn hand_over(&self) -> Result<(), Error> {
        self.mailbox.send(Command::Stop(StopKind::HandOver))
    }

    /// Queues `bytes` for the connection `id`.
    ///
    /// `Err(StaleConn)` if the connection has already closed, even if its
    /// slot holds a new connection.
    pub fn write(&self, id: ConnId, bytes: Vec<u8>) -> Result<(), Error> {
        self.send_to(id, Command::Write(id, bytes))
    }

    /// Closes the connection `id` once its queued output is written;
    /// `Err(StaleConn)` if it has already closed.
    pub fn close(&self, id: ConnId) -> Result<(), Error> {
        self.send_to(id, Command::Close(id))
    }

    /// Whether `id` names a connection that is open now.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.occupants.is_open(id)
    }

    /// Whether the loop's pool has a free slot now.
    pub(crate) fn has_room(&self) -> bool {
        self.occupants.has_room()
    }

    /// Whether the loop has finished (stopped, or died).
    pub fn is_stopped(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Hands a connected socket to the loop, which serves it as if it had
    /// accepted it (the acceptor-and-loops mode).
    pub fn adopt(&self, stream: TcpStream) -> Result<(), Error> {
        let peer = stream.peer_addr().ok();
        self.adopt_fd(OwnedFd::from(stream), peer)
    }

    pub(crate) fn adopt_fd(&self, fd: OwnedFd, peer: Option<SocketAddr>) -> Result<(), Error> {
        self.mailbox.send(Command::Adopt(fd, peer))
    }

    /// Makes the loop die as a bug in the loop itself would (not a handler
    /// panic, which costs one connection only). For tests.
    #[cfg(feature = "testing")]
    pub fn crash(&self) -> Result<(), Error> {
        self.mailbox.send(Command::Crash)
    }

    /// Runs `task` on the loop's thread.
    pub fn post(
        &self,
        task: impl for<'a> FnOnce(&mut Ctx<'a, S>) + Send + 'static,
    ) -> Result<(), Error> {
        self.mailbox.send(Command::Run(Box::new(task)))
    }
}
