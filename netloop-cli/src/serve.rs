//! What every server subcommand shares: limits, signals, the loop's thread,
//! and the options that shape the loop.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use clap::{Args, ValueEnum};
use netloop::server::{Dispatch, ListeningSockets, Mode, Server, ServerConfig, Stopper};
use netloop::{Config, Handler, PoolFullPolicy, Stats, Trigger};

use crate::sys::env;
use crate::sys::rlimit;
use crate::sys::signal::{SIGINT, SIGTERM, SIGUSR2, SignalFd};
use crate::upgrade::{Outcome, Upgrader};

/// Errors a server subcommand reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The event core failed.
    #[error(transparent)]
    Loop(#[from] netloop::Error),
    /// A system call outside the loop failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A thread panicked.
    #[error("a netloop thread panicked")]
    Panicked,
    /// The options do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The load generator saw wrong bytes or lost connections.
    #[error("{0} verification error(s)")]
    Verification(u64),
}

/// The options every server takes.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,
    /// Close connections idle for this many seconds.
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<f64>,
    /// Connections open at once (the pool size).
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    pub max_connections: usize,
    /// What to do with connections beyond --max-connections.
    #[arg(long, value_enum, default_value_t = PoolFull::Close)]
    pub pool_full: PoolFull,
    /// Edge- or level-triggered epoll registration.
    #[arg(long, value_enum, default_value_t = TriggerArg::Edge)]
    pub trigger: TriggerArg,
    /// Seconds queued output may wait without any write making progress
    /// before the connection is closed (a peer that does not read); 0 waits
    /// for ever.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub send_timeout: f64,
    /// Seconds a connection closed while its peer may still send keeps
    /// reading and discarding before it is closed (lingering close); 0
    /// closes at once.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub linger_timeout: f64,
    /// Seconds a graceful stop lets connections drain (after a live
    /// upgrade: how long the old process serves the connections it has).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub stop_timeout: f64,
    /// Seconds the new process of a live upgrade (SIGUSR2) has to become
    /// ready before it is killed and this one serves on.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub upgrade_timeout: f64,
    /// Event loop threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// How the threads share the work.
    #[arg(long, value_enum, default_value_t = ModeArg::Reuseport)]
    pub mode: ModeArg,
    /// In reuseport mode: one shared listener registered with EPOLLEXCLUSIVE
    /// instead of a SO_REUSEPORT listener per loop.
    #[arg(long)]
    pub exclusive: bool,
    /// Unconsumed input (bytes) above which a connection is closed.
    #[arg(long, value_name = "BYTES")]
    pub max_input: Option<usize>,
    /// Queued output (bytes) above which a connection stops being read.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub high_water: usize,
}

/// `--pool-full` values.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum PoolFull {
    /// Accept and close at once (counted as pool_full).
    Close,
    /// Leave new connections in the kernel backlog until a slot frees.
    Backlog,
}

/// `--mode` values.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    /// A loop per thread, each with its own SO_REUSEPORT listener.
    Reuseport,
    /// One acceptor thread handing connections to the loops round-robin.
    Acceptor,
    /// One epoll shared by worker threads, sockets armed EPOLLONESHOT.
    Oneshot,
}

/// `--trigger` values.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum TriggerArg {
    /// Edge-triggered (register once, never modify).
    Edge,
    /// Level-triggered (EPOLLOUT armed only while output is queued).
    Level,
}

impl ServerArgs {
    /// The thread count, defaulting to the number of cores.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, usize::from))
            .max(1)
    }

    /// The loop configuration these options describe.
    pub fn config(&self) -> Config {
        let defaults = Config::default();
        Config {
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout.map(Duration::from_secs_f64),
            pool_full: match self.pool_full {
                PoolFull::Close => PoolFullPolicy::AcceptAndClose,
                PoolFull::Backlog => PoolFullPolicy::LeaveInBacklog,
            },
            trigger: match self.trigger {
                TriggerArg::Edge => Trigger::Edge,
                TriggerArg::Level => Trigger::Level,
            },
            stop_timeout: Duration::from_secs_f64(self.stop_timeout.max(0.0)),
            send_timeout: positive_secs(self.send_timeout),
            linger_timeout: positive_secs(self.linger_timeout),
            high_water: self.high_water,
            max_input: self.max_input.unwrap_or(defaults.max_input),
            low_water: (self.high_water / 4).min(defaults.low_water),
            ..defaults
        }
    }
}

/// `secs` as a duration, or `None` for zero, negative or not a number.
fn positive_secs(secs: f64) -> Option<Duration> {
    (secs > 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

/// A server started by one of the modes, seen the same way whatever the mode.
pub struct Running {
    /// The bound address (the first one's).
    pub addr: SocketAddr,
    /// Every address listened on.
    pub addrs: Vec<SocketAddr>,
    /// Stops the loops (a graceful stop, or a hand-over to a new process).
    pub stopper: Stopper,
    /// The listening sockets, for a live upgrade.
    pub sockets: ListeningSockets,
    /// Begins a graceful stop.
    pub stop: Box<dyn Fn() + Send + Sync>,
    /// Waits for the threads; each serving thread's stats.
    pub join: Box<dyn FnOnce() -> Result<Vec<Stats>, netloop::Error>>,
}

impl ServerArgs {
    /// The threading mode these options pick.
    pub fn mode(&self) -> Mode {
        match (self.mode, self.exclusive) {
            (ModeArg::Acceptor, _) => Mode::Acceptor,
            (ModeArg::Oneshot, _) => Mode::OneShot,
            (ModeArg::Reuseport, true) => Mode::Exclusive,
            (ModeArg::Reuseport, false) => Mode::ReusePort,
        }
    }

    /// Refuses options the chosen mode cannot honour, instead of ignoring them.
    pub fn check(&self) -> Result<(), ServeError> {
        if self.exclusive && self.mode != ModeArg::Reuseport {
            return Err(ServeError::Usage(
                "--exclusive shares one listener among reuseport loops; it does not apply to --mode acceptor or oneshot".into(),
            ));
        }
        if self.mode == ModeArg::Oneshot && matches!(self.trigger, TriggerArg::Level) {
            return Err(ServeError::Usage(
                "--mode oneshot arms every socket EPOLLET|EPOLLONESHOT; --trigger level does not apply to it".into(),
            ));
        }
        Ok(())
    }

    /// The server configuration these options describe.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            threads: self.threads(),
            mode: self.mode(),
            dispatch: Dispatch::RoundRobin,
            loop_config: self.config(),
        }
    }
}

/// Starts a server in the mode `args` picks; `make_handler(loop_index)`
/// builds each loop's (or one-shot worker's) handler.
pub fn start<H, F>(args: &ServerArgs, make_handler: F) -> Result<Running, ServeError>
where
    H: Handler + 'static,
    H::State: Send + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    start_with(args, args.config(), make_handler)
}

/// The listening sockets passed by socket activation (systemd, or the
/// process this one upgrades), if any; then the protocol's variables are
/// removed so that nothing this process starts inherits them. Call it while
/// the process has one thread.
pub fn take_activated_sockets() -> Result<Option<Vec<TcpListener>>, ServeError> {
    let activated = netloop::activation::listen_fds()
        .map_err(|e| ServeError::Usage(format!("socket activation: {e}")))?;
    let mut variables = netloop::activation::VARIABLES.to_vec();
    variables.extend(["NOTIFY_SOCKET", crate::upgrade::SYSTEMD_SOCKET_VARIABLE]);
    env::remove_while_single_threaded(&variables);
    Ok(activated.map(|sockets| {
        tracing::info!(
            pid = std::process::id(),
            parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get()),
            sockets = sockets.len(),
            "listening sockets taken from socket activation; --addr is not bound"
        );
        sockets.into_iter().map(|s| s.listener).collect()
    }))
}

/// [`start`], with the loops' configuration given (a server whose
/// handler needs settings the options alone do not say).
pub fn start_with<H, F>(
    args: &ServerArgs,
    loop_config: Config,
    make_handler: F,
) -> Result<Running, ServeError>
where
    H: Handler + 'static,
    H::State: Send + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    start_on(args, loop_config, None, make_handler)
}

/// [`start_with`], on listening sockets bound elsewhere when `sockets` is
/// given (socket activation), instead of `args.addr`.
pub fn start_on<H, F>(
    args: &ServerArgs,
    loop_config: Config,
    sockets: Option<Vec<TcpListener>>,
    make_handler: F,
) -> Result<Running, ServeError>
where
    H: Handler + 'static,
    H::State: Send + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    args.check()?;
    let config = ServerConfig {
        loop_config,
        ..args.server_config()
    };
    let server = match sockets {
        Some(sockets) => Server::start_on(sockets, config, make_handler)?,
        None => Server::start(args.addr, config, make_handler)?,
    };
    let stopper = server.stopper();
    let for_stop = stopper.clone();
    Ok(Running {
        addr: server.local_addr(),
        addrs: server.local_addrs(),
        stopper,
        sockets: server.listening_sockets(),
        stop: Box::new(move || for_stop.stop()),
        join: Box::new(move || server.join()),
    })
}

/// Runs a server in the mode `args` picks until SIGINT or SIGTERM, then
/// stops it gracefully. `make_handler(loop_index)` builds each loop's (or
/// one-shot worker's) handler.
pub fn serve<H, F>(args: &ServerArgs, make_handler: F) -> Result<(), ServeError>
where
    H: Handler + 'static,
    H::State: Send + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    serve_with(args, args.config(), make_handler)
}

/// [`serve`], with the loops' configuration given.
pub fn serve_with<H, F>(
    args: &ServerArgs,
    loop_config: Config,
    make_handler: F,
) -> Result<(), ServeError>
where
    H: Handler + 'static,
    H::State: Send + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    match rlimit::raise_nofile_limit() {
        Ok(limit) => tracing::debug!(soft = limit.soft, hard = limit.hard, "RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
    let upgrader = Upgrader::at_start(secs_at_least_ms(args.upgrade_timeout))?;
    let sockets = take_activated_sockets()?;
    // Blocked before any thread starts, so every thread inherits the mask and
    // the signals arrive only through the signalfd.
    let signals = SignalFd::block(&[SIGINT, SIGTERM, SIGUSR2])?;
    let running = start_on(args, loop_config, sockets, make_handler)?;
    announce(&running.addrs)?;
    upgrader.announce_ready();
    let (stopper, sockets) = (running.stopper, running.sockets);
    thread::Builder::new()
        .name("netloop-signals".into())
        .spawn(move || supervise(&signals, &stopper, &sockets, &upgrader))?;
    let per_loop = (running.join)()?;
    let mut total = Stats::default();
    for (index, stats) in per_loop.iter().enumerate() {
        tracing::debug!(loop_index = index, ?stats, "loop stopped");
        total.merge(stats);
    }
    tracing::info!(
        pid = std::process::id(),
        accepted = total.accepted,
        closed = total.closed_total(),
        stale_events = total.stale_events,
        bytes_read = total.bytes_read,
        bytes_written = total.bytes_written,
        "stopped"
    );
    Ok(())
}

/// What the signal thread does: SIGINT/SIGTERM stop, SIGUSR2 upgrades.
fn supervise(
    signals: &SignalFd,
    stopper: &Stopper,
    sockets: &ListeningSockets,
    upgrader: &Upgrader,
) {
    let pid = std::process::id();
    loop {
        let Ok(signal) = signals.wait() else {
            return;
        };
        if signal != SIGUSR2 {
            tracing::info!(pid, signal, "stopping");
            upgrader.announce_stopping();
            stopper.stop();
            return;
        }
        tracing::info!(pid, "SIGUSR2: upgrading");
        let outcome = match sockets.duplicate() {
            Ok(passed) => upgrader.upgrade(passed, signals),
            Err(e) => {
                tracing::error!(pid, error = %e, "upgrade failed: cannot duplicate the listening sockets; still serving");
                Outcome::Failed
            }
        };
        match outcome {
            Outcome::Failed => continue,
            Outcome::Stop(signal) => {
                tracing::info!(pid, signal, "stopping");
                upgrader.announce_stopping();
                stopper.stop();
                return;
            }
            Outcome::Ready(new_pid) => {
                stopper.hand_over();
                after_hand_over(signals, new_pid);
                return;
            }
        }
    }
}

/// The old process after an upgrade: it drains, and refuses a second one.
fn after_hand_over(signals: &SignalFd, new_pid: u32) {
    let pid = std::process::id();
    while let Ok(signal) = signals.wait() {
        match signal {
            SIGUSR2 => tracing::warn!(
                pid,
                new_pid,
                "SIGUSR2 ignored: this process has handed over to the new one and is draining"
            ),
            _ => tracing::info!(pid, signal, "already stopping: draining"),
        }
    }
}

/// `secs` seconds, at least a millisecond (also for NaN).
fn secs_at_least_ms(secs: f64) -> Duration {
    let secs = if secs.is_nan() { 0.0 } else { secs };
    Duration::from_secs_f64(secs.clamp(0.001, 1e9))
}

/// Prints each listening address (`listening on ADDR`) as the first lines
/// of stdout, for scripts and tests.
fn announce(addrs: &[SocketAddr]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for addr in addrs {
        writeln!(stdout, "listening on {addr}")?;
    }
    stdout.flush()
}
