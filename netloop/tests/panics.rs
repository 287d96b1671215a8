//! A handler that panics costs the connection it was about, and nothing
//! else: the other conversations go on and new clients are still served.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler};
use support::{connect, turn_until};

const LIMIT: Duration = Duration::from_secs(5);

/// Echoes whole lines, and panics on the line "boom".
#[derive(Default)]
struct Lines {
    closed: Vec<(ConnId, CloseReason)>,
}

impl Handler for Lines {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        while let Some(end) = conn.input().iter().position(|&b| b == b'\n') {
            let line = conn.input()[..=end].to_vec();
            if line == b"boom\n" {
                panic!("boom");
            }
            conn.consume(line.len());
            conn.write(&line);
        }
    }

    fn on_close(&mut self, _: &mut Ctx<'_, ()>, id: ConnId, _: (), reason: CloseReason) {
        self.closed.push((id, reason));
    }
}

/// Reads one line from `stream` while running the loop's turns.
fn read_line(event_loop: &mut EventLoop<Lines>, stream: &mut TcpStream) -> String {
    stream.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + LIMIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\n") {
        assert!(Instant::now() < deadline, "no whole line: {got:?}");
        match stream.read(&mut buf) {
            Ok(0) => panic!("EOF after {got:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        event_loop
            .turn(Some(Duration::from_millis(1)))
            .expect("turn");
    }
    stream.set_nonblocking(false).expect("blocking");
    String::from_utf8(got).expect("utf8")
}

/// Sends `line` and returns the echo.
fn say(event_loop: &mut EventLoop<Lines>, stream: &mut TcpStream, line: &str) -> String {
    stream.write_all(line.as_bytes()).expect("write");
    read_line(event_loop, stream)
}

#[test]
fn a_panic_on_one_input_closes_that_connection_only_and_the_loop_serves_on() {
    let mut event_loop = EventLoop::new(Config::default(), Lines::default()).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let mut others: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for (i, client) in others.iter_mut().enumerate() {
        let line = format!("hello {i}\n");
        assert_eq!(say(&mut event_loop, client, &line), line);
    }
    // Mid-conversation: half a line waits in the server's input for one
    // client, an echo not yet read waits for another.
    others[0].write_all(b"half a ").expect("write");
    others[1].write_all(b"unread\n").expect("write");
    let mut bomber = connect(addr);
    assert_eq!(say(&mut event_loop, &mut bomber, "fine\n"), "fine\n");

    bomber.write_all(b"boom\n").expect("write");
    turn_until(&mut event_loop, LIMIT, |l| !l.handler().closed.is_empty());

    let (bomber_id, reason) = event_loop.handler().closed[0];
    assert_eq!(reason, CloseReason::HandlerPanic);
    assert_eq!(event_loop.handler().closed.len(), 1, "only that one closed");
    assert_eq!(event_loop.stats().handler_panics, 1);
    assert_eq!(event_loop.stats().closed_for(CloseReason::HandlerPanic), 1);
    assert_eq!(event_loop.connection_count(), 3);
    bomber.set_read_timeout(Some(LIMIT)).expect("timeout");
    match bomber.read(&mut [0u8; 16]) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the panicking connection was not closed: {other:?}"),
    }

    others[0].write_all(b"line\n").expect("write");
    assert_eq!(read_line(&mut event_loop, &mut others[0]), "half a line\n");
    assert_eq!(read_line(&mut event_loop, &mut others[1]), "unread\n");
    for (i, client) in others.iter_mut().enumerate() {
        let line = format!("still here {i}\n");
        assert_eq!(say(&mut event_loop, client, &line), line);
    }
    let mut newcomer = connect(addr);
    assert_eq!(say(&mut event_loop, &mut newcomer, "new\n"), "new\n");
    assert_eq!(event_loop.stats().accepted, 5);
    assert_eq!(
        event_loop.handler().closed,
        vec![(bomber_id, CloseReason::HandlerPanic)],
        "nobody else closed"
    );
}
