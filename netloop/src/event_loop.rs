//! The event loop: one thread, one epoll, one pool.
//!
//! One turn: compute the timeout, wait, dispatch each event through the
//! generation check (read side, re-check, write side), run posted work,
//! expire timers, then flush every connection that queued output, once.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::callback::guarded;
use crate::close_reason::CloseReason;
use crate::config::Config;
use crate::conn::Conn;
use crate::connection::{Connection, Origin};
use crate::core::{CloseMode, Core};
use crate::ctx::Ctx;
use crate::error::Error;
use crate::handle::{Command, LoopHandle};
use crate::handler::Handler;
use crate::occupants::Occupants;
use crate::registration::Registration;

use crate::slots::{Acquire, Slots};
use crate::stats::Stats;
use crate::sys::epoll::{ERROR, Epoll, Event, Events, HUP, READ_HUP, READABLE, WRITABLE};
use crate::timer::Timers;
use crate::token::{ConnId, EXIT_INDEX, RESERVED_INDEX_BASE, WAKER_INDEX};
use crate::waker::Mailbox;

/// Where an acceptor loop sends the connections it accepts.
pub(crate) trait Handoff: Send {
    /// Whether some loop can take a connection now.
    fn has_room(&self) -> bool;

    /// Gives `fd` to a loop.
    fn hand_off(&mut self, fd: OwnedFd, peer: Option<SocketAddr>);
}

/// Whether the socket has an error pending (`SO_ERROR`), which reading it
/// also clears.
fn has_socket_error<S>(conn: &Connection<S>) -> bool {
    !matches!(crate::sys::socket::take_error(&conn.fd), Ok(None))
}

/// What a loop is made of besides its config and handler.
pub(crate) struct LoopParts<S> {
    pub(crate) registration: Registration,
    pub(crate) epoll: Arc<Epoll>,
    pub(crate) slots: Slots<S>,
    pub(crate) occupants: Arc<Occupants>,
    pub(crate) mailbox: Arc<Mailbox<Command<S>>>,
    pub(crate) timers: Timers,
    /// Where the loop's clock counts from.
    pub(crate) clock_origin: Instant,
}

/// One event loop with its handler.
pub struct EventLoop<H: Handler> {
    pub(crate) core: Core<H::State>,
    pub(crate) handler: H,
    events: Events,
    pub(crate) handoff: Option<Box<dyn Handoff>>,
    pub(crate) mailbox: Arc<Mailbox<Command<H::State>>>,
    pub(crate) commands: Vec<Command<H::State>>,
    started: bool,
}

impl<H: Handler> EventLoop<H> {
    /// Creates a loop (epoll, waker, empty pool) serving connections with `handler`.
    pub fn new(config: Config, handler: H) -> Result<Self, Error> {
        let epoll = Arc::new(Epoll::new()?);
        let mailbox = Arc::new(Mailbox::new()?);
        epoll.add(
            mailbox.eventfd().as_raw_fd(),
            ConnId::new(WAKER_INDEX, 0).to_u64(),
            READABLE,
        )?;
        let parts = LoopParts {
            registration: Registration::from_trigger(config.trigger),
            epoll,
            slots: Slots::owned(config.max_connections),
            occupants: Arc::new(Occupants::new(config.max_connections)),
            mailbox,
            timers: Timers::default(),
            clock_origin: Instant::now(),
        };
        Ok(Self::with_parts(config, handler, parts))
    }

    /// A loop over the given parts, the mailbox already registered with the
    /// epoll (the one-shot workers share all but the timers).
    pub(crate) fn with_parts(config: Config, handler: H, parts: LoopParts<H::State>) -> Self {
        let events = Events::with_capacity(config.events_capacity);
        let LoopParts {
            registration,
            epoll,
            slots,
            occupants,
            mailbox,
            timers,
            clock_origin,
        } = parts;
        Self {
            core: Core::new(
                config,
                registration,
                epoll,
                slots,
                occupants,
                timers,
                clock_origin,
            ),
            handler,
            events,
            handoff: None,
            mailbox,
            commands: Vec::new(),
            started: false,
        }
    }

    /// Adds an already connected socket as a connection of this loop.
    pub fn adopt(&mut self, stream: TcpStream) -> Result<ConnId, Error> {
        if self.core.stopping {
            return Err(Error::LoopStopped);
        }
        stream.set_nonblocking(true)?;
        let peer = stream.peer_addr().ok();
        self.open_connection(OwnedFd::from(stream), peer)
    }

    /// Starts an outbound connection, as [`Ctx::connect`] does.
    pub fn connect(&mut self, addr: SocketAddr, state: H::State) -> Result<ConnId, Error> {
        self.core.connect(addr, None, state)
    }

    /// Starts an outbound connection from `source`, as [`Ctx::connect_from`] does.
    pub fn connect_from(
        &mut self,
        addr: SocketAddr,
        source: IpAddr,
        state: H::State,
    ) -> Result<ConnId, Error> {
        self.core.connect(addr, Some(source), state)
    }

    /// A handle for other threads.
    pub fn handle(&self) -> LoopHandle<H::State> {
        LoopHandle::new(Arc::clone(&self.mailbox), Arc::clone(&self.core.occupants))
    }

    /// The loop's counters.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.core.conns.len()
    }

    /// Bytes of buffer memory held by connections and spares: what the
    /// loop's data path costs in memory now.
    pub fn buffer_bytes(&self) -> usize {
        let held: usize = self
            .core
            .conns
            .ids()
            .into_iter()
            .filter_map(|id| self.core.conns.get(id))
            .map(|c| c.input.capacity() + c.output.capacity())
            .sum();
        held + self.core.buffers.spare_bytes()
    }

    /// Whether a graceful stop has finished (or was never needed).
    pub fn is_stopped(&self) -> bool {
        self.core.stopping && self.core.conns.len() == 0
    }

    /// Runs turns until a graceful stop completes.
    pub fn run(&mut self) -> Result<(), Error> {
        let result = self.run_turns();
        self.mailbox.close();
        result
    }

    fn run_turns(&mut self) -> Result<(), Error> {
        while !self.is_stopped() {
            self.turn(None)?;
        }
        Ok(())
    }

    /// Runs one turn, waiting at most `max_wait` (and less if a timer is due).
    pub fn turn(&mut self, max_wait: Option<Duration>) -> Result<(), Error> {
        self.start_once();
        if self.core.follow_shared_stop() {
            // The sweep held connections and may have asked for closes; a
            // worker must not wait holding them.
            self.drain_closes();
            self.flush_all();
            self.check_in();
        }
        let timeout = self.core.wait_timeout(max_wait);
        // Taken out while dispatching borrows `self`; the placeholder holds no memory.
        let mut events = std::mem::take(&mut self.events);
        let waited = self.core.epoll.wait(&mut events, timeout);
        self.core.stats.wait_calls += 1;
        self.core.clock.refresh();
        if let Err(e) = waited {
            self.events = events;
            return Err(e.into());
        }
        for i in 0..events.len() {
            if let Some(event) = events.get(i) {
                self.dispatch(event);
                self.flush_every_batch(i + 1);
            }
        }
        self.events = events;
        self.finish_turn();
        Ok(())
    }

    /// Gives the handler its loop handle before the first turn.
    fn start_once(&mut self) {
        if !self.started {
            self.started = true;
            let handle = self.handle();
            let handler = &mut self.handler;
            if let Err(message) = guarded(|| handler.on_start(handle)) {
                self.core.stats.handler_panics += 1;
                tracing::error!(panic = %message, "handler panicked in on_start");
            }
        }
    }

    pub(crate) fn finish_turn(&mut self) {
        self.run_posted();
        self.expire_timers();
        self.flush_all();
        self.notify_drained();
        self.check_in();
    }

    pub(crate) fn dispatch(&mut self, event: Event) {
        let id = ConnId::from_u64(event.token);
        if id.index() >= RESERVED_INDEX_BASE {
            self.dispatch_internal(id.index());
            return;
        }
        match self.core.conns.acquire(id) {
            Acquire::Held => {}
            Acquire::Stale => {
                self.core.stats.stale_events += 1;
                return;
            }
            // One-shot: a worker holds it for a timer, an operation by id
            // or a stop, and re-arms it when it hands it back, which
            // reports this readiness again.
            Acquire::Busy => {
                self.core.count_contention();
                return;
            }
        }
        let bits = event.events;
        if self
            .core
            .conns
            .get(id)
            .is_some_and(Connection::is_connecting)
            && !self.finish_connect(id, bits)
        {
            return;
        }
        if bits & ERROR != 0 && self.core.conns.get(id).is_some_and(has_socket_error) {
            // A pending socket error (a reset, mostly) ends the connection
            // now, whatever it waits for; left alone, it would be reported
            // again on every wait while reading is held.
            self.core
                .request_close(id, CloseReason::Reset, CloseMode::Now);
            self.drain_closes();
            return;
        }
        // ERR and HUP count as both directions, as in nginx.
        if bits & (READABLE | READ_HUP | HUP | ERROR) != 0 {
            self.on_readable(id, bits & (READ_HUP | HUP | ERROR) != 0);
        }
        if bits & (WRITABLE | HUP | ERROR) != 0 {
            // The read side may have closed the connection and a new one may
            // hold the slot: the write side is checked again on its own.
            if !self.core.conns.contains(id) {
                if bits & WRITABLE != 0 {
                    self.core.stats.stale_write_halves += 1;
                }
                return;
            }
            self.on_writable(id);
        }
    }

    fn dispatch_internal(&mut self, index: u32) {
        match index {
            WAKER_INDEX => self.run_commands(),
            // One-shot: the pool has stopped; the run loop sees it.
            EXIT_INDEX => {}
            _ => self.accept_from((index - RESERVED_INDEX_BASE) as usize),
        }
    }

    /// Puts an accepted or adopted socket in the pool and tells the handler.
    pub(crate) fn open_connection(
        &mut self,
        fd: OwnedFd,
        peer: Option<SocketAddr>,
    ) -> Result<ConnId, Error> {
        let conn = Connection::new(
            fd,
            peer,
            Origin::Accepted,
            H::State::default(),
            self.core.default_water_marks(),
            self.core.clock.now_ns(),
        );
        let id = match self.core.insert(conn) {
            Ok(id) => id,
            Err(e) => {
                if matches!(e, Error::PoolFull) {
                    self.core.stats.count_close(CloseReason::PoolFull);
                }
                return Err(e);
            }
        };
        self.core.stats.accepted += 1;
        self.core.arm_idle_timer(id);
        self.call(id, |handler, conn| handler.on_open(conn));
        Ok(id)
    }

    /// Runs one handler callback about connection `id`, with its panics
    /// contained, then the bookkeeping every callback needs.
    pub(crate) fn call<R>(
        &mut self,
        id: ConnId,
        callback: impl FnOnce(&mut H, &mut Conn<'_, H::State>) -> R,
    ) -> Option<R> {
        let handler = &mut self.handler;
        let core = &mut self.core;
        let result = guarded(|| callback(handler, &mut Conn::new(core, id)));
        let outcome = match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.core.stats.handler_panics += 1;
                tracing::error!(%id, panic = %message, "handler panicked; connection aborted");
                self.core
                    .request_close(id, CloseReason::HandlerPanic, CloseMode::Now);
                None
            }
        };
        self.after_callback(id);
        outcome
    }

    /// Runs a callback that is about the loop rather than one connection
    /// (a posted task, `on_close`), with its panics contained.
    pub(crate) fn call_with_ctx(
        &mut self,
        what: &'static str,
        callback: impl FnOnce(&mut H, &mut Ctx<'_, H::State>),
    ) {
        let handler = &mut self.handler;
        let core = &mut self.core;
        if let Err(message) = guarded(|| callback(handler, &mut Ctx::new(core))) {
            self.core.stats.handler_panics += 1;
            tracing::error!(panic = %message, "{what} panicked");
        }
    }
}

#[cfg(feature = "testing")]
impl<H: Handler> EventLoop<H> {
    /// Dispatches a hand-made batch exactly as if `epoll_wait` had returned
    /// it, then runs the rest of a turn (posted work, timers, flush).
    ///
    /// This is how tests replay orderings the kernel produces only rarely,
    /// such as a stale event behind the close and reuse of its slot.
    pub fn dispatch_batch(&mut self, batch: &[Event]) {
        self.start_once();
        self.core.clock.refresh();
        for (i, &event) in batch.iter().enumerate() {
            self.dispatch(event);
            self.flush_every_batch(i + 1);
        }
        self.finish_turn();
    }

    /// The epoll token of listener number `index` (in the order added), for
    /// building batches by hand with [`dispatch_batch`](Self::dispatch_batch).
    pub fn listener_token(&self, index: usize) -> Option<u64> {
        self.core.listeners.token(index)
    }
}

impl<H: Handler> std::fmt::Debug for EventLoop<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("connections", &self.core.conns.len())
            .field("listeners", &self.core.listeners.len())
            .field("stats", &self.core.stats)
            .finish()
    }
}
