//! `netloop chat`: the framed chat server.

use clap::Args;
use netloop_servers::chat::{Chat, Rooms};
use netloop_servers::codec::frame::FrameConfig;

use crate::serve::{ModeArg, ServeError, ServerArgs, serve};

/// Options of `netloop chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Largest payload in bytes; a longer frame closes its sender.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_frame: usize,
    /// The 4-byte ASCII magic every frame starts with.
    #[arg(long, default_value = "NLOP", value_parser = parse_magic)]
    magic: [u8; 4],
    /// Queued output in bytes above which a client that does not read is cut off.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_output: usize,
}

fn parse_magic(text: &str) -> Result<[u8; 4], String> {
    text.as_bytes()
        .try_into()
        .map_err(|_| format!("the magic must be exactly 4 bytes, not {text:?}"))
}

/// Runs the chat server until SIGINT or SIGTERM.
pub fn run(args: ChatArgs) -> Result<(), ServeError> {
    let frames = FrameConfig {
        magic: args.magic,
        max_payload: args.max_frame,
        ..FrameConfig::default()
    };
    if args.server.mode == ModeArg::Oneshot {
        // A one-shot worker cannot write to a client another worker is
        // serving at that moment, and a relay must reach every client.
        return Err(ServeError::Usage(
            "chat relays every frame to every client; --mode oneshot serves each connection on its own: use reuseport or acceptor".into(),
        ));
    }
    let rooms = Rooms::default();
    let max_output = args.max_output;
    serve(&args.server, move |_| {
        Chat::new(frames.clone(), max_output, rooms.clone())
    })
}
