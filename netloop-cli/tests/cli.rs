//! `netloop echo` as a user runs it: a child process on loopback.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
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
    emfile_pauses_accepting(&[]);
}

#[test]
fn emfile_in_oneshot_mode_pauses_accepting_without_spinning_keeps_serving_and_resumes() {
    // One worker: a worker that slept through the back-off would leave no
    // one to serve the open connections.
    emfile_pauses_accepting(&["--mode", "oneshot", "--threads", "1"]);
}

fn emfile_pauses_accepting(mode: &[&str]) {
    // 16 descriptors: the loop's own few, then room for about nine clients.
    let mut args = vec!["echo", "--addr", "127.0.0.1:0"];
    args.extend_from_slice(mode);
    let server = Server::start(&["prlimit", "--nofile=16:16"], &args);
    let mut clients: Vec<TcpStream> = (0..14).map(|_| client(server.addr)).collect();
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
    }
    let served: Vec<bool> = clients.iter_mut().map(|c| echoes(c, b"1")).collect();
    let served_count = served.iter().filter(|s| **s).count();
    assert!(
        served_count >= 3,
        "{mode:?}: some connections are served ({served_count})"
    );
    assert!(
        served_count < clients.len(),
        "{mode:?}: the descriptor limit was reached"
    );

    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - before;
    assert!(
        used < 25,
        "{mode:?}: the paused server is idle, not spinning ({used} ticks in 1 s)"
    );

    for (c, _) in clients.iter_mut().zip(&served).filter(|(_, s)| **s) {
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(
            echoes(c, b"2"),
            "{mode:?}: existing connections keep being served"
        );
    }
    // ...at once: the pause is a timer, not a sleep that would hold each of
    // these round trips up to the 200 ms back-off.
    let (open, _) = clients
        .iter_mut()
        .zip(&served)
        .find(|(_, s)| **s)
        .expect("a served client");
    let started = Instant::now();
    for _ in 0..20 {
        assert!(echoes(open, b"3"), "{mode:?}: served while paused");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "{mode:?}: 20 round trips took {took:?} while accepting was paused"
    );
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
            "{mode:?}: {} connections never served",
            waiting.len()
        );
        waiting.retain_mut(|c| {
            c.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let mut got = [0u8; 1];
            match c.read(&mut got) {
                // Their first byte was sent while they waited in the backlog.
                Ok(1) => {
                    assert_eq!(&got, b"1", "{mode:?}");
                    false
                }
                Ok(_) => panic!("{mode:?}: a waiting connection was closed"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Err(e) => panic!("{mode:?}: read: {e}"),
            }
        });
    }
    assert!(waiting_count > 0, "{mode:?}");
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

/// The threading modes as command-line options.
const MODES: [&[&str]; 4] = [
    &["--mode", "reuseport"],
    &["--mode", "reuseport", "--exclusive"],
    &["--mode", "acceptor"],
    &["--mode", "oneshot"],
];

/// Starts `netloop <command>` on a free port with 2 threads in `mode`,
/// plus `extra` options.
fn start_in_mode(command: &str, mode: &[&str], extra: &[&str]) -> Server {
    let mut args = vec![
        command,
        "--addr",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--stop-timeout",
        "0.5",
    ];
    args.extend_from_slice(mode);
    args.extend_from_slice(extra);
    Server::start(&[], &args)
}

/// Reads until the server closes the connection or `wait` passes; returns
/// what arrived and whether the connection was closed.
fn read_to_close(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, false);
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn http_header_timeout_answers_408_and_closes_in_every_mode() {
    for mode in MODES {
        let server = start_in_mode("http", mode, &["--header-timeout", "0.5"]);
        // A whole request is answered at once...
        let mut whole = client(server.addr);
        whole
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("write");
        let mut status = [0u8; 12];
        whole.read_exact(&mut status).expect("response");
        assert_eq!(&status, b"HTTP/1.1 200", "{mode:?}: a whole request");
        // ...an incomplete head gets 408 once the header timeout passes.
        let mut slow = client(server.addr);
        slow.write_all(b"GET / HTTP/1.1\r\nHost: te")
            .expect("write");
        let sent = Instant::now();
        let (got, closed) = read_to_close(&mut slow, Duration::from_secs(5));
        let waited = sent.elapsed();
        let response = String::from_utf8_lossy(&got);
        assert!(
            closed,
            "{mode:?}: not closed within 5 s of an incomplete head; got {response:?}"
        );
        assert!(
            response.starts_with("HTTP/1.1 408"),
            "{mode:?}: answer to an incomplete head: {response:?}"
        );
        assert!(
            waited >= Duration::from_millis(400),
            "{mode:?}: 408 after {waited:?}, before the 0.5 s header timeout"
        );
    }
}

/// Runs `netloop` expecting it to refuse its options and exit at once,
/// naming every one of `names` on stderr; says what went wrong otherwise.
fn refused(args: &[&str], names: &[&str]) -> Result<(), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netloop"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netloop");
    // A refusal comes before anything starts; a server that starts anyway
    // is killed after this.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "netloop {args:?} kept running instead of refusing its options"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).expect("stdout");
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("stderr");
    }
    if status.success() {
        return Err(format!("netloop {args:?} exited 0: {stdout}{stderr}"));
    }
    if stdout.contains("listening on") {
        return Err(format!(
            "netloop {args:?} started listening before refusing: {stdout}"
        ));
    }
    match names.iter().find(|name| !stderr.contains(*name)) {
        Some(name) => Err(format!(
            "netloop {args:?}: stderr does not name {name:?}: {stderr:?}"
        )),
        None => Ok(()),
    }
}

#[test]
fn options_a_mode_cannot_honour_are_refused_at_start() {
    let failures: Vec<String> = [
        (
            &["echo", "--mode", "oneshot", "--trigger", "level"][..],
            &["--trigger level", "--mode oneshot"][..],
        ),
        (
            &["echo", "--mode", "acceptor", "--exclusive"][..],
            &["--exclusive"][..],
        ),
        (&["chat", "--mode", "oneshot"][..], &["--mode oneshot"][..]),
    ]
    .into_iter()
    .filter_map(|(args, names)| {
        let mut args = args.to_vec();
        args.extend_from_slice(&["--addr", "127.0.0.1:0", "--threads", "2"]);
        refused(&args, names).err()
    })
    .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn echo_oneshot_idle_timeout_closes_a_silent_client_and_spares_an_active_one() {
    let server = start_in_mode("echo", &["--mode", "oneshot"], &["--idle-timeout", "0.3"]);
    let mut silent = client(server.addr);
    let mut active = client(server.addr);
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_millis(900) {
        assert!(echoes(&mut active, b"tick"), "the active client is served");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (got, closed) = read_to_close(&mut silent, Duration::from_secs(3));
    assert!(
        closed,
        "the silent client was not closed by the idle timeout"
    );
    assert!(got.is_empty(), "{got:?}");
    assert!(
        echoes(&mut active, b"still here"),
        "the active client outlived the idle timeout"
    );
}

#[test]
fn echo_oneshot_honours_max_connections_and_pool_full() {
    let oneshot = &["--mode", "oneshot"][..];
    // --pool-full close (the default): the connection beyond the pool is closed.
    let server = start_in_mode("echo", oneshot, &["--max-connections", "1"]);
    let mut first = client(server.addr);
    assert!(echoes(&mut first, b"1"));
    let mut over = client(server.addr);
    let _ = over.write_all(b"2");
    let (got, closed) = read_to_close(&mut over, Duration::from_secs(3));
    assert!(
        got.is_empty() && closed,
        "the connection beyond --max-connections 1 was not closed ({got:?}, closed: {closed})"
    );
    drop(server);

    // --pool-full backlog: it waits until the first one leaves.
    let server = start_in_mode(
        "echo",
        oneshot,
        &["--max-connections", "1", "--pool-full", "backlog"],
    );
    let mut first = client(server.addr);
    assert!(echoes(&mut first, b"1"));
    let mut waiting = client(server.addr);
    waiting.write_all(b"2").expect("write");
    assert_eq!(
        read_to_close(&mut waiting, Duration::from_millis(300)),
        (Vec::new(), false),
        "the connection beyond the pool waits in the backlog, neither served nor closed"
    );
    drop(first);
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = [0u8; 1];
    waiting
        .read_exact(&mut got)
        .expect("served once a slot freed");
    assert_eq!(&got, b"2");
}
