//! Outbound connections: connect, refusal, and the connect timeout.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netloop::echo::Echo;
use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler};
use support::turn_until;

const LIMIT: Duration = Duration::from_secs(10);

/// Sends a greeting once connected and collects what comes back.
#[derive(Default)]
struct Greeter {
    opened: Vec<ConnId>,
    received: Vec<u8>,
    closed: Vec<(ConnId, CloseReason)>,
}

impl Handler for Greeter {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        assert!(conn.is_outbound());
        self.opened.push(conn.id());
        conn.write(b" world");
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        self.received.extend_from_slice(conn.input());
        let n = conn.input().len();
        conn.consume(n);
    }

    fn on_close(&mut self, _: &mut Ctx<'_, ()>, id: ConnId, _: (), reason: CloseReason) {
        self.closed.push((id, reason));
    }
}

fn echo_server() -> (
    SocketAddr,
    netloop::LoopHandle<()>,
    std::thread::JoinHandle<()>,
) {
    let mut server = EventLoop::new(Config::default(), Echo).expect("server");
    let addr = server
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run().expect("run"));
    (addr, handle, thread)
}

#[test]
fn connect_completes_then_output_written_before_and_after_is_delivered() {
    let (addr, server, thread) = echo_server();
    let mut client = EventLoop::new(Config::default(), Greeter::default()).expect("client");
    let id = client.connect(addr, ()).expect("connect");
    // Queued while the connect is still in progress: sent once it is up.
    client.handle().write(id, b"hello".to_vec()).expect("queue");
    turn_until(&mut client, LIMIT, |l| l.handler().received.len() == 11);
    assert_eq!(client.handler().opened, vec![id]);
    let received = String::from_utf8(client.handler().received.clone()).expect("utf8");
    assert!(
        received == "hello world" || received == " worldhello",
        "{received}"
    );
    assert_eq!(client.stats().connected, 1);
    client.handle().close(id).expect("close");
    turn_until(&mut client, LIMIT, |l| l.connection_count() == 0);
    server.stop().expect("stop");
    thread.join().expect("server");
}

#[test]
fn refused_connect_closes_with_connect_failed() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut client = EventLoop::new(Config::default(), Greeter::default()).expect("client");
    let id = client.connect(port, ()).expect("connect starts");
    turn_until(&mut client, LIMIT, |l| !l.handler().closed.is_empty());
    assert_eq!(
        client.handler().closed,
        vec![(id, CloseReason::ConnectFailed)]
    );
    assert!(client.handler().opened.is_empty());
}

#[test]
fn connect_that_never_completes_times_out() {
    // A listener whose tiny backlog is full drops further SYNs, so the next
    // connect stays in progress.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    let config = Config {
        connect_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let mut client = EventLoop::new(config, Greeter::default()).expect("client");
    let id = client.connect(addr, ()).expect("connect starts");
    turn_until(&mut client, LIMIT, |l| !l.handler().closed.is_empty());
    assert_eq!(
        client.handler().closed,
        vec![(id, CloseReason::ConnectTimeout)]
    );
}

/// For each accepted connection, connects to `upstream` and at once asks
/// for the new connection's FIN, before the connect has completed.
struct ConnectAndShutDown {
    upstream: SocketAddr,
}

impl Handler for ConnectAndShutDown {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        if conn.is_outbound() {
            return;
        }
        let up = conn.connect(self.upstream, ()).expect("connect starts");
        conn.conn(up).expect("connecting is open").shutdown();
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let n = conn.input().len();
        conn.consume(n);
    }
}

#[test]
fn a_shutdown_asked_for_while_connecting_sends_fin_once_connected() {
    use std::io::Read;
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream_addr = upstream.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = upstream.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).map(|_| got)
    });
    let mut event_loop = EventLoop::new(
        Config::default(),
        ConnectAndShutDown {
            upstream: upstream_addr,
        },
    )
    .expect("loop");
    let addr = event_loop
        .listen("127.0.0.1:0".parse().expect("addr"))
        .expect("listen");
    let _client = TcpStream::connect(addr).expect("connect");
    turn_until(&mut event_loop, LIMIT, |_| reader.is_finished());
    let got = reader.join().expect("reader");
    assert_eq!(
        got.expect("EOF, not a read timeout"),
        b"",
        "the upstream saw the FIN and nothing else"
    );
}
