//! What every server subcommand shares: limits, signals, the loop's thread,
//! and the options that shape the loop.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clap::{Args, ValueEnum};
use netloop::sys::rlimit;
use netloop::sys::signal::{SIGINT, SIGTERM, SignalFd};
use netloop::{Config, EventLoop, Handler, PoolFullPolicy, Trigger};

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
    /// Seconds a graceful stop lets connections drain.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub stop_timeout: f64,
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

/// `--trigger` values.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum TriggerArg {
    /// Edge-triggered (register once, never modify).
    Edge,
    /// Level-triggered (EPOLLOUT armed only while output is queued).
    Level,
}

impl ServerArgs {
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
            high_water: self.high_water,
            low_water: (self.high_water / 4).min(defaults.low_water),
            ..defaults
        }
    }
}

/// Runs the handler `make_handler` builds on one loop listening on
/// `args.addr` until SIGINT or SIGTERM, then stops gracefully.
pub fn serve<H, F>(args: &ServerArgs, make_handler: F) -> Result<(), ServeError>
where
    H: Handler + 'static,
    F: FnOnce() -> H + Send + 'static,
{
    match rlimit::raise_nofile_limit() {
        Ok(limit) => tracing::debug!(soft = limit.soft, hard = limit.hard, "RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
    // Blocked before any thread starts, so every thread inherits the mask and
    // the signals arrive only through the signalfd.
    let signals = SignalFd::block(&[SIGINT, SIGTERM])?;
    let config = args.config();
    let listen_addr = args.addr;
    let (ready_tx, ready_rx) = mpsc::channel();
    // The loop is built on its own thread so that handler state never has
    // to be `Send`.
    let server = thread::Builder::new().name("netloop-loop".into()).spawn(
        move || -> Result<(), ServeError> {
            let started = EventLoop::new(config, make_handler()).and_then(|mut event_loop| {
                let addr = event_loop.listen(listen_addr)?;
                Ok((event_loop, addr))
            });
            let mut event_loop = match started {
                Ok((event_loop, addr)) => {
                    // The receiver waits for exactly this message.
                    let _ = ready_tx.send(Some((addr, event_loop.handle())));
                    event_loop
                }
                Err(e) => {
                    let _ = ready_tx.send(None);
                    return Err(e.into());
                }
            };
            let result = event_loop.run();
            tracing::info!(stats = ?event_loop.stats(), "stopped");
            Ok(result?)
        },
    )?;
    let Ok(Some((addr, handle))) = ready_rx.recv() else {
        return server.join().map_err(|_| ServeError::Panicked)?;
    };
    announce(addr)?;
    thread::Builder::new()
        .name("netloop-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                tracing::info!(signal, "stopping");
                // The loop may already be gone; there is nothing left to stop then.
                let _ = handle.stop();
            }
        })?;
    server.join().map_err(|_| ServeError::Panicked)?
}

/// Prints the bound address as the first line of stdout, for scripts and tests.
fn announce(addr: SocketAddr) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()
}
