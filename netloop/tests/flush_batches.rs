//! A turn that serves many ready connections writes their output in
//! batches as it goes, not all at its end: each connection's output holds
//! a buffer until it is written, so a burst of ready connections would
//! otherwise hold a buffer each at once (and malloc keeps that peak).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use netloop::echo::Echo;
use netloop::{Config, Conn, EventLoop, Handler};

const CLIENTS: usize = 200;

/// Echoes, and records how many bytes the loop had written when each
/// `on_data` began.
#[derive(Default)]
struct Watching {
    written_before: Vec<u64>,
}

impl Handler for Watching {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        self.written_before.push(conn.stats().bytes_written);
        Echo.on_data(conn);
    }
}

#[test]
fn a_burst_of_ready_connections_is_written_out_in_batches_within_the_turn() {
    let mut event_loop = EventLoop::new(Config::default(), Watching::default()).expect("loop");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let client = TcpStream::connect(addr).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        event_loop.adopt(server_side).expect("adopt");
        clients.push(client);
    }
    // Registration reports nothing yet: no byte has arrived.
    event_loop.turn(Some(Duration::ZERO)).expect("turn");
    for client in &mut clients {
        client.write_all(b"x").expect("send");
    }
    thread::sleep(Duration::from_millis(50));
    // One turn sees every client ready at once.
    event_loop.turn(Some(Duration::from_secs(5))).expect("turn");

    let written = &event_loop.handler().written_before;
    assert_eq!(written.len(), CLIENTS, "every client read in one turn");
    assert!(
        written.last().is_some_and(|&bytes| bytes > 0),
        "the last connection of the burst was served before any output went out: {written:?}"
    );
    for client in &mut clients {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut echoed = [0u8; 1];
        client.read_exact(&mut echoed).expect("echo");
        assert_eq!(&echoed, b"x");
    }
}
