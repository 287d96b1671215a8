//! A TCP relay, in the line of muduo's `examples/socks4a/tunnel.h` and
//! nginx's stream proxy with `proxy_half_close on`:
//!
//! ```text
//! cargo run -p netloop --example proxy -- 127.0.0.1:7100 127.0.0.1:7000
//! ```
//!
//! relays every client of the first address to its own connection to the
//! second. Bytes change hands with `forward_input` (buffers move, nothing is
//! copied through a scratch `Vec`); a side whose output is full stops its
//! partner's reading until it drains; a FIN is relayed as a FIN, so each
//! direction ends on its own; an error on one side aborts the other.
//!
//! A relay reaches one connection from another's callbacks, so it runs on
//! a loop mode (a single `EventLoop`, or a `Server` in reuseport, exclusive
//! or acceptor mode); in the one-shot mode a partner that another worker is
//! serving cannot be reached at that moment.
//!
//! The tests drive this very handler (`tests/relay/mod.rs` includes this
//! file), so `main` stays small and the handler is `pub`.

use std::net::SocketAddr;

use netloop::{AfterEof, CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler, StopStyle};

/// Which end of a pair a connection is, naming its partner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Side {
    /// Accepted and not paired yet: only until its `on_open` returns.
    #[default]
    Unpaired,
    /// An accepted client, relayed to `upstream`.
    Client { upstream: ConnId },
    /// The connection made for `client`.
    Upstream { client: ConnId },
}

impl Side {
    /// The other end of the pair.
    pub fn partner(self) -> Option<ConnId> {
        match self {
            Side::Unpaired => None,
            Side::Client { upstream } => Some(upstream),
            Side::Upstream { client } => Some(client),
        }
    }
}

/// The relay: every accepted client gets its own connection to `upstream`.
pub struct Proxy {
    pub upstream: SocketAddr,
}

impl Handler for Proxy {
    type State = Side;

    fn on_open(&mut self, conn: &mut Conn<'_, Side>) {
        match *conn.state() {
            Side::Unpaired => self.pair(conn),
            // Up at last: what its client sent meanwhile can flow now.
            Side::Upstream { client } => resume(conn, client),
            Side::Client { .. } => {}
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_, Side>) {
        relay(conn);
    }

    /// Half-close, as nginx's `proxy_half_close`: the FIN goes on to the
    /// partner after every byte before it, and the other direction flows
    /// on until its own FIN; each side closes once both of its halves are.
    fn on_eof(&mut self, conn: &mut Conn<'_, Side>) -> AfterEof {
        relay(conn);
        if let Some(Ok(mut partner)) = conn.state().partner().map(|id| conn.conn(id)) {
            partner.shutdown();
        }
        AfterEof::KeepWriting
    }

    /// This side's output is back under the low-water mark: the partner
    /// that was paused for it may be read again.
    fn on_drained(&mut self, conn: &mut Conn<'_, Side>) {
        if let Some(partner) = conn.state().partner() {
            resume(conn, partner);
        }
    }

    /// A pair lives and dies together: after a clean end (both directions
    /// finished) the partner delivers what it holds and closes; after an
    /// error it is aborted at once, in the same turn.
    fn on_close(&mut self, ctx: &mut Ctx<'_, Side>, _: ConnId, side: Side, reason: CloseReason) {
        let Some(Ok(mut partner)) = side.partner().map(|id| ctx.conn(id)) else {
            return;
        };
        match reason {
            CloseReason::PeerClosed => partner.close(),
            _ => partner.abort(CloseReason::Closed),
        }
    }
}

impl Proxy {
    /// The loop settings a relay needs, from `base`: a side whose own output
    /// is full must not stop being read, or a client uploading while it
    /// ignores a download would stall its upload too. The relay pauses the
    /// *partner* of a full side instead, so each direction flows on its own.
    /// And a graceful stop lets open sessions finish instead of cutting the
    /// relayed streams short.
    pub fn config(base: Config) -> Config {
        Config {
            pause_when_full: false,
            stop_style: StopStyle::LetFinish,
            ..base
        }
    }

    /// Starts the client's upstream connection. Like muduo's tunnel, the
    /// client is not read until the upstream is up: what it sends meanwhile
    /// waits in the kernel, so nothing is lost and its FIN cannot overtake
    /// the connect.
    fn pair(&mut self, conn: &mut Conn<'_, Side>) {
        let client = conn.id();
        match conn.connect(self.upstream, Side::Upstream { client }) {
            Ok(upstream) => {
                *conn.state() = Side::Client { upstream };
                conn.pause_reading();
            }
            Err(_) => conn.abort(CloseReason::ConnectFailed),
        }
    }
}

/// Moves the input to the partner's output; once that output is full, this
/// side stops being read until the partner drains (`on_drained`), so memory
/// stays near the water marks whichever side is slow.
fn relay(conn: &mut Conn<'_, Side>) {
    let Some(to) = conn.state().partner() else {
        return;
    };
    match conn.forward_input(to) {
        Ok(_) if conn.conn(to).is_ok_and(|target| target.is_full()) => conn.pause_reading(),
        Ok(_) => {}
        // The partner is gone; there is no one to relay to.
        Err(_) => conn.abort(CloseReason::Closed),
    }
}

/// Lifts this relay's pause on `id`, if it is still open.
fn resume(ctx: &mut Ctx<'_, Side>, id: ConnId) {
    if let Ok(mut conn) = ctx.conn(id) {
        conn.resume_reading();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7100").parse()?;
    let upstream: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7000").parse()?;
    let mut event_loop = EventLoop::new(Proxy::config(Config::default()), Proxy { upstream })?;
    let bound = event_loop.listen(listen)?;
    println!("relaying {bound} to {upstream}");
    event_loop.run()?;
    Ok(())
}
