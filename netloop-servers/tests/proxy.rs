//! `netloop_servers::proxy` over real loopback sockets: relaying every byte,
//! half-close, backpressure with bounded memory, retries, passive health,
//! errors across the pair, balancing, the idle timeout and churn, on one
//! loop and on four.

mod proxy_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use netloop::{CloseReason, Config, EventLoop};
use netloop_servers::codec::proxy_protocol::{
    ProxyDecoder, ProxyHeader, V2_SIGNATURE, Version, encode,
};
use netloop_servers::proxy::{Balance, HealthPolicy, ProxyConfig};
use proxy_support::*;

fn config(upstreams: &[SocketAddr]) -> ProxyConfig {
    ProxyConfig::new(upstreams.to_vec())
}

/// Sizes from 1 byte to 1 MiB, spread log-uniformly, from `seed`.
fn sizes(count: usize, seed: u64) -> Vec<usize> {
    let mut x = seed.max(1);
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let exp = (x % 2001) as f64 / 100.0; // 0..=20
            (2f64.powf(exp) as usize).clamp(1, MIB)
        })
        .collect()
}

#[test]
fn relays_random_sizes_up_to_1_mib_every_byte_checked() {
    let (a, b) = (Echo::start(), Echo::start());
    let proxy = Running::start(config(&[a.addr, b.addr]), 1);
    let mut sizes = sizes(24, 7);
    sizes.push(MIB);
    for (i, size) in sizes.into_iter().enumerate() {
        let payload = pattern(i as u64, size);
        echo_session(proxy.addr, &payload).unwrap_or_else(|e| panic!("session {i}: {e}"));
    }
    proxy.wait_idle();
    let stats = proxy.stop();
    assert_eq!(stats.closed_for(CloseReason::Reset), 0);
}

#[test]
fn client_half_close_the_request_and_fin_arrive_and_the_reply_still_flows_back() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let request = pattern(1, 300 * KIB);
    let reply = pattern(2, 700 * KIB);
    let server_reply = reply.clone();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).expect("request up to EOF");
        // Only after the client's FIN came through.
        stream.write_all(&server_reply).expect("reply");
        got
    });
    let proxy = Running::start(config(&[upstream]), 1);
    let mut client = connect(proxy.addr);
    client.write_all(&request).expect("request");
    client.shutdown(Shutdown::Write).expect("FIN");
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("reply up to EOF");
    assert!(
        server.join().expect("server") == request,
        "request, then EOF"
    );
    assert!(got == reply, "the reply after the client's FIN");
    proxy.wait_idle();
}

#[test]
fn upstream_half_close_the_banner_and_fin_arrive_and_the_client_still_sends() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let banner = pattern(3, 200 * KIB);
    let later = pattern(4, 500 * KIB);
    let server_banner = banner.clone();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        stream.write_all(&server_banner).expect("banner");
        stream.shutdown(Shutdown::Write).expect("FIN");
        let mut got = Vec::new();
        stream
            .read_to_end(&mut got)
            .expect("what the client sends after");
        got
    });
    let proxy = Running::start(config(&[upstream]), 1);
    let mut client = connect(proxy.addr);
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("banner up to EOF");
    assert!(got == banner, "banner, then EOF");
    client.write_all(&later).expect("send after EOF");
    client.shutdown(Shutdown::Write).expect("FIN");
    assert!(server.join().expect("server") == later, "still relayed");
    proxy.wait_idle();
}

/// What one side pushes at a side that never reads, and how long no
/// progress counts as stalled.
const FLOOD: usize = 256 * MIB;

/// Water marks small enough that the kernel's buffers, not the proxy's,
/// hold what is in flight.
fn small_water() -> Config {
    Config {
        high_water: 256 * KIB,
        low_water: 64 * KIB,
        ..Config::default()
    }
}

#[test]
fn backpressure_a_client_that_never_reads_stalls_a_256_mib_upstream_push_in_bounded_memory() {
    const SEED: u64 = 0xa1;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&sent);
    let source = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_write_timeout(Some(LIMIT)).expect("timeout");
        let mut chunk = vec![0u8; 256 * KIB];
        let mut offset = 0;
        while offset < FLOOD {
            let len = chunk.len().min(FLOOD - offset);
            fill(SEED, offset, &mut chunk[..len]);
            offset += stream.write(&chunk[..len]).expect("upstream write");
            progress.store(offset, Ordering::SeqCst);
        }
    });
    let base = small_water();
    let (mut event_loop, addr) = proxy_loop(config(&[upstream]), base.clone());
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_nonblocking(true).expect("nonblocking");

    let mut peak = 0;
    let stalled = turn_until_stalled(&mut event_loop, &mut peak, || sent.load(Ordering::SeqCst));
    assert!(
        stalled < FLOOD / 4,
        "the upstream was held back (sent {stalled})"
    );
    assert!(peak <= memory_bound(&base), "peak {peak} while stalled");

    let mut received = 0;
    let mut buf = vec![0u8; MIB];
    let deadline = Instant::now() + 6 * LIMIT;
    loop {
        assert!(Instant::now() < deadline, "stuck at {received} of {FLOOD}");
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                assert_eq!(first_wrong(SEED, received, &buf[..n]), None);
                received += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
        event_loop.turn(Some(Duration::ZERO)).expect("turn");
        peak = peak.max(event_loop.buffer_bytes());
    }
    assert_eq!(received, FLOOD, "every byte, in order, then EOF");
    assert!(peak <= memory_bound(&base), "peak {peak} while relaying");
    source.join().expect("upstream");
}

#[test]
fn backpressure_an_upstream_that_never_reads_stalls_a_256_mib_client_push_in_bounded_memory() {
    const SEED: u64 = 0xa2;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let (go, wait) = mpsc::channel::<()>();
    let sink = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        wait.recv_timeout(LIMIT).expect("go");
        let (mut received, mut wrong) = (0, None);
        let mut buf = vec![0u8; MIB];
        loop {
            let n = stream.read(&mut buf).expect("upstream read");
            if n == 0 {
                return (received, wrong);
            }
            wrong = wrong.or(first_wrong(SEED, received, &buf[..n]));
            received += n;
        }
    });
    let base = small_water();
    let (mut event_loop, addr) = proxy_loop(config(&[upstream]), base.clone());
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_nonblocking(true).expect("nonblocking");
    let mut chunk = vec![0u8; 256 * KIB];
    let mut push = |client: &mut TcpStream, sent: usize| {
        let len = chunk.len().min(FLOOD - sent);
        fill(SEED, sent, &mut chunk[..len]);
        match client.write(&chunk[..len]) {
            Ok(n) => sent + n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => sent,
            Err(e) => panic!("write: {e}"),
        }
    };

    let mut peak = 0;
    let mut sent = 0;
    let stalled = turn_until_stalled(&mut event_loop, &mut peak, || {
        sent = push(&mut client, sent);
        sent
    });
    assert!(
        stalled < FLOOD / 4,
        "the client was held back (sent {stalled})"
    );
    assert!(peak <= memory_bound(&base), "peak {peak} while stalled");

    go.send(()).expect("go");
    let deadline = Instant::now() + 6 * LIMIT;
    while sent < FLOOD {
        assert!(Instant::now() < deadline, "stuck at {sent} of {FLOOD}");
        sent = push(&mut client, sent);
        event_loop.turn(Some(Duration::ZERO)).expect("turn");
        peak = peak.max(event_loop.buffer_bytes());
    }
    client.shutdown(Shutdown::Write).expect("FIN");
    turn_until(&mut event_loop, |l| {
        peak = peak.max(l.buffer_bytes());
        sink.is_finished()
    });
    assert_eq!(sink.join().expect("upstream"), (FLOOD, None));
    assert!(peak <= memory_bound(&base), "peak {peak} while relaying");
}

#[test]
fn refused_and_timed_out_connects_are_retried_on_the_next_upstream_with_no_client_failure() {
    let (_hole, _filler, silent) = blackhole();
    let (a, b) = (Echo::start(), Echo::start());
    let mut cfg = config(&[refused_addr(), a.addr, silent, refused_addr(), b.addr]);
    // Every pick may land on a bad upstream: health off, so each is tried.
    cfg.health.max_fails = 0;
    cfg.connect_timeout = Duration::from_millis(200);
    let proxy = Running::start(cfg, 1);
    for i in 0..15 {
        echo_session(proxy.addr, &pattern(i, 1000)).unwrap_or_else(|e| panic!("client {i}: {e}"));
    }
    assert_eq!(
        a.accepted() + b.accepted(),
        15,
        "every session reached a live upstream"
    );
    let counters = proxy.shared.counters();
    assert!(counters.retries.load(Ordering::SeqCst) >= 9, "{counters:?}");
    assert_eq!(counters.no_upstream.load(Ordering::SeqCst), 0);
    let snapshot = proxy.shared.upstreams().snapshot();
    assert!(
        snapshot[2].failures >= 3,
        "the silent one timed out: {snapshot:?}"
    );
    proxy.wait_idle();
}

#[test]
fn when_every_upstream_fails_the_client_is_closed_at_once() {
    let proxy = Running::start(config(&[refused_addr(), refused_addr()]), 1);
    for _ in 0..3 {
        let started = Instant::now();
        let mut client = connect(proxy.addr);
        wait_for_end(&mut client, LIMIT).expect("closed");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let counters = proxy.shared.counters();
    assert_eq!(counters.no_upstream.load(Ordering::SeqCst), 3);
    proxy.wait_idle();
    let snapshot = proxy.shared.upstreams().snapshot();
    let stats = proxy.stop();
    // The clients' reason; the upstreams' failed connects count there too.
    let failures: u64 = proxy_failures(&snapshot);
    assert_eq!(stats.closed_for(CloseReason::ConnectFailed), 3 + failures);
}

/// Failed connects over the whole group.
fn proxy_failures(snapshot: &[netloop_servers::proxy::UpstreamStats]) -> u64 {
    snapshot.iter().map(|u| u.failures).sum()
}

/// Passive health on `threads` loops: a refused upstream is tried once,
/// skipped by every loop for `fail_timeout`, then tried again.
fn passive_health(threads: usize) {
    let dead = refused_addr();
    let live = Echo::start();
    let mut cfg = config(&[dead, live.addr]);
    cfg.health = HealthPolicy {
        max_fails: 1,
        fail_timeout: Duration::from_millis(800),
    };
    let proxy = Running::start(cfg, threads);
    let picked = |i: usize| proxy.shared.upstreams().snapshot()[i].picked;
    let started = Instant::now();
    for i in 0..20 {
        echo_session(proxy.addr, &pattern(i, 100)).expect("session");
    }
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "too slow to test"
    );
    assert_eq!(picked(0), 1, "tried once, then skipped by every loop");
    assert!(proxy.shared.upstreams().snapshot()[0].down);
    thread::sleep(Duration::from_millis(900));
    for i in 0..4 {
        echo_session(proxy.addr, &pattern(i, 100)).expect("session");
    }
    assert_eq!(picked(0), 2, "tried again after fail_timeout, once");
    assert_eq!(live.accepted(), 24, "no client failed");
}

#[test]
fn passive_health_skips_a_failed_upstream_for_fail_timeout_then_tries_it_again() {
    passive_health(1);
}

#[test]
fn passive_health_on_four_threads_behaves_as_on_one() {
    passive_health(4);
}

/// A proxy loop with one session up through an upstream that answers
/// "ping" with "pong"; returns the loop, the client, and the upstream's
/// socket.
fn session_up() -> (EventLoop<Logged>, TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let (mut event_loop, addr) = proxy_loop(config(&[upstream]), Config::default());
    let mut client = connect(addr);
    client.set_nonblocking(true).expect("nonblocking");
    client.write_all(b"ping").expect("ping");
    let mut server = None;
    listener.set_nonblocking(true).expect("nonblocking");
    let mut got = Vec::new();
    turn_until(&mut event_loop, |_| {
        if server.is_none()
            && let Ok((s, _)) = listener.accept()
        {
            s.set_nonblocking(true).expect("nonblocking");
            server = Some(s);
        }
        if let Some(s) = server.as_mut() {
            let mut buf = [0u8; 4];
            if let Ok(n) = s.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got == b"ping"
    });
    let mut server = server.expect("accepted");
    server.write_all(b"pong").expect("pong");
    let mut pong = Vec::new();
    turn_until(&mut event_loop, |_| {
        let mut buf = [0u8; 4];
        if let Ok(n) = client.read(&mut buf) {
            pong.extend_from_slice(&buf[..n]);
        }
        pong == b"pong"
    });
    (event_loop, client, server)
}

/// Turns until both of the session's connections closed; returns their
/// closes, client first.
fn both_closed(event_loop: &mut EventLoop<Logged>) -> (Closed, Closed) {
    let closes = Arc::clone(&event_loop.handler().closes);
    turn_until(event_loop, |_| closes.lock().expect("closes").len() == 2);
    let closes = closes.lock().expect("closes");
    let client = *closes.iter().find(|c| !c.outbound).expect("client");
    let upstream = *closes.iter().find(|c| c.outbound).expect("upstream");
    (client, upstream)
}

#[test]
fn an_upstream_reset_mid_session_resets_the_client_in_the_same_turn() {
    let (mut event_loop, mut client, server) = session_up();
    reset(server);
    let (c, u) = both_closed(&mut event_loop);
    assert_eq!(u.reason, CloseReason::Reset);
    assert_eq!(c.turn, u.turn, "in the upstream's turn");
    client.set_nonblocking(false).expect("blocking");
    assert_eq!(
        wait_for_end(&mut client, LIMIT),
        Ok(true),
        "the client was reset too"
    );
}

#[test]
fn a_client_reset_resets_its_upstream_in_the_same_turn() {
    let (mut event_loop, client, mut server) = session_up();
    reset(client);
    let (c, u) = both_closed(&mut event_loop);
    assert_eq!(c.reason, CloseReason::Reset);
    assert_eq!(c.turn, u.turn, "in the client's turn");
    server.set_nonblocking(false).expect("blocking");
    assert_eq!(
        wait_for_end(&mut server, LIMIT),
        Ok(true),
        "the upstream was reset too"
    );
}

#[test]
fn an_upstream_that_dies_mid_session_closes_the_client_in_the_same_turn() {
    let (mut event_loop, mut client, server) = session_up();
    // A process that dies closes its sockets: FIN, then RST to what follows.
    drop(server);
    client.write_all(b"more").expect("write");
    let (c, u) = both_closed(&mut event_loop);
    assert_eq!(c.turn, u.turn, "in the same turn");
    client.set_nonblocking(false).expect("blocking");
    assert!(
        wait_for_end(&mut client, LIMIT).is_ok(),
        "the client saw the end"
    );
}

/// Round-robin spreads sequential sessions evenly over the group, with
/// `threads` loops sharing one position.
fn spreads_evenly(threads: usize) {
    let echoes: Vec<Echo> = (0..4).map(|_| Echo::start()).collect();
    let addrs: Vec<SocketAddr> = echoes.iter().map(|e| e.addr).collect();
    let proxy = Running::start(config(&addrs), threads);
    for i in 0..40 {
        echo_session(proxy.addr, &pattern(i, 64)).expect("session");
    }
    let counts: Vec<usize> = echoes.iter().map(Echo::accepted).collect();
    assert_eq!(counts, [10; 4]);
}

#[test]
fn round_robin_spreads_evenly() {
    spreads_evenly(1);
}

#[test]
fn round_robin_on_four_threads_spreads_as_evenly_as_on_one() {
    spreads_evenly(4);
}

#[test]
fn least_conn_sends_new_sessions_to_the_least_busy_upstream() {
    let (a, b) = (Echo::start(), Echo::start());
    let mut cfg = config(&[a.addr, b.addr]);
    cfg.balance = Balance::LeastConn;
    let proxy = Running::start(cfg, 2);
    // Two long sessions, one on each upstream, then a third on A.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = connect(proxy.addr);
            c.write_all(b"x").expect("write");
            let mut one = [0u8; 1];
            c.read_exact(&mut one).expect("echo");
            assert_eq!(a.accepted() + b.accepted(), i + 1);
            c
        })
        .collect();
    let (busy, idle) = if a.accepted() == 2 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!((busy.accepted(), idle.accepted()), (2, 1));
    // Every short session goes to the upstream with one session, not two.
    for i in 0..6 {
        echo_session(proxy.addr, &pattern(i, 64)).expect("session");
    }
    assert_eq!((busy.accepted(), idle.accepted()), (2, 7));
    held.clear();
}

#[test]
fn hash_keeps_a_client_ip_on_one_upstream_and_spreads_ips() {
    let echoes: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let addrs: Vec<SocketAddr> = echoes.iter().map(|e| e.addr).collect();
    let mut cfg = config(&addrs);
    cfg.balance = Balance::Hash;
    let proxy = Running::start(cfg, 4);
    let mut used = [false; 3];
    for last in 1..=12u8 {
        let before: Vec<usize> = echoes.iter().map(Echo::accepted).collect();
        for _ in 0..4 {
            // From 127.0.0.<last>, a new source port each time.
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            let from = SocketAddr::from(([127, 0, 0, last], 0));
            socket.bind(&from.into()).expect("bind");
            socket.connect(&proxy.addr.into()).expect("connect");
            let mut stream = TcpStream::from(socket);
            stream.set_read_timeout(Some(LIMIT)).expect("timeout");
            stream.write_all(b"hi").expect("write");
            let mut two = [0u8; 2];
            stream.read_exact(&mut two).expect("echo");
        }
        let grew: Vec<usize> = echoes
            .iter()
            .zip(&before)
            .map(|(e, b)| e.accepted() - b)
            .collect();
        let target = grew.iter().position(|&g| g == 4);
        assert!(
            target.is_some(),
            "127.0.0.{last}: all four on one upstream: {grew:?}"
        );
        used[target.unwrap_or(0)] = true;
    }
    assert_eq!(used, [true; 3], "twelve IPs spread over the group");
}

#[test]
fn an_idle_session_is_closed_but_traffic_either_way_keeps_one_open() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    // The upstream of the second session ticks every 100 ms for 1.2 s.
    let ticker = thread::spawn(move || {
        let _silent = listener.accept().expect("accept the silent session's");
        let (mut stream, _) = listener.accept().expect("accept");
        for _ in 0..12 {
            stream.write_all(b"t").expect("tick");
            thread::sleep(Duration::from_millis(100));
        }
    });
    let mut cfg = config(&[upstream]);
    cfg.idle_timeout = Some(Duration::from_millis(300));
    let proxy = Running::start(cfg, 1);
    let started = Instant::now();
    let mut silent = connect(proxy.addr);
    thread::sleep(Duration::from_millis(50));
    let mut listening = connect(proxy.addr);
    assert!(wait_for_end(&mut silent, LIMIT).is_ok());
    let silent_after = started.elapsed();
    assert!(
        silent_after >= Duration::from_millis(300) && silent_after < Duration::from_millis(900),
        "a client that never sends is closed after the idle timeout ({silent_after:?})"
    );
    // It never sends either, but the upstream does.
    let mut ticks = [0u8; 12];
    listening
        .read_exact(&mut ticks)
        .expect("every tick, past the idle timeout");
    ticker.join().expect("ticker");
    assert!(wait_for_end(&mut listening, LIMIT).is_ok());
    let stats = proxy.stop();
    assert_eq!(
        stats.closed_for(CloseReason::IdleTimeout),
        4,
        "both sides of both sessions"
    );
}

#[test]
fn churn_sessions_end_and_reset_while_new_ones_arrive_every_byte_checked() {
    let echoes: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let addrs: Vec<SocketAddr> = echoes.iter().map(|e| e.addr).collect();
    let proxy = Running::start(config(&addrs), 2);
    let addr = proxy.addr;
    let workers: Vec<_> = (0..6u64)
        .map(|w| {
            thread::spawn(move || {
                for (i, size) in sizes(30, w + 100).into_iter().enumerate() {
                    let seed = w * 1000 + i as u64;
                    if i % 5 == 4 {
                        // Reset halfway: its upstream must go, nothing else.
                        let mut c = connect(addr);
                        c.write_all(&pattern(seed, size.min(64 * KIB)))
                            .expect("write");
                        reset(c);
                    } else {
                        let size = size.min(128 * KIB);
                        echo_session(addr, &pattern(seed, size))
                            .unwrap_or_else(|e| panic!("worker {w} session {i}: {e}"));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    proxy.wait_idle();
    // A client reset while its upstream still connects takes that connect
    // with it, so only the 144 echoed sessions surely reached an upstream.
    let total: usize = echoes.iter().map(Echo::accepted).sum();
    assert!((144..=180).contains(&total), "{total} upstream connections");
}

/// An upstream that reads a PROXY header, then `payload_len` bytes, and
/// echoes those back; returns the raw header, what it says, and the payload.
fn header_upstream(
    listener: TcpListener,
    payload_len: usize,
) -> thread::JoinHandle<(Vec<u8>, ProxyHeader, Vec<u8>)> {
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut decoder = ProxyDecoder::default();
        let mut got = Vec::new();
        let decoded = loop {
            if let Some(decoded) = decoder.decode(&got).expect("a valid header") {
                break decoded;
            }
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).expect("header byte");
            got.push(byte[0]);
        };
        let mut payload = vec![0u8; payload_len];
        stream.read_exact(&mut payload).expect("payload");
        stream.write_all(&payload).expect("echo");
        (got, decoded.header, payload)
    })
}

fn upstream_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

#[test]
fn proxy_protocol_v1_is_sent_first_with_the_client_and_listening_addresses() {
    let (listener, upstream) = upstream_listener();
    let server = header_upstream(listener, 5);
    let mut cfg = config(&[upstream]);
    cfg.send_proxy = Some(Version::V1);
    let proxy = Running::start(cfg, 1);
    let mut client = connect(proxy.addr);
    // Sent before the upstream is even up: still after the header.
    client.write_all(b"hello").expect("write");
    let mut back = [0u8; 5];
    client.read_exact(&mut back).expect("echo");
    let (raw, _, payload) = server.join().expect("upstream");
    let local = client.local_addr().expect("addr");
    let want = format!(
        "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
        local.port(),
        proxy.addr.port()
    );
    assert_eq!(String::from_utf8_lossy(&raw), want);
    assert_eq!(payload, b"hello");
}

#[test]
fn proxy_protocol_v2_is_sent_first_with_the_client_and_listening_addresses() {
    let (listener, upstream) = upstream_listener();
    let server = header_upstream(listener, 5);
    let mut cfg = config(&[upstream]);
    cfg.send_proxy = Some(Version::V2);
    let proxy = Running::start(cfg, 1);
    let mut client = connect(proxy.addr);
    client.write_all(b"hello").expect("write");
    let mut back = [0u8; 5];
    client.read_exact(&mut back).expect("echo");
    let (raw, header, payload) = server.join().expect("upstream");
    assert_eq!(&raw[..12], &V2_SIGNATURE);
    assert_eq!(
        header,
        ProxyHeader::Proxied {
            source: client.local_addr().expect("addr"),
            destination: proxy.addr,
        }
    );
    assert_eq!(payload, b"hello");
}

/// A proxy that accepts PROXY headers and sends v2 upstream, so the
/// upstream shows which source it took.
fn accepting_proxy(upstream: SocketAddr) -> Running {
    let mut cfg = config(&[upstream]);
    cfg.accept_proxy = true;
    cfg.send_proxy = Some(Version::V2);
    Running::start(cfg, 1)
}

#[test]
fn an_accepted_proxy_header_names_the_source_in_one_write_or_split() {
    let front = SocketAddr::from(([203, 0, 113, 7], 4242));
    let behind = SocketAddr::from(([198, 51, 100, 1], 443));
    for (version, split) in [
        (Version::V1, false),
        (Version::V1, true),
        (Version::V2, false),
        (Version::V2, true),
    ] {
        let (listener, upstream) = upstream_listener();
        let server = header_upstream(listener, 7);
        let proxy = accepting_proxy(upstream);
        let mut stream = Vec::new();
        encode(version, front, behind, &mut stream);
        stream.extend_from_slice(b"payload");
        let mut client = connect(proxy.addr);
        client.set_nodelay(true).expect("nodelay");
        if split {
            // Byte by byte: the decoder keeps its place between reads.
            for byte in &stream {
                client.write_all(&[*byte]).expect("write");
                thread::sleep(Duration::from_millis(1));
            }
        } else {
            // Header and payload in one segment: the payload is relayed
            // once the upstream is up, without waiting for more.
            client.write_all(&stream).expect("write");
        }
        let mut back = [0u8; 7];
        client.read_exact(&mut back).expect("echo");
        let (_, header, payload) = server.join().expect("upstream");
        let ProxyHeader::Proxied { source, .. } = header else {
            panic!("{version:?}: {header:?}");
        };
        assert_eq!(source, front, "{version:?} split {split}");
        assert_eq!(payload, b"payload");
        assert_eq!(&back, b"payload");
    }
}

#[test]
fn a_missing_or_malformed_proxy_header_closes_the_client_with_a_reason() {
    let echo = Echo::start();
    let mut v2_bad_version = V2_SIGNATURE.to_vec();
    v2_bad_version.extend_from_slice(&[0x11, 0x11, 0, 12]);
    let cases: [(&str, &[u8], bool); 5] = [
        ("no header", b"GET / HTTP/1.1\r\n\r\n", false),
        (
            "v1 too few fields",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            false,
        ),
        ("v1 no CRLF in 107 bytes", &[b'P'; 200], false),
        ("v2 bad version", &v2_bad_version, false),
        ("EOF mid-header", b"PROXY TCP4 1.2.3.4", true),
    ];
    let proxy = accepting_proxy(echo.addr);
    for (name, bytes, fin) in cases {
        let started = Instant::now();
        let mut client = connect(proxy.addr);
        client.write_all(bytes).expect("write");
        if fin {
            client.shutdown(Shutdown::Write).expect("FIN");
        }
        assert!(wait_for_end(&mut client, LIMIT).is_ok(), "{name}: closed");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name}: at once"
        );
    }
    assert_eq!(echo.accepted(), 0, "no upstream was contacted");
    proxy.wait_idle();
    let stats = proxy.stop();
    assert_eq!(stats.closed_for(CloseReason::Protocol("proxy_protocol")), 5);
}
