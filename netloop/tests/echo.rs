//! The echo server under load and at its edges, over real loopback sockets.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use netloop::echo::Echo;
use netloop::{CloseReason, Config, Conn, EventLoop, Handler, PoolFullPolicy, Trigger};
use support::{
    Amplify, Rng, Running, connect, echo_clients, payloads, raise_nofile_limit, read_exact,
    turn_for, turn_until,
};

const LIMIT: Duration = Duration::from_secs(60);
const MIB: usize = 1024 * 1024;

/// An echo server on its own thread.
fn echo_server(config: Config) -> Running<()> {
    Running::start(config, Echo)
}

/// Runs `threads` client threads sharing `all` payloads against `addr`.
fn run_clients(addr: SocketAddr, all: Vec<Vec<u8>>, threads: usize) -> usize {
    let per_thread = all.len().div_ceil(threads);
    let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut all = all.into_iter().peekable();
    while all.peek().is_some() {
        chunks.push(all.by_ref().take(per_thread).collect());
    }
    let workers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| thread::spawn(move || echo_clients(addr, chunk, LIMIT)))
        .collect();
    workers.into_iter().map(|w| w.join().expect("client")).sum()
}

#[test]
fn echo_1000_concurrent_connections_random_sizes_up_to_1_mib_every_byte_checked() {
    raise_nofile_limit();
    let server = echo_server(Config::default());
    let all = payloads(1000, MIB, 0x5eed);
    let expected: usize = all.iter().map(Vec::len).sum();
    assert!(
        all.iter().any(|p| p.len() > MIB / 2),
        "the sizes reach the top of the range"
    );

    let echoed = run_clients(server.addr, all, 2);

    assert_eq!(echoed, expected);
    let stats = server.finish();
    assert_eq!(stats.accepted, 1000);
    assert_eq!(stats.bytes_read, expected as u64);
    assert_eq!(stats.bytes_written, expected as u64);
    assert_eq!(stats.closed_total(), 1000);
    assert_eq!(stats.stale_events, 0);
}

#[test]
fn echo_level_triggered_every_byte_checked() {
    raise_nofile_limit();
    let config = Config {
        trigger: Trigger::Level,
        ..Config::default()
    };
    let server = echo_server(config);
    let all = payloads(300, MIB, 0x1e7e1);
    let expected: usize = all.iter().map(Vec::len).sum();
    assert_eq!(run_clients(server.addr, all, 2), expected);
    let stats = server.finish();
    assert_eq!(stats.accepted, 300);
    assert_eq!(stats.bytes_written, expected as u64);
}

#[test]
fn half_close_peer_fin_still_gets_all_queued_output_then_close() {
    let mut event_loop = EventLoop::new(Config::default(), Echo).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let mut client = connect(addr);
    let payload = Rng::new(7).bytes(3 * MIB);
    client.write_all(&payload[..64 * 1024]).expect("write");
    // The rest goes from another thread while the loop runs here; then FIN.
    let mut writer = client.try_clone().expect("clone");
    let rest = payload[64 * 1024..].to_vec();
    let sender = thread::spawn(move || {
        writer.write_all(&rest).expect("write rest");
        writer.shutdown(Shutdown::Write).expect("shutdown");
    });
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("read to EOF");
        got
    });
    turn_until(&mut event_loop, LIMIT, |l| l.stats().closed_total() == 1);
    sender.join().expect("sender");
    let got = reader.join().expect("reader");
    assert_eq!(
        got.len(),
        payload.len(),
        "everything queued before FIN was delivered"
    );
    assert!(got == payload);
    assert_eq!(event_loop.stats().closed_for(CloseReason::PeerClosed), 1);
}

/// Answers the first message with "bye" and half-closes; counts later input.
#[derive(Default)]
struct SayByeThenShutdown {
    later_bytes: usize,
}

impl Handler for SayByeThenShutdown {
    type State = bool;

    fn on_data(&mut self, conn: &mut Conn<'_, bool>) {
        let n = conn.input().len();
        conn.consume(n);
        if *conn.state() {
            self.later_bytes += n;
            return;
        }
        *conn.state() = true;
        conn.write(b"bye");
        conn.shutdown();
    }
}

#[test]
fn shutdown_sends_fin_after_output_drains_and_keeps_reading() {
    let mut event_loop =
        EventLoop::new(Config::default(), SayByeThenShutdown::default()).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let mut client = connect(addr);
    client.write_all(b"hi").expect("write");
    turn_until(&mut event_loop, LIMIT, |l| l.stats().bytes_written == 3);
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("read to FIN");
    assert_eq!(got, b"bye");
    // Our side is half-closed: the server still reads what the client sends.
    client.write_all(b"still here").expect("write after FIN");
    turn_until(&mut event_loop, LIMIT, |l| l.handler().later_bytes == 10);
    assert_eq!(event_loop.connection_count(), 1);
    drop(client);
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 0);
    assert_eq!(event_loop.stats().closed_for(CloseReason::PeerClosed), 1);
}

#[test]
fn idle_timeout_closes_silent_connections_only() {
    let config = Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let mut event_loop = EventLoop::new(config, Echo).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let mut silent = connect(addr);
    let mut chatty = connect(addr);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(900) {
        chatty.write_all(b"ping").expect("chatty write");
        turn_for(&mut event_loop, Duration::from_millis(60));
        assert_eq!(read_exact(&mut chatty, 4), b"ping");
    }
    assert_eq!(event_loop.stats().closed_for(CloseReason::IdleTimeout), 1);
    assert_eq!(
        event_loop.connection_count(),
        1,
        "the active connection stays"
    );
    let mut buf = [0u8; 1];
    assert_eq!(
        silent.read(&mut buf).expect("EOF"),
        0,
        "the silent one got FIN"
    );
    drop(chatty);
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 0);
}

#[test]
fn backpressure_a_peer_that_never_reads_does_not_grow_server_memory() {
    let high_water = MIB;
    let config = Config {
        high_water,
        low_water: high_water / 4,
        ..Config::default()
    };
    let mut event_loop = EventLoop::new(config.clone(), Echo).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_nonblocking(true).expect("nonblocking");
    let chunk = Rng::new(3).bytes(256 * 1024);
    let goal = 1024 * MIB;
    let mut sent = 0usize;
    let mut stalled_turns = 0;
    let mut peak = 0;
    while sent < goal && stalled_turns < 300 {
        match client.write(&chunk[sent % chunk.len()..]) {
            Ok(n) => {
                sent += n;
                stalled_turns = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => stalled_turns += 1,
            Err(e) => panic!("write: {e}"),
        }
        event_loop
            .turn(Some(Duration::from_millis(1)))
            .expect("turn");
        peak = peak.max(event_loop.buffer_bytes());
    }
    assert!(
        sent < goal / 8,
        "the sender was held back (sent {sent} bytes)"
    );
    let bound = 2 * (high_water + config.read_budget) + 4 * config.buffer_size;
    assert!(
        peak <= bound,
        "server buffers peaked at {peak} bytes, bound {bound}"
    );

    // Once the peer reads, everything it sent comes back and reading resumes.
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + LIMIT;
    while received < sent {
        assert!(
            Instant::now() < deadline,
            "echo stalled at {received} of {sent}"
        );
        match client.read(&mut buf) {
            Ok(0) => panic!("closed early"),
            Ok(n) => {
                let wrong = (0..n).find(|i| buf[*i] != chunk[(received + i) % chunk.len()]);
                assert_eq!(wrong, None, "wrong byte near offset {received}");
                received += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        event_loop
            .turn(Some(Duration::from_millis(1)))
            .expect("turn");
    }
    assert_eq!(received, sent);
}

#[test]
fn pool_full_accept_and_close_is_counted_and_disturbs_nobody() {
    let config = Config {
        max_connections: 3,
        pool_full: PoolFullPolicy::AcceptAndClose,
        ..Config::default()
    };
    let mut event_loop = EventLoop::new(config, Echo).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 3);
    let mut extra = connect(addr);
    turn_until(&mut event_loop, LIMIT, |l| {
        l.stats().closed_for(CloseReason::PoolFull) == 1
    });
    let mut buf = [0u8; 1];
    match extra.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the extra connection was not closed: {other:?}"),
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&[i as u8; 10]).expect("write");
    }
    turn_for(&mut event_loop, Duration::from_millis(50));
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(read_exact(client, 10), [i as u8; 10]);
    }
    assert_eq!(event_loop.stats().accepted, 3);
}

#[test]
fn pool_full_leave_in_backlog_serves_the_waiting_connection_when_a_slot_frees() {
    let config = Config {
        max_connections: 2,
        pool_full: PoolFullPolicy::LeaveInBacklog,
        ..Config::default()
    };
    let mut event_loop = EventLoop::new(config, Echo).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let first = connect(addr);
    let _second = connect(addr);
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 2);
    let mut waiting = connect(addr);
    waiting.write_all(b"queued").expect("write");
    let waits_before = event_loop.stats().wait_calls;
    turn_for(&mut event_loop, Duration::from_millis(200));
    assert_eq!(
        event_loop.stats().accepted,
        2,
        "the third waits in the backlog"
    );
    assert!(
        event_loop.stats().wait_calls - waits_before < 100,
        "the loop does not spin on the waiting listener"
    );
    drop(first);
    turn_until(&mut event_loop, LIMIT, |l| l.stats().accepted == 3);
    turn_for(&mut event_loop, Duration::from_millis(20));
    assert_eq!(read_exact(&mut waiting, 6), b"queued");
    assert_eq!(event_loop.stats().closed_for(CloseReason::PoolFull), 0);
}

#[test]
fn stale_conn_id_is_a_clean_error_not_an_action_on_the_new_owner() {
    let mut event_loop =
        EventLoop::new(Config::default(), support::Recorder::default()).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let old_client = connect(addr);
    turn_until(&mut event_loop, LIMIT, |l| l.handler().opened().len() == 1);
    let (old, _) = event_loop.handler().opened()[0];
    drop(old_client);
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 0);
    let mut new_client = connect(addr);
    turn_until(&mut event_loop, LIMIT, |l| l.handler().opened().len() == 2);
    let (new, _) = event_loop.handler().opened()[1];
    assert_eq!(new.index(), old.index());

    let handle = event_loop.handle();
    let (tx, rx) = std::sync::mpsc::channel();
    handle
        .post(move |ctx| {
            let results = (ctx.conn(old).is_err(), ctx.is_open(old));
            tx.send(results).expect("send");
        })
        .expect("post");
    assert!(matches!(
        handle.write(old, b"also wrong".to_vec()),
        Err(netloop::Error::StaleConn(id)) if id == old
    ));
    assert!(matches!(
        handle.close(old),
        Err(netloop::Error::StaleConn(_))
    ));
    assert!(!handle.is_open(old));
    assert!(handle.is_open(new));
    turn_for(&mut event_loop, Duration::from_millis(50));
    assert_eq!(rx.recv().expect("results"), (true, false));
    assert_eq!(
        event_loop.connection_count(),
        1,
        "the new owner is still open"
    );
    new_client.write_all(b"ok").expect("write");
    turn_for(&mut event_loop, Duration::from_millis(30));
    assert_eq!(
        read_exact(&mut new_client, 2),
        b"ok",
        "nothing else was written to it"
    );
}

/// Answers the first byte with a large reply and closes.
struct FloodThenClose;

impl Handler for FloodThenClose {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let n = conn.input().len();
        conn.consume(n);
        conn.write(&vec![b'f'; 32 * MIB]);
        conn.close();
    }
}

#[test]
fn close_with_output_a_peer_never_reads_gives_up_after_the_close_timeout() {
    let config = Config {
        close_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let mut event_loop = EventLoop::new(config, FloodThenClose).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let mut client = connect(addr);
    client.write_all(b"go").expect("write");
    turn_until(&mut event_loop, LIMIT, |l| l.stats().bytes_written > 0);
    turn_for(&mut event_loop, Duration::from_millis(100));
    assert_eq!(event_loop.connection_count(), 1, "still delivering");
    let started = Instant::now();
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 0);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(event_loop.stats().closed_for(CloseReason::Closed), 1);
    assert!(
        event_loop.stats().bytes_written < 32 * MIB as u64,
        "it never drained"
    );
}

#[test]
fn a_fin_that_arrives_while_reading_is_paused_is_not_lost() {
    // The peer sends more than the high-water mark, the server pauses
    // reading, then the FIN arrives, and only then does the peer read: the
    // FIN's event comes while reading is paused.
    let config = Config {
        high_water: 64 * 1024,
        low_water: 16 * 1024,
        ..Config::default()
    };
    let mut event_loop = EventLoop::new(config, Echo).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let mut client = connect(addr);
    // Small enough for the kernel to take it all without the server reading.
    let payload = Rng::new(9).bytes(512 * 1024);
    client.write_all(&payload).expect("write");
    turn_for(&mut event_loop, Duration::from_millis(100));
    client.shutdown(Shutdown::Write).expect("FIN");
    turn_for(&mut event_loop, Duration::from_millis(50));
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        client
            .read_to_end(&mut got)
            .expect("read to the server's close");
        got
    });
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 0);
    let got = reader.join().expect("reader");
    assert!(got == payload, "everything echoed, then closed");
    assert_eq!(event_loop.stats().closed_for(CloseReason::PeerClosed), 1);
}

#[test]
fn level_triggered_loop_does_not_spin_on_a_half_closed_peer_that_never_reads() {
    let config = Config {
        trigger: Trigger::Level,
        ..Config::default()
    };
    let server = Running::start(config, Amplify);
    let mut c = TcpStream::connect(server.addr).expect("connect");
    // 6.4 MiB of replies the peer will never read, then its FIN.
    c.write_all(&[b'?'; 100]).expect("write");
    c.shutdown(Shutdown::Write).expect("FIN");
    thread::sleep(Duration::from_millis(300));
    let before = server.stats().wait_calls;
    thread::sleep(Duration::from_secs(1));
    let waits = server.stats().wait_calls - before;
    assert!(
        waits < 100,
        "the loop sleeps instead of being woken by RDHUP ({waits} waits in 1 s)"
    );
    server.finish();
    drop(c);
}
