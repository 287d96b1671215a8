//! The send timeout: a peer that stops reading cannot hold its slot for
//! ever, a slow one that keeps reading is not cut off; in every mode.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use netloop::server::{Mode, Server, ServerConfig};
use netloop::{CloseReason, Config, Stats};
use support::Amplify;

const TIMEOUT: Duration = Duration::from_secs(1);

fn start(mode: Mode) -> Server<()> {
    let loop_config = Config {
        send_timeout: Some(TIMEOUT),
        // Keep the stalled output in the loop, not just in the kernel.
        idle_timeout: None,
        ..Config::default()
    };
    let config = ServerConfig {
        threads: 1,
        mode,
        loop_config,
        ..ServerConfig::default()
    };
    Server::start("127.0.0.1:0".parse().expect("addr"), config, |_| Amplify).expect("start")
}

/// Asks for 64 KiB per byte sent and never reads; returns how long the
/// server took to close it.
fn stalled(addr: SocketAddr) -> Duration {
    let mut client = TcpStream::connect(addr).expect("connect");
    client.write_all(&[b'x'; 256]).expect("write");
    let started = Instant::now();
    // Do not read until the server has given up: then read what the
    // kernel holds, and see the connection end.
    thread::sleep(TIMEOUT * 2);
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    started.elapsed()
}

/// Reads 256 KiB every 50 ms: slower than the server writes, but fast
/// enough that the kernel lets the server write again well within the
/// timeout (it reports room only once a good part of the send buffer,
/// megabytes on loopback, is free).
fn slow_but_reading(addr: SocketAddr, period: Duration) -> usize {
    let mut client = TcpStream::connect(addr).expect("connect");
    client.write_all(&[b'x'; 1024]).expect("write");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    let started = Instant::now();
    while started.elapsed() < period {
        match client.read_exact(&mut buf).map(|()| buf.len()) {
            Ok(0) => panic!("closed after {got} bytes and {:?}", started.elapsed()),
            Ok(n) => got += n,
            Err(e) => panic!("read: {e} after {got} bytes"),
        }
        thread::sleep(Duration::from_millis(50));
    }
    got
}

fn check(mode: Mode) {
    let server = start(mode);
    let addr = server.local_addr();
    let slow = thread::spawn(move || slow_but_reading(addr, TIMEOUT * 3));
    let took = stalled(addr);
    assert!(took < Duration::from_secs(5), "{mode:?}: {took:?}");
    let read = slow.join().expect("slow reader");
    assert!(read > 0);
    server.stopper().stop();
    let mut total = Stats::default();
    server
        .join()
        .expect("join")
        .iter()
        .for_each(|s| total.merge(s));
    assert_eq!(
        total.closed_for(CloseReason::SendTimeout),
        1,
        "{mode:?}: the stalled peer only"
    );
}

#[test]
fn a_peer_that_stops_reading_is_closed_after_the_send_timeout_in_the_loop_mode() {
    check(Mode::ReusePort);
}

#[test]
fn a_peer_that_stops_reading_is_closed_after_the_send_timeout_in_oneshot_mode() {
    check(Mode::OneShot);
}
