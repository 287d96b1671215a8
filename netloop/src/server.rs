//! Several loops on several threads.
//!
//! - [`Mode::ReusePort`] (the default): every loop has its own
//!   `SO_REUSEPORT` listener on the same port, its own pool and timers; the
//!   kernel spreads connections and nothing on the data path is shared.
//! - [`Mode::Exclusive`]: one listening socket shared by every loop, each
//!   registering it with `EPOLLEXCLUSIVE` so that a connection wakes one loop.
//! - [`Mode::Acceptor`] (muduo's `EventLoopThreadPool`): one thread accepts
//!   and hands each connection to a loop, round-robin or by a hash of the
//!   peer's address, through that loop's mailbox.
//! - [`Mode::OneShot`]: one epoll, the threads all waiting on it, every
//!   socket armed `EPOLLONESHOT` so that one thread serves a connection at a
//!   time: for handlers that block or run long.
//!
//! The same [`Handler`] runs unchanged in every mode.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Weak};
use std::thread;

pub use crate::acceptor::Dispatch;
use crate::acceptor::spawn_acceptor;
use crate::config::Config;
use crate::error::Error;
use crate::event_loop::EventLoop;
use crate::handle::{LoopHandle, StopKind};
use crate::handler::Handler;
use crate::loop_thread::{Health, LoopThread, spawn_loop};
use crate::oneshot::spawn_workers;
use crate::stats::Stats;
use crate::sys::epoll::{EXCLUSIVE, READABLE};
use crate::sys::socket::{self, ListenOptions};

/// How the loops of a [`Server`] get their connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// A `SO_REUSEPORT` listener per loop.
    #[default]
    ReusePort,
    /// One listener shared by all loops with `EPOLLEXCLUSIVE`.
    Exclusive,
    /// One acceptor thread handing connections to the loops.
    Acceptor,
    /// One epoll shared by worker threads, sockets armed `EPOLLONESHOT`.
    /// Each worker takes one ready connection per wait, so a handler that
    /// blocks holds up its own connection only.
    ///
    /// Differences a handler can notice: `max_connections` is for the whole
    /// pool; a connection another worker is serving cannot be reached by id
    /// ([`Ctx::conn`](crate::Ctx::conn) answers `Err(Busy)`); and
    /// [`Server::handles`] holds one handle for the pool.
    OneShot,
}

/// How to run a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Event loops (threads serving connections). The one-shot mode starts
    /// at most 65,535 workers.
    pub threads: usize,
    /// How connections reach the loops.
    pub mode: Mode,
    /// The loop for each connection, in [`Mode::Acceptor`].
    pub dispatch: Dispatch,
    /// Settings of every loop. `max_connections` is per loop (for the whole
    /// pool in [`Mode::OneShot`]).
    pub loop_config: Config,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: thread::available_parallelism().map_or(1, usize::from),
            mode: Mode::default(),
            dispatch: Dispatch::default(),
            loop_config: Config::default(),
        }
    }
}

/// Stops every loop of a server; `Send + Clone`, usable from any thread
/// (a signal handler thread, say).
#[derive(Clone)]
pub struct Stopper {
    stops: Vec<Arc<dyn Fn(StopKind) + Send + Sync>>,
}

impl fmt::Debug for Stopper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stopper")
            .field("loops", &self.stops.len())
            .finish()
    }
}

impl Stopper {
    /// Begins a graceful stop of every loop: stop accepting, drain until
    /// the stop timeout, close the rest with `CloseReason::Shutdown`.
    pub fn stop(&self) {
        for stop in &self.stops {
            stop(StopKind::Drain);
        }
    }

    /// Stops every loop because another process now serves the listening
    /// sockets (a live upgrade; see [`LoopHandle::hand_over`]): stop
    /// accepting, leave the sockets listening for the other process, let
    /// open connections finish on their own until the stop timeout.
    pub fn hand_over(&self) {
        for stop in &self.stops {
            stop(StopKind::HandOver);
        }
    }
}

/// The listening sockets of a [`Server`]; `Send + Clone`. It does not keep
/// them open: once the loops have closed them (a stop), it holds none.
#[derive(Clone, Debug)]
pub struct ListeningSockets {
    sockets: Vec<Weak<TcpListener>>,
}

impl ListeningSockets {
    /// Duplicates of the sockets the server still accepts from, in order:
    /// what a live upgrade passes to the next process with
    /// [`activation::spawn`](crate::activation::spawn) before
    /// [`Stopper::hand_over`]. The duplicates share the kernel sockets, and
    /// so their backlogs.
    pub fn duplicate(&self) -> std::io::Result<Vec<TcpListener>> {
        self.sockets
            .iter()
            .filter_map(Weak::upgrade)
            .map(|socket| socket.try_clone())
            .collect()
    }

    /// Every address listened on, each once (several `SO_REUSEPORT`
    /// sockets share one).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for socket in self.sockets.iter().filter_map(Weak::upgrade) {
            if let Ok(addr) = socket.local_addr()
                && !addrs.contains(&addr)
            {
                addrs.push(addr);
            }
        }
        addrs
    }
}

/// A running multi-threaded server.
///
/// If a loop dies outside its handler's callbacks (handler panics are
/// contained per connection), every loop is stopped and [`join`](Self::join)
/// returns [`Error::LoopDied`].
///
/// ```no_run
/// use netloop::server::{Server, ServerConfig};
///
/// let config = ServerConfig { threads: 2, ..ServerConfig::default() };
/// let server = Server::start("127.0.0.1:7000".parse().unwrap(), config, |_| netloop::echo::Echo)?;
/// println!("listening on {}", server.local_addr());
/// server.stopper().stop();
/// let per_loop_stats = server.join()?;
/// # Ok::<(), netloop::Error>(())
/// ```
pub struct Server<S> {
    local_addr: SocketAddr,
    /// The listening sockets, while some loop still accepts from them: to
    /// hand to another process in a live upgrade, without keeping them
    /// listening after the loops have closed them.
    listeners: Vec<Weak<TcpListener>>,
    handles: Vec<LoopHandle<S>>,
    acceptor: Option<(LoopHandle<()>, LoopThread)>,
    loops: Vec<LoopThread>,
}

impl<S> fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("listeners", &self.listeners.len())
            .field("loops", &self.loops.len())
            .field("acceptor", &self.acceptor.is_some())
            .finish()
    }
}

impl<S: Default + Send + 'static> Server<S> {
    /// Starts `config.threads` loops serving `addr`, each with the handler
    /// `make_handler(loop_index)` builds on that loop's own thread (so the
    /// handler need not be `Send`).
    ///
    /// In [`Mode::ReusePort`] it binds one `SO_REUSEPORT` socket per loop;
    /// in the other modes, one socket.
    pub fn start<H, F>(
        addr: SocketAddr,
        config: ServerConfig,
        make_handler: F,
    ) -> Result<Self, Error>
    where
        H: Handler<State = S> + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let sockets = match config.mode {
            Mode::ReusePort => bind_reuseport(addr, config.threads.max(1))?,
            _ => vec![
                socket::listen(addr, ListenOptions::default())
                    .map_err(|source| Error::Listen { addr, source })?,
            ],
        };
        Self::start_on(sockets, config, make_handler)
    }

    /// Starts the loops on listening sockets bound elsewhere: passed by
    /// systemd or by an older version of the server
    /// ([`activation::listen_fds`](crate::activation::listen_fds)), or
    /// bound by the caller. Every socket is accepted from, in every mode:
    ///
    /// - [`Mode::ReusePort`]: with at least as many sockets as loops, each
    ///   socket belongs to one loop (loop `i` takes sockets `i`, `i +
    ///   threads`, …), so `SO_REUSEPORT` sockets keep their own backlogs;
    ///   with fewer, loop `i` shares socket `i % sockets` with the other
    ///   loops on it, registered with `EPOLLEXCLUSIVE`.
    /// - [`Mode::Exclusive`] and [`Mode::OneShot`]: every loop (worker)
    ///   accepts from every socket.
    /// - [`Mode::Acceptor`]: the acceptor accepts from every socket.
    pub fn start_on<H, F>(
        listeners: Vec<TcpListener>,
        config: ServerConfig,
        make_handler: F,
    ) -> Result<Self, Error>
    where
        H: Handler<State = S> + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        if listeners.is_empty() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a server needs at least one listening socket",
            )));
        }
        let listeners: Vec<Arc<TcpListener>> = listeners.into_iter().map(Arc::new).collect();
        let local_addr = listeners[0].local_addr()?;
        let weak = listeners.iter().map(Arc::downgrade).collect();
        let health = Arc::new(Health::default());
        let make_handler = Arc::new(make_handler);
        let threads = config.threads.max(1);
        let (handles, acceptor, loops) = match config.mode {
            Mode::OneShot => {
                let workers = spawn_workers(
                    listeners,
                    threads,
                    &config.loop_config,
                    make_handler,
                    &health,
                )?;
                (vec![workers.handle], None, workers.threads)
            }
            _ => start_loops(listeners, &config, make_handler, &health)?,
        };
        let server = Self {
            local_addr,
            listeners: weak,
            handles,
            acceptor,
            loops,
        };
        let stopper = server.stopper();
        health.set_stop_all(Box::new(move || stopper.stop()));
        Ok(server)
    }
}

/// `count` `SO_REUSEPORT` sockets on `addr` (with port 0, the port the
/// first one got).
fn bind_reuseport(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, Error> {
    let options = ListenOptions {
        reuse_port: true,
        ..ListenOptions::default()
    };
    let mut bind_addr = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = socket::listen(bind_addr, options).map_err(|source| Error::Listen {
            addr: bind_addr,
            source,
        })?;
        bind_addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The sockets loop `index` of `threads` accepts from, and how each is
/// registered, in the reuseport and exclusive modes.
fn sockets_of_loop(
    mode: Mode,
    sockets: &[Arc<TcpListener>],
    index: usize,
    threads: usize,
) -> Vec<(Arc<TcpListener>, u32)> {
    match mode {
        Mode::ReusePort if sockets.len() >= threads => sockets
            .iter()
            .skip(index)
            .step_by(threads)
            .map(|s| (Arc::clone(s), READABLE))
            .collect(),
        Mode::ReusePort => vec![(
            Arc::clone(&sockets[index % sockets.len()]),
            READABLE | EXCLUSIVE,
        )],
        Mode::Exclusive => sockets
            .iter()
            .map(|s| (Arc::clone(s), READABLE | EXCLUSIVE))
            .collect(),
        Mode::Acceptor | Mode::OneShot => Vec::new(),
    }
}

type Started<S> = (
    Vec<LoopHandle<S>>,
    Option<(LoopHandle<()>, LoopThread)>,
    Vec<LoopThread>,
);

/// Starts the loops of the reuseport, exclusive and acceptor modes.
fn start_loops<S, H, F>(
    sockets: Vec<Arc<TcpListener>>,
    config: &ServerConfig,
    make_handler: Arc<F>,
    health: &Arc<Health>,
) -> Result<Started<S>, Error>
where
    S: Default + 'static,
    H: Handler<State = S> + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let threads = config.threads.max(1);
    let mut handles = Vec::new();
    let mut loops = Vec::new();
    for index in 0..threads {
        let own = sockets_of_loop(config.mode, &sockets, index, threads);
        let make_handler = Arc::clone(&make_handler);
        let loop_config = config.loop_config.clone();
        let build = move || {
            let mut event_loop = EventLoop::new(loop_config, make_handler(index))?;
            for (socket, interest) in own {
                event_loop.add_listener_with(socket, interest)?;
            }
            Ok((event_loop, None))
        };
        let spawned = spawn_loop(format!("netloop-{index}"), Arc::clone(health), build);
        let (thread, (handle, _)) = match spawned.and_then(|(t, ready)| Ok((t, ready?))) {
            Ok(started) => started,
            Err(e) => {
                stop_all(&handles);
                return Err(e);
            }
        };
        handles.push(handle);
        loops.push(thread);
    }
    let acceptor = match config.mode {
        Mode::Acceptor => {
            let spawned = spawn_acceptor(
                sockets,
                &config.loop_config,
                config.dispatch.clone(),
                &handles,
                Arc::clone(health),
            );
            match spawned {
                Ok((handle, thread)) => Some((handle, thread)),
                Err(e) => {
                    stop_all(&handles);
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    Ok((handles, acceptor, loops))
}

impl<S: 'static> Server<S> {
    /// The address the server listens on (its first socket's).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every address the server listens on, each once (several
    /// `SO_REUSEPORT` sockets share one).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listening_sockets().local_addrs()
    }

    /// The server's listening sockets, reachable from any thread: what a
    /// live upgrade hands to the next process.
    pub fn listening_sockets(&self) -> ListeningSockets {
        ListeningSockets {
            sockets: self.listeners.clone(),
        }
    }

    /// One handle per loop, in loop order (one for a one-shot pool).
    pub fn handles(&self) -> &[LoopHandle<S>] {
        &self.handles
    }

    /// Something that stops the whole server from any thread.
    pub fn stopper(&self) -> Stopper {
        let mut stops: Vec<Arc<dyn Fn(StopKind) + Send + Sync>> = Vec::new();
        // The acceptor first, so no connection is handed to a stopping loop.
        if let Some((acceptor, _)) = &self.acceptor {
            let acceptor = acceptor.clone();
            stops.push(Arc::new(move |kind| {
                let _ = send_stop(&acceptor, kind);
            }));
        }
        for handle in &self.handles {
            let handle = handle.clone();
            stops.push(Arc::new(move |kind| {
                // A loop that already stopped needs nothing more.
                let _ = send_stop(&handle, kind);
            }));
        }
        Stopper { stops }
    }

    /// Waits for every loop to finish; returns each serving loop's stats,
    /// in loop order, or the first loop's failure.
    pub fn join(self) -> Result<Vec<Stats>, Error> {
        let mut result = Ok(Vec::with_capacity(self.loops.len()));
        if let Some((_, thread)) = self.acceptor
            && let Err(e) = join_loop(thread)
        {
            result = Err(e);
        }
        for thread in self.loops {
            match (join_loop(thread), &mut result) {
                (Ok(stats), Ok(all)) => all.push(stats),
                (Err(e), Ok(_)) => result = Err(e),
                (_, Err(_)) => {}
            }
        }
        result
    }
}

fn send_stop<S>(handle: &LoopHandle<S>, kind: StopKind) -> Result<(), Error> {
    match kind {
        StopKind::Drain => handle.stop(),
        StopKind::HandOver => handle.hand_over(),
    }
}

fn join_loop(thread: LoopThread) -> Result<Stats, Error> {
    thread
        .join()
        .map_err(|_| Error::LoopDied("its thread panicked".to_string()))?
}

fn stop_all<S>(handles: &[LoopHandle<S>]) {
    for handle in handles {
        let _ = handle.stop();
    }
}
