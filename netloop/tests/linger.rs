//! Lingering close: a connection closed by the server while its peer is
//! still sending gets its reply delivered, not destroyed by a reset.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use netloop::{CloseReason, Config, Conn, EventLoop, Handler};
use socket2::{Domain, Socket, Type};
use support::{Running, turn_until};

const LIMIT: Duration = Duration::from_secs(20);
const REPLY: usize = 4 * 1024 * 1024;

/// Answers the first input with a large reply and closes, as a server
/// answers a bad request with its last response.
struct ReplyThenClose;

impl Handler for ReplyThenClose {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let n = conn.input().len();
        conn.consume(n);
        conn.write(&vec![b'r'; REPLY]);
        conn.close();
    }
}

/// A client with a small receive buffer, so that most of the reply still
/// waits in the server's send queue when the server is done writing.
fn small_window_client(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream
}

/// Reads to EOF; `Err` with what arrived if the connection was reset.
fn read_all(stream: &mut TcpStream) -> Result<usize, usize> {
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err(got),
            Err(e) => panic!("read: {e} after {got} bytes"),
        }
    }
}

#[test]
fn a_close_with_unread_input_lingers_so_the_reply_arrives_whole() {
    let server = Running::start(Config::default(), ReplyThenClose);
    for round in 0..3 {
        let mut client = small_window_client(server.addr);
        // The request, then more the server will never read as a request:
        // it is unread when the server is done with the reply.
        client.write_all(b"go").expect("write");
        thread::sleep(Duration::from_millis(50));
        client.write_all(&[b'x'; 64 * 1024]).expect("write");
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            read_all(&mut client),
            Ok(REPLY),
            "round {round}: the whole reply, then a clean FIN (Err: reset after that many bytes)"
        );
    }
    let stats = server.finish();
    assert_eq!(stats.lingering_closes, 3);
    assert_eq!(
        stats.closed_for(CloseReason::Closed),
        3,
        "the reason it closed for"
    );
}

#[test]
fn lingering_is_bounded_in_time_and_bytes() {
    let config = Config {
        linger_timeout: Some(Duration::from_millis(300)),
        linger_bytes: 1024 * 1024,
        ..Config::default()
    };
    let mut event_loop = EventLoop::new(config, ReplyThenClose).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");

    // A peer that reads the reply but never closes: closed at the deadline.
    let reader = thread::spawn(move || {
        let mut client = TcpStream::connect(addr).expect("connect");
        client.set_read_timeout(Some(LIMIT)).expect("timeout");
        client.write_all(b"go").expect("write");
        let got = read_all(&mut client);
        thread::sleep(Duration::from_secs(1));
        got
    });
    turn_until(&mut event_loop, LIMIT, |l| l.stats().lingering_closes == 1);
    let started = Instant::now();
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 0);
    let lingered = started.elapsed();
    assert!(lingered < Duration::from_secs(2), "{lingered:?}");
    assert_eq!(reader.join().expect("reader"), Ok(REPLY));

    // A peer that keeps sending: closed once a megabyte was discarded.
    let flooder = thread::spawn(move || {
        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(b"go").expect("write");
        let mut reading = client.try_clone().expect("clone");
        thread::spawn(move || read_all(&mut reading));
        let junk = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if client.write_all(&junk).is_err() {
                return started.elapsed();
            }
        }
        started.elapsed()
    });
    turn_until(&mut event_loop, LIMIT, |l| l.stats().lingering_closes == 2);
    turn_until(&mut event_loop, Duration::from_secs(2), |l| {
        l.connection_count() == 0
    });
    assert!(flooder.join().expect("flooder") < Duration::from_secs(5));
    assert_eq!(event_loop.stats().closed_for(CloseReason::Closed), 2);
}
