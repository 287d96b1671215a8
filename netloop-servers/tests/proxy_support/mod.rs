//! Upstream servers, clients and proxy runners for the proxy tests: real
//! sockets on 127.0.0.1, std threads, every wait bounded.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netloop::server::{Mode, Server, ServerConfig};
use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler, Stats, TimerId};
use netloop_servers::proxy::{Proxy, ProxyConfig, ProxyShared, Side};

/// How long any one wait may take.
pub const LIMIT: Duration = Duration::from_secs(10);
pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

// The core's checked streams and stall helper, shared rather than copied.
#[path = "../../../netloop/tests/support/stream.rs"]
mod stream;
pub use stream::*;

/// An address nothing listens on: connects to it are refused.
pub fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A listener whose backlog is full and that never accepts: connects to
/// it neither succeed nor fail (the SYN is dropped) until they time out.
pub fn blackhole() -> (socket2::Socket, TcpStream, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    // Backlog 0 holds one connection: this one fills it.
    let filler = TcpStream::connect(addr).expect("fill the backlog");
    (socket, filler, addr)
}

/// An echo server on its own threads, counting the connections it accepted.
pub struct Echo {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::on(listener)
    }

    pub fn on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&accepted), Arc::clone(&stop));
        thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        thread::spawn(move || echo(stream));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return,
                }
            }
        });
        Self {
            addr,
            accepted,
            stop,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Echoes until EOF, then sends FIN.
fn echo(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(LIMIT));
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// Connects a blocking client with read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream.set_write_timeout(Some(LIMIT)).expect("timeout");
    stream
}

/// Sends `payload` through an echo session while reading the echo back
/// (from another thread, so large payloads cannot deadlock), then FIN;
/// returns whether every byte came back, in order, followed by EOF.
pub fn echo_session(addr: SocketAddr, payload: &[u8]) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(LIMIT))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let sent = payload.to_vec();
    let write = thread::spawn(move || {
        writer.write_all(&sent)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut got = Vec::with_capacity(payload.len());
    let mut reader = stream;
    let read = reader.read_to_end(&mut got);
    let wrote = write.join().map_err(|_| "writer panicked".to_string())?;
    wrote.map_err(|e| format!("write: {e}"))?;
    read.map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
    if got != payload {
        let at = got.iter().zip(payload).position(|(a, b)| a != b);
        return Err(format!(
            "{} of {} bytes back, first difference at {at:?}",
            got.len(),
            payload.len()
        ));
    }
    Ok(())
}

/// Reads until EOF or reset within `limit`; `Ok(true)` for a reset.
pub fn wait_for_end(stream: &mut TcpStream, limit: Duration) -> Result<bool, String> {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Resets `stream`: with SO_LINGER 0, closing it sends RST.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(stream);
}

/// A proxy on `threads` reuseport loops.
pub struct Running {
    pub addr: SocketAddr,
    pub shared: Arc<ProxyShared>,
    server: Option<Server<Side>>,
}

impl Running {
    pub fn start(config: ProxyConfig, threads: usize) -> Self {
        Self::start_with(config, threads, Config::default())
    }

    pub fn start_with(config: ProxyConfig, threads: usize, base: Config) -> Self {
        let loop_config = config.loop_config(base);
        let shared = Arc::new(ProxyShared::new(config));
        let for_loops = Arc::clone(&shared);
        let server = Server::start(
            "127.0.0.1:0".parse().expect("addr"),
            ServerConfig {
                threads,
                mode: Mode::ReusePort,
                loop_config,
                ..ServerConfig::default()
            },
            move |_| Proxy::new(Arc::clone(&for_loops)),
        )
        .expect("start proxy");
        Self {
            addr: server.local_addr(),
            shared,
            server: Some(server),
        }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.shared.counters().sessions.load(Ordering::SeqCst)
    }

    /// Waits until no session is open and no upstream connection counted.
    pub fn wait_idle(&self) {
        let deadline = Instant::now() + LIMIT;
        while self.sessions() != 0
            || self
                .shared
                .upstreams()
                .snapshot()
                .iter()
                .any(|u| u.active != 0)
        {
            assert!(
                Instant::now() < deadline,
                "sessions {} upstreams {:?}",
                self.sessions(),
                self.shared.upstreams().snapshot()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops gracefully and returns the loops' stats, summed.
    pub fn stop(mut self) -> Stats {
        let server = self.server.take().expect("running");
        server.stopper().stop();
        let mut total = Stats::default();
        for stats in server.join().expect("join") {
            total.merge(&stats);
        }
        total
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stopper().stop();
            let _ = server.join();
        }
    }
}

/// A close the proxy saw: connection, reason, turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    pub id: ConnId,
    pub outbound: bool,
    pub reason: CloseReason,
    pub turn: u64,
}

/// [`Proxy`], recording every close, for a loop the test turns itself.
pub struct Logged {
    pub proxy: Proxy,
    pub closes: Arc<Mutex<Vec<Closed>>>,
    pub opened: Vec<(ConnId, bool)>,
}

impl Handler for Logged {
    type State = Side;

    fn on_open(&mut self, conn: &mut Conn<'_, Side>) {
        self.opened.push((conn.id(), conn.is_outbound()));
        self.proxy.on_open(conn);
    }

    fn on_data(&mut self, conn: &mut Conn<'_, Side>) {
        self.proxy.on_data(conn);
    }

    fn on_eof(&mut self, conn: &mut Conn<'_, Side>) -> netloop::AfterEof {
        self.proxy.on_eof(conn)
    }

    fn on_drained(&mut self, conn: &mut Conn<'_, Side>) {
        self.proxy.on_drained(conn);
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, Side>, timer: TimerId, data: u64) {
        self.proxy.on_timer(conn, timer, data);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Side>, id: ConnId, side: Side, reason: CloseReason) {
        let outbound = matches!(side, Side::Upstream(_));
        let turn = ctx.stats().wait_calls;
        if let Ok(mut closes) = self.closes.lock() {
            closes.push(Closed {
                id,
                outbound,
                reason,
                turn,
            });
        }
        self.proxy.on_close(ctx, id, side, reason);
    }
}

/// A proxy loop the test thread turns, listening on an ephemeral port.
pub fn proxy_loop(config: ProxyConfig, base: Config) -> (EventLoop<Logged>, SocketAddr) {
    let loop_config = config.loop_config(base);
    let handler = Logged {
        proxy: Proxy::new(Arc::new(ProxyShared::new(config))),
        closes: Arc::default(),
        opened: Vec::new(),
    };
    let mut event_loop = EventLoop::new(loop_config, handler).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    (event_loop, addr)
}

/// Runs turns until `done` holds; panics after [`LIMIT`].
pub fn turn_until<H: Handler>(
    event_loop: &mut EventLoop<H>,
    mut done: impl FnMut(&EventLoop<H>) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    while !done(event_loop) {
        assert!(Instant::now() < deadline, "condition not reached in time");
        event_loop
            .turn(Some(Duration::from_millis(2)))
            .expect("turn");
    }
}
