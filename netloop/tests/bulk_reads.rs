//! A connection that receives large amounts keeps reading into bulk
//! buffers from the first read of each arrival, so a stream or a large
//! message moves in one read instead of a standard-sized read followed by
//! a bulk one; a connection that goes back to small messages goes back to
//! standard buffers, so it does not pin a bulk one.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use netloop::{Config, Conn, EventLoop, Handler};

/// Records how many bytes each `on_data` found, and consumes them.
#[derive(Default)]
struct Recorder {
    deliveries: Vec<usize>,
}

impl Handler for Recorder {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let n = conn.input().len();
        self.deliveries.push(n);
        conn.consume(n);
    }
}

/// Sends `message` and turns the loop until all of it was delivered;
/// returns the sizes it was delivered in.
fn deliveries_of(
    event_loop: &mut EventLoop<Recorder>,
    client: &mut TcpStream,
    message: &[u8],
) -> Vec<usize> {
    let before = event_loop.handler().deliveries.len();
    client.write_all(message).expect("send");
    // Loopback delivers during the send; the pause only makes sure every
    // byte waits in the socket before the loop reads.
    thread::sleep(Duration::from_millis(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = &event_loop.handler().deliveries[before..];
        if got.iter().sum::<usize>() >= message.len() {
            return got.to_vec();
        }
        assert!(Instant::now() < deadline, "only {got:?} delivered");
        event_loop
            .turn(Some(Duration::from_millis(10)))
            .expect("turn");
    }
}

#[test]
fn large_arrivals_are_read_whole_once_a_read_was_large() {
    let config = Config::default();
    let standard = config.buffer_size;
    let large = vec![7u8; 3 * standard];
    let mut event_loop = EventLoop::new(config, Recorder::default()).expect("loop");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server_side, _) = listener.accept().expect("accept");
    event_loop.adopt(server_side).expect("adopt");

    let first = deliveries_of(&mut event_loop, &mut client, &large);
    assert_eq!(
        first,
        [standard, 2 * standard],
        "a fresh connection reads a standard buffer, then a bulk one"
    );
    let second = deliveries_of(&mut event_loop, &mut client, &large);
    assert_eq!(
        second,
        [large.len()],
        "after a large read, the next arrival is read whole into a bulk buffer"
    );

    let small = deliveries_of(&mut event_loop, &mut client, b"ping");
    assert_eq!(small, [4]);
    let after_small = deliveries_of(&mut event_loop, &mut client, &large);
    assert!(
        after_small.len() > 1 && after_small[0] <= 2 * standard,
        "after a small read the connection is back on standard buffers: {after_small:?}"
    );
}
