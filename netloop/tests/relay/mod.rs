//! The proxy example's relay handler — the one copy, included from the
//! example file itself — wrapped to record what happened, for the tests.
#![allow(dead_code)]

#[path = "../../examples/proxy.rs"]
pub mod proxy;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use netloop::{AfterEof, CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler};
pub use proxy::{Proxy, Side};

/// What the relay saw, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A connection opened; `side` is its state after `on_open`.
    Open { id: ConnId, side: Side },
    /// Input handed to the relay.
    Data { id: ConnId, bytes: usize },
    /// A connection closed, in the turn numbered `turn` (the loop's
    /// `wait_calls`: one per turn).
    Close {
        id: ConnId,
        side: Side,
        reason: CloseReason,
        turn: u64,
    },
}

/// [`Proxy`], with a log of its callbacks.
pub struct Logged {
    pub proxy: Proxy,
    pub seen: Vec<Seen>,
}

impl Logged {
    /// The (client, upstream) pairs whose upstream has opened, in order.
    pub fn pairs(&self) -> Vec<(ConnId, ConnId)> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Open {
                    id,
                    side: Side::Upstream { client },
                } => Some((*client, *id)),
                _ => None,
            })
            .collect()
    }

    /// Accepted clients, in order.
    pub fn clients(&self) -> Vec<ConnId> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Open {
                    id,
                    side: Side::Client { .. },
                } => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// How `id` closed, and in which turn.
    pub fn close_of(&self, id: ConnId) -> Option<(CloseReason, u64)> {
        self.seen.iter().find_map(|s| match s {
            Seen::Close {
                id: c,
                reason,
                turn,
                ..
            } if *c == id => Some((*reason, *turn)),
            _ => None,
        })
    }

    /// Bytes of input handed to the relay for `id`.
    pub fn data_for(&self, id: ConnId) -> usize {
        self.seen
            .iter()
            .map(|s| match s {
                Seen::Data { id: d, bytes } if *d == id => *bytes,
                _ => 0,
            })
            .sum()
    }
}

impl Handler for Logged {
    type State = Side;

    fn on_open(&mut self, conn: &mut Conn<'_, Side>) {
        self.proxy.on_open(conn);
        let side = *conn.state();
        self.seen.push(Seen::Open {
            id: conn.id(),
            side,
        });
    }

    fn on_data(&mut self, conn: &mut Conn<'_, Side>) {
        let bytes = conn.input().len();
        self.seen.push(Seen::Data {
            id: conn.id(),
            bytes,
        });
        self.proxy.on_data(conn);
    }

    fn on_eof(&mut self, conn: &mut Conn<'_, Side>) -> AfterEof {
        self.proxy.on_eof(conn)
    }

    fn on_drained(&mut self, conn: &mut Conn<'_, Side>) {
        self.proxy.on_drained(conn);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Side>, id: ConnId, side: Side, reason: CloseReason) {
        let turn = ctx.stats().wait_calls;
        self.seen.push(Seen::Close {
            id,
            side,
            reason,
            turn,
        });
        self.proxy.on_close(ctx, id, side, reason);
    }
}

/// A relay loop listening on an ephemeral loopback port, relaying to `upstream`.
pub fn relay_loop(config: Config, upstream: SocketAddr) -> (EventLoop<Logged>, SocketAddr) {
    let handler = Logged {
        proxy: Proxy { upstream },
        seen: Vec::new(),
    };
    let mut event_loop = EventLoop::new(Proxy::config(config), handler).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    (event_loop, addr)
}

/// Resets `stream`: with SO_LINGER 0, closing it sends RST instead of FIN.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(stream);
}

/// Reads `n` bytes from `stream` while running the loop's turns, within
/// `limit`; panics at EOF or on timeout.
pub fn read_turning<H: Handler>(
    event_loop: &mut EventLoop<H>,
    stream: &mut TcpStream,
    n: usize,
    limit: Duration,
) -> Vec<u8> {
    stream.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + limit;
    let mut got = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        assert!(Instant::now() < deadline, "read {filled} of {n} bytes");
        match stream.read(&mut got[filled..]) {
            Ok(0) => panic!("EOF after {filled} of {n} bytes"),
            Ok(k) => filled += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        event_loop
            .turn(Some(Duration::from_millis(1)))
            .expect("turn");
    }
    stream.set_nonblocking(false).expect("blocking");
    got
}
