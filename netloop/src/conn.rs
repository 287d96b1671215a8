//! One connection's state inside the loop, and the handler's view of it.

use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::buffer::{Buffer, BufferPool};
use crate::close_reason::CloseReason;
use crate::event_loop::Ctx;
use crate::sys::socket;
use crate::timer::TimerId;
use crate::token::ConnId;

/// A connection as the loop keeps it in its pool slot.
pub(crate) struct Connection<S> {
    pub(crate) fd: OwnedFd,
    pub(crate) input: Buffer,
    pub(crate) output: Buffer,
    pub(crate) state: S,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) idle_timer: Option<TimerId>,
    /// The connect timeout of an outbound connection still connecting.
    pub(crate) connect_timer: Option<TimerId>,
    /// The deadline of a close waiting for its output to drain.
    pub(crate) close_timer: Option<TimerId>,
    pub(crate) last_active_ns: u64,
    /// The interest currently registered (level-triggered mode only).
    pub(crate) interest: u32,
    pub(crate) flags: Flags,
}

/// Where a connection is in its life, as booleans the loop checks per event.
#[derive(Default)]
pub(crate) struct Flags {
    /// Already queued on the loop's flush list this turn.
    pub(crate) in_flush: bool,
    /// Already queued for a read without a new edge.
    pub(crate) in_posted: bool,
    /// Reading stopped because output passed the high-water mark.
    pub(crate) read_paused: bool,
    /// The kernel refused part of the output; wait for EPOLLOUT.
    pub(crate) write_blocked: bool,
    /// The peer sent FIN.
    pub(crate) peer_closed: bool,
    /// An event reported a hang-up or error. Sticky: a read deferred by
    /// backpressure or the budget must not trust a short read afterwards,
    /// since the event that announced the FIN has already been consumed.
    pub(crate) hangup_seen: bool,
    /// Send FIN once the output drains.
    pub(crate) shutdown_requested: bool,
    /// FIN has been sent.
    pub(crate) write_shut: bool,
    /// Close with this reason once the output drains.
    pub(crate) closing: Option<CloseReason>,
    /// The loop is stopping: read and drop input, close as `Shutdown`.
    pub(crate) stopping: bool,
    /// Made by `connect`, not accepted.
    pub(crate) outbound: bool,
    /// An outbound connect is in progress.
    pub(crate) connecting: bool,
}

impl<S: Default> Connection<S> {
    pub(crate) fn new(fd: OwnedFd, peer: Option<SocketAddr>, now_ns: u64) -> Self {
        Self {
            fd,
            input: Buffer::new(),
            output: Buffer::new(),
            state: S::default(),
            peer,
            idle_timer: None,
            connect_timer: None,
            close_timer: None,
            last_active_ns: now_ns,
            interest: 0,
            flags: Flags::default(),
        }
    }
}

/// The handler's view of one connection during a callback.
///
/// It dereferences to [`Ctx`], so the loop-wide operations (acting on other
/// connections by id, timers, stats, stopping) are available too.
pub struct Conn<'a, S> {
    ctx: Ctx<'a, S>,
    id: ConnId,
}

/// Simultaneous access to a connection's input, output and state, for
/// handlers that decode from one while writing to another.
pub struct ConnParts<'c, S> {
    /// Bytes received and not yet consumed.
    pub input: &'c mut Buffer,
    /// The output queue.
    pub output: Output<'c>,
    /// The per-connection user state.
    pub state: &'c mut S,
}

/// A connection's output queue, open for appending.
pub struct Output<'c> {
    buffer: &'c mut Buffer,
    pool: &'c mut BufferPool,
}

impl Output<'_> {
    /// Queues `bytes`; they are written at the end of the turn.
    pub fn write(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes, self.pool);
    }

    /// The queue as a `Vec` to append to, so an encoder can write replies
    /// in place (the codecs in `netloop_servers::codec` take `&mut Vec<u8>`).
    /// Append only: the bytes already in it are queued output.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        self.buffer.as_vec(self.pool)
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

impl<'a, S> Conn<'a, S> {
    pub(crate) fn new(ctx: Ctx<'a, S>, id: ConnId) -> Self {
        Self { ctx, id }
    }

    fn slot(&self) -> &Connection<S> {
        match self.ctx.core.pool.get(self.id) {
            Some(conn) => conn,
            // A connection leaves the pool only between callbacks.
            None => unreachable!(
                "connection {} left the pool during its own callback",
                self.id
            ),
        }
    }

    fn slot_mut(&mut self) -> &mut Connection<S> {
        match self.ctx.core.pool.get_mut(self.id) {
            Some(conn) => conn,
            None => unreachable!(
                "connection {} left the pool during its own callback",
                self.id
            ),
        }
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address, when the kernel reported one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.slot().peer
    }

    /// The socket's file descriptor number, for logging and socket options.
    /// The loop owns the descriptor; do not close it.
    pub fn raw_fd(&self) -> RawFd {
        self.slot().fd.as_raw_fd()
    }

    /// Duplicates the socket (`dup`). The duplicate outlives this connection's
    /// close; the loop deregisters the socket from epoll explicitly, so the
    /// duplicate raises no events for the loop.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        socket::duplicate(&self.slot().fd)
    }

    /// Whether this connection was made by [`Ctx::connect`] rather than accepted.
    pub fn is_outbound(&self) -> bool {
        self.slot().flags.outbound
    }

    /// The bytes received and not yet consumed.
    pub fn input(&self) -> &[u8] {
        self.slot().input.as_slice()
    }

    /// Marks the first `n` input bytes as handled.
    pub fn consume(&mut self, n: usize) {
        self.slot_mut().input.consume(n);
    }

    /// The per-connection state.
    pub fn state(&mut self) -> &mut S {
        &mut self.slot_mut().state
    }

    /// Queues `bytes` for writing. Everything queued during a turn goes out
    /// in one `write` at the end of it.
    pub fn write(&mut self, bytes: &[u8]) {
        let core = &mut *self.ctx.core;
        if let Some(conn) = core.pool.get_mut(self.id) {
            conn.output.extend_from_slice(bytes, &mut core.buffers);
        }
    }

    /// Bytes queued for writing and not yet taken by the kernel.
    pub fn output_len(&self) -> usize {
        self.slot().output.len()
    }

    /// Input, output and state at once.
    pub fn parts(&mut self) -> ConnParts<'_, S> {
        let core = &mut *self.ctx.core;
        match core.pool.get_mut(self.id) {
            Some(conn) => ConnParts {
                input: &mut conn.input,
                output: Output {
                    buffer: &mut conn.output,
                    pool: &mut core.buffers,
                },
                state: &mut conn.state,
            },
            None => unreachable!(
                "connection {} left the pool during its own callback",
                self.id
            ),
        }
    }

    /// Closes this connection once its queued output is written.
    pub fn close(&mut self) {
        self.close_with(CloseReason::Closed);
    }

    /// Like [`close`](Self::close), recording `reason`.
    pub fn close_with(&mut self, reason: CloseReason) {
        self.ctx.core.request_close(self.id, reason, false);
    }

    /// Closes this connection at once, discarding queued output.
    pub fn abort(&mut self, reason: CloseReason) {
        self.ctx.core.request_close(self.id, reason, true);
    }

    /// Sends FIN once the queued output has drained (half-close); the
    /// connection stays open for reading until the peer closes its side.
    pub fn shutdown(&mut self) {
        self.slot_mut().flags.shutdown_requested = true;
    }

    /// Arms a timer on this connection; [`Handler::on_timer`](crate::Handler::on_timer)
    /// receives `data` after `delay`, unless it is cancelled or the
    /// connection closes first.
    pub fn set_timer(&mut self, delay: Duration, data: u64) -> TimerId {
        self.ctx.core.arm_user_timer(self.id, delay, data)
    }
}

impl<'a, S> Deref for Conn<'a, S> {
    type Target = Ctx<'a, S>;

    fn deref(&self) -> &Self::Target {
        &self.ctx
    }
}

impl<S> DerefMut for Conn<'_, S> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.ctx
    }
}
