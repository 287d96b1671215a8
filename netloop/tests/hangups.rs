//! A peer that hangs up or resets while its connection's reading is held
//! (and nothing waits to be written) must not make a level-triggered loop or
//! a one-shot worker spin: epoll reports HUP and ERR whatever the interest.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use netloop::server::{Mode, Server, ServerConfig};
use netloop::{Config, Conn, EventLoop, Handler, Trigger};
use support::{connect, turn_for, turn_until};

const LIMIT: Duration = Duration::from_secs(5);

/// Holds every connection's reading from the start, as a relay does until
/// its upstream is up.
struct PausedOnOpen;

impl Handler for PausedOnOpen {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        conn.pause_reading();
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let n = conn.input().len();
        conn.consume(n);
    }
}

/// Resets `stream`: with SO_LINGER 0, closing sends RST.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(stream);
}

#[test]
fn level_triggered_a_reset_on_a_held_connection_does_not_spin_the_loop() {
    let config = Config {
        trigger: Trigger::Level,
        ..Config::default()
    };
    let mut event_loop = EventLoop::new(config, PausedOnOpen).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let client = connect(addr);
    turn_until(&mut event_loop, LIMIT, |l| l.connection_count() == 1);
    client.set_nodelay(true).expect("nodelay");
    reset(client);
    let before = event_loop.stats().wait_calls;
    // Waits of at most 5 ms for 300 ms: about 60 when idle.
    turn_for(&mut event_loop, Duration::from_millis(300));
    let waits = event_loop.stats().wait_calls - before;
    assert!(
        waits < 200,
        "{waits} epoll_wait calls in 300 ms: the loop spins"
    );
}

#[test]
fn oneshot_a_reset_on_a_held_connection_does_not_spin_a_worker() {
    let config = ServerConfig {
        threads: 1,
        mode: Mode::OneShot,
        loop_config: Config {
            stop_timeout: Duration::from_millis(100),
            ..Config::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::start("127.0.0.1:0".parse().expect("addr"), config, |_| {
        PausedOnOpen
    })
    .expect("start");
    let client = connect(server.local_addr());
    std::thread::sleep(Duration::from_millis(100));
    reset(client);
    std::thread::sleep(Duration::from_millis(300));
    server.stopper().stop();
    let stats = server.join().expect("join");
    let waits: u64 = stats.iter().map(|s| s.wait_calls).sum();
    assert!(waits < 200, "{waits} epoll_wait calls: the worker spins");
}
