//! Shared test helpers: a recording handler, manual turns, and a client
//! that drives many loopback connections and checks every echoed byte.
#![allow(dead_code)]

pub mod stream;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use netloop::testing::{EDGE, Epoll, Events, READ_HUP, READABLE, WRITABLE};
use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler, LoopHandle, Stats};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// What a [`Recorder`] saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Open { id: ConnId, fd: i32 },
    Data { id: ConnId, bytes: Vec<u8> },
    Close { id: ConnId, reason: CloseReason },
}

/// What a [`Recorder`] does when a connection receives data.
#[derive(Clone, Copy, Debug)]
pub enum Plan {
    /// Close that other connection.
    Close(ConnId),
    /// Close the connection opened most recently.
    CloseNewest,
    /// Duplicate this connection's fd, keep the duplicate, then close it.
    DupAndClose,
    /// Close this connection itself.
    CloseSelf,
}

/// An echo handler that logs every callback and can follow a plan.
#[derive(Default)]
pub struct Recorder {
    pub seen: Vec<Seen>,
    pub plans: HashMap<ConnId, Plan>,
    pub kept_fds: Vec<OwnedFd>,
    newest: Option<ConnId>,
}

impl Recorder {
    pub fn opened(&self) -> Vec<(ConnId, i32)> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Open { id, fd } => Some((*id, *fd)),
                _ => None,
            })
            .collect()
    }

    pub fn data_for(&self, id: ConnId) -> Vec<u8> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Data { id: d, bytes } if *d == id => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub fn close_of(&self, id: ConnId) -> Option<CloseReason> {
        self.seen.iter().find_map(|s| match s {
            Seen::Close { id: c, reason } if *c == id => Some(*reason),
            _ => None,
        })
    }
}

impl Handler for Recorder {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        self.newest = Some(conn.id());
        self.seen.push(Seen::Open {
            id: conn.id(),
            fd: conn.raw_fd(),
        });
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let bytes = conn.input().to_vec();
        conn.consume(bytes.len());
        conn.write(&bytes);
        self.seen.push(Seen::Data {
            id: conn.id(),
            bytes,
        });
        match self.plans.remove(&conn.id()) {
            Some(Plan::Close(other)) => conn.conn(other).expect("victim is open").close(),
            Some(Plan::CloseNewest) => {
                let newest = self.newest.expect("something opened");
                conn.conn(newest).expect("newest is open").close();
            }
            Some(Plan::DupAndClose) => {
                self.kept_fds.push(conn.try_clone_fd().expect("dup"));
                conn.abort(CloseReason::Closed);
            }
            Some(Plan::CloseSelf) => conn.abort(CloseReason::Closed),
            None => {}
        }
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_, ()>, id: ConnId, _: (), reason: CloseReason) {
        self.seen.push(Seen::Close { id, reason });
    }
}

/// Runs turns until `done` holds or `limit` passes; panics on timeout.
pub fn turn_until<H: Handler>(
    event_loop: &mut EventLoop<H>,
    limit: Duration,
    mut done: impl FnMut(&EventLoop<H>) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(event_loop) {
        assert!(
            Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        event_loop
            .turn(Some(Duration::from_millis(5)))
            .expect("turn");
    }
}

/// Runs turns for `period` regardless of what happens.
pub fn turn_for<H: Handler>(event_loop: &mut EventLoop<H>, period: Duration) {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        event_loop
            .turn(Some(Duration::from_millis(5)))
            .expect("turn");
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so that a test can
/// hold a thousand connections open at both ends; panics if it cannot.
pub fn raise_nofile_limit() {
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).expect("raise RLIMIT_NOFILE");
}

/// Connects a blocking client with a read timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Reads exactly `n` bytes or panics.
pub fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// A small deterministic generator (xorshift64*), so tests need no rand crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Log-uniform in `1..=max`, so small and large sizes are both common.
    pub fn size_up_to(&mut self, max: usize) -> usize {
        let bits = (max as f64).log2();
        let exp = (self.next_u64() % 10_000) as f64 / 10_000.0 * bits;
        (2f64.powf(exp) as usize).clamp(1, max)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// `count` payloads of log-uniform random sizes up to `max` bytes.
pub fn payloads(count: usize, max: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let n = rng.size_up_to(max);
            rng.bytes(n)
        })
        .collect()
}

struct ClientConn {
    stream: TcpStream,
    payload: Vec<u8>,
    sent: usize,
    received: usize,
    done: bool,
}

/// Opens one connection per payload to `addr`, sends every payload while
/// reading the echo, and checks each echoed byte against what that
/// connection sent. Returns the bytes echoed; panics on any mismatch or if
/// it takes longer than `limit`.
pub fn echo_clients(addr: SocketAddr, payloads: Vec<Vec<u8>>, limit: Duration) -> usize {
    let epoll = Epoll::new().expect("epoll");
    let mut conns = Vec::with_capacity(payloads.len());
    for (i, payload) in payloads.into_iter().enumerate() {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nonblocking(true).expect("nonblocking");
        epoll
            .add(
                stream.as_raw_fd(),
                i as u64,
                READABLE | WRITABLE | READ_HUP | EDGE,
            )
            .expect("register");
        conns.push(ClientConn {
            stream,
            payload,
            sent: 0,
            received: 0,
            done: false,
        });
    }
    let mut remaining = conns.iter().filter(|c| !c.payload.is_empty()).count();
    for c in conns.iter_mut().filter(|c| c.payload.is_empty()) {
        c.done = true;
    }
    let deadline = Instant::now() + limit;
    let mut events = Events::with_capacity(256);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut total = 0;
    while remaining > 0 {
        if Instant::now() >= deadline {
            let stuck: Vec<String> = conns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.done)
                .take(5)
                .map(|(i, c)| {
                    format!(
                        "#{i}: sent {}/{} received {}",
                        c.sent,
                        c.payload.len(),
                        c.received
                    )
                })
                .collect();
            panic!("{remaining} connections unfinished after {limit:?}: {stuck:?}");
        }
        epoll
            .wait(&mut events, Some(Duration::from_millis(100)))
            .expect("wait");
        for i in 0..events.len() {
            let Some(event) = events.get(i) else { continue };
            let conn = &mut conns[event.token as usize];
            if conn.done {
                continue;
            }
            total += pump(conn, &mut scratch, event.token);
            if conn.received == conn.payload.len() {
                conn.done = true;
                remaining -= 1;
            }
        }
    }
    total
}

/// Writes and reads one client connection until both would block.
fn pump(conn: &mut ClientConn, scratch: &mut [u8], token: u64) -> usize {
    while conn.sent < conn.payload.len() {
        match conn.stream.write(&conn.payload[conn.sent..]) {
            Ok(n) => conn.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("connection {token}: write failed: {e}"),
        }
    }
    let mut got = 0;
    loop {
        match conn.stream.read(scratch) {
            Ok(0) => panic!(
                "connection {token}: closed after {} of {} bytes",
                conn.received,
                conn.payload.len()
            ),
            Ok(n) => {
                let expected = &conn.payload[conn.received..conn.received + n];
                assert!(
                    &scratch[..n] == expected,
                    "connection {token}: wrong bytes at offset {}",
                    conn.received
                );
                conn.received += n;
                got += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return got,
            Err(e) => panic!("connection {token}: read failed: {e}"),
        }
    }
}

/// A loop running `handler` on its own thread.
pub struct Running<S: Send + 'static> {
    pub addr: SocketAddr,
    handle: LoopHandle<S>,
    thread: thread::JoinHandle<Stats>,
}

impl<S: Send + 'static> Running<S> {
    pub fn start<H: Handler<State = S> + Send + 'static>(config: Config, handler: H) -> Self {
        // Tests finish with clients still connected; do not wait long for them.
        let config = Config {
            stop_timeout: Duration::from_millis(200),
            ..config
        };
        let mut event_loop = EventLoop::new(config, handler).expect("loop");
        let addr = event_loop
            .listen("127.0.0.1:0".parse().expect("addr"))
            .expect("listen");
        let handle = event_loop.handle();
        let thread = thread::spawn(move || {
            event_loop.run().expect("run");
            event_loop.stats().clone()
        });
        Self {
            addr,
            handle,
            thread,
        }
    }

    pub fn stats(&self) -> Stats {
        let (tx, rx) = mpsc::channel();
        self.handle
            .post(move |ctx| tx.send(ctx.stats().clone()).expect("send"))
            .expect("post");
        rx.recv_timeout(Duration::from_secs(10)).expect("stats")
    }

    pub fn finish(self) -> Stats {
        self.handle.stop().expect("stop");
        self.thread.join().expect("loop thread")
    }
}

/// Answers every byte with 64 KiB: small requests, replies that fill every
/// buffer. For the loop and for one-shot workers.
pub struct Amplify;

impl Amplify {
    fn reply(input_len: usize, mut write: impl FnMut(&[u8])) {
        for _ in 0..input_len {
            write(&[b'a'; 64 * 1024]);
        }
    }
}

impl Handler for Amplify {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let n = conn.input().len();
        conn.consume(n);
        Amplify::reply(n, |bytes| conn.write(bytes));
    }
}
