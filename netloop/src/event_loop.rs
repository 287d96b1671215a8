//! The event loop: one thread, one epoll, one pool (DESIGN §2).
//!
//! One turn: compute the timeout, wait, dispatch each event through the
//! generation check (read side, re-check, write side), run posted work,
//! expire timers, then flush every connection that queued output, once.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::buffer::BufferPool;
use crate::close_reason::CloseReason;
use crate::conn::{Conn, Connection};
use crate::error::Error;
use crate::pool::Pool;
use crate::stats::Stats;
use crate::sys::epoll::{
    EDGE, ERROR, EXCLUSIVE, Epoll, Event, Events, HUP, READ_HUP, READABLE, WRITABLE,
};
use crate::sys::socket;
use crate::timer::{TimerId, TimerKind, Timers};
use crate::token::{ConnId, RESERVED_INDEX_BASE, WAKER_INDEX};
use crate::waker::{Command, LoopHandle, Shared};

/// How connections are registered with epoll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Trigger {
    /// Edge-triggered: registered once for read and write, never modified.
    #[default]
    Edge,
    /// Level-triggered: write interest is armed only while output is queued.
    Level,
}

/// What to do with a new connection when the pool is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PoolFullPolicy {
    /// Accept it and close it at once, counted as [`CloseReason::PoolFull`]
    /// (the client sees a clean close instead of a hang).
    #[default]
    AcceptAndClose,
    /// Stop accepting until a slot frees; new connections wait in the
    /// kernel's backlog.
    LeaveInBacklog,
}

/// A loop's settings. Start from `Config::default()` and change fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// The pool size: connections open at once.
    pub max_connections: usize,
    /// Events taken per `epoll_wait`.
    pub events_capacity: usize,
    /// Edge- or level-triggered registration.
    pub trigger: Trigger,
    /// Bytes read from one connection per readiness before others get a turn;
    /// the rest is read in the posted stage of the same turn.
    pub read_budget: usize,
    /// The standard buffer size, and the smallest read.
    pub buffer_size: usize,
    /// Unconsumed input above this closes the connection ([`CloseReason::InputLimit`]).
    pub max_input: usize,
    /// Queued output above this stops reading the connection...
    pub high_water: usize,
    /// ...until the output drains to this.
    pub low_water: usize,
    /// Close connections silent for this long ([`CloseReason::IdleTimeout`]).
    pub idle_timeout: Option<Duration>,
    /// What to do with connections beyond `max_connections`.
    pub pool_full: PoolFullPolicy,
    /// How long to stop accepting after EMFILE/ENFILE.
    pub accept_backoff: Duration,
    /// Connections accepted per listener readiness.
    pub accepts_per_event: usize,
    /// How long a graceful stop lets connections drain.
    pub stop_timeout: Duration,
    /// How long an outbound connect may take ([`CloseReason::ConnectTimeout`]).
    pub connect_timeout: Duration,
    /// How long a connection closed with output still queued may take to
    /// deliver it before it is closed anyway (nginx's `send_timeout`).
    pub close_timeout: Duration,
    /// Set `TCP_NODELAY` on accepted connections.
    pub nodelay: bool,
    /// Spare buffers kept for reuse.
    pub spare_buffers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            events_capacity: 1024,
            trigger: Trigger::Edge,
            read_budget: 256 * 1024,
            buffer_size: 16 * 1024,
            max_input: 16 * 1024 * 1024,
            high_water: 1024 * 1024,
            low_water: 256 * 1024,
            idle_timeout: None,
            pool_full: PoolFullPolicy::AcceptAndClose,
            accept_backoff: Duration::from_millis(200),
            accepts_per_event: 64,
            stop_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(30),
            nodelay: true,
            spare_buffers: 1024,
        }
    }
}

/// What a protocol does with connections. Every callback runs on the loop's
/// thread; none may block.
///
/// ```no_run
/// use netloop::{Conn, EventLoop, Handler};
///
/// struct Echo;
/// impl Handler for Echo {
///     type State = ();
///     fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
///         let parts = conn.parts();
///         let mut output = parts.output;
///         output.write(parts.input.as_slice());
///         parts.input.consume(usize::MAX);
///     }
/// }
///
/// let mut event_loop = EventLoop::new(Default::default(), Echo)?;
/// event_loop.listen("127.0.0.1:7000".parse().unwrap())?;
/// event_loop.run()?;
/// # Ok::<(), netloop::Error>(())
/// ```
pub trait Handler {
    /// Per-connection user state, created with `Default` when a connection opens.
    type State: Default;

    /// A connection opened.
    fn on_open(&mut self, conn: &mut Conn<'_, Self::State>) {
        let _ = conn;
    }

    /// New input arrived: read [`Conn::input`], [`Conn::consume`] what was
    /// handled, and leave the rest for the next call.
    fn on_data(&mut self, conn: &mut Conn<'_, Self::State>);

    /// The peer sent FIN. Output queued now is still delivered; then the
    /// connection closes with [`CloseReason::PeerClosed`].
    fn on_eof(&mut self, conn: &mut Conn<'_, Self::State>) {
        let _ = conn;
    }

    /// A timer set with [`Conn::set_timer`] expired.
    fn on_timer(&mut self, conn: &mut Conn<'_, Self::State>, timer: TimerId, data: u64) {
        let _ = (conn, timer, data);
    }

    /// A connection closed; its slot is already free and `id` is stale.
    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, Self::State>,
        id: ConnId,
        state: Self::State,
        reason: CloseReason,
    ) {
        let _ = (ctx, id, state, reason);
    }
}

/// Whether this kernel reports `EPOLLRDHUP`, probed once per process.
pub fn rdhup_supported() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(socket::probe_rdhup)
}

struct Listener {
    socket: TcpListener,
    exclusive: bool,
}

struct CloseRequest {
    id: ConnId,
    reason: CloseReason,
    now: bool,
}

/// Everything in a loop except the handler, so that the handler can be
/// called with a borrow of the rest.
pub(crate) struct Core<S> {
    config: Config,
    epoll: Epoll,
    pub(crate) pool: Pool<Connection<S>>,
    pub(crate) buffers: BufferPool,
    timers: Timers,
    stats: Stats,
    flush_list: Vec<ConnId>,
    flush_spare: Vec<ConnId>,
    posted: Vec<ConnId>,
    posted_spare: Vec<ConnId>,
    close_requests: Vec<CloseRequest>,
    commands: Vec<Command<S>>,
    listeners: Vec<Listener>,
    listeners_registered: bool,
    accept_paused: bool,
    /// The last accept ran out of descriptors (for logging only).
    accept_failing: bool,
    accept_blocked_by_pool: bool,
    rdhup: bool,
    clock_origin: Instant,
    now_ns: u64,
    shared: Arc<Shared<S>>,
    stopping: bool,
}

/// The loop-wide operations available to every callback.
pub struct Ctx<'a, S> {
    pub(crate) core: &'a mut Core<S>,
}

impl<S> Ctx<'_, S> {
    /// Queues `bytes` on another connection; `Err(StaleConn)` if it closed.
    pub fn write_to(&mut self, id: ConnId, bytes: &[u8]) -> Result<(), Error> {
        self.core.queue_output(id, bytes)
    }

    /// Closes another connection once its output is written.
    pub fn close_conn(&mut self, id: ConnId) -> Result<(), Error> {
        self.close_conn_with(id, CloseReason::Closed)
    }

    /// Like [`close_conn`](Self::close_conn), recording `reason`.
    pub fn close_conn_with(&mut self, id: ConnId, reason: CloseReason) -> Result<(), Error> {
        if !self.core.pool.contains(id) {
            return Err(Error::StaleConn(id));
        }
        self.core.request_close(id, reason, false);
        Ok(())
    }

    /// Closes another connection at once, discarding its queued output:
    /// for a peer that stopped reading, whose output would never drain.
    pub fn abort_conn(&mut self, id: ConnId, reason: CloseReason) -> Result<(), Error> {
        if !self.core.pool.contains(id) {
            return Err(Error::StaleConn(id));
        }
        self.core.request_close(id, reason, true);
        Ok(())
    }

    /// Half-closes another connection once its output is written.
    pub fn shutdown_conn(&mut self, id: ConnId) -> Result<(), Error> {
        let conn = self.core.pool.get_mut(id).ok_or(Error::StaleConn(id))?;
        conn.flags.shutdown_requested = true;
        self.core.schedule_flush(id);
        Ok(())
    }

    /// Bytes queued on connection `id` and not yet written; `None` if it
    /// has closed. A broadcaster uses it to cut off readers that fall behind.
    pub fn output_len(&self, id: ConnId) -> Option<usize> {
        self.core.pool.get(id).map(|c| c.output.len())
    }

    /// Whether `id` names an open connection.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.core.pool.contains(id)
    }

    /// Arms a timer on connection `id`.
    pub fn set_timer_on(
        &mut self,
        id: ConnId,
        delay: Duration,
        data: u64,
    ) -> Result<TimerId, Error> {
        if !self.core.pool.contains(id) {
            return Err(Error::StaleConn(id));
        }
        Ok(self.core.arm_user_timer(id, delay, data))
    }

    /// Disarms a timer; returns whether it was still armed.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.core.timers.cancel(timer)
    }

    /// The loop's cached clock, refreshed once per turn.
    pub fn now(&self) -> Instant {
        self.core.clock_origin + Duration::from_nanos(self.core.now_ns)
    }

    /// The loop's counters.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.core.pool.len()
    }

    /// A handle to this loop, for a worker thread to answer through.
    pub fn handle(&self) -> LoopHandle<S> {
        LoopHandle::new(Arc::clone(&self.core.shared))
    }

    /// Begins a graceful stop, as [`LoopHandle::stop`] does.
    pub fn stop(&mut self) {
        self.core.begin_stop();
    }
}

impl<S: Default> Ctx<'_, S> {
    /// Starts an outbound connection to `addr`. The handler's `on_open`
    /// runs once it is connected; a failure or a timeout arrives as
    /// `on_close` with [`CloseReason::ConnectFailed`] or
    /// [`CloseReason::ConnectTimeout`]. Output written before then is sent
    /// once the connection is up.
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId, Error> {
        self.core.connect(addr)
    }
}

/// Where an acceptor loop sends the connections it accepts.
type Handoff = Box<dyn FnMut(OwnedFd, Option<SocketAddr>) + Send>;

/// One event loop with its handler.
pub struct EventLoop<H: Handler> {
    core: Core<H::State>,
    handler: H,
    events: Events,
    handoff: Option<Handoff>,
}

impl<H: Handler> EventLoop<H> {
    /// Creates a loop (epoll, waker, empty pool) serving connections with `handler`.
    pub fn new(config: Config, handler: H) -> Result<Self, Error> {
        let epoll = Epoll::new()?;
        let shared = Arc::new(Shared::new(config.max_connections)?);
        epoll.add(
            shared.eventfd().as_raw_fd(),
            ConnId::new(WAKER_INDEX, 0).to_u64(),
            READABLE,
        )?;
        let events = Events::with_capacity(config.events_capacity);
        let core = Core {
            pool: Pool::with_capacity(config.max_connections),
            buffers: BufferPool::new(config.buffer_size, config.spare_buffers),
            epoll,
            timers: Timers::default(),
            stats: Stats::default(),
            flush_list: Vec::new(),
            flush_spare: Vec::new(),
            posted: Vec::new(),
            posted_spare: Vec::new(),
            close_requests: Vec::new(),
            commands: Vec::new(),
            listeners: Vec::new(),
            listeners_registered: true,
            accept_paused: false,
            accept_failing: false,
            accept_blocked_by_pool: false,
            rdhup: rdhup_supported(),
            clock_origin: Instant::now(),
            now_ns: 0,
            shared,
            stopping: false,
            config,
        };
        Ok(Self {
            core,
            handler,
            events,
            handoff: None,
        })
    }

    /// Binds a listener on `addr` and accepts from it; returns the bound
    /// address (useful with port 0).
    pub fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let socket = socket::listen(addr, socket::ListenOptions::default())
            .map_err(|source| Error::Listen { addr, source })?;
        self.add_listener(socket, false)
    }

    /// Binds a listener with explicit options (`SO_REUSEPORT`, backlog).
    pub fn listen_with(
        &mut self,
        addr: SocketAddr,
        options: socket::ListenOptions,
    ) -> Result<SocketAddr, Error> {
        let socket =
            socket::listen(addr, options).map_err(|source| Error::Listen { addr, source })?;
        self.add_listener(socket, false)
    }

    /// Makes this loop an acceptor: every connection it accepts is passed to
    /// `handoff` (which gives it to another loop) instead of being served here.
    pub(crate) fn set_handoff(&mut self, handoff: Handoff) {
        self.handoff = Some(handoff);
    }

    /// Accepts from an already bound, non-blocking listener. With
    /// `exclusive`, it is registered with `EPOLLEXCLUSIVE`, for a listener
    /// shared by several loops.
    pub fn add_listener(
        &mut self,
        socket: TcpListener,
        exclusive: bool,
    ) -> Result<SocketAddr, Error> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let index = self.core.listeners.len() as u32;
        let token = ConnId::new(RESERVED_INDEX_BASE + index, 0).to_u64();
        if self.core.listeners_registered {
            self.core
                .epoll
                .add(socket.as_raw_fd(), token, listener_interest(exclusive))?;
        }
        self.core.listeners.push(Listener { socket, exclusive });
        Ok(local)
    }

    /// The epoll token of listener number `index` (in the order added), for
    /// building batches by hand with [`dispatch_batch`](Self::dispatch_batch).
    pub fn listener_token(&self, index: usize) -> Option<u64> {
        (index < self.core.listeners.len())
            .then(|| ConnId::new(RESERVED_INDEX_BASE + index as u32, 0).to_u64())
    }

    /// The addresses of this loop's listeners.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.core
            .listeners
            .iter()
            .filter_map(|l| l.socket.local_addr().ok())
            .collect()
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
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId, Error> {
        self.core.connect(addr)
    }

    /// A handle for other threads.
    pub fn handle(&self) -> LoopHandle<H::State> {
        LoopHandle::new(Arc::clone(&self.core.shared))
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
        self.core.pool.len()
    }

    /// Bytes of buffer memory held by connections and spares: what the
    /// loop's data path costs in memory now.
    pub fn buffer_bytes(&self) -> usize {
        let held: usize = self
            .core
            .pool
            .ids()
            .into_iter()
            .filter_map(|id| self.core.pool.get(id))
            .map(|c| c.input.capacity() + c.output.capacity())
            .sum();
        held + self.core.buffers.spare_bytes()
    }

    /// Whether a graceful stop has finished (or was never needed).
    pub fn is_stopped(&self) -> bool {
        self.core.stopping && self.core.pool.len() == 0
    }

    /// Runs turns until a graceful stop completes.
    pub fn run(&mut self) -> Result<(), Error> {
        let result = self.run_inner();
        self.core.shared.mark_stopped();
        result
    }

    fn run_inner(&mut self) -> Result<(), Error> {
        while !self.is_stopped() {
            self.turn(None)?;
        }
        Ok(())
    }

    /// Runs one turn, waiting at most `max_wait` (and less if a timer is due).
    pub fn turn(&mut self, max_wait: Option<Duration>) -> Result<(), Error> {
        let timeout = self.core.wait_timeout(max_wait);
        // Taken out while dispatching borrows `self`; the placeholder holds no memory.
        let mut events = std::mem::take(&mut self.events);
        let waited = self.core.epoll.wait(&mut events, timeout);
        self.core.stats.wait_calls += 1;
        self.core.refresh_clock();
        if let Err(e) = waited {
            self.events = events;
            return Err(e.into());
        }
        for i in 0..events.len() {
            if let Some(event) = events.get(i) {
                self.dispatch(event);
            }
        }
        self.events = events;
        self.finish_turn();
        Ok(())
    }

    /// Dispatches a hand-made batch exactly as if `epoll_wait` had returned
    /// it, then runs the rest of a turn (posted work, timers, flush).
    ///
    /// This is how tests replay orderings the kernel produces only rarely,
    /// such as a stale event behind the close and reuse of its slot.
    pub fn dispatch_batch(&mut self, batch: &[Event]) {
        self.core.refresh_clock();
        for &event in batch {
            self.dispatch(event);
        }
        self.finish_turn();
    }

    fn finish_turn(&mut self) {
        self.run_posted();
        self.expire_timers();
        self.flush_all();
    }

    fn dispatch(&mut self, event: Event) {
        let id = ConnId::from_u64(event.token);
        if id.index() >= RESERVED_INDEX_BASE {
            self.dispatch_internal(id.index());
            return;
        }
        if !self.core.pool.contains(id) {
            self.core.stats.stale_events += 1;
            return;
        }
        let bits = event.events;
        if self.core.pool.get(id).is_some_and(|c| c.flags.connecting)
            && !self.finish_connect(id, bits)
        {
            return;
        }
        // ERR and HUP count as both directions, as in nginx.
        if bits & (READABLE | READ_HUP | HUP | ERROR) != 0 {
            self.on_readable(id, bits & (READ_HUP | HUP | ERROR) != 0);
        }
        if bits & (WRITABLE | HUP | ERROR) != 0 {
            // The read side may have closed the connection and a new one may
            // hold the slot: the write side is checked again on its own.
            if !self.core.pool.contains(id) {
                if bits & WRITABLE != 0 {
                    self.core.stats.stale_write_halves += 1;
                }
                return;
            }
            self.on_writable(id);
        }
    }

    fn dispatch_internal(&mut self, index: u32) {
        if index == WAKER_INDEX {
            self.run_commands();
            return;
        }
        let listener = (index - RESERVED_INDEX_BASE) as usize;
        if listener < self.core.listeners.len() {
            self.accept_from(listener);
        }
    }

    fn accept_from(&mut self, listener: usize) {
        for _ in 0..self.core.config.accepts_per_event.max(1) {
            if !self.core.accepting() {
                return;
            }
            if self.core.pool.is_full()
                && self.core.config.pool_full == PoolFullPolicy::LeaveInBacklog
            {
                self.core.accept_blocked_by_pool = true;
                self.core.sync_listeners();
                return;
            }
            let fd = self.core.listeners[listener].socket.as_raw_fd();
            match socket::accept(fd) {
                Ok((stream, peer)) => {
                    if self.core.accept_failing {
                        self.core.accept_failing = false;
                        tracing::info!("accepting again");
                    }
                    if let Some(handoff) = self.handoff.as_mut() {
                        self.core.stats.accepted += 1;
                        handoff(stream, peer);
                        continue;
                    }
                    if self.core.pool.is_full() {
                        self.core.stats.count_close(CloseReason::PoolFull);
                        tracing::debug!(?peer, "pool full: connection closed");
                        drop(stream);
                        continue;
                    }
                    if let Err(e) = self.open_connection(stream, peer) {
                        tracing::warn!(error = %e, "cannot register accepted connection");
                    }
                }
                Err(e) => {
                    if !self.accept_failed(&e) {
                        return;
                    }
                }
            }
        }
    }

    /// Handles an accept error; returns whether to try again at once.
    fn accept_failed(&mut self, error: &io::Error) -> bool {
        match error.raw_os_error() {
            Some(libc::EAGAIN) => false,
            Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => true,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                // Warn when the pause starts; the retries while it lasts are debug.
                if self.core.accept_failing {
                    tracing::debug!(error = %error, "accept still failing");
                } else {
                    tracing::warn!(error = %error, backoff = ?self.core.config.accept_backoff, "accept paused");
                }
                self.core.accept_failing = true;
                self.core.pause_accepting();
                false
            }
            _ => {
                tracing::warn!(error = %error, "accept failed");
                false
            }
        }
    }

    fn open_connection(&mut self, fd: OwnedFd, peer: Option<SocketAddr>) -> Result<ConnId, Error> {
        if self.core.config.nodelay {
            // Not every socket is TCP (tests adopt Unix sockets); that is fine.
            let _ = socket::set_nodelay(&fd);
        }
        let conn = Connection::new(fd, peer, self.core.now_ns);
        let id = match self.core.pool.insert(conn) {
            Ok(id) => id,
            Err(_) => {
                self.core.stats.count_close(CloseReason::PoolFull);
                return Err(Error::PoolFull);
            }
        };
        let interest = self.core.initial_interest();
        let registered = match self.core.pool.get_mut(id) {
            Some(conn) => {
                conn.interest = interest;
                self.core
                    .epoll
                    .add(conn.fd.as_raw_fd(), id.to_u64(), interest)
            }
            None => Ok(()),
        };
        if let Err(e) = registered {
            self.core.pool.remove(id);
            return Err(e.into());
        }
        self.core.stats.accepted += 1;
        self.core.shared.publish_open(id);
        self.core.arm_idle_timer(id);
        self.handler.on_open(&mut Conn::new(
            Ctx {
                core: &mut self.core,
            },
            id,
        ));
        self.after_callback(id);
        Ok(id)
    }

    /// Completes an outbound connect on its first readiness event; returns
    /// whether the connection is up and the event should be dispatched.
    fn finish_connect(&mut self, id: ConnId, bits: u32) -> bool {
        let Some(conn) = self.core.pool.get_mut(id) else {
            return false;
        };
        let failed = match socket::take_error(&conn.fd) {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => bits & (ERROR | HUP) != 0,
        };
        if failed {
            self.core
                .request_close(id, CloseReason::ConnectFailed, true);
            self.drain_closes();
            return false;
        }
        if bits & (WRITABLE | READABLE) == 0 {
            return false;
        }
        conn.flags.connecting = false;
        if let Some(timer) = conn.connect_timer.take() {
            self.core.timers.cancel(timer);
        }
        self.core.stats.connected += 1;
        self.core.arm_idle_timer(id);
        self.core.update_interest(id);
        self.handler.on_open(&mut Conn::new(
            Ctx {
                core: &mut self.core,
            },
            id,
        ));
        self.after_callback(id);
        self.core.pool.contains(id)
    }

    fn on_readable(&mut self, id: ConnId, hangup: bool) {
        let mut total = 0usize;
        loop {
            match self.core.read_once(id, hangup) {
                ReadOutcome::Data { bytes, drained } => {
                    total += bytes;
                    if self.core.pool.get(id).is_some_and(|c| !c.flags.stopping) {
                        self.handler.on_data(&mut Conn::new(
                            Ctx {
                                core: &mut self.core,
                            },
                            id,
                        ));
                        self.after_callback(id);
                    } else if let Some(conn) = self.core.pool.get_mut(id) {
                        conn.input.consume(usize::MAX);
                    }
                    if drained || !self.core.may_read(id) {
                        return;
                    }
                    if total >= self.core.config.read_budget {
                        self.core.post_read(id);
                        return;
                    }
                }
                ReadOutcome::Eof => {
                    self.on_peer_eof(id);
                    return;
                }
                ReadOutcome::Idle => return,
                ReadOutcome::Failed(reason) => {
                    self.core.request_close(id, reason, true);
                    self.drain_closes();
                    return;
                }
            }
        }
    }

    fn on_peer_eof(&mut self, id: ConnId) {
        let Some(conn) = self.core.pool.get_mut(id) else {
            return;
        };
        conn.flags.peer_closed = true;
        let notify = !conn.flags.stopping;
        if notify {
            self.handler.on_eof(&mut Conn::new(
                Ctx {
                    core: &mut self.core,
                },
                id,
            ));
        }
        self.core.request_close(id, CloseReason::PeerClosed, false);
        self.after_callback(id);
    }

    fn on_writable(&mut self, id: ConnId) {
        let blocked = self
            .core
            .pool
            .get(id)
            .is_some_and(|c| c.flags.write_blocked);
        if blocked {
            self.flush_conn(id);
        }
    }

    /// Bookkeeping after any callback on connection `id`.
    fn after_callback(&mut self, id: ConnId) {
        let core = &mut self.core;
        if let Some(conn) = core.pool.get_mut(id) {
            if !conn.output.is_empty() || conn.flags.shutdown_requested {
                core.schedule_flush(id);
            }
            if let Some(conn) = core.pool.get_mut(id)
                && !conn.flags.read_paused
                && conn.output.len() > core.config.high_water
            {
                conn.flags.read_paused = true;
                core.update_interest(id);
            }
            if let Some(conn) = core.pool.get_mut(id) {
                if conn.input.len() > core.config.max_input {
                    core.request_close(id, CloseReason::InputLimit, true);
                } else {
                    conn.input.release_if_empty(&mut core.buffers);
                }
            }
        }
        self.drain_closes();
    }

    /// Carries out close requests, including those made by `on_close` itself.
    fn drain_closes(&mut self) {
        while let Some(request) = self.core.close_requests.pop() {
            let Some(conn) = self.core.pool.get_mut(request.id) else {
                continue;
            };
            if request.now || conn.output.is_empty() {
                self.finalize(request.id, request.reason);
            } else {
                // Keep the first reason: a later EOF does not rename a protocol error.
                let first = conn.flags.closing.is_none();
                conn.flags.closing.get_or_insert(request.reason);
                conn.flags.read_paused = true;
                self.core.schedule_flush(request.id);
                if first {
                    // A peer that never reads would hold the slot forever.
                    let deadline = self
                        .core
                        .now_ns
                        .saturating_add(duration_ns(self.core.config.close_timeout));
                    let timer = self
                        .core
                        .timers
                        .insert(deadline, TimerKind::CloseDeadline(request.id));
                    if let Some(conn) = self.core.pool.get_mut(request.id) {
                        conn.close_timer = Some(timer);
                    }
                }
            }
        }
    }

    fn finalize(&mut self, id: ConnId, reason: CloseReason) {
        let Some(mut conn) = self.core.pool.remove(id) else {
            return;
        };
        self.core.shared.publish_close(id);
        let reason = if conn.flags.stopping && reason != CloseReason::Reset {
            CloseReason::Shutdown
        } else {
            reason
        };
        // Deleting explicitly matters when the fd was dup'd: close alone
        // would leave the registration alive for the duplicate.
        let _ = self.core.epoll.delete(conn.fd.as_raw_fd());
        let timers = [
            conn.idle_timer.take(),
            conn.connect_timer.take(),
            conn.close_timer.take(),
        ];
        for timer in timers.into_iter().flatten() {
            self.core.timers.cancel(timer);
        }
        conn.input.consume(usize::MAX);
        conn.output.consume(usize::MAX);
        conn.input.release_if_empty(&mut self.core.buffers);
        conn.output.release_if_empty(&mut self.core.buffers);
        self.core.stats.count_close(reason);
        tracing::trace!(%id, %reason, "connection closed");
        let Connection { fd, state, .. } = conn;
        drop(fd);
        if self.core.accept_blocked_by_pool {
            self.core.accept_blocked_by_pool = false;
            self.core.sync_listeners();
        }
        self.handler.on_close(
            &mut Ctx {
                core: &mut self.core,
            },
            id,
            state,
            reason,
        );
    }

    fn flush_conn(&mut self, id: ConnId) {
        if let Some(reason) = self.core.write_out(id) {
            self.core.request_close(id, reason, true);
            self.drain_closes();
            return;
        }
        self.after_flush(id);
    }

    fn after_flush(&mut self, id: ConnId) {
        let core = &mut self.core;
        let Some(conn) = core.pool.get_mut(id) else {
            return;
        };
        if conn.output.is_empty() {
            conn.output.release_if_empty(&mut core.buffers);
            if let Some(reason) = conn.flags.closing {
                core.request_close(id, reason, true);
            } else if conn.flags.shutdown_requested
                && !conn.flags.write_shut
                && !conn.flags.connecting
            {
                conn.flags.write_shut = true;
                if socket::shutdown(&conn.fd, std::net::Shutdown::Write).is_err() {
                    core.request_close(id, CloseReason::Reset, true);
                }
            }
        }
        if let Some(conn) = core.pool.get_mut(id)
            && conn.flags.read_paused
            && conn.flags.closing.is_none()
            && conn.output.len() <= core.config.low_water
        {
            conn.flags.read_paused = false;
            // Edge-triggered: the data that arrived while paused raised no
            // new edge, so the read is posted instead of awaited.
            core.post_read(id);
        }
        core.update_interest(id);
        self.drain_closes();
    }

    /// Serves the reads posted so far. Reads posted while this batch runs
    /// wait for the next turn, which then does not block: one busy
    /// connection cannot starve the others' events.
    fn run_posted(&mut self) {
        if self.core.posted.is_empty() {
            return;
        }
        self.core.stats.posted_runs += 1;
        let mut batch = std::mem::take(&mut self.core.posted_spare);
        std::mem::swap(&mut batch, &mut self.core.posted);
        for &id in &batch {
            if let Some(conn) = self.core.pool.get_mut(id) {
                conn.flags.in_posted = false;
                self.on_readable(id, false);
            }
        }
        batch.clear();
        self.core.posted_spare = batch;
    }

    fn flush_all(&mut self) {
        while !self.core.flush_list.is_empty() {
            let mut batch = std::mem::take(&mut self.core.flush_spare);
            std::mem::swap(&mut batch, &mut self.core.flush_list);
            for &id in &batch {
                if let Some(conn) = self.core.pool.get_mut(id) {
                    conn.flags.in_flush = false;
                    self.flush_conn(id);
                }
            }
            batch.clear();
            self.core.flush_spare = batch;
        }
    }

    fn expire_timers(&mut self) {
        while let Some((timer, kind)) = self.core.timers.pop_expired(self.core.now_ns) {
            match kind {
                TimerKind::Idle(id) => self.idle_check(id),
                TimerKind::User { conn, data } => {
                    if self.core.pool.contains(conn) {
                        self.handler.on_timer(
                            &mut Conn::new(
                                Ctx {
                                    core: &mut self.core,
                                },
                                conn,
                            ),
                            timer,
                            data,
                        );
                        self.after_callback(conn);
                    }
                }
                TimerKind::ConnectTimeout(id) => {
                    if self.core.pool.get(id).is_some_and(|c| c.flags.connecting) {
                        self.core
                            .request_close(id, CloseReason::ConnectTimeout, true);
                        self.drain_closes();
                    }
                }
                TimerKind::AcceptResume => {
                    self.core.accept_paused = false;
                    self.core.sync_listeners();
                }
                TimerKind::CloseDeadline(id) => {
                    if let Some(reason) = self.core.pool.get(id).and_then(|c| c.flags.closing) {
                        self.core.request_close(id, reason, true);
                        self.drain_closes();
                    }
                }
                TimerKind::StopDeadline => {
                    for id in self.core.pool.ids() {
                        self.core.request_close(id, CloseReason::Shutdown, true);
                    }
                    self.drain_closes();
                }
            }
        }
    }

    fn idle_check(&mut self, id: ConnId) {
        let Some(idle) = self.core.config.idle_timeout else {
            return;
        };
        let now = self.core.now_ns;
        let Some(conn) = self.core.pool.get_mut(id) else {
            return;
        };
        conn.idle_timer = None;
        let deadline = conn.last_active_ns.saturating_add(duration_ns(idle));
        if deadline <= now {
            self.core.request_close(id, CloseReason::IdleTimeout, true);
            self.drain_closes();
        } else {
            // Activity moved the deadline: re-arm lazily instead of on every read.
            let timer = self.core.timers.insert(deadline, TimerKind::Idle(id));
            if let Some(conn) = self.core.pool.get_mut(id) {
                conn.idle_timer = Some(timer);
            }
        }
    }

    fn run_commands(&mut self) {
        let mut commands = std::mem::take(&mut self.core.commands);
        self.core.shared.take_commands(&mut commands);
        for command in commands.drain(..) {
            match command {
                Command::Stop => self.core.begin_stop(),
                Command::Write(id, bytes) => {
                    if self.core.queue_output(id, &bytes).is_err() {
                        self.core.stats.stale_commands += 1;
                    }
                }
                Command::Close(id) => {
                    if self.core.pool.contains(id) {
                        self.core.request_close(id, CloseReason::Closed, false);
                    } else {
                        self.core.stats.stale_commands += 1;
                    }
                }
                Command::Adopt(fd, peer) => {
                    if self.core.stopping {
                        continue;
                    }
                    if self.core.pool.is_full() {
                        self.core.stats.count_close(CloseReason::PoolFull);
                    } else if let Err(e) = self.open_connection(fd, peer) {
                        tracing::warn!(error = %e, "cannot adopt connection");
                    }
                }
                Command::Run(task) => task(&mut Ctx {
                    core: &mut self.core,
                }),
            }
            self.drain_closes();
        }
        self.core.commands = commands;
    }
}

impl<H: Handler> std::fmt::Debug for EventLoop<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("connections", &self.core.pool.len())
            .field("listeners", &self.core.listeners.len())
            .field("stats", &self.core.stats)
            .finish()
    }
}

enum ReadOutcome {
    /// Bytes arrived; `drained` when the socket is known to be empty.
    Data { bytes: usize, drained: bool },
    /// The peer sent FIN.
    Eof,
    /// Nothing to read now (EAGAIN), or reading is paused.
    Idle,
    /// The read failed; close for this reason.
    Failed(CloseReason),
}

fn listener_interest(exclusive: bool) -> u32 {
    // Level-triggered: a listener left with a backlog is reported again next
    // turn, so accepting a bounded number per event loses nothing.
    if exclusive {
        READABLE | EXCLUSIVE
    } else {
        READABLE
    }
}

fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

impl<S> Core<S> {
    fn refresh_clock(&mut self) {
        self.now_ns = duration_ns(self.clock_origin.elapsed());
    }

    fn wait_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        if !self.posted.is_empty() || !self.flush_list.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = duration_ns(self.clock_origin.elapsed());
        let timer = self
            .timers
            .next_deadline()
            .map(|deadline| Duration::from_nanos(deadline.saturating_sub(now)));
        match (timer, max_wait) {
            (Some(t), Some(m)) => Some(t.min(m)),
            (t, m) => t.or(m),
        }
    }

    fn initial_interest(&self) -> u32 {
        match self.config.trigger {
            Trigger::Edge => READABLE | WRITABLE | READ_HUP | EDGE,
            Trigger::Level => READABLE | READ_HUP,
        }
    }

    /// Level-triggered mode: registers exactly the interest the connection
    /// needs now. Edge-triggered registrations never change.
    fn update_interest(&mut self, id: ConnId) {
        if self.config.trigger != Trigger::Level {
            return;
        }
        let Some(conn) = self.pool.get_mut(id) else {
            return;
        };
        // Read-hangup only together with readable: once the peer's FIN is
        // in, a level-triggered RDHUP would be reported on every wait.
        let mut wanted = 0;
        if conn.flags.connecting {
            wanted |= WRITABLE;
        } else {
            if !conn.flags.read_paused && !conn.flags.peer_closed {
                wanted |= READABLE | READ_HUP;
            }
            if !conn.output.is_empty() {
                wanted |= WRITABLE;
            }
        }
        if wanted != conn.interest {
            conn.interest = wanted;
            if let Err(e) = self.epoll.modify(conn.fd.as_raw_fd(), id.to_u64(), wanted) {
                tracing::warn!(%id, error = %e, "epoll_ctl(MOD) failed");
                self.request_close(id, CloseReason::Reset, true);
            }
        }
    }

    fn may_read(&self, id: ConnId) -> bool {
        self.pool.get(id).is_some_and(|c| {
            !c.flags.read_paused && !c.flags.peer_closed && c.flags.closing.is_none()
        })
    }

    fn read_once(&mut self, id: ConnId, hangup: bool) -> ReadOutcome {
        // Recorded even when reading is paused: the event that announced
        // the FIN is consumed now, and the read resumed later must not
        // trust a short read.
        if let Some(conn) = self.pool.get_mut(id) {
            conn.flags.hangup_seen |= hangup;
        }
        if !self.may_read(id) {
            return ReadOutcome::Idle;
        }
        let Some(conn) = self.pool.get_mut(id) else {
            return ReadOutcome::Idle;
        };
        let hangup = conn.flags.hangup_seen;
        self.stats.read_calls += 1;
        let min_room = self.buffers.chunk() / 4;
        match conn
            .input
            .read_from(conn.fd.as_raw_fd(), min_room, &mut self.buffers)
        {
            Ok((0, _)) => {
                conn.input.release_if_empty(&mut self.buffers);
                ReadOutcome::Eof
            }
            Ok((n, room)) => {
                conn.last_active_ns = self.now_ns;
                self.stats.bytes_read += n as u64;
                // A short read drained the socket. Without a hang-up bit in
                // this event, a FIN behind the data would raise EPOLLRDHUP
                // later, so the EAGAIN read can be skipped (nginx's
                // rdhup trick). Level mode re-reports what is left anyway.
                let drained =
                    n < room && (self.config.trigger == Trigger::Level || (self.rdhup && !hangup));
                ReadOutcome::Data { bytes: n, drained }
            }
            Err(e) => {
                conn.input.release_if_empty(&mut self.buffers);
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => ReadOutcome::Idle,
                    _ => ReadOutcome::Failed(CloseReason::Reset),
                }
            }
        }
    }

    /// Writes as much queued output as the kernel takes, in one call unless
    /// it takes everything and more is queued. Returns a reason to close on
    /// failure.
    fn write_out(&mut self, id: ConnId) -> Option<CloseReason> {
        let conn = self.pool.get_mut(id)?;
        if conn.flags.connecting {
            // Output queued before the connect completes waits for it.
            return None;
        }
        conn.flags.write_blocked = false;
        while !conn.output.is_empty() {
            self.stats.write_calls += 1;
            let pending = conn.output.as_slice();
            match socket::write(conn.fd.as_raw_fd(), pending) {
                Ok(n) => {
                    let partial = n < pending.len();
                    conn.output.consume(n);
                    conn.last_active_ns = self.now_ns;
                    self.stats.bytes_written += n as u64;
                    if partial {
                        // The send buffer is full; EPOLLOUT says when it is not.
                        conn.flags.write_blocked = true;
                        return None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.flags.write_blocked = true;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(CloseReason::Reset),
            }
        }
        None
    }

    fn schedule_flush(&mut self, id: ConnId) {
        if let Some(conn) = self.pool.get_mut(id)
            && !conn.flags.in_flush
        {
            conn.flags.in_flush = true;
            self.flush_list.push(id);
        }
    }

    fn post_read(&mut self, id: ConnId) {
        if self.config.trigger == Trigger::Level {
            return;
        }
        if let Some(conn) = self.pool.get_mut(id)
            && !conn.flags.in_posted
        {
            conn.flags.in_posted = true;
            self.posted.push(id);
        }
    }

    pub(crate) fn request_close(&mut self, id: ConnId, reason: CloseReason, now: bool) {
        if self.pool.contains(id) {
            self.close_requests.push(CloseRequest { id, reason, now });
        }
    }

    fn queue_output(&mut self, id: ConnId, bytes: &[u8]) -> Result<(), Error> {
        let conn = self.pool.get_mut(id).ok_or(Error::StaleConn(id))?;
        conn.output.extend_from_slice(bytes, &mut self.buffers);
        self.schedule_flush(id);
        Ok(())
    }

    pub(crate) fn arm_user_timer(&mut self, id: ConnId, delay: Duration, data: u64) -> TimerId {
        let deadline = self.now_ns.saturating_add(duration_ns(delay));
        self.timers
            .insert(deadline, TimerKind::User { conn: id, data })
    }

    fn arm_idle_timer(&mut self, id: ConnId) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        let deadline = self.now_ns.saturating_add(duration_ns(idle));
        let timer = self.timers.insert(deadline, TimerKind::Idle(id));
        if let Some(conn) = self.pool.get_mut(id) {
            conn.idle_timer = Some(timer);
        }
    }

    fn accepting(&self) -> bool {
        !self.accept_paused && !self.accept_blocked_by_pool && !self.stopping
    }

    fn pause_accepting(&mut self) {
        self.stats.accept_pauses += 1;
        self.accept_paused = true;
        let deadline = self
            .now_ns
            .saturating_add(duration_ns(self.config.accept_backoff));
        self.timers.insert(deadline, TimerKind::AcceptResume);
        self.sync_listeners();
    }

    /// Registers the listeners when accepting is allowed and removes them
    /// otherwise: a level-triggered listener with a waiting backlog would
    /// otherwise wake the loop in a spin while accepting is paused.
    fn sync_listeners(&mut self) {
        let wanted = self.accepting();
        if wanted == self.listeners_registered {
            return;
        }
        for (index, listener) in self.listeners.iter().enumerate() {
            let fd = listener.socket.as_raw_fd();
            let result = if wanted {
                let token = ConnId::new(RESERVED_INDEX_BASE + index as u32, 0).to_u64();
                self.epoll
                    .add(fd, token, listener_interest(listener.exclusive))
            } else {
                self.epoll.delete(fd)
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot change listener registration");
            }
        }
        self.listeners_registered = wanted;
    }

    fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.sync_listeners();
        // Closing the listeners makes new connection attempts fail at once
        // instead of waiting in a backlog nobody will serve.
        self.listeners.clear();
        let deadline = self
            .now_ns
            .saturating_add(duration_ns(self.config.stop_timeout));
        self.timers.insert(deadline, TimerKind::StopDeadline);
        for id in self.pool.ids() {
            if let Some(conn) = self.pool.get_mut(id) {
                conn.flags.stopping = true;
                conn.flags.shutdown_requested = true;
                if conn.flags.peer_closed {
                    self.request_close(id, CloseReason::Shutdown, false);
                } else {
                    self.schedule_flush(id);
                }
            }
        }
    }
}

impl<S: Default> Core<S> {
    fn connect(&mut self, addr: SocketAddr) -> Result<ConnId, Error> {
        if self.stopping {
            // A stop must finish: nothing new may start once it has begun.
            return Err(Error::LoopStopped);
        }
        if self.pool.is_full() {
            return Err(Error::PoolFull);
        }
        let fd = socket::connect(addr)?;
        if self.config.nodelay {
            let _ = socket::set_nodelay(&fd);
        }
        let mut conn = Connection::new(fd, Some(addr), self.now_ns);
        conn.flags.outbound = true;
        conn.flags.connecting = true;
        let id = self.pool.insert(conn).map_err(|_| Error::PoolFull)?;
        let interest = match self.config.trigger {
            Trigger::Edge => self.initial_interest(),
            Trigger::Level => WRITABLE,
        };
        let deadline = self
            .now_ns
            .saturating_add(duration_ns(self.config.connect_timeout));
        let timer = self.timers.insert(deadline, TimerKind::ConnectTimeout(id));
        let registered = match self.pool.get_mut(id) {
            Some(conn) => {
                conn.interest = interest;
                conn.connect_timer = Some(timer);
                self.epoll.add(conn.fd.as_raw_fd(), id.to_u64(), interest)
            }
            None => Ok(()),
        };
        if let Err(e) = registered {
            self.timers.cancel(timer);
            self.pool.remove(id);
            return Err(e.into());
        }
        self.shared.publish_open(id);
        Ok(id)
    }
}
