//! `netloop proxy`: an L4 TCP proxy in front of an upstream group.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, ValueEnum};
use netloop::PoolFullPolicy;
use netloop_servers::codec::proxy_protocol::Version;
use netloop_servers::proxy::{Balance, HealthPolicy, Proxy, ProxyConfig, ProxyShared};

use crate::serve::{ModeArg, ServeError, ServerArgs, serve_with};

/// Options of `netloop proxy`. `--max-connections` bounds client sessions
/// for the whole proxy (each also holds an upstream connection, for which
/// the pool has room); `--idle-timeout` is a session's (default 600 s, 0
/// for none), reset by traffic either way.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// An upstream server; repeat for a group.
    #[arg(long = "upstream", value_name = "HOST:PORT", required = true)]
    upstreams: Vec<String>,
    /// How a session's upstream is chosen.
    #[arg(long, value_enum, default_value_t = BalanceArg::RoundRobin)]
    balance: BalanceArg,
    /// Seconds a connect to an upstream may take before the next is tried.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    connect_timeout: f64,
    /// Failed connects within --fail-timeout that mark an upstream down
    /// (0: never).
    #[arg(long, value_name = "N", default_value_t = 1)]
    max_fails: u32,
    /// Seconds failures are counted over, and an upstream marked down is
    /// skipped for.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    fail_timeout: f64,
    /// Send a PROXY protocol header to the upstream first.
    #[arg(long, value_enum, value_name = "VERSION")]
    proxy_protocol: Option<ProxyProtocolArg>,
    /// Require a PROXY protocol header (v1 or v2) from every client.
    #[arg(long)]
    accept_proxy_protocol: bool,
}

/// `--balance` values.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum BalanceArg {
    /// Each upstream in turn.
    RoundRobin,
    /// The upstream with the fewest active sessions.
    LeastConn,
    /// A hash of the client's IP address: a client sticks to one upstream.
    Hash,
}

/// `--proxy-protocol` values.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum ProxyProtocolArg {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// Runs the proxy until SIGINT or SIGTERM; then open sessions finish (up
/// to --stop-timeout) while new connections are refused.
pub fn run(mut args: ProxyArgs) -> Result<(), ServeError> {
    if args.server.mode == ModeArg::Oneshot {
        // A one-shot worker cannot reach a partner another worker is
        // serving at that moment, and a relay must reach it every time.
        return Err(ServeError::Usage(
            "proxy relays between a client and its upstream; --mode oneshot serves each connection on its own: use reuseport or acceptor".into(),
        ));
    }
    let config = proxy_config(&mut args)?;
    let mut loop_config = config.loop_config(args.server.config());
    if loop_config.pool_full == PoolFullPolicy::LeaveInBacklog {
        // Exactly two connections per session: a loop whose sessions are
        // all up leaves the next client in the backlog.
        loop_config.max_connections = config.max_sessions.saturating_mul(2);
    }
    let shared = Arc::new(ProxyShared::new(config));
    let for_loops = Arc::clone(&shared);
    let result = serve_with(&args.server, loop_config, move |_| {
        Proxy::new(Arc::clone(&for_loops))
    });
    let counters = shared.counters();
    tracing::info!(
        sessions = counters.sessions_total.load(Ordering::Relaxed),
        refused = counters.refused.load(Ordering::Relaxed),
        retries = counters.retries.load(Ordering::Relaxed),
        no_upstream = counters.no_upstream.load(Ordering::Relaxed),
        "proxy sessions"
    );
    for upstream in shared.upstreams().snapshot() {
        tracing::info!(
            upstream = %upstream.addr,
            picked = upstream.picked,
            failures = upstream.failures,
            "upstream"
        );
    }
    result
}

/// The proxy's settings from the options.
fn proxy_config(args: &mut ProxyArgs) -> Result<ProxyConfig, ServeError> {
    let upstreams = args
        .upstreams
        .iter()
        .map(|text| resolve(text))
        .collect::<Result<Vec<_>, _>>()?;
    let idle = *args.server.idle_timeout.get_or_insert(600.0);
    Ok(ProxyConfig {
        balance: match args.balance {
            BalanceArg::RoundRobin => Balance::RoundRobin,
            BalanceArg::LeastConn => Balance::LeastConn,
            BalanceArg::Hash => Balance::Hash,
        },
        health: HealthPolicy {
            max_fails: args.max_fails,
            fail_timeout: secs(args.fail_timeout),
        },
        connect_timeout: secs(args.connect_timeout),
        idle_timeout: (idle > 0.0).then(|| secs(idle)),
        max_sessions: args.server.max_connections.max(1),
        send_proxy: args.proxy_protocol.map(|v| match v {
            ProxyProtocolArg::V1 => Version::V1,
            ProxyProtocolArg::V2 => Version::V2,
        }),
        accept_proxy: args.accept_proxy_protocol,
        ..ProxyConfig::new(upstreams)
    })
}

/// The first address `HOST:PORT` resolves to.
fn resolve(text: &str) -> Result<SocketAddr, ServeError> {
    text.to_socket_addrs()
        .map_err(|e| ServeError::Usage(format!("--upstream {text}: {e}")))?
        .next()
        .ok_or_else(|| ServeError::Usage(format!("--upstream {text}: no address")))
}

/// `secs` seconds, at least a millisecond and at most about 30 years (NaN:
/// a millisecond).
fn secs(secs: f64) -> Duration {
    let secs = if secs.is_nan() { 0.0 } else { secs };
    Duration::from_secs_f64(secs.clamp(0.001, 1e9))
}
