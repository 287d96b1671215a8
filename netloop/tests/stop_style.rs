//! A graceful stop with `StopStyle::LetFinish`, on the proxy example's
//! relay: accepting stops, but an open session keeps flowing both ways
//! until it ends on its own, and the loop stops once it has.

mod relay;
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::thread;
use std::time::Duration;

use netloop::{Config, StopStyle};
use relay::{read_turning, relay_loop};
use support::turn_until;

const LIMIT: Duration = Duration::from_secs(5);

#[test]
fn a_let_finish_stop_keeps_an_open_session_flowing_until_it_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    // An upstream that echoes until EOF.
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                return total;
            }
            stream.write_all(&buf[..n]).expect("echo");
            total += n;
        }
    });
    let config = Config {
        stop_style: StopStyle::LetFinish,
        ..Config::default()
    };
    let (mut event_loop, addr) = relay_loop(config, upstream);
    let mut client = support::connect(addr);
    client.write_all(b"before").expect("write");
    assert_eq!(
        read_turning(&mut event_loop, &mut client, 6, LIMIT),
        b"before"
    );

    event_loop.handle().stop().expect("stop");
    event_loop
        .turn(Some(Duration::from_millis(10)))
        .expect("turn");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "new connections are refused once the stop began"
    );
    client.write_all(b"after the stop").expect("write");
    assert_eq!(
        read_turning(&mut event_loop, &mut client, 14, LIMIT),
        b"after the stop",
        "the session still flows both ways"
    );
    assert!(!event_loop.is_stopped(), "a session is still open");

    client.shutdown(Shutdown::Write).expect("FIN");
    turn_until(&mut event_loop, LIMIT, |l| l.is_stopped());
    assert_eq!(server.join().expect("server"), 20);
    assert_eq!(
        event_loop
            .stats()
            .closed_for(netloop::CloseReason::Shutdown),
        0,
        "the session ended on its own"
    );
}
