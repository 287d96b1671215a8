//! `netloop http`: the hello-world HTTP/1.1 server.

use std::time::Duration;

use clap::Args;
use netloop_servers::codec::http::HttpLimits;
use netloop_servers::http::Hello;

use crate::serve::{ServeError, ServerArgs, serve};

/// Options of `netloop http`.
#[derive(Args, Debug)]
pub struct HttpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Largest request head in bytes (431 above it).
    #[arg(long, default_value_t = 8 * 1024)]
    max_header_bytes: usize,
    /// Largest request body in bytes (413 above it).
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body: usize,
    /// Seconds a request head may take to arrive, counted from accept for
    /// the first one (slowloris guard; nginx's client_header_timeout).
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds allowed between two reads of a request body (slow-body
    /// guard; nginx's client_body_timeout).
    #[arg(long, default_value_t = 10.0)]
    body_timeout: f64,
    /// Bytes of unsent responses above which a connection's further
    /// pipelined requests wait (and it is no longer read).
    #[arg(long, default_value_t = netloop_servers::http::DEFAULT_MAX_UNSENT)]
    max_unsent: usize,
    /// Answer `GET /large` with this many bytes (for benchmarks: a large
    /// response beside the small ones).
    #[arg(long, value_name = "BYTES")]
    large_body: Option<usize>,
}

/// Runs the HTTP server until SIGINT or SIGTERM.
pub fn run(mut args: HttpArgs) -> Result<(), ServeError> {
    // Idle keep-alive connections close after this, as nginx's keepalive_timeout.
    args.server.idle_timeout.get_or_insert(75.0);
    let limits = HttpLimits {
        max_header_bytes: args.max_header_bytes,
        max_body: args.max_body,
        ..HttpLimits::default()
    };
    let header_timeout = timeout_secs(args.header_timeout);
    let body_timeout = timeout_secs(args.body_timeout);
    let max_unsent = args.max_unsent;
    let large_body = args.large_body;
    serve(&args.server, move |_| {
        let hello = Hello::new(limits, header_timeout)
            .with_body_timeout(body_timeout)
            .with_max_unsent(max_unsent);
        match large_body {
            Some(size) => hello.with_large_body("/large", size),
            None => hello,
        }
    })
}

/// A timeout of `secs` seconds, at least a millisecond (also for NaN).
fn timeout_secs(secs: f64) -> Duration {
    let secs = if secs.is_nan() { 0.0 } else { secs };
    Duration::from_secs_f64(secs.clamp(0.001, 1e9))
}
