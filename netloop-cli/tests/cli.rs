//! `netloop echo` as a user runs it: a child process on loopback.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{LIMIT, Server};

fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

fn echoes(stream: &mut TcpStream, message: &[u8]) -> bool {
    if stream.write_all(message).is_err() {
        return false;
    }
    let mut got = vec![0u8; message.len()];
    stream.read_exact(&mut got).is_ok() && got == message
}

#[test]
fn echo_prints_its_address_echoes_and_exits_0_on_sigint() {
    let mut server = Server::start(&[], &["echo", "--addr", "127.0.0.1:0"]);
    let mut c = client(server.addr);
    assert!(echoes(&mut c, b"hello netloop\n"));
    server.signal("INT");
    assert!(server.wait().success());
    let mut buf = [0u8; 1];
    assert_eq!(
        c.read(&mut buf).expect("FIN on stop"),
        0,
        "the connection was closed cleanly"
    );
}

#[test]
fn echo_exits_0_on_sigterm_with_connections_open() {
    let mut server = Server::start(
        &[],
        &["echo", "--addr", "127.0.0.1:0", "--stop-timeout", "1"],
    );
    let mut clients: Vec<TcpStream> = (0..5).map(|_| client(server.addr)).collect();
    for c in &mut clients {
        assert!(echoes(c, b"x"));
    }
    server.signal("TERM");
    assert!(server.wait().success());
}

#[test]
fn echo_idle_timeout_and_max_connections_flags_take_effect() {
    let server = Server::start(
        &[],
        &[
            "echo",
            "--addr",
            "127.0.0.1:0",
            "--idle-timeout",
            "0.3",
            "--max-connections",
            "2",
        ],
    );
    let mut a = client(server.addr);
    let mut b = client(server.addr);
    assert!(echoes(&mut a, b"a") && echoes(&mut b, b"b"));
    let mut over = client(server.addr);
    let mut buf = [0u8; 1];
    match over.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("a third connection was served: {other:?}"),
    }
    let started = Instant::now();
    assert_eq!(a.read(&mut buf).expect("idle close"), 0);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn emfile_pauses_accepting_without_spinning_keeps_serving_and_resumes() {
    // 16 descriptors: the loop's own few, then room for about nine clients.
    let server = Server::start(
        &["prlimit", "--nofile=16:16"],
        &["echo", "--addr", "127.0.0.1:0"],
    );
    let mut clients: Vec<TcpStream> = (0..14).map(|_| client(server.addr)).collect();
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
    }
    let served: Vec<bool> = clients.iter_mut().map(|c| echoes(c, b"1")).collect();
    let served_count = served.iter().filter(|s| **s).count();
    assert!(
        served_count >= 3,
        "some connections are served ({served_count})"
    );
    assert!(
        served_count < clients.len(),
        "the descriptor limit was reached"
    );

    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - before;
    assert!(
        used < 25,
        "the paused server is idle, not spinning ({used} ticks in 1 s)"
    );

    for (c, _) in clients.iter_mut().zip(&served).filter(|(_, s)| **s) {
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(echoes(c, b"2"), "existing connections keep being served");
    }
    // Free descriptors: the waiting connections are accepted on the next retry.
    let mut waiting: Vec<TcpStream> = Vec::new();
    for (c, s) in clients.into_iter().zip(served) {
        if !s {
            waiting.push(c);
        }
    }
    let waiting_count = waiting.len();
    // Each one echoed is then closed, freeing a descriptor for the next.
    let deadline = Instant::now() + LIMIT;
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} connections never served",
            waiting.len()
        );
        waiting.retain_mut(|c| {
            c.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let mut got = [0u8; 1];
            match c.read(&mut got) {
                // Their first byte was sent while they waited in the backlog.
                Ok(1) => {
                    assert_eq!(&got, b"1");
                    false
                }
                Ok(_) => panic!("a waiting connection was closed"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Err(e) => panic!("read: {e}"),
            }
        });
    }
    assert!(waiting_count > 0);
}

#[test]
fn backpressure_a_peer_that_never_reads_keeps_server_rss_bounded() {
    let server = Server::start(
        &[],
        &["echo", "--addr", "127.0.0.1:0", "--high-water", "1048576"],
    );
    let baseline = server.rss_kib();
    let mut c = TcpStream::connect(server.addr).expect("connect");
    c.set_nonblocking(true).expect("nonblocking");
    let chunk = vec![0x5au8; 1 << 20];
    let mut sent = 0usize;
    let mut last_progress = Instant::now();
    while sent < 1 << 30 && last_progress.elapsed() < Duration::from_secs(1) {
        match c.write(&chunk) {
            Ok(n) => {
                sent += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    let grown = server.rss_kib().saturating_sub(baseline);
    assert!(
        sent < 128 << 20,
        "the peer was held back after {sent} bytes"
    );
    assert!(grown < 16 * 1024, "server RSS grew by {grown} KiB");
}

#[test]
fn echo_works_in_every_thread_mode_and_stops_on_sigint() {
    for mode in [
        &["--mode", "reuseport"][..],
        &["--mode", "reuseport", "--exclusive"][..],
        &["--mode", "acceptor"][..],
        &["--mode", "oneshot"][..],
    ] {
        for threads in ["1", "2", "4"] {
            let mut args = vec![
                "echo",
                "--addr",
                "127.0.0.1:0",
                "--threads",
                threads,
                "--stop-timeout",
                "0.5",
            ];
            args.extend_from_slice(mode);
            let mut server = Server::start(&[], &args);
            let mut clients: Vec<TcpStream> = (0..20).map(|_| client(server.addr)).collect();
            for (i, c) in clients.iter_mut().enumerate() {
                assert!(
                    echoes(c, format!("{mode:?} {threads} {i}").as_bytes()),
                    "{args:?}"
                );
            }
            server.signal("INT");
            assert!(server.wait().success(), "{args:?}");
        }
    }
}

#[test]
fn bench_runs_every_workload_in_process_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_netloop"))
        .args([
            "bench",
            "--duration",
            "0.5",
            "--workloads",
            "echo,http,resp,chat",
            "--depths",
            "1,8",
            "--conns",
            "8",
        ])
        .output()
        .expect("run bench");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["echo 64 B", "http hello", "resp set/get", "chat 64 B"] {
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with(label)).collect();
        assert_eq!(rows.len(), 2, "{label} at depths 1 and 8:\n{table}");
        for row in rows {
            let columns: Vec<&str> = row.split_whitespace().collect();
            let errors = columns.last().expect("errors column");
            assert_eq!(*errors, "0", "{row}");
            let rate: f64 = columns[columns.len() - 8].parse().expect("req/s");
            assert!(rate > 0.0, "{row}");
        }
    }
}

fn load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netloop"))
        .arg("load")
        .args(args)
        .output()
        .expect("run load")
}

#[test]
fn load_checks_every_workload_against_its_server_and_fails_on_wrong_answers() {
    for (server_args, workload) in [
        (&["echo"][..], &["echo", "--size", "100"][..]),
        (&["http"][..], &["http"][..]),
        (&["kv"][..], &["resp"][..]),
        (
            &["chat", "--threads", "2"][..],
            &["chat", "--size", "32"][..],
        ),
    ] {
        let mut args = server_args.to_vec();
        args.extend_from_slice(&["--addr", "127.0.0.1:0", "--stop-timeout", "0.5"]);
        let server = Server::start(&[], &args);
        let addr = server.addr.to_string();
        let mut load_args = workload.to_vec();
        load_args.extend_from_slice(&[
            "--target",
            &addr,
            "--conns",
            "6",
            "--depth",
            "4",
            "--duration",
            "0.5",
            "--json",
        ]);
        let out = load(&load_args);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{workload:?}: {report}");
        assert!(report.contains("\"errors\":0"), "{report}");
        assert!(!report.contains("\"messages\":0,"), "{report}");
    }
    // The echo check against a server that answers something else fails.
    let http = Server::start(
        &[],
        &["http", "--addr", "127.0.0.1:0", "--stop-timeout", "0.5"],
    );
    let addr = http.addr.to_string();
    let out = load(&[
        "echo",
        "--target",
        &addr,
        "--conns",
        "2",
        "--duration",
        "0.5",
        "--size",
        "40",
    ]);
    assert!(!out.status.success(), "wrong echo bytes must fail the run");
}
