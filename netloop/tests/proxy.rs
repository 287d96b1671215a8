//! The proxy example's relay (`examples/proxy.rs`) over real loopback
//! sockets, with real upstream servers on std threads: backpressure both
//! ways, half-close both ways, a request and FIN that arrive before the
//! upstream is up, and a reset on either side closing the other in the
//! same turn.

mod relay;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use netloop::testing::{Event, READ_HUP, READABLE};
use netloop::{CloseReason, Config, ConnId, EventLoop};
use relay::{Logged, read_turning, relay_loop, reset};
use support::stream::{fill, first_wrong, memory_bound, pattern, turn_until_stalled};
use support::turn_until;

const LIMIT: Duration = Duration::from_secs(5);
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// What the slow side's peer pushes: more than the kernel buffers on the
/// way can hold (usually a few MiB; about 40 MiB at worst with `tcp_wmem`
/// and `tcp_rmem` maxima of 4 and 32 MiB, as on the test hosts).
const FLOOD: usize = 64 * MIB;

/// Water marks small enough that the kernel's buffers, not the proxy's,
/// hold almost everything in flight.
fn small_water() -> Config {
    Config {
        high_water: 256 * KIB,
        low_water: 64 * KIB,
        ..Config::default()
    }
}

/// A listener for the test's upstream server.
fn upstream_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Accepts the proxy's connection, with timeouts so a broken relay fails
/// the test instead of hanging the thread.
fn accept(listener: &TcpListener) -> TcpStream {
    let (stream, _) = listener.accept().expect("accept");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream.set_write_timeout(Some(LIMIT)).expect("timeout");
    stream
}

/// Writes what the nonblocking `stream` takes of stream `seed` from `sent`
/// on, up to `total`; returns the new count.
fn push(stream: &mut TcpStream, seed: u64, sent: usize, total: usize, chunk: &mut [u8]) -> usize {
    let len = chunk.len().min(total - sent);
    fill(seed, sent, &mut chunk[..len]);
    match stream.write(&chunk[..len]) {
        Ok(n) => sent + n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => sent,
        Err(e) => panic!("write: {e}"),
    }
}

#[test]
fn a_client_that_never_reads_stalls_the_upstream_and_proxy_memory_stays_bounded() {
    const SEED: u64 = 0xa1;
    let (listener, upstream) = upstream_listener();
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&sent);
    let source = thread::spawn(move || {
        let mut stream = accept(&listener);
        let mut chunk = vec![0u8; 64 * KIB];
        let mut offset = 0;
        while offset < FLOOD {
            let len = chunk.len().min(FLOOD - offset);
            fill(SEED, offset, &mut chunk[..len]);
            offset += stream.write(&chunk[..len]).expect("upstream write");
            progress.store(offset, Ordering::SeqCst);
        }
        // FIN: the relay passes it on after the last byte.
    });
    let config = small_water();
    let (mut event_loop, addr) = relay_loop(config.clone(), upstream);
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_nonblocking(true).expect("nonblocking");

    let mut peak = 0;
    let stalled = turn_until_stalled(&mut event_loop, &mut peak, || sent.load(Ordering::SeqCst));
    assert!(peak <= memory_bound(&config), "peak {peak} while stalled");
    assert!(
        stalled < FLOOD,
        "the upstream's sends stall while the client does not read (sent {stalled})"
    );

    let mut received = 0;
    let mut buf = vec![0u8; 256 * KIB];
    let deadline = Instant::now() + LIMIT;
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
        event_loop
            .turn(Some(Duration::from_millis(1)))
            .expect("turn");
        peak = peak.max(event_loop.buffer_bytes());
    }
    assert_eq!(received, FLOOD, "every byte, in order, then EOF");
    assert!(peak <= memory_bound(&config), "peak {peak} while relaying");
    source.join().expect("upstream");
}

#[test]
fn an_upstream_that_never_reads_stalls_the_client_and_proxy_memory_stays_bounded() {
    const SEED: u64 = 0xa2;
    let (listener, upstream) = upstream_listener();
    let (go, wait) = mpsc::channel::<()>();
    let sink = thread::spawn(move || {
        let mut stream = accept(&listener);
        wait.recv_timeout(LIMIT).expect("go");
        let (mut received, mut wrong) = (0, None);
        let mut buf = vec![0u8; 256 * KIB];
        loop {
            let n = stream.read(&mut buf).expect("upstream read");
            if n == 0 {
                return (received, wrong);
            }
            wrong = wrong.or(first_wrong(SEED, received, &buf[..n]));
            received += n;
        }
    });
    let config = small_water();
    let (mut event_loop, addr) = relay_loop(config.clone(), upstream);
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_nonblocking(true).expect("nonblocking");
    let mut chunk = vec![0u8; 256 * KIB];

    let mut peak = 0;
    let mut sent = 0;
    let stalled = turn_until_stalled(&mut event_loop, &mut peak, || {
        sent = push(&mut client, SEED, sent, FLOOD, &mut chunk);
        sent
    });
    assert!(peak <= memory_bound(&config), "peak {peak} while stalled");
    assert!(
        stalled < FLOOD,
        "the client's sends stall while the upstream does not read (sent {stalled})"
    );

    go.send(()).expect("go");
    let deadline = Instant::now() + LIMIT;
    while sent < FLOOD {
        assert!(Instant::now() < deadline, "stuck at {sent} of {FLOOD}");
        sent = push(&mut client, SEED, sent, FLOOD, &mut chunk);
        event_loop
            .turn(Some(Duration::from_millis(1)))
            .expect("turn");
        peak = peak.max(event_loop.buffer_bytes());
    }
    client.shutdown(Shutdown::Write).expect("FIN");
    turn_until(&mut event_loop, LIMIT, |l| {
        peak = peak.max(l.buffer_bytes());
        sink.is_finished()
    });
    assert_eq!(sink.join().expect("upstream"), (FLOOD, None));
    assert!(peak <= memory_bound(&config), "peak {peak} while relaying");
}

/// Runs the relay until the test's threads are done and every connection
/// has closed.
fn serve_until_done<T, U>(
    event_loop: &mut EventLoop<Logged>,
    a: &thread::JoinHandle<T>,
    b: &thread::JoinHandle<U>,
) {
    turn_until(event_loop, LIMIT, |l| {
        a.is_finished() && b.is_finished() && l.connection_count() == 0
    });
}

/// Both ends of the one pair closed cleanly.
fn assert_closed_cleanly(event_loop: &EventLoop<Logged>) {
    let handler = event_loop.handler();
    let (client, upstream) = handler.pairs()[0];
    for id in [client, upstream] {
        let (reason, _) = handler.close_of(id).expect("closed");
        assert!(
            matches!(reason, CloseReason::PeerClosed | CloseReason::Closed),
            "{id} closed with {reason}"
        );
    }
}

#[test]
fn client_half_close_the_request_and_fin_reach_the_upstream_and_the_reply_comes_back() {
    let request = pattern(0xb1, 300 * KIB);
    let reply = pattern(0xb2, 700 * KIB);
    let (listener, upstream) = upstream_listener();
    let server_reply = reply.clone();
    let server = thread::spawn(move || {
        let mut stream = accept(&listener);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).expect("request up to EOF");
        stream.write_all(&server_reply).expect("reply");
        got
    });
    let (mut event_loop, addr) = relay_loop(Config::default(), upstream);
    let client_request = request.clone();
    let client = thread::spawn(move || {
        let mut stream = support::connect(addr);
        stream.write_all(&client_request).expect("request");
        stream.shutdown(Shutdown::Write).expect("FIN");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).expect("reply up to EOF");
        got
    });

    serve_until_done(&mut event_loop, &server, &client);
    assert!(
        server.join().expect("server") == request,
        "the whole request"
    );
    assert!(client.join().expect("client") == reply, "the whole reply");
    assert_closed_cleanly(&event_loop);
}

#[test]
fn upstream_half_close_the_client_gets_banner_and_fin_and_still_sends_upstream() {
    let banner = pattern(0xb3, 200 * KIB);
    let later = pattern(0xb4, 500 * KIB);
    let (listener, upstream) = upstream_listener();
    let server_banner = banner.clone();
    let server = thread::spawn(move || {
        let mut stream = accept(&listener);
        stream.write_all(&server_banner).expect("banner");
        stream.shutdown(Shutdown::Write).expect("FIN");
        let mut got = Vec::new();
        stream
            .read_to_end(&mut got)
            .expect("what the client sends after");
        got
    });
    let (mut event_loop, addr) = relay_loop(Config::default(), upstream);
    let client_later = later.clone();
    let client = thread::spawn(move || {
        let mut stream = support::connect(addr);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).expect("banner up to EOF");
        // Only after the upstream's FIN came through.
        stream.write_all(&client_later).expect("send after EOF");
        stream.shutdown(Shutdown::Write).expect("FIN");
        got
    });

    serve_until_done(&mut event_loop, &server, &client);
    assert!(client.join().expect("client") == banner, "banner, then EOF");
    assert!(
        server.join().expect("server") == later,
        "sent after the upstream's FIN, still relayed"
    );
    assert_closed_cleanly(&event_loop);
}

/// An upstream that reads a request up to EOF, answers "done" and closes;
/// returns the request.
fn request_server(listener: TcpListener) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut stream = accept(&listener);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).expect("request up to EOF");
        stream.write_all(b"done").expect("reply");
        got
    })
}

/// The client's request and FIN are in before its upstream connect even
/// completes: hand-made batches accept the client and report it readable
/// while the upstream is still connecting.
fn early_request_and_fin(request: &[u8]) {
    let (listener, upstream) = upstream_listener();
    let server = request_server(listener);
    let (mut event_loop, addr) = relay_loop(Config::default(), upstream);
    let mut client = support::connect(addr);
    client.write_all(request).expect("request");
    client.shutdown(Shutdown::Write).expect("FIN");
    let listener_token = event_loop.listener_token(0).expect("listener");

    event_loop.dispatch_batch(&[Event {
        token: listener_token,
        events: READABLE,
    }]);
    let client_id = event_loop.handler().clients()[0];
    assert!(
        event_loop.handler().pairs().is_empty(),
        "upstream still connecting"
    );
    event_loop.dispatch_batch(&[Event {
        token: client_id.to_u64(),
        events: READABLE | READ_HUP,
    }]);
    assert!(
        event_loop.handler().pairs().is_empty(),
        "upstream still connecting"
    );
    assert_eq!(
        event_loop.handler().data_for(client_id),
        0,
        "the client is not read before its upstream is up"
    );

    turn_until(&mut event_loop, LIMIT, |l| {
        server.is_finished() && l.connection_count() == 0
    });
    assert!(
        server.join().expect("server") == request,
        "request, then EOF"
    );
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).expect("reply up to EOF");
    assert_eq!(reply, b"done");
    assert_closed_cleanly(&event_loop);
}

#[test]
fn a_request_and_fin_sent_before_the_upstream_is_up_are_relayed_once_it_is() {
    early_request_and_fin(&pattern(0xe1, 16 * KIB));
}

#[test]
fn a_fin_alone_sent_before_the_upstream_is_up_reaches_it_once_it_is() {
    early_request_and_fin(b"");
}

/// How a peer's connection ended: `Ok(())` at EOF or reset, `Err` otherwise.
fn wait_for_end(stream: &mut TcpStream) -> Result<(), String> {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// An upstream that answers "ping" with "pong", then either waits for the
/// relay to close (returning how that went) or, with `reset`, resets.
fn pong_server(listener: TcpListener, reset_it: bool) -> thread::JoinHandle<Result<(), String>> {
    thread::spawn(move || {
        let mut stream = accept(&listener);
        let mut ping = [0u8; 4];
        stream.read_exact(&mut ping).expect("ping");
        stream.write_all(b"pong").expect("pong");
        if reset_it {
            stream.read_exact(&mut ping).expect("go");
            reset(stream);
            return Ok(());
        }
        wait_for_end(&mut stream)
    })
}

/// Connects through the relay and exchanges ping/pong, so the pair is up.
fn paired_client(event_loop: &mut EventLoop<Logged>, addr: SocketAddr) -> TcpStream {
    let mut client = support::connect(addr);
    client.write_all(b"ping").expect("ping");
    assert_eq!(read_turning(event_loop, &mut client, 4, LIMIT), b"pong");
    client
}

/// Runs turns one at a time until `id` closes; returns how, and in which
/// turn.
fn turn_until_closed(event_loop: &mut EventLoop<Logged>, id: ConnId) -> (CloseReason, u64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(close) = event_loop.handler().close_of(id) {
            return close;
        }
        assert!(Instant::now() < deadline, "{id} never closed");
        event_loop
            .turn(Some(Duration::from_millis(5)))
            .expect("turn");
    }
}

#[test]
fn a_client_reset_closes_its_upstream_in_the_same_turn() {
    let (listener, upstream) = upstream_listener();
    let server = pong_server(listener, false);
    let (mut event_loop, addr) = relay_loop(Config::default(), upstream);
    let client = paired_client(&mut event_loop, addr);
    let (client_id, upstream_id) = event_loop.handler().pairs()[0];

    reset(client);
    let (reason, turn) = turn_until_closed(&mut event_loop, client_id);

    assert_eq!(reason, CloseReason::Reset);
    assert_eq!(
        event_loop.handler().close_of(upstream_id),
        Some((CloseReason::Closed, turn)),
        "the upstream was closed in the client's turn"
    );
    assert_eq!(event_loop.connection_count(), 0);
    assert_eq!(
        server.join().expect("server"),
        Ok(()),
        "the upstream saw the end"
    );
}

#[test]
fn an_upstream_reset_closes_its_client_in_the_same_turn() {
    let (listener, upstream) = upstream_listener();
    let server = pong_server(listener, true);
    let (mut event_loop, addr) = relay_loop(Config::default(), upstream);
    let mut client = paired_client(&mut event_loop, addr);
    let (client_id, upstream_id) = event_loop.handler().pairs()[0];

    // Tells the server to reset, and waits until it has; the RST may be
    // handled meanwhile, the recorded turns tell.
    client.write_all(b"rst!").expect("go");
    turn_until(&mut event_loop, LIMIT, |_| server.is_finished());
    let (reason, turn) = turn_until_closed(&mut event_loop, upstream_id);

    assert_eq!(reason, CloseReason::Reset);
    assert_eq!(
        event_loop.handler().close_of(client_id),
        Some((CloseReason::Closed, turn)),
        "the client was closed in the upstream's turn"
    );
    assert_eq!(event_loop.connection_count(), 0);
    assert_eq!(wait_for_end(&mut client), Ok(()), "the client saw the end");
}

#[test]
fn a_client_uploading_while_it_ignores_the_download_still_uploads_everything() {
    const UP: u64 = 0xd1;
    const DOWN: u64 = 0xd2;
    let upload = pattern(UP, 16 * MIB);
    let (listener, upstream) = upstream_listener();
    // The upstream reads the upload while it streams a download back, as a
    // server pushing results while it still takes input does.
    let server = thread::spawn(move || {
        let stream = accept(&listener);
        let mut writer = stream.try_clone().expect("clone");
        thread::spawn(move || {
            // More than every kernel buffer on the way holds: streams until
            // the client is gone, which ends it with an error.
            let mut chunk = vec![0u8; 64 * KIB];
            let mut offset = 0;
            loop {
                fill(DOWN, offset, &mut chunk);
                if writer.write_all(&chunk).is_err() {
                    return;
                }
                offset += chunk.len();
            }
        });
        let mut reader = stream;
        let mut got = Vec::new();
        reader.read_to_end(&mut got).expect("upload up to EOF");
        got
    });
    let (mut event_loop, addr) = relay_loop(small_water(), upstream);
    let client_upload = upload.clone();
    let client = thread::spawn(move || {
        let mut stream = support::connect(addr);
        stream.set_write_timeout(Some(LIMIT)).expect("timeout");
        // Uploads everything before reading a byte of the download.
        stream.write_all(&client_upload).expect("upload");
        stream.shutdown(Shutdown::Write).expect("FIN");
        stream
    });
    turn_until(&mut event_loop, LIMIT, |_| server.is_finished());
    assert!(
        server.join().expect("server") == upload,
        "the whole upload arrived while the download waited"
    );
    let mut stream = client.join().expect("client");
    let first = read_turning(&mut event_loop, &mut stream, 64 * KIB, LIMIT);
    assert_eq!(first_wrong(DOWN, 0, &first), None, "the download is intact");
}
