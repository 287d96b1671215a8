//! Several threads: every mode echoes correctly, one-shot ownership is
//! exclusive, worker threads answer through handles, stale ids are refused
//! across threads, and a graceful stop delivers what was queued.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use netloop::echo::Echo;
use netloop::server::{Dispatch, Mode, Server, ServerConfig};
use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler, LoopHandle, Stats};
use support::{Amplify, Rng, connect, echo_clients, payloads, raise_nofile_limit, read_exact};

const LIMIT: Duration = Duration::from_secs(30);

/// 1000 connections from two client threads; returns the bytes echoed.
fn thousand_clients(addr: SocketAddr, seed: u64) -> (usize, usize) {
    let all = payloads(1000, 256 * 1024, seed);
    let expected = all.iter().map(Vec::len).sum();
    let (first, second): (Vec<_>, Vec<_>) =
        all.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let workers: Vec<_> = [first, second]
        .into_iter()
        .map(|half| {
            let half: Vec<Vec<u8>> = half.into_iter().map(|(_, p)| p).collect();
            thread::spawn(move || echo_clients(addr, half, LIMIT))
        })
        .collect();
    let echoed = workers.into_iter().map(|w| w.join().expect("client")).sum();
    (echoed, expected)
}

fn loop_mode_echoes_every_byte(mode: Mode, threads: usize) {
    raise_nofile_limit();
    let config = ServerConfig {
        threads,
        mode,
        ..ServerConfig::default()
    };
    let server =
        Server::start("127.0.0.1:0".parse().expect("addr"), config, |_| Echo).expect("start");
    let (echoed, expected) =
        thousand_clients(server.local_addr(), threads as u64 * 31 + mode as u64);
    assert_eq!(echoed, expected);
    server.stopper().stop();
    let stats = server.join().expect("join");
    assert_eq!(stats.len(), threads);
    let mut total = Stats::default();
    stats.iter().for_each(|s| total.merge(s));
    assert_eq!(total.accepted, 1000);
    assert_eq!(total.bytes_written, expected as u64);
    assert_eq!(total.stale_events, 0);
}

fn oneshot_echoes_every_byte(threads: usize) {
    let _alone = oneshot_alone();
    raise_nofile_limit();
    let server = Server::start(
        "127.0.0.1:0".parse().expect("addr"),
        oneshot_config(threads, Config::default()),
        |_| Echo,
    )
    .expect("start");
    let (echoed, expected) = thousand_clients(server.local_addr(), threads as u64 * 77);
    assert_eq!(echoed, expected);
    server.stopper().stop();
    let stats = server.join().expect("join");
    let mut total = Stats::default();
    stats.iter().for_each(|s| total.merge(s));
    assert_eq!(total.accepted, 1000);
    assert_eq!(total.bytes_written, expected as u64);
    assert_eq!(total.oneshot_contention, 0);
}

/// Held by every one-shot test, so that one test's worker threads never
/// share the machine (or the thread-name CPU accounting) with another's.
static ONESHOT_ALONE: Mutex<()> = Mutex::new(());

fn oneshot_alone() -> std::sync::MutexGuard<'static, ()> {
    ONESHOT_ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn oneshot_config(threads: usize, loop_config: Config) -> ServerConfig {
    ServerConfig {
        threads,
        mode: Mode::OneShot,
        loop_config,
        ..ServerConfig::default()
    }
}

#[test]
fn reuseport_echoes_every_byte_with_2_threads() {
    loop_mode_echoes_every_byte(Mode::ReusePort, 2);
}

#[test]
fn reuseport_echoes_every_byte_with_4_threads() {
    loop_mode_echoes_every_byte(Mode::ReusePort, 4);
}

#[test]
fn exclusive_listener_echoes_every_byte_with_2_threads() {
    loop_mode_echoes_every_byte(Mode::Exclusive, 2);
}

#[test]
fn exclusive_listener_echoes_every_byte_with_4_threads() {
    loop_mode_echoes_every_byte(Mode::Exclusive, 4);
}

#[test]
fn acceptor_echoes_every_byte_with_2_threads() {
    loop_mode_echoes_every_byte(Mode::Acceptor, 2);
}

#[test]
fn acceptor_echoes_every_byte_with_4_threads() {
    loop_mode_echoes_every_byte(Mode::Acceptor, 4);
}

#[test]
fn oneshot_echoes_every_byte_with_2_threads() {
    oneshot_echoes_every_byte(2);
}

#[test]
fn oneshot_echoes_every_byte_with_4_threads() {
    oneshot_echoes_every_byte(4);
}

/// Holds every call for a while and records who is inside, per connection.
struct Exclusivity {
    inside: Arc<Mutex<HashMap<ConnId, usize>>>,
    overlaps: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    most_running: Arc<AtomicUsize>,
    threads_per_conn: Arc<Mutex<HashMap<ConnId, HashSet<thread::ThreadId>>>>,
}

impl Handler for Exclusivity {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let id = conn.id();
        {
            let mut inside = self.inside.lock().expect("lock");
            let count = inside.entry(id).or_default();
            *count += 1;
            if *count > 1 {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.threads_per_conn
            .lock()
            .expect("lock")
            .entry(id)
            .or_default()
            .insert(thread::current().id());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        // A slow handler: a database call, a disk read.
        thread::sleep(Duration::from_millis(3));
        let parts = conn.parts();
        let mut output = parts.output;
        output.write(parts.input.as_slice());
        parts.input.consume(usize::MAX);
        self.running.fetch_sub(1, Ordering::SeqCst);
        *self.inside.lock().expect("lock").entry(id).or_default() -= 1;
    }
}

#[test]
fn oneshot_one_thread_at_a_time_per_connection_while_connections_run_in_parallel() {
    let _alone = oneshot_alone();
    let inside = Arc::new(Mutex::new(HashMap::new()));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let most_running = Arc::new(AtomicUsize::new(0));
    let threads_per_conn = Arc::new(Mutex::new(HashMap::new()));
    let handler = {
        let (inside, overlaps, running, most_running, threads_per_conn) = (
            Arc::clone(&inside),
            Arc::clone(&overlaps),
            Arc::clone(&running),
            Arc::clone(&most_running),
            Arc::clone(&threads_per_conn),
        );
        move |_| Exclusivity {
            inside: Arc::clone(&inside),
            overlaps: Arc::clone(&overlaps),
            running: Arc::clone(&running),
            most_running: Arc::clone(&most_running),
            threads_per_conn: Arc::clone(&threads_per_conn),
        }
    };
    let config = oneshot_config(4, Config::default());
    let server =
        Server::start("127.0.0.1:0".parse().expect("addr"), config, handler).expect("start");
    let addr = server.local_addr();
    // Each client keeps sending while its previous messages are still being
    // handled, so new data arrives for a socket that a thread owns.
    let clients: Vec<_> = (0..24)
        .map(|c| {
            thread::spawn(move || {
                let mut stream = connect(addr);
                let mut reader = stream.try_clone().expect("clone");
                let reading = thread::spawn(move || {
                    let mut got = vec![0u8; 40 * 8];
                    reader.read_exact(&mut got).expect("echo");
                    got
                });
                let mut sent = Vec::new();
                for m in 0..40u32 {
                    let message = (c as u32 * 1000 + m).to_be_bytes().repeat(2);
                    stream.write_all(&message).expect("write");
                    sent.extend_from_slice(&message);
                    thread::sleep(Duration::from_micros(700));
                }
                assert_eq!(reading.join().expect("reader"), sent, "client {c}");
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    server.stopper().stop();
    let stats = server.join().expect("join");
    let contention: u64 = stats.iter().map(|s| s.oneshot_contention).sum();
    let rearms: u64 = stats.iter().map(|s| s.rearms).sum();
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two threads inside one connection"
    );
    assert_eq!(
        contention, 0,
        "an event arrived for a connection another thread owned"
    );
    assert!(
        most_running.load(Ordering::SeqCst) >= 2,
        "different connections ran in parallel"
    );
    let migrated = threads_per_conn
        .lock()
        .expect("lock")
        .values()
        .filter(|threads| threads.len() > 1)
        .count();
    assert!(
        migrated > 0,
        "connections are served by whichever thread is free"
    );
    assert!(rearms > 0);
}

/// Hands each line to a worker thread, which answers through the loop's handle.
struct Delegate {
    jobs: mpsc::Sender<(LoopHandle<()>, ConnId, Vec<u8>)>,
    handle: Option<LoopHandle<()>>,
}

impl Handler for Delegate {
    type State = ();

    fn on_start(&mut self, handle: LoopHandle<()>) {
        self.handle = Some(handle);
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        while let Some(end) = conn.input().iter().position(|b| *b == b'\n') {
            let line = conn.input()[..=end].to_vec();
            conn.consume(end + 1);
            if let Some(handle) = self.handle.clone() {
                let _ = self.jobs.send((handle, conn.id(), line));
            }
        }
    }
}

#[test]
fn a_worker_thread_answers_through_the_handle() {
    let (jobs, queue) = mpsc::channel::<(LoopHandle<()>, ConnId, Vec<u8>)>();
    let worker = thread::spawn(move || {
        for (handle, id, line) in queue {
            thread::sleep(Duration::from_millis(1));
            handle
                .write(id, line.to_ascii_uppercase())
                .expect("connection still open");
        }
    });
    let jobs = Mutex::new(jobs);
    let config = ServerConfig {
        threads: 2,
        ..ServerConfig::default()
    };
    let server = Server::start("127.0.0.1:0".parse().expect("addr"), config, move |_| {
        Delegate {
            jobs: jobs.lock().expect("lock").clone(),
            handle: None,
        }
    })
    .expect("start");
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let addr = server.local_addr();
            thread::spawn(move || {
                let mut stream = connect(addr);
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                for m in 0..20 {
                    stream
                        .write_all(format!("client {c} message {m}\n").as_bytes())
                        .expect("write");
                    let mut reply = String::new();
                    reader.read_line(&mut reply).expect("reply");
                    assert_eq!(reply, format!("CLIENT {c} MESSAGE {m}\n"));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    server.stopper().stop();
    server.join().expect("join");
    worker.join().expect("worker");
}

/// Reports every opened connection's id to the test.
struct ReportOpens {
    opened: mpsc::Sender<ConnId>,
}

impl Handler for ReportOpens {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        let _ = self.opened.send(conn.id());
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let n = conn.input().len();
        conn.consume(n);
    }

    fn on_close(&mut self, _: &mut Ctx<'_, ()>, _: ConnId, _: (), _: CloseReason) {}
}

#[test]
fn stale_conn_id_from_another_thread_is_an_error_after_slot_reuse() {
    let (opened_tx, opened) = mpsc::channel();
    let mut event_loop =
        EventLoop::new(Config::default(), ReportOpens { opened: opened_tx }).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let handle = event_loop.handle();
    let server = thread::spawn(move || {
        event_loop.run().expect("run");
        event_loop.stats().clone()
    });
    let first = connect(addr);
    let old = opened.recv_timeout(LIMIT).expect("first opened");
    drop(first);
    let deadline = Instant::now() + LIMIT;
    while handle.is_open(old) {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(1));
    }
    let mut second = connect(addr);
    let new = opened.recv_timeout(LIMIT).expect("second opened");
    assert_eq!(new.index(), old.index(), "the slot was reused");

    let from_another_thread = thread::spawn(move || {
        (
            handle.write(old, b"not yours".to_vec()),
            handle.close(old),
            handle.is_open(old),
            handle.is_open(new),
            handle,
        )
    });
    let (write, close, old_open, new_open, handle) = from_another_thread.join().expect("thread");
    assert!(matches!(write, Err(netloop::Error::StaleConn(id)) if id == old));
    assert!(matches!(close, Err(netloop::Error::StaleConn(_))));
    assert!(!old_open && new_open);
    // The new owner is untouched: open, and nothing was written to it.
    second
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(
        second.read(&mut buf).is_err(),
        "nothing arrived for the new owner"
    );
    handle.stop().expect("stop");
    drop(second);
    let stats = server.join().expect("server");
    assert_eq!(
        stats.stale_commands, 0,
        "refused at the handle, never queued"
    );
}

#[test]
fn graceful_stop_delivers_output_queued_before_the_deadline() {
    let config = ServerConfig {
        threads: 2,
        loop_config: Config {
            stop_timeout: Duration::from_secs(10),
            ..Config::default()
        },
        ..ServerConfig::default()
    };
    let server =
        Server::start("127.0.0.1:0".parse().expect("addr"), config, |_| Echo).expect("start");
    let payload = Rng::new(11).bytes(8 << 20);
    let mut streams: Vec<TcpStream> = (0..4).map(|_| connect(server.local_addr())).collect();
    // Send a lot without reading: the server queues echo up to its high-water mark.
    let writers: Vec<_> = streams
        .iter()
        .map(|s| {
            let mut w = s.try_clone().expect("clone");
            let payload = payload.clone();
            thread::spawn(move || {
                // Fails once the server stops and closes; that is expected.
                let _ = w.write_all(&payload);
                let _ = w.shutdown(Shutdown::Write);
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.stopper().stop();
    let readers: Vec<_> = streams
        .iter_mut()
        .map(|s| {
            let mut r = s.try_clone().expect("clone");
            thread::spawn(move || {
                let mut got = Vec::new();
                r.set_read_timeout(Some(LIMIT)).expect("timeout");
                r.read_to_end(&mut got)
                    .expect("read until the server's FIN");
                got
            })
        })
        .collect();
    let received: Vec<Vec<u8>> = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    let stats = server.join().expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drained before the deadline"
    );
    for w in writers {
        w.join().expect("writer");
    }
    let written: u64 = stats.iter().map(|s| s.bytes_written).sum();
    let got: usize = received.iter().map(Vec::len).sum();
    assert!(got > 0);
    assert_eq!(
        got as u64, written,
        "every byte the server accepted for writing arrived"
    );
    for r in &received {
        assert!(
            r[..] == payload[..r.len()],
            "the echo is an exact prefix of what was sent"
        );
    }
    let shutdown: u64 = stats
        .iter()
        .map(|s| s.closed_for(CloseReason::Shutdown))
        .sum();
    assert_eq!(shutdown, 4);
}

#[test]
fn reuseport_spreads_connections_and_acceptor_round_robins() {
    for (mode, check_even) in [(Mode::ReusePort, false), (Mode::Acceptor, true)] {
        let config = ServerConfig {
            threads: 2,
            mode,
            dispatch: Dispatch::RoundRobin,
            ..ServerConfig::default()
        };
        let server =
            Server::start("127.0.0.1:0".parse().expect("addr"), config, |_| Echo).expect("start");
        let mut clients: Vec<TcpStream> = (0..200).map(|_| connect(server.local_addr())).collect();
        for c in &mut clients {
            c.write_all(b"x").expect("write");
            assert_eq!(read_exact(c, 1), b"x");
        }
        drop(clients);
        server.stopper().stop();
        let stats = server.join().expect("join");
        let accepted: Vec<u64> = stats.iter().map(|s| s.accepted).collect();
        assert_eq!(accepted.iter().sum::<u64>(), 200, "{mode:?}");
        assert!(
            accepted.iter().all(|a| *a > 20),
            "{mode:?}: every loop got work: {accepted:?}"
        );
        if check_even {
            assert_eq!(accepted, vec![100, 100], "round-robin");
        }
    }
}

#[test]
fn acceptor_hash_dispatch_keeps_one_peer_on_one_loop() {
    let config = ServerConfig {
        threads: 3,
        mode: Mode::Acceptor,
        dispatch: Dispatch::Hash(Arc::new(|_| 2)),
        ..ServerConfig::default()
    };
    let server =
        Server::start("127.0.0.1:0".parse().expect("addr"), config, |_| Echo).expect("start");
    let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(server.local_addr())).collect();
    for c in &mut clients {
        c.write_all(b"y").expect("write");
        assert_eq!(read_exact(c, 1), b"y");
    }
    drop(clients);
    server.stopper().stop();
    let accepted: Vec<u64> = server
        .join()
        .expect("join")
        .iter()
        .map(|s| s.accepted)
        .collect();
    assert_eq!(accepted, vec![0, 0, 10]);
}

/// CPU ticks used so far by this process's threads whose name starts with `prefix`.
fn thread_ticks(prefix: &str) -> u64 {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
            if !name.starts_with(prefix) {
                return None;
            }
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
            Some(fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?)
        })
        .sum()
}

#[test]
fn oneshot_a_half_closed_peer_that_never_reads_does_not_spin_a_worker() {
    let _alone = oneshot_alone();
    let config = oneshot_config(
        1,
        Config {
            stop_timeout: Duration::from_millis(200),
            ..Config::default()
        },
    );
    let server =
        Server::start("127.0.0.1:0".parse().expect("addr"), config, |_| Amplify).expect("start");
    let mut c = TcpStream::connect(server.local_addr()).expect("connect");
    // 6.4 MiB of replies the peer will never read, then its FIN.
    c.write_all(&[b'?'; 100]).expect("write");
    c.shutdown(Shutdown::Write).expect("FIN");
    thread::sleep(Duration::from_millis(300));
    let before = thread_ticks("netloop-oneshot");
    thread::sleep(Duration::from_secs(1));
    let used = thread_ticks("netloop-oneshot") - before;
    assert!(
        used < 20,
        "the worker is idle, not re-arming in a loop ({used} ticks in 1 s)"
    );
    server.stopper().stop();
    server.join().expect("join");
    drop(c);
}

/// Reports each connection's id, and blocks for a while on the line "hold".
struct SlowOnHold {
    opened: mpsc::Sender<ConnId>,
}

impl Handler for SlowOnHold {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        let _ = self.opened.send(conn.id());
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        if conn.input().starts_with(b"hold") {
            // A slow call: the connection stays checked out by this worker.
            thread::sleep(Duration::from_millis(300));
        }
        let n = conn.input().len();
        conn.consume(n);
    }
}

#[test]
fn oneshot_writes_through_the_handle_arrive_in_order_while_a_worker_holds_the_connection() {
    let _alone = oneshot_alone();
    let (opened_tx, opened) = mpsc::channel();
    let opened_tx = Mutex::new(opened_tx);
    let server = Server::start(
        "127.0.0.1:0".parse().expect("addr"),
        oneshot_config(3, Config::default()),
        move |_| SlowOnHold {
            opened: opened_tx.lock().expect("lock").clone(),
        },
    )
    .expect("start");
    let mut client = connect(server.local_addr());
    let id = opened.recv_timeout(LIMIT).expect("opened");
    let handle = server.handles()[0].clone();
    client.write_all(b"hold").expect("write");
    thread::sleep(Duration::from_millis(50));
    // Sent while a worker holds the connection: other workers take these
    // commands and must leave them, in order, with the holder.
    let mut expected = Vec::new();
    for i in 0..200 {
        let message = format!("{i},");
        expected.extend_from_slice(message.as_bytes());
        handle.write(id, message.into_bytes()).expect("write");
        if i % 20 == 0 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let got = read_exact(&mut client, expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "every write, in the order sent"
    );
    drop(client);
    server.stopper().stop();
    let stats = server.join().expect("join");
    assert_eq!(stats.iter().map(|s| s.stale_commands).sum::<u64>(), 0);
}
