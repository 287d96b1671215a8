//! The one-shot worker pool (seed 004, DESIGN §4): one epoll, N threads
//! waiting on it, every socket armed `EPOLLET | EPOLLONESHOT`.
//!
//! The kernel reports a one-shot socket to exactly one waiting thread and
//! then disarms it, so exactly one thread owns a socket at a time. The owner
//! reads until EAGAIN (or its budget), runs the handler, writes, and only
//! then re-arms with `EPOLL_CTL_MOD`, which also reports at once whatever
//! arrived meanwhile. A handler may therefore block or run long (a database
//! call, a disk read) without stalling other connections: they are served by
//! the other threads. The price is one `epoll_ctl` per event.
//!
//! Connections live in a shared slab of slots, each behind its own mutex and
//! with a generation, so an event or id for a closed connection is stale here
//! exactly as in the single-threaded loop.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::buffer::{Buffer, BufferPool};
use crate::close_reason::CloseReason;
use crate::error::Error;
use crate::stats::Stats;
use crate::sys::epoll::{EDGE, ERROR, Epoll, Events, HUP, ONESHOT, READ_HUP, READABLE, WRITABLE};
use crate::sys::eventfd::EventFd;
use crate::sys::socket::{self, ListenOptions};
use crate::token::{ConnId, RESERVED_INDEX_BASE, WAKER_INDEX};

const LISTENER_INDEX: u32 = RESERVED_INDEX_BASE;

/// What a protocol does with connections in the one-shot pool. Each worker
/// thread has its own handler value; per-connection state travels with the
/// connection from thread to thread, so it must be `Send`.
pub trait WorkerHandler {
    /// Per-connection state, created with `Default` when a connection opens.
    type State: Default + Send;

    /// A connection opened.
    fn on_open(&mut self, conn: &mut WorkerConn<'_, Self::State>) {
        let _ = conn;
    }

    /// Input arrived. This thread owns the connection until it returns, and
    /// it may block.
    fn on_data(&mut self, conn: &mut WorkerConn<'_, Self::State>);

    /// A connection closed.
    fn on_close(&mut self, id: ConnId, state: Self::State, reason: CloseReason) {
        let _ = (id, state, reason);
    }
}

/// The handler's view of the connection it owns during a callback.
pub struct WorkerConn<'a, S> {
    id: ConnId,
    conn: &'a mut Slot<S>,
    buffers: &'a mut BufferPool,
    worker: usize,
}

impl<S> WorkerConn<'_, S> {
    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The index of the worker thread running this callback.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The bytes received and not yet consumed.
    pub fn input(&self) -> &[u8] {
        self.conn.input.as_slice()
    }

    /// Marks the first `n` input bytes as handled.
    pub fn consume(&mut self, n: usize) {
        self.conn.input.consume(n);
    }

    /// The per-connection state.
    pub fn state(&mut self) -> &mut S {
        &mut self.conn.state
    }

    /// Queues `bytes`; written when the callback returns.
    pub fn write(&mut self, bytes: &[u8]) {
        self.conn.output.extend_from_slice(bytes, self.buffers);
    }

    /// Input, output (as a `Vec` to append to, for the codecs) and state
    /// at once.
    pub fn io(&mut self) -> (&mut Buffer, &mut Vec<u8>, &mut S) {
        let Slot {
            input,
            output,
            state,
            ..
        } = &mut *self.conn;
        (input, output.as_vec(self.buffers), state)
    }

    /// Moves all input to the output (what an echo does), in one copy.
    pub fn echo_input(&mut self) {
        let Slot { input, output, .. } = &mut *self.conn;
        output.extend_from_slice(input.as_slice(), self.buffers);
        input.consume(usize::MAX);
    }

    /// Closes the connection once its output is written.
    pub fn close(&mut self) {
        self.conn.closing.get_or_insert(CloseReason::Closed);
    }

    /// Sends FIN once the output is written; keeps reading until the peer closes.
    pub fn shutdown(&mut self) {
        self.conn.shutdown_requested = true;
    }
}

/// A connection as the pool keeps it.
struct Slot<S> {
    fd: OwnedFd,
    input: Buffer,
    output: Buffer,
    state: S,
    peer_closed: bool,
    hangup_seen: bool,
    shutdown_requested: bool,
    write_shut: bool,
    closing: Option<CloseReason>,
}

struct Entry<S> {
    generation: u32,
    conn: Option<Slot<S>>,
}

/// How to run a [`OneShotServer`].
#[derive(Clone, Debug)]
pub struct OneShotConfig {
    /// Worker threads waiting on the shared epoll.
    pub threads: usize,
    /// Connections open at once.
    pub max_connections: usize,
    /// Bytes read per event before the socket is re-armed (and reported
    /// again at once if more is waiting).
    pub read_budget: usize,
    /// The standard buffer size.
    pub buffer_size: usize,
    /// Queued output above this stops reading until it is written.
    pub high_water: usize,
    /// Events taken per `epoll_wait` by each worker.
    pub events_capacity: usize,
    /// How long to stop accepting after EMFILE/ENFILE.
    pub accept_backoff: Duration,
    /// How long a graceful stop lets output drain.
    pub stop_timeout: Duration,
}

impl Default for OneShotConfig {
    fn default() -> Self {
        Self {
            threads: thread::available_parallelism().map_or(1, usize::from),
            max_connections: 16_384,
            read_budget: 256 * 1024,
            buffer_size: 16 * 1024,
            high_water: 1024 * 1024,
            events_capacity: 64,
            accept_backoff: Duration::from_millis(200),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

struct Pool<S> {
    config: OneShotConfig,
    epoll: Epoll,
    listener: TcpListener,
    stop: EventFd,
    stopping: AtomicBool,
    closer_elected: AtomicBool,
    entries: Box<[Mutex<Entry<S>>]>,
    free: Mutex<Vec<u32>>,
    never_used: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked leaves a connection's state as it was; the
    // pool itself stays consistent, so carry on.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running one-shot worker pool.
pub struct OneShotServer {
    local_addr: SocketAddr,
    stop: Arc<dyn Fn() + Send + Sync>,
    workers: Vec<JoinHandle<Stats>>,
}

impl std::fmt::Debug for OneShotServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneShotServer")
            .field("local_addr", &self.local_addr)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl OneShotServer {
    /// Listens on `addr` and starts `config.threads` workers, each with the
    /// handler `make_handler(worker_index)` builds on its own thread.
    pub fn start<H, F>(
        addr: SocketAddr,
        config: OneShotConfig,
        make_handler: F,
    ) -> Result<Self, Error>
    where
        H: WorkerHandler + 'static,
        H::State: 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let listener = socket::listen(addr, ListenOptions::default())
            .map_err(|source| Error::Listen { addr, source })?;
        let local_addr = listener.local_addr()?;
        let epoll = Epoll::new()?;
        let stop = EventFd::new()?;
        // The stop eventfd is level-triggered and never drained: once
        // written, every worker sees it.
        epoll.add(
            stop.as_raw_fd(),
            ConnId::new(WAKER_INDEX, 0).to_u64(),
            READABLE,
        )?;
        epoll.add(
            listener.as_raw_fd(),
            ConnId::new(LISTENER_INDEX, 0).to_u64(),
            READABLE | ONESHOT,
        )?;
        let capacity = config.max_connections.min(RESERVED_INDEX_BASE as usize);
        let pool = Arc::new(Pool::<H::State> {
            epoll,
            listener,
            stop,
            stopping: AtomicBool::new(false),
            closer_elected: AtomicBool::new(false),
            entries: (0..capacity)
                .map(|_| {
                    Mutex::new(Entry {
                        generation: 0,
                        conn: None,
                    })
                })
                .collect(),
            free: Mutex::new(Vec::new()),
            never_used: AtomicUsize::new(0),
            config: config.clone(),
        });
        let make_handler = Arc::new(make_handler);
        let mut workers = Vec::with_capacity(config.threads.max(1));
        for index in 0..config.threads.max(1) {
            let pool = Arc::clone(&pool);
            let make_handler = Arc::clone(&make_handler);
            workers.push(
                thread::Builder::new()
                    .name(format!("netloop-oneshot-{index}"))
                    .spawn(move || Worker::new(index, pool, make_handler(index)).run())?,
            );
        }
        let stopper = Arc::clone(&pool);
        let stop = Arc::new(move || {
            stopper.stopping.store(true, Ordering::Release);
            if let Err(e) = stopper.stop.notify() {
                tracing::warn!(error = %e, "cannot wake the one-shot workers");
            }
        });
        Ok(Self {
            local_addr,
            stop,
            workers,
        })
    }

    /// The address the pool listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A function that stops the pool gracefully, callable from any thread.
    pub fn stopper(&self) -> Arc<dyn Fn() + Send + Sync> {
        Arc::clone(&self.stop)
    }

    /// Waits for every worker; returns each worker's stats.
    pub fn join(self) -> Result<Vec<Stats>, Error> {
        self.workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| Error::Io(io::Error::other("a one-shot worker panicked")))
            })
            .collect()
    }
}

struct Worker<S, H> {
    index: usize,
    pool: Arc<Pool<S>>,
    handler: H,
    buffers: BufferPool,
    stats: Stats,
}

/// What the owner does with a connection after serving an event.
enum After {
    Rearm(RawFd, u32),
    Close(CloseReason),
}

impl<H: WorkerHandler> Worker<H::State, H> {
    fn new(index: usize, pool: Arc<Pool<H::State>>, handler: H) -> Self {
        let buffers = BufferPool::new(pool.config.buffer_size, 64);
        Self {
            index,
            pool,
            handler,
            buffers,
            stats: Stats::default(),
        }
    }

    fn run(mut self) -> Stats {
        let mut events = Events::with_capacity(self.pool.config.events_capacity);
        loop {
            self.stats.wait_calls += 1;
            if let Err(e) = self.pool.epoll.wait(&mut events, None) {
                tracing::error!(error = %e, "epoll_wait failed");
                break;
            }
            for i in 0..events.len() {
                let Some(event) = events.get(i) else { continue };
                let id = ConnId::from_u64(event.token);
                match id.index() {
                    WAKER_INDEX => {}
                    LISTENER_INDEX => self.accept(),
                    _ => self.serve(id, event.events),
                }
            }
            if self.pool.stopping.load(Ordering::Acquire) {
                break;
            }
        }
        if !self.pool.closer_elected.swap(true, Ordering::AcqRel) {
            self.close_all();
        }
        self.stats
    }

    fn accept(&mut self) {
        loop {
            if self.pool.stopping.load(Ordering::Acquire) {
                return;
            }
            match socket::accept(self.pool.listener.as_raw_fd()) {
                Ok((fd, _peer)) => self.open(fd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Only this thread waits: the listener stays disarmed
                    // meanwhile, and the other workers go on serving.
                    self.stats.accept_pauses += 1;
                    tracing::warn!(error = %e, "accept paused");
                    thread::sleep(self.pool.config.accept_backoff);
                    break;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO)
                    ) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    break;
                }
            }
        }
        let token = ConnId::new(LISTENER_INDEX, 0).to_u64();
        if let Err(e) =
            self.pool
                .epoll
                .modify(self.pool.listener.as_raw_fd(), token, READABLE | ONESHOT)
        {
            tracing::error!(error = %e, "cannot re-arm the listener");
        }
    }

    fn allocate(&self) -> Option<u32> {
        if let Some(index) = lock(&self.pool.free).pop() {
            return Some(index);
        }
        let index = self.pool.never_used.fetch_add(1, Ordering::AcqRel);
        if index < self.pool.entries.len() {
            Some(index as u32)
        } else {
            self.pool.never_used.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }

    fn open(&mut self, fd: OwnedFd) {
        let _ = socket::set_nodelay(&fd);
        let Some(index) = self.allocate() else {
            self.stats.count_close(CloseReason::PoolFull);
            return;
        };
        let pool = Arc::clone(&self.pool);
        let mut entry = lock(&pool.entries[index as usize]);
        let id = ConnId::new(index, entry.generation);
        let raw = fd.as_raw_fd();
        entry.conn = Some(Slot {
            fd,
            input: Buffer::new(),
            output: Buffer::new(),
            state: H::State::default(),
            peer_closed: false,
            hangup_seen: false,
            shutdown_requested: false,
            write_shut: false,
            closing: None,
        });
        self.stats.accepted += 1;
        if let Some(conn) = entry.conn.as_mut() {
            self.handler.on_open(&mut WorkerConn {
                id,
                conn,
                buffers: &mut self.buffers,
                worker: self.index,
            });
            // A greeting goes out now; what the kernel refuses waits for
            // EPOLLOUT.
            if self.write_some(conn).is_err() {
                self.finish(id, &mut entry, CloseReason::Reset);
                return;
            }
        }
        let interest = match entry.conn.as_ref().map(|conn| self.next_step(conn)) {
            Some(After::Rearm(_, interest)) => interest,
            Some(After::Close(reason)) => {
                // on_open wrote its banner and closed.
                self.finish(id, &mut entry, reason);
                return;
            }
            None => return,
        };
        drop(entry);
        // Armed only now, after on_open and with the slot unlocked: the
        // first event may go to another thread at once.
        if let Err(e) = self.pool.epoll.add(raw, id.to_u64(), interest) {
            tracing::warn!(error = %e, "cannot register connection");
            let mut entry = lock(&pool.entries[index as usize]);
            self.finish(id, &mut entry, CloseReason::Reset);
        }
    }

    fn serve(&mut self, id: ConnId, bits: u32) {
        let pool = Arc::clone(&self.pool);
        let Some(slot) = pool.entries.get(id.index() as usize) else {
            self.stats.stale_events += 1;
            return;
        };
        // One-shot arming means nobody else holds this lock now; if someone
        // does, exclusivity was broken. Count it (tests assert zero), then wait.
        let (mut entry, waited) = match slot.try_lock() {
            Ok(entry) => (entry, false),
            Err(std::sync::TryLockError::Poisoned(p)) => (p.into_inner(), false),
            Err(std::sync::TryLockError::WouldBlock) => (lock(slot), true),
        };
        if entry.generation != id.generation() || entry.conn.is_none() {
            // A stale event may well find the slot busy with its new owner.
            self.stats.stale_events += 1;
            return;
        }
        if waited {
            self.stats.oneshot_contention += 1;
        }
        match self.serve_owned(id, &mut entry, bits) {
            After::Rearm(fd, interest) => {
                drop(entry);
                self.stats.rearms += 1;
                // Closed meanwhile by nobody: only the owner closes. Should the
                // MOD still fail, the connection is unusable; close it.
                if let Err(e) = self.pool.epoll.modify(fd, id.to_u64(), interest) {
                    tracing::warn!(%id, error = %e, "cannot re-arm");
                    let mut entry = lock(slot);
                    if entry.generation == id.generation() {
                        self.finish(id, &mut entry, CloseReason::Reset);
                    }
                }
            }
            After::Close(reason) => self.finish(id, &mut entry, reason),
        }
    }

    /// Reads, runs the handler, writes; says whether to re-arm or close.
    fn serve_owned(&mut self, id: ConnId, entry: &mut Entry<H::State>, bits: u32) -> After {
        let Some(conn) = entry.conn.as_mut() else {
            return After::Close(CloseReason::Reset);
        };
        conn.hangup_seen |= bits & (READ_HUP | HUP | ERROR) != 0;
        if let Err(reason) = self.read_some(conn) {
            return After::Close(reason);
        }
        if !conn.input.is_empty() {
            self.handler.on_data(&mut WorkerConn {
                id,
                conn,
                buffers: &mut self.buffers,
                worker: self.index,
            });
        }
        conn.input.release_if_empty(&mut self.buffers);
        if let Err(reason) = self.write_some(conn) {
            return After::Close(reason);
        }
        self.next_step(conn)
    }

    /// What to do with a connection once its event is served: close it,
    /// or re-arm it for exactly what it waits for.
    fn next_step(&self, conn: &Slot<H::State>) -> After {
        if conn.output.is_empty() {
            if let Some(reason) = conn.closing {
                return After::Close(reason);
            }
            if conn.peer_closed {
                return After::Close(CloseReason::PeerClosed);
            }
        }
        let mut interest = EDGE | ONESHOT;
        // Read-hangup only with readable: once the peer's FIN is in, a
        // re-arm would report it again at once, forever.
        if !conn.peer_closed
            && conn.closing.is_none()
            && conn.output.len() <= self.pool.config.high_water
        {
            interest |= READABLE | READ_HUP;
        }
        if !conn.output.is_empty() {
            interest |= WRITABLE;
        }
        After::Rearm(conn.fd.as_raw_fd(), interest)
    }

    fn read_some(&mut self, conn: &mut Slot<H::State>) -> Result<(), CloseReason> {
        let mut total = 0;
        while !conn.peer_closed
            && conn.closing.is_none()
            && total < self.pool.config.read_budget
            && conn.output.len() <= self.pool.config.high_water
        {
            self.stats.read_calls += 1;
            let min_room = self.buffers.chunk() / 4;
            match conn
                .input
                .read_from(conn.fd.as_raw_fd(), min_room, &mut self.buffers)
            {
                Ok((0, _)) => conn.peer_closed = true,
                Ok((n, room)) => {
                    total += n;
                    self.stats.bytes_read += n as u64;
                    // A short read drained the socket, and any FIN behind it
                    // would have come with a hang-up bit (see the loop).
                    if n < room && !conn.hangup_seen && crate::rdhup_supported() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(CloseReason::Reset),
            }
        }
        Ok(())
    }

    fn write_some(&mut self, conn: &mut Slot<H::State>) -> Result<(), CloseReason> {
        while !conn.output.is_empty() {
            self.stats.write_calls += 1;
            match socket::write(conn.fd.as_raw_fd(), conn.output.as_slice()) {
                Ok(n) => {
                    conn.output.consume(n);
                    self.stats.bytes_written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(CloseReason::Reset),
            }
        }
        conn.output.release_if_empty(&mut self.buffers);
        if conn.shutdown_requested && !conn.write_shut {
            conn.write_shut = true;
            socket::shutdown(&conn.fd, std::net::Shutdown::Write)
                .map_err(|_| CloseReason::Reset)?;
        }
        Ok(())
    }

    /// Frees the slot (bumping its generation) and closes the socket.
    fn finish(&mut self, id: ConnId, entry: &mut Entry<H::State>, reason: CloseReason) {
        let Some(mut conn) = entry.conn.take() else {
            return;
        };
        entry.generation = entry.generation.wrapping_add(1);
        let _ = self.pool.epoll.delete(conn.fd.as_raw_fd());
        conn.input.consume(usize::MAX);
        conn.output.consume(usize::MAX);
        conn.input.release_if_empty(&mut self.buffers);
        conn.output.release_if_empty(&mut self.buffers);
        let Slot { fd, state, .. } = conn;
        drop(fd);
        lock(&self.pool.free).push(id.index());
        self.stats.count_close(reason);
        self.handler.on_close(id, state, reason);
    }

    /// The graceful stop, run by one worker: stop accepting, let queued
    /// output drain until the stop timeout, then close everything.
    fn close_all(&mut self) {
        let _ = self.pool.epoll.delete(self.pool.listener.as_raw_fd());
        let deadline = Instant::now() + self.pool.config.stop_timeout;
        let pool = Arc::clone(&self.pool);
        for (index, slot) in pool.entries.iter().enumerate() {
            let mut entry = lock(slot);
            let id = ConnId::new(index as u32, entry.generation);
            let Some(conn) = entry.conn.as_mut() else {
                continue;
            };
            conn.shutdown_requested = true;
            self.linger(conn, deadline);
            self.finish(id, &mut entry, CloseReason::Shutdown);
        }
    }

    /// Writes what is queued, sends FIN, then reads and drops input until
    /// the peer's FIN or the deadline: closing with unread input would send
    /// RST and could destroy output still in flight.
    fn linger(&mut self, conn: &mut Slot<H::State>, deadline: Instant) {
        let mut scratch = [0u8; 4096];
        while Instant::now() < deadline {
            if self.write_some(conn).is_err() {
                return;
            }
            if conn.output.is_empty() {
                match socket::read(conn.fd.as_raw_fd(), &mut scratch) {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}
