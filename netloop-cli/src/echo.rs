//! `netloop echo`.

use clap::Args;
use netloop::echo::Echo;

use crate::serve::{ServeError, ServerArgs, serve};

/// Options of `netloop echo`.
#[derive(Args, Debug)]
pub struct EchoArgs {
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs the echo server until SIGINT or SIGTERM.
pub fn run(args: EchoArgs) -> Result<(), ServeError> {
    serve(&args.server, |_| Echo)
}
