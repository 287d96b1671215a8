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
    /// Seconds a request head may take to arrive (slowloris guard).
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
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
    let header_timeout = Duration::from_secs_f64(args.header_timeout.max(0.001));
    serve(&args.server, move |_| Hello::new(limits, header_timeout))
}
