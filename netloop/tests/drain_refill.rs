//! A handler that refills its output on every drain (a file server, a
//! stream generator) must not keep one turn going for as long as the
//! kernel takes its bytes: each turn ends, so other connections, timers
//! and a stop get their turn too.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use netloop::{Config, Conn, EventLoop, Handler};

const STREAMS: usize = 4;
const CHUNK: usize = 64 * 1024;

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
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        conn.consume(usize::MAX);
    }

    fn on_drained(&mut self, conn: &mut Conn<'_, ()>) {
        self.drains += 1;
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
            event_loop
                .turn(Some(Duration::from_millis(10)))
                .expect("turn");
            turns += 1;
        }
        let written = event_loop.stats().bytes_written;
        let _ = done.send((turns, event_loop.handler().drains, written));
    });
    let (turns, drains, written) = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the event loop's turns did not end while a handler refilled on every drain");
    assert!(drains > 0, "no drain was ever reported");
    assert!(written > 64 * 1024 * 1024, "only {written} bytes streamed");
    // Each turn serves each connection's drain at most once, so moving the
    // bytes takes many turns.
    assert!(turns >= 10, "only {turns} turns in two seconds");
}
