//! A turn that serves many ready connections writes their output after
//! every 32 events, not all at its end (nor after each): queued output holds
//! a buffer until it is written, so a burst of ready connections would
//! otherwise hold a buffer each at once (and malloc keeps that peak).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use netloop::echo::Echo;
use netloop::{Config, Conn, ConnId, EventLoop, Handler};

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

/// Writes a byte to every connection of the loop for each message, as a
/// chat room does.
#[derive(Default)]
struct Broadcast {
    members: Vec<ConnId>,
}

impl Handler for Broadcast {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        self.members.push(conn.id());
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let n = conn.input().len();
        conn.consume(n);
        for &member in &self.members {
            if let Ok(mut member) = conn.conn(member) {
                member.write(b"m");
            }
        }
    }
}

/// `CLIENTS` connections adopted by `event_loop`, each of which has sent
/// one byte that waits to be read: the next turn sees them all ready.
fn ready_burst<H: Handler<State = ()>>(event_loop: &mut EventLoop<H>) -> Vec<TcpStream> {
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
    clients
}

#[test]
fn a_burst_of_ready_connections_is_written_out_in_batches_within_the_turn() {
    let mut event_loop = EventLoop::new(Config::default(), Watching::default()).expect("loop");
    let mut clients = ready_burst(&mut event_loop);
    event_loop.turn(Some(Duration::from_secs(5))).expect("turn");

    let written = &event_loop.handler().written_before;
    assert_eq!(written.len(), CLIENTS, "every client read in one turn");
    assert!(
        written[..32].iter().all(|&bytes| bytes == 0),
        "the first 32 events of the turn were served before any flush: {written:?}"
    );
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

#[test]
fn a_connection_every_event_writes_to_is_written_once_per_batch_not_per_event() {
    let mut event_loop = EventLoop::new(Config::default(), Broadcast::default()).expect("loop");
    let _clients = ready_burst(&mut event_loop);
    event_loop.turn(Some(Duration::from_secs(5))).expect("turn");
    assert_eq!(
        event_loop.stats().bytes_read,
        CLIENTS as u64,
        "one turn read them all"
    );
    // Every connection has output after the first event; flushing per
    // event would write each of them once per event.
    let batches = CLIENTS.div_ceil(32) as u64 + 1;
    let writes = event_loop.stats().write_calls;
    assert!(
        writes <= CLIENTS as u64 * batches,
        "{writes} writes for {CLIENTS} connections in {batches} batches"
    );
}
