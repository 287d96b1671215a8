//! Several loops on several threads (DESIGN §4).
//!
//! - [`Mode::ReusePort`] (the default): every loop has its own
//!   `SO_REUSEPORT` listener on the same port, its own pool and timers; the
//!   kernel spreads connections and nothing on the data path is shared.
//! - [`Mode::Exclusive`]: one listening socket shared by every loop, each
//!   registering it with `EPOLLEXCLUSIVE` so that a connection wakes one loop.
//! - [`Mode::Acceptor`] (muduo's `EventLoopThreadPool`): one thread accepts
//!   and hands each connection to a loop, round-robin or by a hash of the
//!   peer's address, through that loop's waker inbox.
//!
//! The one-shot worker pool, for handlers that block, is in
//! [`oneshot`](crate::oneshot).

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use crate::config::Config;
use crate::conn::Conn;
use crate::error::Error;
use crate::event_loop::EventLoop;
use crate::handle::LoopHandle;
use crate::handler::Handler;
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
}

/// Chooses the loop for a connection in [`Mode::Acceptor`].
#[derive(Clone, Default)]
pub enum Dispatch {
    /// Each loop in turn.
    #[default]
    RoundRobin,
    /// `hash(peer) % threads`, e.g. to keep one client's connections together.
    Hash(Arc<dyn Fn(Option<SocketAddr>) -> usize + Send + Sync>),
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dispatch::RoundRobin => f.write_str("RoundRobin"),
            Dispatch::Hash(_) => f.write_str("Hash(..)"),
        }
    }
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
    /// Settings of every loop. `max_connections` is per loop.
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
pub struct Stopper {
    stops: Vec<Arc<dyn Fn() + Send + Sync>>,
}

impl Clone for Stopper {
    fn clone(&self) -> Self {
        Self {
            stops: self.stops.clone(),
        }
    }
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

type LoopThread = JoinHandle<Result<Stats, Error>>;

/// A running multi-threaded server.
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

/// What a loop thread reports once it is listening (or failed to).
type Ready<S> = Result<(LoopHandle<S>, Option<SocketAddr>), Error>;

impl<S: Default + 'static> Server<S> {
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
        let threads = config.threads.max(1);
        let make_handler = Arc::new(make_handler);
        let shared_listener = match config.mode {
            Mode::Exclusive => Some(
                socket::listen(addr, ListenOptions::default())
                    .map_err(|source| Error::Listen { addr, source })?,
            ),
            _ => None,
        };
        let mut bind_addr = addr;
        let mut handles = Vec::with_capacity(threads);
        let mut loops = Vec::with_capacity(threads);
        let mut local_addr = shared_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        for index in 0..threads {
            let shared = shared_listener
                .as_ref()
                .map(TcpListener::try_clone)
                .transpose()?;
            let mode = config.mode;
            let setup = move |event_loop: &mut EventLoop<H>| -> Result<Option<SocketAddr>, Error> {
                match (mode, shared) {
                    (Mode::ReusePort, _) => event_loop
                        .listen_with(
                            bind_addr,
                            ListenOptions {
                                reuse_port: true,
                                ..ListenOptions::default()
                            },
                        )
                        .map(Some),
                    (Mode::Exclusive, Some(listener)) => {
                        event_loop.add_listener(listener, true).map(Some)
                    }
                    _ => Ok(None),
                }
            };
            let make_handler = Arc::clone(&make_handler);
            let loop_config = config.loop_config.clone();
            let (thread, ready) =
                spawn_loop(index, loop_config, move || make_handler(index), setup)?;
            let (handle, bound) = match ready {
                Ok(ready) => ready,
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
            Mode::Acceptor => match spawn_acceptor(addr, &config, &handles) {
                Ok((handle, thread, bound)) => {
                    local_addr = Some(bound);
                    Some((handle, thread))
                }
                Err(e) => {
                    stop_all(&handles);
                    return Err(e);
                }
            },
            _ => None,
        };
        let local_addr =
            local_addr.ok_or_else(|| Error::Io(std::io::Error::other("no listener")))?;
        Ok(Self {
            local_addr,
            handles,
            acceptor,
            loops,
        })
    }
}

impl<S: 'static> Server<S> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// One handle per loop, in loop order.
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
    /// in loop order.
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
        .map_err(|_| Error::Io(std::io::Error::other("an event loop thread panicked")))?
}

fn stop_all<S>(handles: &[LoopHandle<S>]) {
    for handle in handles {
        let _ = handle.stop();
    }
}

/// Spawns one loop thread, runs `setup` on it (listeners, hand-off), and
/// waits until that is done.
fn spawn_loop<H, F, G>(
    index: usize,
    config: Config,
    make_handler: F,
    setup: G,
) -> Result<(LoopThread, Ready<H::State>), Error>
where
    H: Handler + 'static,
    F: FnOnce() -> H + Send + 'static,
    G: FnOnce(&mut EventLoop<H>) -> Result<Option<SocketAddr>, Error> + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel::<Ready<H::State>>();
    let name = if index == usize::MAX {
        "netloop-acceptor".to_string()
    } else {
        format!("netloop-{index}")
    };
    let thread = thread::Builder::new()
        .name(name)
        .spawn(move || -> Result<Stats, Error> {
            let started = EventLoop::new(config, make_handler()).and_then(|mut event_loop| {
                let bound = setup(&mut event_loop)?;
                Ok((event_loop, bound))
            });
            let mut event_loop = match started {
                Ok((event_loop, bound)) => {
                    let _ = ready_tx.send(Ok((event_loop.handle(), bound)));
                    event_loop
                }
                Err(e) => {
                    let message = e.to_string();
                    let _ = ready_tx.send(Err(e));
                    return Err(Error::Io(std::io::Error::other(message)));
                }
            };
            event_loop.run()?;
            Ok(event_loop.stats().clone())
        })?;
    let ready = ready_rx
        .recv()
        .unwrap_or_else(|_| Err(Error::Io(std::io::Error::other("loop thread exited early"))));
    Ok((thread, ready))
}

/// The acceptor's handler: it never serves a connection itself.
struct AcceptOnly;

impl Handler for AcceptOnly {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        conn.abort(crate::close_reason::CloseReason::Closed);
    }
}

fn spawn_acceptor<S: 'static>(
    addr: SocketAddr,
    config: &ServerConfig,
    handles: &[LoopHandle<S>],
) -> Result<(LoopHandle<()>, LoopThread, SocketAddr), Error> {
    let mut distributor = Distributor::new(handles.to_vec(), config.dispatch.clone());
    let acceptor_config = Config {
        max_connections: 1,
        ..config.loop_config.clone()
    };
    let setup = move |event_loop: &mut EventLoop<AcceptOnly>| {
        event_loop.handoff = Some(Box::new(move |fd, peer| distributor.hand_off(fd, peer)));
        event_loop.listen(addr).map(Some)
    };
    let (thread, ready) = spawn_loop(usize::MAX, acceptor_config, || AcceptOnly, setup)?;
    let (handle, bound) = ready?;
    let bound =
        bound.ok_or_else(|| Error::Io(std::io::Error::other("acceptor has no listener")))?;
    Ok((handle, thread, bound))
}

/// Picks target loops for accepted connections.
struct Distributor<S> {
    targets: Vec<LoopHandle<S>>,
    dispatch: Dispatch,
    next: usize,
}

impl<S> Distributor<S> {
    fn new(targets: Vec<LoopHandle<S>>, dispatch: Dispatch) -> Self {
        Self {
            targets,
            dispatch,
            next: 0,
        }
    }

    fn hand_off(&mut self, fd: std::os::fd::OwnedFd, peer: Option<SocketAddr>) {
        if self.targets.is_empty() {
            return;
        }
        let index = match &self.dispatch {
            Dispatch::RoundRobin => {
                self.next = (self.next + 1) % self.targets.len();
                self.next
            }
            Dispatch::Hash(hash) => hash(peer) % self.targets.len(),
        };
        if let Err(e) = self.targets[index].adopt_fd(fd, peer) {
            tracing::warn!(error = %e, loop_index = index, "cannot hand off a connection");
        }
    }
}
