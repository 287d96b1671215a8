//! `netloop echo`.

use clap::Args;
use netloop::echo::{Discard, Echo};

use crate::serve::{ServeError, ServerArgs, serve};

/// Options of `netloop echo`.
#[derive(Args, Debug)]
pub struct EchoArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Read and drop everything instead of echoing it (the discard
    /// protocol): the sink of a one-way stream (`netloop load stream`).
    #[arg(long)]
    discard: bool,
}

/// Runs the echo server until SIGINT or SIGTERM.
pub fn run(args: EchoArgs) -> Result<(), ServeError> {
    if args.discard {
        serve(&args.server, |_| Discard)
    } else {
        serve(&args.server, |_| Echo)
    }
}
