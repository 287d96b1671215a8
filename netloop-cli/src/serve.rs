//! What every server subcommand shares: limits, signals, the loop's thread,
//! and the options that shape the loop.

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use clap::{Args, ValueEnum};
use netloop::server::{Dispatch, Mode, Server, ServerConfig};
use netloop::{Config, Handler, PoolFullPolicy, Stats, Trigger};

use crate::sys::rlimit;
use crate::sys::signal::{SIGINT, SIGTERM, SignalFd};

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
    /// Seconds a graceful stop lets connections drain.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub stop_timeout: f64,
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
    /// The bound address.
    pub addr: SocketAddr,
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
    args.check()?;
    let config = ServerConfig {
        loop_config,
        ..args.server_config()
    };
    let server = Server::start(args.addr, config, make_handler)?;
    let stopper = server.stopper();
    Ok(Running {
        addr: server.local_addr(),
        stop: Box::new(move || stopper.stop()),
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
    // Blocked before any thread starts, so every thread inherits the mask and
    // the signals arrive only through the signalfd.
    let signals = SignalFd::block(&[SIGINT, SIGTERM])?;
    let running = start_with(args, loop_config, make_handler)?;
    announce(running.addr)?;
    let stop = running.stop;
    thread::Builder::new()
        .name("netloop-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                tracing::info!(signal, "stopping");
                stop();
            }
        })?;
    let per_loop = (running.join)()?;
    let mut total = Stats::default();
    for (index, stats) in per_loop.iter().enumerate() {
        tracing::debug!(loop_index = index, ?stats, "loop stopped");
        total.merge(stats);
    }
    tracing::info!(
        accepted = total.accepted,
        closed = total.closed_total(),
        stale_events = total.stale_events,
        bytes_read = total.bytes_read,
        bytes_written = total.bytes_written,
        "stopped"
    );
    Ok(())
}

/// Prints the bound address as the first line of stdout, for scripts and tests.
fn announce(addr: SocketAddr) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()
}
