//! Servers started on listening sockets bound elsewhere (socket
//! activation, a live upgrade), in every mode: every passed socket is
//! accepted from, including the connections already waiting in each one's
//! backlog, and a server that hands its sockets over lets its own
//! connections finish while the sockets keep listening for the new one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netloop::echo::Echo;
use netloop::server::{Mode, Server, ServerConfig};
use socket2::{Domain, Socket, Type};

const THREADS: usize = 2;
const LIMIT: Duration = Duration::from_secs(5);

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
                super::$behaviour(Mode::OneShot);
            }
        }
    )*};
}

in_every_mode!(
    every_passed_socket_and_its_backlog_is_served,
    hand_over_keeps_every_connection
);

fn config(mode: Mode) -> ServerConfig {
    ServerConfig {
        threads: THREADS,
        mode,
        ..ServerConfig::default()
    }
}

/// `count` `SO_REUSEPORT` listeners on one loopback port.
fn reuseport_group(count: usize) -> Vec<TcpListener> {
    let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    (0..count)
        .map(|_| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            socket.set_reuse_port(true).unwrap();
            socket.bind(&addr.into()).unwrap();
            socket.listen(128).unwrap();
            let listener: TcpListener = socket.into();
            addr = listener.local_addr().unwrap();
            listener
        })
        .collect()
}

fn client(addr: SocketAddr, message: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.write_all(message).unwrap();
    stream
}

fn echoed(stream: &mut TcpStream, message: &[u8]) -> bool {
    let mut got = vec![0u8; message.len()];
    stream.read_exact(&mut got).is_ok() && got == message
}

/// Four sockets, two loops: connections queued in each socket's backlog
/// before the server starts are all served. A server that accepted from
/// some sockets only would leave the others' clients waiting.
fn every_passed_socket_and_its_backlog_is_served(mode: Mode) {
    let sockets = reuseport_group(4);
    let addr = sockets[0].local_addr().unwrap();
    let mut clients: Vec<(TcpStream, Vec<u8>)> = (0..48u8)
        .map(|i| {
            let message = vec![i; 100];
            (client(addr, &message), message)
        })
        .collect();
    let server = Server::start_on(sockets, config(mode), |_| Echo).unwrap();
    assert_eq!(server.local_addrs(), vec![addr]);
    for (index, (stream, message)) in clients.iter_mut().enumerate() {
        assert!(
            echoed(stream, message),
            "{mode:?}: client {index} was not served"
        );
    }
    drop(clients);
    server.stopper().stop();
    let stats = server.join().unwrap();
    let accepted: u64 = stats.iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, 48, "{mode:?}");
}

/// A live upgrade in one process: a second server starts on duplicates of
/// the first one's sockets, then the first hands over. Its connections go
/// on being served, and connections made after the hand-over reach the
/// second server (the sockets still listen).
fn hand_over_keeps_every_connection(mode: Mode) {
    let old = Server::start("127.0.0.1:0".parse().unwrap(), config(mode), |_| Echo).unwrap();
    let addr = old.local_addr();
    let mut before: Vec<TcpStream> = (0..8).map(|_| client(addr, b"before")).collect();
    for stream in &mut before {
        assert!(echoed(stream, b"before"));
    }
    let passed = old.listening_sockets().duplicate().unwrap();
    assert!(!passed.is_empty());
    let new = Server::start_on(passed, config(mode), |_| Echo).unwrap();
    old.stopper().hand_over();
    // The old server's copies close as its loops see the hand-over (an
    // idle one-shot worker drops its copy when it next wakes); the sockets
    // keep listening through the new server's.
    std::thread::sleep(Duration::from_millis(100));
    if mode != Mode::OneShot {
        assert!(old.listening_sockets().duplicate().unwrap().is_empty());
    }
    let mut after: Vec<TcpStream> = (0..8).map(|_| client(addr, b"after")).collect();
    for stream in &mut after {
        assert!(
            echoed(stream, b"after"),
            "{mode:?}: a new connection after the hand-over"
        );
    }
    for stream in &mut before {
        stream.write_all(b"still here").unwrap();
        assert!(
            echoed(stream, b"still here"),
            "{mode:?}: an old connection after the hand-over"
        );
    }
    drop(before);
    let old_stats = old.join().unwrap();
    let old_accepted: u64 = old_stats.iter().map(|s| s.accepted).sum();
    assert_eq!(old_accepted, 8, "{mode:?}");
    drop(after);
    new.stopper().stop();
    let new_stats = new.join().unwrap();
    assert_eq!(
        new_stats.iter().map(|s| s.accepted).sum::<u64>(),
        8,
        "{mode:?}"
    );
}
