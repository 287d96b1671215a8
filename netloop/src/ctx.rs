//! What code running on a loop can do: [`Ctx`] for the loop as a whole,
//! [`ConnRef`] for one of its connections, named by id.
//!
//! Every operation on a connection — the handler's own one or another —
//! goes through [`ConnRef`], so there is one way to write, close, pause or
//! shut down, whoever asks.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::close_reason::CloseReason;
use crate::connection::{Connection, Hold, Origin};
use crate::core::{CloseMode, Core};
use crate::error::Error;
use crate::handle::StopKind;
use crate::stats::Stats;
use crate::sys::socket;
use crate::timer::TimerId;
use crate::token::ConnId;

/// The loop-wide operations available to every callback.
///
/// ```
/// use netloop::{ConnId, Ctx};
///
/// /// Relays `bytes` to `peer`, or reports that it has gone.
/// fn tell(ctx: &mut Ctx<'_, ()>, peer: ConnId, bytes: &[u8]) -> bool {
///     match ctx.conn(peer) {
///         Ok(mut conn) => {
///             conn.write(bytes);
///             true
///         }
///         Err(_) => false,
///     }
/// }
/// ```
pub struct Ctx<'a, S> {
    pub(crate) core: &'a mut Core<S>,
}

impl<'a, S> Ctx<'a, S> {
    pub(crate) fn new(core: &'a mut Core<S>) -> Self {
        Self { core }
    }

    /// The connection `id`, to act on; `Err(StaleConn)` if it has closed,
    /// even when its slot already holds a newer connection. In the one-shot
    /// mode, `Err(Busy)` while another worker is serving it.
    pub fn conn(&mut self, id: ConnId) -> Result<ConnRef<'_, S>, Error> {
        self.core.reach(id)?;
        Ok(ConnRef {
            ctx: Ctx::new(self.core),
            id,
        })
    }

    /// Whether `id` names an open connection.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.core.occupants.is_open(id)
    }

    /// Starts an outbound connection to `addr` whose state starts as
    /// `state`. The handler's `on_open` runs once it is connected; a failure
    /// or a timeout arrives as `on_close` with
    /// [`CloseReason::ConnectFailed`] or [`CloseReason::ConnectTimeout`].
    /// Output written before then is sent once the connection is up.
    pub fn connect(&mut self, addr: SocketAddr, state: S) -> Result<ConnId, Error> {
        self.core.connect(addr, None, state)
    }

    /// Like [`connect`](Self::connect), from the local address `source`
    /// (its port picked by the kernel at connect time): a client spreading
    /// many connections over several local addresses, so that ephemeral
    /// ports do not run out.
    pub fn connect_from(
        &mut self,
        addr: SocketAddr,
        source: IpAddr,
        state: S,
    ) -> Result<ConnId, Error> {
        self.core.connect(addr, Some(source), state)
    }

    /// Disarms a timer; returns whether it was still armed. (In the one-shot
    /// mode a timer another worker armed is disarmed by that worker before
    /// it could fire, and `false` is returned.)
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.core.timers.cancel(timer)
    }

    /// The loop's cached clock, refreshed once per turn.
    pub fn now(&self) -> Instant {
        self.core.clock.now()
    }

    /// The loop's counters.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.core.conns.len()
    }

    /// Begins a graceful stop, as [`LoopHandle::stop`](crate::LoopHandle::stop) does.
    pub fn stop(&mut self) {
        self.core.begin_stop(StopKind::Drain);
    }
}

/// One open connection of the loop, reached by id through [`Ctx::conn`]
/// (or, for the connection a callback is about, through [`Conn`](crate::Conn),
/// which dereferences to it).
///
/// It dereferences to [`Ctx`], so loop-wide operations stay at hand.
pub struct ConnRef<'a, S> {
    ctx: Ctx<'a, S>,
    id: ConnId,
}

impl<'a, S> ConnRef<'a, S> {
    /// The caller checked that `id` is open; it stays so for the borrow,
    /// since connections leave the pool only between callbacks.
    pub(crate) fn new(core: &'a mut Core<S>, id: ConnId) -> Self {
        Self {
            ctx: Ctx::new(core),
            id,
        }
    }

    pub(crate) fn core(&mut self) -> &mut Core<S> {
        self.ctx.core
    }

    pub(crate) fn slot(&self) -> Option<&Connection<S>> {
        self.ctx.core.conns.get(self.id)
    }

    fn slot_mut(&mut self) -> Option<&mut Connection<S>> {
        self.ctx.core.conns.get_mut(self.id)
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address, when the kernel reported one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.slot().and_then(|c| c.peer.get())
    }

    /// Whether this connection was made by [`Ctx::connect`] rather than accepted.
    pub fn is_outbound(&self) -> bool {
        self.slot().is_some_and(|c| c.origin == Origin::Outbound)
    }

    /// The per-connection state.
    pub fn state(&mut self) -> &mut S {
        let id = self.id;
        match self.slot_mut() {
            Some(conn) => &mut conn.state,
            // A ConnRef exists only for an open connection (see `new`).
            None => unreachable!("connection {id} left the pool while borrowed"),
        }
    }

    /// Queues `bytes` for writing. Everything queued during a turn goes out
    /// in one `write` at the end of it.
    pub fn write(&mut self, bytes: &[u8]) {
        let _ = self.ctx.core.write(self.id, bytes);
    }

    /// Bytes queued for writing and not yet taken by the kernel.
    pub fn output_len(&self) -> usize {
        self.slot().map_or(0, |c| c.output.len())
    }

    /// Whether the queued output passed the high-water mark and has not yet
    /// drained to the low-water mark; [`Handler::on_drained`](crate::Handler::on_drained)
    /// is called when it has. A relay stops reading the other side meanwhile.
    pub fn is_full(&self) -> bool {
        self.ctx.core.is_full(self.id)
    }

    /// Gives this connection its own water marks in place of
    /// [`Config::high_water`](crate::Config::high_water) and
    /// [`Config::low_water`](crate::Config::low_water): it is
    /// [full](Self::is_full) once more than `high` bytes are queued, and
    /// [`Handler::on_drained`](crate::Handler::on_drained) is called once it
    /// is back at `low` (at most `high`; marks above 4 GiB - 1 count as
    /// 4 GiB - 1, as do the config's). A request/response server sets a
    /// small bound here, so that a client pipelining requests it never
    /// reads the answers to costs little memory, without the loop-wide
    /// default a bulk sender needs.
    ///
    /// ```
    /// use netloop::{Conn, Handler};
    ///
    /// struct Small;
    /// impl Handler for Small {
    ///     type State = ();
    ///     fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
    ///         conn.set_water_marks(32 * 1024, 8 * 1024);
    ///     }
    ///     fn on_data(&mut self, _conn: &mut Conn<'_, ()>) {}
    /// }
    /// ```
    pub fn set_water_marks(&mut self, high: usize, low: usize) {
        self.ctx.core.set_water_marks(self.id, high, low);
    }

    /// Closes the connection once its queued output is written.
    pub fn close(&mut self) {
        self.close_with(CloseReason::Closed);
    }

    /// Like [`close`](Self::close), recording `reason`.
    pub fn close_with(&mut self, reason: CloseReason) {
        self.ctx
            .core
            .request_close(self.id, reason, CloseMode::AfterOutput);
    }

    /// Closes the connection at the end of this callback, discarding queued
    /// output: for a peer that stopped reading, or one that broke the protocol.
    pub fn abort(&mut self, reason: CloseReason) {
        self.ctx.core.request_close(self.id, reason, CloseMode::Now);
    }

    /// Sends FIN once the queued output has drained (half-close); the
    /// connection stays open for reading until the peer closes its side.
    pub fn shutdown(&mut self) {
        let _ = self.ctx.core.shutdown(self.id);
    }

    /// Stops reading this connection until [`resume_reading`](Self::resume_reading):
    /// the kernel's receive buffer fills and the peer's sends stall. This is
    /// how a relay pushes back on one side while the other is full.
    pub fn pause_reading(&mut self) {
        self.ctx.core.hold_reading(self.id, Hold::Handler);
    }

    /// Undoes [`pause_reading`](Self::pause_reading). Data that arrived
    /// meanwhile is read without waiting for new data (edge-triggered: in
    /// this turn; level-triggered and one-shot: at the next wait, which
    /// reports it at once).
    /// Reading stays held while the connection's own output is full.
    pub fn resume_reading(&mut self) {
        self.ctx.core.release_reading(self.id, Hold::Handler);
    }

    /// Arms a timer on this connection;
    /// [`Handler::on_timer`](crate::Handler::on_timer) receives `data`
    /// after `delay`, unless it is cancelled or the connection closes first.
    pub fn set_timer(&mut self, delay: Duration, data: u64) -> TimerId {
        self.ctx.core.arm_user_timer(self.id, delay, data)
    }

    /// The socket's file descriptor number, for logging and socket options.
    /// The loop owns the descriptor; do not close it.
    pub fn raw_fd(&self) -> RawFd {
        self.slot().map_or(-1, |c| c.fd.as_raw_fd())
    }

    /// Duplicates the socket (`dup`). The duplicate outlives this connection's
    /// close; the loop deregisters the socket from epoll explicitly, so the
    /// duplicate raises no events for the loop.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        match self.slot() {
            Some(conn) => socket::duplicate(&conn.fd),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }
}

impl<'a, S> Deref for ConnRef<'a, S> {
    type Target = Ctx<'a, S>;

    fn deref(&self) -> &Self::Target {
        &self.ctx
    }
}

impl<S> DerefMut for ConnRef<'_, S> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.ctx
    }
}
