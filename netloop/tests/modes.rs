//! The mode matrix: every threading mode runs the same loop code, so every
//! behaviour a handler relies on holds in each of them. Each behaviour is a
//! function of the mode, run once per mode by `in_every_mode!` (tests named
//! `behaviour::mode`), on real loopback sockets, with 2 threads; close
//! reasons are checked through the joined stats and what the client sees.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use netloop::echo::Echo;
use netloop::server::{Mode, Server, ServerConfig};
use netloop::{
    AfterEof, CloseReason, Config, Conn, ConnId, Ctx, Error, Handler, PoolFullPolicy, Stats,
    TimerId,
};
use socket2::{Domain, Socket, Type};
use support::Rng;
use support::stream::{fill, first_wrong};

const THREADS: usize = 2;

/// How long any one wait may take before the test fails.
const LIMIT: Duration = Duration::from_secs(5);

/// Runs a behaviour once per mode, as `behaviour::reuseport` and so on.
/// One-shot runs are serialized, as in `threads.rs`.
macro_rules! in_every_mode {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            use netloop::server::Mode;

            #[test]
            fn reuseport() {
                super::$behaviour(Mode::ReusePort);
            }

            #[test]
            fn exclusive() {
                super::$behaviour(Mode::Exclusive);
            }

            #[test]
            fn acceptor() {
                super::$behaviour(Mode::Acceptor);
            }

            #[test]
            fn oneshot() {
                let _alone = super::oneshot_alone();
                super::$behaviour(Mode::OneShot);
            }
        }
    )*};
}

in_every_mode!(
    idle_timeout_closes_a_silent_connection_and_spares_an_active_one,
    max_input_closes_a_connection_whose_input_is_never_consumed,
    pool_full_accept_and_close_closes_the_extra_client,
    pool_full_leave_in_backlog_serves_the_extra_client_once_a_slot_frees,
    half_close_default_delivers_the_whole_echo_then_closes,
    half_close_keep_writing_sends_after_the_peer_fin_until_shutdown,
    protocol_error_reaches_stats_and_on_close_by_name,
    user_timers_fire_and_a_cancelled_one_never_does,
    handler_panic_costs_its_connection_only,
    a_dead_loop_stops_the_whole_server,
    a_handler_refilling_on_every_drain_streams_to_the_end,
);

static ONESHOT_ALONE: Mutex<()> = Mutex::new(());

fn oneshot_alone() -> MutexGuard<'static, ()> {
    ONESHOT_ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Settings for tests: a short graceful stop, since tests end with clients
/// still connected.
fn quick() -> Config {
    Config {
        stop_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

/// Starts a server in `mode` with 2 threads on 127.0.0.1.
fn start<H, F>(mode: Mode, loop_config: Config, make_handler: F) -> Server<H::State>
where
    H: Handler + 'static,
    H::State: Send + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let config = ServerConfig {
        threads: THREADS,
        mode,
        loop_config,
        ..ServerConfig::default()
    };
    Server::start("127.0.0.1:0".parse().expect("addr"), config, make_handler)
        .unwrap_or_else(|e| panic!("{mode:?}: cannot start: {e}"))
}

/// `server.join()`, failing the test if it takes longer than `LIMIT`.
fn join_within<S: 'static>(server: Server<S>, mode: Mode) -> Result<Vec<Stats>, Error> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(server.join());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{mode:?}: the server did not finish within {LIMIT:?}"))
}

/// Stops the server and returns its loops' counters added up.
fn stop_and_total<S: 'static>(server: Server<S>, mode: Mode) -> Stats {
    server.stopper().stop();
    let per_loop = join_within(server, mode).unwrap_or_else(|e| panic!("{mode:?}: join: {e}"));
    let mut total = Stats::default();
    per_loop.iter().for_each(|s| total.merge(s));
    total
}

fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream.set_write_timeout(Some(LIMIT)).expect("timeout");
    stream
}

/// Sends `message` and expects it back.
fn round_trip(stream: &mut TcpStream, message: &[u8], what: &str) {
    stream
        .write_all(message)
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let mut got = vec![0u8; message.len()];
    stream
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{what}: no echo: {e}"));
    assert_eq!(got, message, "{what}: wrong echo");
}

/// How a wait for the server to close a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// A FIN.
    Eof,
    /// A reset.
    Reset,
    /// Still open when the wait ended.
    Open,
}

/// Reads everything until the server closes the connection or `wait` passes.
fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, Ending) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, Ending::Open);
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (got, Ending::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => match e.kind() {
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                    return (got, Ending::Reset);
                }
                ErrorKind::WouldBlock | ErrorKind::TimedOut => return (got, Ending::Open),
                ErrorKind::Interrupted => {}
                _ => panic!("read: {e}"),
            },
        }
    }
}

/// Waits until `done` holds; fails the test after `LIMIT`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        thread::sleep(Duration::from_millis(2));
    }
}

type Reasons = Arc<Mutex<Vec<CloseReason>>>;

fn reasons_of(reasons: &Reasons) -> Vec<CloseReason> {
    reasons.lock().expect("lock").clone()
}

fn lines(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------- idle timeout

fn idle_timeout_closes_a_silent_connection_and_spares_an_active_one(mode: Mode) {
    let idle = Duration::from_millis(300);
    let config = Config {
        idle_timeout: Some(idle),
        ..quick()
    };
    let server = start(mode, config, |_| Echo);
    let addr = server.local_addr();
    let mut silent = client(addr);
    let mut active = client(addr);
    let opened = Instant::now();
    // The active client talks every 50 ms for three idle periods.
    let mut n = 0;
    while opened.elapsed() < idle * 3 {
        round_trip(
            &mut active,
            format!("line {n}\n").as_bytes(),
            &format!("{mode:?}: active client, message {n}"),
        );
        thread::sleep(Duration::from_millis(50));
        n += 1;
    }
    let (got, ending) = read_until_closed(&mut silent, LIMIT);
    assert!(
        got.is_empty(),
        "{mode:?}: the silent client received {got:?}"
    );
    assert_eq!(
        ending,
        Ending::Eof,
        "{mode:?}: the silent client was not closed cleanly by the idle timeout"
    );
    round_trip(
        &mut active,
        b"still here\n",
        &format!("{mode:?}: active client after {:?}", opened.elapsed()),
    );
    let total = stop_and_total(server, mode);
    assert_eq!(
        total.closed_for(CloseReason::IdleTimeout),
        1,
        "{mode:?}: idle-timeout closes: {:?}",
        total.closed
    );
}

// ------------------------------------------------------------------- max input

/// Never consumes its input.
struct Hoard;

impl Handler for Hoard {
    type State = ();

    fn on_data(&mut self, _: &mut Conn<'_, ()>) {}
}

fn max_input_closes_a_connection_whose_input_is_never_consumed(mode: Mode) {
    let config = Config {
        max_input: 1024,
        ..quick()
    };
    let server = start(mode, config, |_| Hoard);
    let addr = server.local_addr();
    let mut under = client(addr);
    under.write_all(&[b'u'; 512]).expect("write");
    let mut over = client(addr);
    over.write_all(&[b'o'; 4096]).expect("write");
    let (_, ending) = read_until_closed(&mut over, LIMIT);
    assert_ne!(
        ending,
        Ending::Open,
        "{mode:?}: 4096 unconsumed bytes with max_input 1024 did not close the connection"
    );
    let (_, ending) = read_until_closed(&mut under, Duration::from_millis(300));
    assert_eq!(
        ending,
        Ending::Open,
        "{mode:?}: 512 unconsumed bytes with max_input 1024 closed the connection"
    );
    let total = stop_and_total(server, mode);
    assert_eq!(
        total.closed_for(CloseReason::InputLimit),
        1,
        "{mode:?}: input-limit closes: {:?}",
        total.closed
    );
}

// ------------------------------------------------------------------- pool full

/// What a client sees when it sends one byte to the echo server.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    Served,
    Closed,
    Waiting,
}

fn probe(stream: &mut TcpStream, wait: Duration) -> Probe {
    // Fails if the server already closed it; the read tells.
    let _ = stream.write_all(b"?");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(1) => Probe::Served,
        Ok(_) => Probe::Closed,
        Err(e) => match e.kind() {
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => Probe::Closed,
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Probe::Waiting,
            _ => panic!("read: {e}"),
        },
    }
}

/// Connections the pool holds with `max_connections: 1`: one per loop, or
/// one for the whole one-shot pool.
fn pool_capacity(mode: Mode) -> usize {
    match mode {
        Mode::OneShot => 1,
        _ => THREADS,
    }
}

/// How many clients are served before the pool is full. Round-robin
/// (acceptor) and the one-shot pool fill it exactly; with reuseport and
/// exclusive the kernel picks the loop, so a loop may be full while the
/// other is still empty.
fn assert_served_before_full(mode: Mode, served: usize) {
    match mode {
        Mode::Acceptor | Mode::OneShot => assert_eq!(
            served,
            pool_capacity(mode),
            "{mode:?}: clients served before the pool was full"
        ),
        _ => assert!(
            (1..=pool_capacity(mode)).contains(&served),
            "{mode:?}: {served} clients served before the pool was full"
        ),
    }
}

fn pool_full_accept_and_close_closes_the_extra_client(mode: Mode) {
    let config = Config {
        max_connections: 1,
        pool_full: PoolFullPolicy::AcceptAndClose,
        ..quick()
    };
    let server = start(mode, config, |_| Echo);
    let addr = server.local_addr();
    let mut served = Vec::new();
    loop {
        let mut c = client(addr);
        match probe(&mut c, LIMIT) {
            Probe::Served => served.push(c),
            Probe::Closed => break,
            Probe::Waiting => panic!(
                "{mode:?}: client {} was neither served nor closed with AcceptAndClose",
                served.len()
            ),
        }
        assert!(
            served.len() <= pool_capacity(mode),
            "{mode:?}: {} clients served with max_connections 1",
            served.len()
        );
    }
    assert_served_before_full(mode, served.len());
    for (i, c) in served.iter_mut().enumerate() {
        round_trip(c, b"on\n", &format!("{mode:?}: served client {i}"));
    }
    drop(served);
    let total = stop_and_total(server, mode);
    assert_eq!(
        total.closed_for(CloseReason::PoolFull),
        1,
        "{mode:?}: pool-full closes: {:?}",
        total.closed
    );
}

fn pool_full_leave_in_backlog_serves_the_extra_client_once_a_slot_frees(mode: Mode) {
    let config = Config {
        max_connections: 1,
        pool_full: PoolFullPolicy::LeaveInBacklog,
        ..quick()
    };
    let server = start(mode, config, |_| Echo);
    let addr = server.local_addr();
    let mut served = Vec::new();
    let mut waiting = loop {
        let mut c = client(addr);
        match probe(&mut c, Duration::from_millis(500)) {
            Probe::Served => served.push(c),
            Probe::Waiting => break c,
            Probe::Closed => panic!(
                "{mode:?}: with LeaveInBacklog, client {} was closed instead of left waiting",
                served.len()
            ),
        }
        assert!(
            served.len() <= pool_capacity(mode),
            "{mode:?}: {} clients served with max_connections 1",
            served.len()
        );
    };
    assert_served_before_full(mode, served.len());
    let (got, ending) = read_until_closed(&mut waiting, Duration::from_millis(200));
    assert_eq!(
        (got.as_slice(), ending),
        (&b""[..], Ending::Open),
        "{mode:?}: the waiting client was served or closed while the pool was full"
    );
    // Free every slot: the waiting client is accepted, and its byte, sent
    // while it waited in the backlog, is echoed.
    drop(served);
    waiting.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut byte = [0u8; 1];
    waiting
        .read_exact(&mut byte)
        .unwrap_or_else(|e| panic!("{mode:?}: the waiting client was never served: {e}"));
    assert_eq!(&byte, b"?", "{mode:?}");
    round_trip(
        &mut waiting,
        b"served\n",
        &format!("{mode:?}: the client that waited"),
    );
    let total = stop_and_total(server, mode);
    assert_eq!(
        total.closed_for(CloseReason::PoolFull),
        0,
        "{mode:?}: connections closed as pool-full with LeaveInBacklog: {:?}",
        total.closed
    );
}

// ------------------------------------------------------------------ half-close

fn half_close_default_delivers_the_whole_echo_then_closes(mode: Mode) {
    // Reading is never held, so the server takes all 8 MiB and our FIN while
    // most of the echo still waits in its output queue: the kernel holds at
    // most the server's send buffer (4 MiB at most) and our small receive
    // buffer, and we do not read for a while.
    let config = Config {
        high_water: 64 << 20,
        ..quick()
    };
    let server = start(mode, config, |_| Echo);
    let payload = Rng::new(7 + mode as u64).bytes(8 << 20);
    let mut c = client_with_small_receive_buffer(server.local_addr());
    let mut writer = c.try_clone().expect("clone");
    let sent = payload.clone();
    let writing = thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.shutdown(Shutdown::Write).expect("FIN");
    });
    thread::sleep(Duration::from_millis(300));
    let (got, ending) = read_until_closed(&mut c, LIMIT);
    writing.join().expect("writer");
    assert_eq!(
        got.len(),
        payload.len(),
        "{mode:?}: bytes echoed after a half-close"
    );
    assert!(got == payload, "{mode:?}: wrong bytes echoed");
    assert_eq!(ending, Ending::Eof, "{mode:?}: how the connection ended");
    let total = stop_and_total(server, mode);
    assert_eq!(
        total.closed_for(CloseReason::PeerClosed),
        1,
        "{mode:?}: peer-closed closes: {:?}",
        total.closed
    );
}

fn client_with_small_receive_buffer(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream.set_write_timeout(Some(LIMIT)).expect("timeout");
    stream
}

/// Echoes; after the peer's FIN, keeps writing a tick every `TICK` from a
/// timer, and shuts down after the third.
struct Trailer {
    closes: Reasons,
}

const TICK: Duration = Duration::from_millis(50);

impl Handler for Trailer {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let input = conn.input().to_vec();
        conn.consume(input.len());
        conn.write(&input);
    }

    fn on_eof(&mut self, conn: &mut Conn<'_, ()>) -> AfterEof {
        conn.set_timer(TICK, 1);
        AfterEof::KeepWriting
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, ()>, _: TimerId, tick: u64) {
        conn.write(format!("tick {tick}\n").as_bytes());
        if tick < 3 {
            conn.set_timer(TICK, tick + 1);
        } else {
            conn.shutdown();
        }
    }

    fn on_close(&mut self, _: &mut Ctx<'_, ()>, _: ConnId, _: (), reason: CloseReason) {
        self.closes.lock().expect("lock").push(reason);
    }
}

fn half_close_keep_writing_sends_after_the_peer_fin_until_shutdown(mode: Mode) {
    let closes = Reasons::default();
    let server = start(mode, quick(), {
        let closes = Arc::clone(&closes);
        move |_| Trailer {
            closes: Arc::clone(&closes),
        }
    });
    let mut c = client(server.local_addr());
    c.write_all(b"hello\n").expect("write");
    c.shutdown(Shutdown::Write).expect("FIN");
    let fin_sent = Instant::now();
    let (got, ending) = read_until_closed(&mut c, LIMIT);
    assert_eq!(
        lines(&got),
        "hello\ntick 1\ntick 2\ntick 3\n",
        "{mode:?}: what arrived after our FIN"
    );
    assert_eq!(ending, Ending::Eof, "{mode:?}: how the server ended");
    assert!(
        fin_sent.elapsed() >= TICK * 3 - Duration::from_millis(10),
        "{mode:?}: the server's FIN came before its last tick"
    );
    wait_until(&format!("{mode:?}: on_close"), || {
        !reasons_of(&closes).is_empty()
    });
    let total = stop_and_total(server, mode);
    assert_eq!(
        reasons_of(&closes),
        [CloseReason::PeerClosed],
        "{mode:?}: reasons given to on_close"
    );
    assert_eq!(
        total.closed_for(CloseReason::PeerClosed),
        1,
        "{mode:?}: peer-closed closes: {:?}",
        total.closed
    );
}

// -------------------------------------------------------- protocol error, panic

/// Echoes lines; "bad" breaks the protocol, "boom" panics. Records every
/// close reason.
struct Lines {
    closes: Reasons,
}

impl Handler for Lines {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        while let Some(end) = conn.input().iter().position(|&b| b == b'\n') {
            let line = conn.input()[..=end].to_vec();
            conn.consume(end + 1);
            match line.as_slice() {
                b"bad\n" => {
                    conn.abort(CloseReason::Protocol("bad_input"));
                    return;
                }
                b"boom\n" => panic!("boom: a handler bug, on purpose"),
                _ => conn.write(&line),
            }
        }
    }

    fn on_close(&mut self, _: &mut Ctx<'_, ()>, _: ConnId, _: (), reason: CloseReason) {
        self.closes.lock().expect("lock").push(reason);
    }
}

fn start_lines(mode: Mode) -> (Server<()>, Reasons) {
    let closes = Reasons::default();
    let server = start(mode, quick(), {
        let closes = Arc::clone(&closes);
        move |_| Lines {
            closes: Arc::clone(&closes),
        }
    });
    (server, closes)
}

fn protocol_error_reaches_stats_and_on_close_by_name(mode: Mode) {
    let (server, closes) = start_lines(mode);
    let addr = server.local_addr();
    let mut good = client(addr);
    let mut bad = client(addr);
    round_trip(&mut bad, b"fine\n", &format!("{mode:?}: bad client"));
    bad.write_all(b"bad\n").expect("write");
    let (got, ending) = read_until_closed(&mut bad, LIMIT);
    assert!(got.is_empty(), "{mode:?}: got {:?}", lines(&got));
    assert_ne!(
        ending,
        Ending::Open,
        "{mode:?}: a protocol error did not close the connection"
    );
    round_trip(&mut good, b"fine\n", &format!("{mode:?}: good client"));
    drop(good);
    wait_until(&format!("{mode:?}: both closes"), || {
        reasons_of(&closes).len() == 2
    });
    let total = stop_and_total(server, mode);
    let reasons = reasons_of(&closes);
    let bad_input = reasons
        .iter()
        .filter(|r| matches!(r, CloseReason::Protocol(name) if *name == "bad_input"))
        .count();
    assert_eq!(
        bad_input, 1,
        "{mode:?}: on_close reasons {reasons:?}, expected Protocol(\"bad_input\") once"
    );
    assert!(
        reasons.contains(&CloseReason::PeerClosed),
        "{mode:?}: on_close reasons {reasons:?}, expected PeerClosed for the good client"
    );
    assert_eq!(
        total.closed_for(CloseReason::Protocol("any")),
        1,
        "{mode:?}: protocol-error closes: {:?}",
        total.closed
    );
    assert_eq!(
        total.closed_for(CloseReason::Closed),
        0,
        "{mode:?}: a protocol error was counted as a plain close: {:?}",
        total.closed
    );
}

fn handler_panic_costs_its_connection_only(mode: Mode) {
    const TALKERS: usize = 8;
    let (server, closes) = start_lines(mode);
    let addr = server.local_addr();
    let ready = Arc::new(AtomicUsize::new(0));
    let boomed = Arc::new(AtomicBool::new(false));
    // Eight clients in conversation before, during and after the panic.
    let talkers: Vec<_> = (0..TALKERS)
        .map(|t| {
            let (ready, boomed) = (Arc::clone(&ready), Arc::clone(&boomed));
            thread::spawn(move || {
                let mut c = client(addr);
                let (mut n, mut after) = (0, 0);
                while after < 5 {
                    let was_boomed = boomed.load(Ordering::SeqCst);
                    round_trip(
                        &mut c,
                        format!("talker {t} line {n}\n").as_bytes(),
                        &format!("{mode:?}: talker {t}, line {n}"),
                    );
                    n += 1;
                    if n == 3 {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                    if was_boomed {
                        after += 1;
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    wait_until(&format!("{mode:?}: talkers started"), || {
        ready.load(Ordering::SeqCst) == TALKERS
    });
    let mut victim = client(addr);
    round_trip(&mut victim, b"before\n", &format!("{mode:?}: victim"));
    victim.write_all(b"boom\n").expect("write");
    let (got, ending) = read_until_closed(&mut victim, LIMIT);
    assert!(got.is_empty(), "{mode:?}: got {:?}", lines(&got));
    assert_ne!(
        ending,
        Ending::Open,
        "{mode:?}: the panicking connection was not closed"
    );
    boomed.store(true, Ordering::SeqCst);
    for (t, talker) in talkers.into_iter().enumerate() {
        talker
            .join()
            .unwrap_or_else(|_| panic!("{mode:?}: talker {t} was disturbed by the panic"));
    }
    for n in 0..4 {
        let mut c = client(addr);
        round_trip(
            &mut c,
            b"new after the panic\n",
            &format!("{mode:?}: new client {n}"),
        );
    }
    let total = stop_and_total(server, mode);
    assert_eq!(total.handler_panics, 1, "{mode:?}: handler panics");
    assert_eq!(
        total.closed_for(CloseReason::HandlerPanic),
        1,
        "{mode:?}: handler-panic closes: {:?}",
        total.closed
    );
    let reasons = reasons_of(&closes);
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == CloseReason::HandlerPanic)
            .count(),
        1,
        "{mode:?}: on_close reasons {reasons:?}"
    );
}

// ---------------------------------------------------------------------- timers

/// Arms two timers per connection on open; "cancel" cancels the later one.
/// Every timer that fires writes a line and is recorded.
struct Timed {
    fired: Arc<Mutex<Vec<u64>>>,
}

#[derive(Default)]
struct Doomed(Option<TimerId>);

const FIRES: Duration = Duration::from_millis(100);
const CANCELLED: Duration = Duration::from_millis(300);

impl Handler for Timed {
    type State = Doomed;

    fn on_open(&mut self, conn: &mut Conn<'_, Doomed>) {
        conn.set_timer(FIRES, 1);
        let doomed = conn.set_timer(CANCELLED, 2);
        conn.state().0 = Some(doomed);
    }

    fn on_data(&mut self, conn: &mut Conn<'_, Doomed>) {
        while let Some(end) = conn.input().iter().position(|&b| b == b'\n') {
            let cancel = &conn.input()[..=end] == b"cancel\n";
            conn.consume(end + 1);
            if cancel && let Some(timer) = conn.state().0.take() {
                // In the one-shot mode another worker may hold the timer, so
                // whether it was armed *here* is not asserted.
                conn.cancel_timer(timer);
                conn.write(b"cancelled\n");
            }
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, Doomed>, _: TimerId, data: u64) {
        self.fired.lock().expect("lock").push(data);
        conn.write(format!("fired {data}\n").as_bytes());
    }
}

fn user_timers_fire_and_a_cancelled_one_never_does(mode: Mode) {
    const CLIENTS: usize = 8;
    let fired = Arc::new(Mutex::new(Vec::new()));
    let server = start(mode, quick(), {
        let fired = Arc::clone(&fired);
        move |_| Timed {
            fired: Arc::clone(&fired),
        }
    });
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| client(addr)).collect();
    let opened = Instant::now();
    for c in &mut clients {
        c.write_all(b"cancel\n").expect("write");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < "cancelled\nfired 1\n".len() {
            match c.read(&mut buf) {
                Ok(0) => panic!("{mode:?}: client {i} closed"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{mode:?}: client {i}: {e} after {:?}", lines(&got)),
            }
        }
        let text = lines(&got);
        assert!(
            text == "cancelled\nfired 1\n" || text == "fired 1\ncancelled\n",
            "{mode:?}: client {i} got {text:?}"
        );
    }
    // Past the cancelled timer's deadline, with a margin.
    let past = CANCELLED + Duration::from_millis(300);
    thread::sleep(past.saturating_sub(opened.elapsed()));
    for (i, c) in clients.iter_mut().enumerate() {
        let (got, ending) = read_until_closed(c, Duration::from_millis(20));
        assert_eq!(
            (lines(&got), ending),
            (String::new(), Ending::Open),
            "{mode:?}: client {i} after the cancelled timer's deadline"
        );
    }
    stop_and_total(server, mode);
    let fired = fired.lock().expect("lock").clone();
    assert_eq!(
        fired,
        vec![1; CLIENTS],
        "{mode:?}: timers fired (2 is the cancelled one)"
    );
}

// ------------------------------------------------------------------- dead loop

fn a_dead_loop_stops_the_whole_server(mode: Mode) {
    let server = start(mode, quick(), |_| Echo);
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..4).map(|_| client(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        round_trip(c, b"alive\n", &format!("{mode:?}: client {i}"));
    }
    server.handles()[0].crash().expect("crash");
    let crashed = Instant::now();
    let joined = join_within(server, mode);
    assert!(
        matches!(&joined, Err(Error::LoopDied(why)) if why.contains("crashed on purpose")),
        "{mode:?}: join returned {joined:?} after a loop crashed"
    );
    assert!(
        crashed.elapsed() < Duration::from_secs(3),
        "{mode:?}: the server took {:?} to stop",
        crashed.elapsed()
    );
    for (i, c) in clients.iter_mut().enumerate() {
        let (_, ending) = read_until_closed(c, LIMIT);
        assert_ne!(
            ending,
            Ending::Open,
            "{mode:?}: client {i} still open after the server stopped"
        );
    }
    match TcpStream::connect(addr) {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "{mode:?}: connecting after the crash: {e}"
        ),
        Ok(mut late) => {
            late.write_all(b"anyone?\n").ok();
            let (got, ending) = read_until_closed(&mut late, LIMIT);
            assert!(
                got.is_empty() && ending != Ending::Open,
                "{mode:?}: a connection made after the crash was served ({got:?}, {ending:?})"
            );
        }
    }
}

// ------------------------------------------------------------- drain refill

/// Streams `REFILL_TOTAL` bytes of stream 0 to every client, refilling its
/// output on every drain notice (a file server's way), then sends FIN.
struct Refill;

/// Bytes queued so far on a connection.
#[derive(Default)]
struct Queued(usize);

const REFILL_TOTAL: usize = 32 << 20;
const REFILL_CHUNK: usize = 64 * 1024;

impl Refill {
    fn fill(conn: &mut Conn<'_, Queued>) {
        let mut chunk = vec![0u8; REFILL_CHUNK];
        while !conn.is_full() {
            let at = conn.state().0;
            let n = REFILL_CHUNK.min(REFILL_TOTAL - at);
            if n == 0 {
                return;
            }
            fill(0, at, &mut chunk[..n]);
            conn.write(&chunk[..n]);
            conn.state().0 = at + n;
            if at + n == REFILL_TOTAL {
                conn.shutdown();
            }
        }
    }
}

impl Handler for Refill {
    type State = Queued;

    fn on_open(&mut self, conn: &mut Conn<'_, Queued>) {
        // Small marks, so the stream runs on drain notices alone.
        conn.set_water_marks(256 * 1024, 64 * 1024);
        Self::fill(conn);
    }

    fn on_data(&mut self, conn: &mut Conn<'_, Queued>) {
        let n = conn.input().len();
        conn.consume(n);
    }

    fn on_drained(&mut self, conn: &mut Conn<'_, Queued>) {
        Self::fill(conn);
    }
}

/// A drain that happens while the turn's drain notices are delivered is
/// told in the next turn; a lost notice stalls the stream for good (the
/// handler writes only when told). In the one-shot mode the worker must
/// keep the connection until that turn.
fn a_handler_refilling_on_every_drain_streams_to_the_end(mode: Mode) {
    let server = start(mode, quick(), |_| Refill);
    let mut c = client(server.local_addr());
    let (got, ending) = read_until_closed(&mut c, LIMIT);
    assert_eq!(
        got.len(),
        REFILL_TOTAL,
        "{mode:?}: bytes streamed before the stream ended ({ending:?})"
    );
    assert_eq!(first_wrong(0, 0, &got), None, "{mode:?}: wrong byte");
    assert_eq!(ending, Ending::Eof, "{mode:?}: how the stream ended");
    stop_and_total(server, mode);
}
