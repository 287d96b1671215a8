//! `netloop proxy` as a user runs it: a child process on loopback, in
//! front of `netloop echo` backends or test upstreams.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{LIMIT, Server};

fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream
}

fn echoes(stream: &mut TcpStream, message: &[u8]) -> bool {
    if stream.write_all(message).is_err() {
        return false;
    }
    let mut got = vec![0u8; message.len()];
    stream.read_exact(&mut got).is_ok() && got == message
}

/// Reads until EOF or reset; panics on timeout.
fn wait_for_end(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("no end: {e}"),
        }
    }
}

/// An echo upstream on std threads, counting its connections.
fn counting_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, count)
}

fn proxy(upstreams: &[SocketAddr], extra: &[&str]) -> Server {
    let mut args = vec!["proxy".to_string(), "--addr".into(), "127.0.0.1:0".into()];
    for upstream in upstreams {
        args.push("--upstream".into());
        args.push(upstream.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&[], &args)
}

#[test]
fn proxy_in_front_of_two_netloop_echo_backends_relays_and_spreads() {
    let a = Server::start(&[], &["echo", "--addr", "127.0.0.1:0", "--threads", "1"]);
    let b = Server::start(&[], &["echo", "--addr", "127.0.0.1:0", "--threads", "1"]);
    let mut proxy = proxy(&[a.addr, b.addr], &["--threads", "2"]);
    let mut clients: Vec<TcpStream> = (0..10).map(|_| client(proxy.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(echoes(c, format!("hello {i}\n").as_bytes()));
    }
    drop(clients);
    proxy.signal("INT");
    assert!(proxy.wait().success());
}

#[test]
fn balancing_flags_round_robin_on_four_threads_and_hash() {
    let upstreams: Vec<(SocketAddr, Arc<AtomicUsize>)> = (0..4).map(|_| counting_echo()).collect();
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.0).collect();
    let count = |i: usize| upstreams[i].1.load(Ordering::SeqCst);
    let rr = proxy(&addrs, &["--threads", "4"]);
    for i in 0..40 {
        let mut c = client(rr.addr);
        assert!(echoes(&mut c, format!("{i}").as_bytes()));
    }
    assert_eq!(
        (0..4).map(count).collect::<Vec<_>>(),
        [10; 4],
        "one position for all threads"
    );
    let hash = proxy(&addrs, &["--threads", "4", "--balance", "hash"]);
    for i in 0..12 {
        let mut c = client(hash.addr);
        assert!(echoes(&mut c, format!("{i}").as_bytes()));
    }
    let grew: Vec<usize> = (0..4).map(|i| count(i) - 10).collect();
    assert!(grew.contains(&12), "one client IP, one upstream: {grew:?}");
}

#[test]
fn a_refused_upstream_is_retried_and_skipped_with_no_client_failure() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (live, count) = counting_echo();
    let proxy = proxy(
        &[dead, live],
        &["--threads", "4", "--max-fails", "1", "--fail-timeout", "30"],
    );
    for i in 0..20 {
        let mut c = client(proxy.addr);
        assert!(echoes(&mut c, format!("{i}").as_bytes()), "client {i}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 20);
}

#[test]
fn graceful_stop_refuses_new_connections_lets_open_sessions_flow_and_exits_0_when_they_end() {
    let (upstream, _) = counting_echo();
    let mut proxy = proxy(&[upstream], &["--threads", "2", "--stop-timeout", "30"]);
    let mut open = client(proxy.addr);
    assert!(echoes(&mut open, b"before"));
    proxy.signal("TERM");
    // The listener closes: new connections are refused.
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(proxy.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(200));
    assert!(
        echoes(&mut open, b"after the signal"),
        "the open session flows on"
    );
    let big = vec![0x5au8; 1 << 20];
    assert!(echoes(&mut open, &big), "both ways, 1 MiB");
    open.shutdown(Shutdown::Write).expect("FIN");
    wait_for_end(&mut open);
    let started = Instant::now();
    assert!(proxy.wait().success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exits once the last session ends"
    );
}

#[test]
fn graceful_stop_closes_sessions_still_open_at_the_stop_timeout_and_exits_0() {
    let (upstream, _) = counting_echo();
    let mut proxy = proxy(&[upstream], &["--stop-timeout", "0.5"]);
    let mut open = client(proxy.addr);
    assert!(echoes(&mut open, b"x"));
    let started = Instant::now();
    proxy.signal("INT");
    assert!(proxy.wait().success());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    wait_for_end(&mut open);
}

#[test]
fn max_connections_bounds_sessions_and_idle_timeout_closes_silent_ones() {
    let (upstream, _) = counting_echo();
    let proxy = proxy(
        &[upstream],
        &[
            "--max-connections",
            "2",
            "--idle-timeout",
            "0.5",
            "--threads",
            "2",
        ],
    );
    let mut a = client(proxy.addr);
    let mut b = client(proxy.addr);
    assert!(echoes(&mut a, b"a") && echoes(&mut b, b"b"));
    let mut over = client(proxy.addr);
    over.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // Not echoed: closed at once (the write may already meet the reset).
    let _ = over.write_all(b"c");
    let mut buf = [0u8; 1];
    match over.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("a third session was served: {other:?}"),
    }
    let started = Instant::now();
    wait_for_end(&mut a);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "idle close after {took:?}");
}

#[test]
fn a_client_that_never_reads_keeps_the_proxy_rss_bounded() {
    // The upstream pushes as fast as it can; the client never reads.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let pushed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&pushed);
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let chunk = vec![0x5au8; 1 << 20];
        while progress.load(Ordering::SeqCst) < 256 << 20 {
            match stream.write(&chunk) {
                Ok(n) => progress.fetch_add(n, Ordering::SeqCst),
                Err(_) => return,
            };
        }
    });
    let proxy = proxy(&[upstream], &["--threads", "1", "--high-water", "1048576"]);
    let baseline = proxy.rss_kib();
    let _silent = client(proxy.addr);
    let (mut last, mut since) = (0, Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        let now = pushed.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let grown = proxy.rss_kib().saturating_sub(baseline);
    assert!(
        last < 64 << 20,
        "the upstream was held back after {last} bytes"
    );
    assert!(grown < 8 * 1024, "proxy RSS grew by {grown} KiB");
}

#[test]
fn proxy_protocol_flags_send_v1_and_refuse_a_client_without_a_header() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        let mut rest = [0u8; 2];
        reader.read_exact(&mut rest).expect("payload");
        (line, rest)
    });
    let sender = proxy(&[upstream], &["--proxy-protocol", "v1"]);
    let mut c = client(sender.addr);
    c.write_all(b"hi").expect("write");
    let (line, rest) = server.join().expect("upstream");
    let port = c.local_addr().expect("addr").port();
    assert_eq!(
        line,
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {port} {}\r\n",
            sender.addr.port()
        )
    );
    assert_eq!(&rest, b"hi");

    let (echo, count) = counting_echo();
    let strict = proxy(&[echo], &["--accept-proxy-protocol"]);
    let mut bare = client(strict.addr);
    bare.write_all(b"hello").expect("write");
    wait_for_end(&mut bare);
    let mut proper = client(strict.addr);
    proper
        .write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\nhello")
        .expect("write");
    let mut got = [0u8; 5];
    proper.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"hello");
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "only the client with a header got through"
    );
}

#[test]
fn proxy_refuses_oneshot_mode_at_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_netloop"))
        .args([
            "proxy",
            "--addr",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--mode",
            "oneshot",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--mode oneshot"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
}
