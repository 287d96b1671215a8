//! The seed scenarios (shared/seeds 000-002), named as such. Each builds the
//! batch `epoll_wait` would return by hand, so that the order is exact, and
//! dispatches it through the real dispatcher with real sockets behind it.

mod relay;
mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use netloop::testing::Event;
use netloop::testing::{READABLE, WRITABLE};
use netloop::{CloseReason, Config, ConnId, EventLoop};
use support::{Plan, Recorder, Seen, connect, read_exact, turn_for, turn_until};

const LIMIT: Duration = Duration::from_secs(10);

/// The seeds assert which fd number a new connection gets: the lowest free
/// one, which any other test opening or closing a descriptor meanwhile would
/// change. So they run one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn new_loop(config: Config) -> (EventLoop<Recorder>, std::net::SocketAddr) {
    let mut event_loop = EventLoop::new(config, Recorder::default()).expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    (event_loop, addr)
}

/// Connects a client and runs the loop until the server side has opened.
fn open(
    event_loop: &mut EventLoop<Recorder>,
    addr: std::net::SocketAddr,
) -> (TcpStream, ConnId, i32) {
    let before = event_loop.handler().opened().len();
    let client = connect(addr);
    turn_until(event_loop, LIMIT, |l| l.handler().opened().len() > before);
    // Let the initial writable edges go by, so later batches are only ours.
    turn_for(event_loop, Duration::from_millis(20));
    let (id, fd) = event_loop.handler().opened()[before];
    (client, id, fd)
}

fn readable(id: ConnId) -> Event {
    Event {
        token: id.to_u64(),
        events: READABLE | WRITABLE,
    }
}

/// Checks that `client`'s connection `id` is untouched and still works.
fn assert_untouched_then_echoes(
    event_loop: &mut EventLoop<Recorder>,
    client: &mut TcpStream,
    id: ConnId,
) {
    assert!(
        event_loop.handler().data_for(id).is_empty(),
        "a stale event delivered data to {id}"
    );
    assert_eq!(event_loop.handler().close_of(id), None, "{id} was closed");
    client.write_all(b"mine").expect("write");
    turn_until(event_loop, LIMIT, |l| l.handler().data_for(id) == b"mine");
    assert_eq!(read_exact(client, 4), b"mine");
}

#[test]
fn seed_a_closes_c_then_b_accepted_into_cs_slot_and_fd_then_cs_stale_event_arrives() {
    let _serial = one_at_a_time();
    let (mut event_loop, addr) = new_loop(Config::default());
    let (mut client_a, a, _) = open(&mut event_loop, addr);
    let (mut client_c, c, c_fd) = open(&mut event_loop, addr);
    event_loop.handler_mut().plans.insert(a, Plan::Close(c));

    client_a.write_all(b"a").expect("write a");
    client_c.write_all(b"c").expect("write c");
    let mut client_b = connect(addr);
    let listener = event_loop.listener_token(0).expect("listener");
    event_loop.dispatch_batch(&[
        readable(a),
        Event {
            token: listener,
            events: READABLE,
        },
        readable(c),
    ]);

    let opened = event_loop.handler().opened();
    let &(b, b_fd) = opened.last().expect("b opened");
    assert_eq!(event_loop.handler().close_of(c), Some(CloseReason::Closed));
    assert_eq!(b.index(), c.index(), "B took C's slot");
    assert_eq!(b_fd, c_fd, "B took C's fd number");
    assert_ne!(b.generation(), c.generation());
    assert_eq!(event_loop.stats().stale_events, 1, "C's event was dropped");
    assert!(
        event_loop.handler().data_for(c).is_empty(),
        "C's event reached nobody"
    );
    assert_untouched_then_echoes(&mut event_loop, &mut client_b, b);
}

#[test]
fn seed_slot_reused_twice_in_one_batch_b_and_b_prime() {
    let _serial = one_at_a_time();
    // One accept per listener event, so the batch decides who is accepted when.
    let config = Config {
        accepts_per_event: 1,
        ..Config::default()
    };
    let (mut event_loop, addr) = new_loop(config);
    let (mut client_a, a, _) = open(&mut event_loop, addr);
    let (mut client_a2, a2, _) = open(&mut event_loop, addr);
    let (mut client_c, c, _) = open(&mut event_loop, addr);
    event_loop.handler_mut().plans.insert(a, Plan::Close(c));
    event_loop.handler_mut().plans.insert(a2, Plan::CloseNewest);

    client_a.write_all(b"a").expect("write");
    client_a2.write_all(b"2").expect("write");
    client_c.write_all(b"c").expect("write");
    let _client_b = connect(addr);
    let mut client_b2 = connect(addr);
    let listener = Event {
        token: event_loop.listener_token(0).expect("listener"),
        events: READABLE,
    };
    // A closes C; B is accepted into C's slot; A2 closes B; B' is accepted
    // into the same slot; then the stale events of C and B arrive.
    let b_guess = ConnId::new(c.index(), c.generation().wrapping_add(1));
    event_loop.dispatch_batch(&[
        readable(a),
        listener,
        readable(a2),
        listener,
        readable(c),
        readable(b_guess),
    ]);

    let opened = event_loop.handler().opened();
    let (b, _) = opened[opened.len() - 2];
    let (b2, _) = opened[opened.len() - 1];
    assert_eq!(b, b_guess, "B took C's slot");
    assert_eq!(event_loop.handler().close_of(b), Some(CloseReason::Closed));
    assert_eq!(b2.index(), c.index(), "B' took the slot again");
    assert_eq!(
        b2.generation() & 1,
        c.generation() & 1,
        "a one-bit instance flag could not tell B' from C"
    );
    assert_eq!(
        event_loop.stats().stale_events,
        2,
        "C's and B's events were dropped"
    );
    assert_untouched_then_echoes(&mut event_loop, &mut client_b2, b2);
}

#[test]
fn seed_read_side_closes_and_the_write_event_in_the_same_entry_is_stale() {
    let _serial = one_at_a_time();
    let (mut event_loop, addr) = new_loop(Config::default());
    let (mut client_x, x, _) = open(&mut event_loop, addr);
    event_loop.handler_mut().plans.insert(x, Plan::CloseSelf);
    client_x.write_all(b"bye").expect("write");
    let writes_before = event_loop.stats().write_calls;

    event_loop.dispatch_batch(&[readable(x)]);

    assert_eq!(event_loop.handler().close_of(x), Some(CloseReason::Closed));
    assert_eq!(
        event_loop.stats().stale_write_halves,
        1,
        "the write half was checked again and dropped"
    );
    assert_eq!(
        event_loop.stats().write_calls,
        writes_before,
        "nothing was written for the closed connection"
    );
    assert_eq!(event_loop.stats().stale_events, 0);
}

#[test]
fn seed_dup_fd_outlives_close_and_its_events_reach_nobody() {
    let _serial = one_at_a_time();
    let (mut event_loop, addr) = new_loop(Config::default());
    let (mut client_x, x, x_fd) = open(&mut event_loop, addr);
    event_loop.handler_mut().plans.insert(x, Plan::DupAndClose);
    client_x.write_all(b"x").expect("write");
    turn_until(&mut event_loop, LIMIT, |l| {
        l.handler().close_of(x).is_some()
    });
    assert_eq!(
        event_loop.handler().kept_fds.len(),
        1,
        "the duplicate is alive"
    );

    // The socket is still open through the duplicate: more data for it now
    // must raise no event for the loop, and Y, accepted into X's slot, must
    // see none of it.
    let (mut client_y, y, y_fd) = open(&mut event_loop, addr);
    assert_eq!(y.index(), x.index(), "Y took X's slot");
    assert_ne!(y_fd, x_fd, "X's fd number is still held by the duplicate");
    client_x
        .write_all(b"leak")
        .expect("write through the dup'd socket");
    turn_for(&mut event_loop, Duration::from_millis(50));
    assert_eq!(
        event_loop.stats().stale_events,
        0,
        "X's registration was removed"
    );

    // And if an old entry for X is still in a batch, it is dropped.
    event_loop.dispatch_batch(&[readable(x)]);
    assert_eq!(event_loop.stats().stale_events, 1);
    assert_untouched_then_echoes(&mut event_loop, &mut client_y, y);
    assert!(
        !event_loop
            .handler()
            .seen
            .iter()
            .any(|s| matches!(s, Seen::Data { bytes, .. } if bytes == b"leak"))
    );
}

#[test]
fn seed_a_b_c_with_real_sockets_in_one_real_batch() {
    let _serial = one_at_a_time();
    let (mut event_loop, addr) = new_loop(Config::default());
    let (mut client_a, a, _) = open(&mut event_loop, addr);
    let (mut client_c, c, c_fd) = open(&mut event_loop, addr);
    event_loop.handler_mut().plans.insert(a, Plan::Close(c));

    // The kernel queues readiness in the order it happens: A's data, B's
    // connection, C's data. One epoll_wait returns all three.
    client_a.write_all(b"a").expect("write a");
    let mut client_b = connect(addr);
    std::thread::sleep(Duration::from_millis(20));
    client_c.write_all(b"c").expect("write c");
    std::thread::sleep(Duration::from_millis(20));
    event_loop.turn(Some(Duration::from_secs(1))).expect("turn");

    let opened = event_loop.handler().opened();
    let &(b, b_fd) = opened.last().expect("b opened");
    assert_eq!(event_loop.handler().close_of(c), Some(CloseReason::Closed));
    assert_eq!(
        (b.index(), b_fd),
        (c.index(), c_fd),
        "B took C's slot and fd"
    );
    assert_eq!(
        event_loop.stats().stale_events,
        1,
        "C's real event was dropped"
    );
    assert!(event_loop.handler().data_for(c).is_empty());
    assert_untouched_then_echoes(&mut event_loop, &mut client_b, b);
}

#[test]
fn seed_abc_with_a_real_upstream_a_fails_closes_its_upstream_c_b_accepted_into_cs_slot_cs_event_reaches_nobody()
 {
    let _serial = one_at_a_time();
    // The proxy example's relay, with a real upstream listener run here.
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let upstream_addr = upstream.local_addr().expect("addr");
    let (mut event_loop, addr) = relay::relay_loop(Config::default(), upstream_addr);
    let client_a = connect(addr);
    turn_until(&mut event_loop, LIMIT, |l| l.handler().pairs().len() == 1);
    turn_for(&mut event_loop, Duration::from_millis(20));
    let (a, c) = event_loop.handler().pairs()[0];
    let (mut server_c, _) = upstream.accept().expect("accept C");

    // C gets a real event queued (its upstream sends), A fails (a reset),
    // and B arrives with a request of its own.
    server_c.write_all(b"for A").expect("write to C");
    relay::reset(client_a);
    let mut client_b = connect(addr);
    client_b.write_all(b"from B").expect("write B");
    std::thread::sleep(Duration::from_millis(20));
    let listener = Event {
        token: event_loop.listener_token(0).expect("listener"),
        events: READABLE,
    };
    event_loop.dispatch_batch(&[readable(a), listener, readable(c)]);

    let handler = event_loop.handler();
    let reason_of = |id| handler.close_of(id).map(|(reason, _)| reason);
    assert_eq!(reason_of(a), Some(CloseReason::Reset));
    assert_eq!(
        reason_of(c),
        Some(CloseReason::Closed),
        "A's failure closed its upstream C in the same dispatch"
    );
    let b = *handler.clients().last().expect("B accepted");
    assert_ne!(b, a);
    assert_eq!(b.index(), c.index(), "B took C's slot");
    assert_ne!(b.generation(), c.generation());
    assert_eq!(event_loop.stats().stale_events, 1, "C's event was dropped");
    assert_eq!(handler.data_for(c), 0, "C's event reached nobody");
    assert_eq!(handler.data_for(b), 0, "nothing was delivered to B");

    // B still works: its own upstream comes up, its request goes through,
    // and the reply (not C's data) comes back.
    turn_until(&mut event_loop, LIMIT, |l| l.handler().pairs().len() == 2);
    assert_eq!(event_loop.handler().pairs()[1].0, b);
    let (mut server_d, _) = upstream.accept().expect("accept B's upstream");
    server_d.set_read_timeout(Some(LIMIT)).expect("timeout");
    turn_until(&mut event_loop, LIMIT, |l| l.handler().data_for(b) == 6);
    assert_eq!(read_exact(&mut server_d, 6), b"from B");
    server_d.write_all(b"to B").expect("reply");
    assert_eq!(
        relay::read_turning(&mut event_loop, &mut client_b, 4, LIMIT),
        b"to B"
    );
}
