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
use std::sync::Arc;
use std::thread;

pub use crate::acceptor::Dispatch;
use crate::acceptor::spawn_acceptor;
use crate::config::Config;
use crate::error::Error;
use crate::event_loop::EventLoop;
use crate::handle::LoopHandle;
use crate::handler::Handler;
use crate::loop_thread::{Health, LoopThread, spawn_loop};
use crate::oneshot::spawn_workers;
use crate::stats::Stats;
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
    /// Event loops (threads serving connections).
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
    stops: Vec<Arc<dyn Fn() + Send + Sync>>,
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
            stop();
        }
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
    handles: Vec<LoopHandle<S>>,
    acceptor: Option<(LoopHandle<()>, LoopThread)>,
    loops: Vec<LoopThread>,
}

impl<S> fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("loops", &self.loops.len())
            .field("acceptor", &self.acceptor.is_some())
            .finish()
    }
}

impl<S: Default + Send + 'static> Server<S> {
    /// Starts `config.threads` loops serving `addr`, each with the handler
    /// `make_handler(loop_index)` builds on that loop's own thread (so the
    /// handler need not be `Send`).
    pub fn start<H, F>(
        addr: SocketAddr,
        config: ServerConfig,
        make_handler: F,
    ) -> Result<Self, Error>
    where
        H: Handler<State = S> + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let health = Arc::new(Health::default());
        let make_handler = Arc::new(make_handler);
        let threads = config.threads.max(1);
        let server = match config.mode {
            Mode::OneShot => {
                let workers =
                    spawn_workers(addr, threads, &config.loop_config, make_handler, &health)?;
                Self {
                    local_addr: workers.local_addr,
                    handles: vec![workers.handle],
                    acceptor: None,
                    loops: workers.threads,
                }
            }
            _ => start_loops(addr, &config, make_handler, &health)?,
        };
        let stopper = server.stopper();
        health.set_stop_all(Box::new(move || stopper.stop()));
        Ok(server)
    }
}

/// Starts the loops of the reuseport, exclusive and acceptor modes.
fn start_loops<S, H, F>(
    addr: SocketAddr,
    config: &ServerConfig,
    make_handler: Arc<F>,
    health: &Arc<Health>,
) -> Result<Server<S>, Error>
where
    S: Default + 'static,
    H: Handler<State = S> + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let shared_listener = match config.mode {
        Mode::Exclusive => Some(
            socket::listen(addr, ListenOptions::default())
                .map_err(|source| Error::Listen { addr, source })?,
        ),
        _ => None,
    };
    let mut bind_addr = addr;
    let mut handles = Vec::new();
    let mut loops = Vec::new();
    let mut local_addr = shared_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    for index in 0..config.threads.max(1) {
        let shared = shared_listener
            .as_ref()
            .map(TcpListener::try_clone)
            .transpose()?;
        let mode = config.mode;
        let make_handler = Arc::clone(&make_handler);
        let loop_config = config.loop_config.clone();
        let build = move || {
            let mut event_loop = EventLoop::new(loop_config, make_handler(index))?;
            let bound = listen_for_mode(&mut event_loop, mode, bind_addr, shared)?;
            Ok((event_loop, bound))
        };
        let spawned = spawn_loop(format!("netloop-{index}"), Arc::clone(health), build);
        let (thread, (handle, bound)) = match spawned.and_then(|(t, ready)| Ok((t, ready?))) {
            Ok(started) => started,
            Err(e) => {
                stop_all(&handles);
                return Err(e);
            }
        };
        if let Some(bound) = bound {
            // Port 0: the first loop picked a port; the others join it.
            bind_addr = bound;
            local_addr.get_or_insert(bound);
        }
        handles.push(handle);
        loops.push(thread);
    }
    let acceptor = match config.mode {
        Mode::Acceptor => {
            let spawned = spawn_acceptor(
                addr,
                &config.loop_config,
                config.dispatch.clone(),
                &handles,
                Arc::clone(health),
            );
            match spawned {
                Ok((handle, thread, bound)) => {
                    local_addr = Some(bound);
                    Some((handle, thread))
                }
                Err(e) => {
                    stop_all(&handles);
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let local_addr = local_addr.ok_or_else(|| Error::Io(std::io::Error::other("no listener")))?;
    Ok(Server {
        local_addr,
        handles,
        acceptor,
        loops,
    })
}

/// Gives a loop its listener as the mode wants; returns the bound address.
fn listen_for_mode<H: Handler>(
    event_loop: &mut EventLoop<H>,
    mode: Mode,
    addr: SocketAddr,
    shared: Option<TcpListener>,
) -> Result<Option<SocketAddr>, Error> {
    match (mode, shared) {
        (Mode::ReusePort, _) => {
            let options = ListenOptions {
                reuse_port: true,
                ..ListenOptions::default()
            };
            event_loop.listen_with(addr, options).map(Some)
        }
        (Mode::Exclusive, Some(listener)) => event_loop.add_listener(listener, true).map(Some),
        _ => Ok(None),
    }
}

impl<S: 'static> Server<S> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// One handle per loop, in loop order (one for a one-shot pool).
    pub fn handles(&self) -> &[LoopHandle<S>] {
        &self.handles
    }

    /// Something that stops the whole server from any thread.
    pub fn stopper(&self) -> Stopper {
        let mut stops: Vec<Arc<dyn Fn() + Send + Sync>> = Vec::new();
        // The acceptor first, so no connection is handed to a stopping loop.
        if let Some((acceptor, _)) = &self.acceptor {
            let acceptor = acceptor.clone();
            stops.push(Arc::new(move || {
                let _ = acceptor.stop();
            }));
        }
        for handle in &self.handles {
            let handle = handle.clone();
            stops.push(Arc::new(move || {
                // A loop that already stopped needs nothing more.
                let _ = handle.stop();
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
