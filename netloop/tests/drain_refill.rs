//! A handler that refills its output on every drain (a file server, a
//! stream generator) must not keep one turn going for as long as the
//! kernel takes its bytes: each turn ends, so other connections, timers
//! and a stop get their turn too.

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use netloop::{Config, Conn, ConnId, EventLoop, Handler, TimerId};

const STREAMS: usize = 4;
const CHUNK: usize = 64 * 1024;
const REFILL_EVERY: Duration = Duration::from_millis(1);

/// Reads and drops everything on `STREAMS` connections, as fast as it can.
fn discard_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for _ in 0..STREAMS {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Keeps every connection's output above its low-water mark.
struct Refill {
    chunk: Vec<u8>,
    drains: u64,
    /// The turn the test is running, set before each.
    turn: u64,
    /// (turn, connection) of every drain notice.
    told: HashSet<(u64, ConnId)>,
    /// Notices a connection got more than once in one turn.
    told_twice: u64,
}

impl Refill {
    fn fill(&self, conn: &mut Conn<'_, ()>) {
        while !conn.is_full() {
            conn.write(&self.chunk);
        }
    }
}

impl Handler for Refill {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        self.fill(conn);
        conn.set_timer(REFILL_EVERY, 0);
    }

    /// Refills on a timer too, as a generator does: a drain notice carried
    /// into the next turn then meets a second drain in that turn.
    fn on_timer(&mut self, conn: &mut Conn<'_, ()>, _: TimerId, _: u64) {
        self.fill(conn);
        conn.set_timer(REFILL_EVERY, 0);
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        conn.consume(usize::MAX);
    }

    fn on_drained(&mut self, conn: &mut Conn<'_, ()>) {
        self.drains += 1;
        if !self.told.insert((self.turn, conn.id())) {
            self.told_twice += 1;
        }
        self.fill(conn);
    }
}

#[test]
fn turns_end_while_handlers_refill_on_every_drain() {
    let sink = discard_sink();
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let config = Config {
            high_water: 1024 * 1024,
            low_water: 256 * 1024,
            ..Config::default()
        };
        let handler = Refill {
            chunk: vec![7u8; CHUNK],
            drains: 0,
            turn: 0,
            told: HashSet::new(),
            told_twice: 0,
        };
        let mut event_loop = EventLoop::new(config, handler).expect("loop");
        for _ in 0..STREAMS {
            event_loop.connect(sink, ()).expect("connect");
        }
        let started = Instant::now();
        let mut turns = 0u64;
        // Two seconds of streaming, counted in turns: with turns that
        // never end this loop never gets to count.
        while started.elapsed() < Duration::from_secs(2) {
            event_loop.handler_mut().turn = turns;
            event_loop
                .turn(Some(Duration::from_millis(10)))
                .expect("turn");
            turns += 1;
        }
        let written = event_loop.stats().bytes_written;
        let handler = event_loop.handler();
        let _ = done.send((handler.drains, handler.told_twice, written));
    });
    let (drains, told_twice, written) = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the event loop's turns did not end while a handler refilled on every drain");
    assert!(drains > 0, "no drain was ever reported");
    assert!(written > 16 * 1024 * 1024, "only {written} bytes streamed");
    assert_eq!(
        told_twice, 0,
        "a connection heard on_drained twice in one turn"
    );
}
