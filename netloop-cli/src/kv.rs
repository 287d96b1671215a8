//! `netloop kv`: the RESP2 key-value server.

use std::sync::Arc;

use clap::Args as ClapArgs;
use netloop_servers::codec::resp::RespLimits;
use netloop_servers::kv::{Kv, Store};

use crate::serve::{ServeError, ServerArgs, serve};

/// Options of `netloop kv`.
#[derive(ClapArgs, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Most arguments in one multibulk request (Redis: 1048576).
    #[arg(long, default_value_t = 1024 * 1024)]
    max_multibulk_len: usize,
    /// Largest bulk argument in bytes (Redis' proto-max-bulk-len: 512 MiB).
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    max_bulk_len: usize,
}

/// Runs the key-value server until SIGINT or SIGTERM.
pub fn run(mut args: KvArgs) -> Result<(), ServeError> {
    let limits = RespLimits {
        max_multibulk_len: args.max_multibulk_len,
        max_bulk_len: args.max_bulk_len,
        ..RespLimits::default()
    };
    // A request may legitimately be as large as the largest bulk allows.
    args.server.max_input = Some(limits.max_bulk_len.saturating_add(64 * 1024));
    let store = Arc::new(Store::new());
    serve(&args.server, move |_| Kv::new(Arc::clone(&store), limits))
}
