//! The protocol servers over real loopback sockets: HTTP/1.1, RESP and the
//! framed chat, including pipelining, bad input and slow readers.

// The core's test helpers, shared rather than copied.
#[path = "../../netloop/tests/support/mod.rs"]
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netloop::{AfterEof, CloseReason, Config, Conn, ConnId, Ctx, Handler, LoopHandle, TimerId};
use netloop_servers::chat::{Chat, Rooms};
use netloop_servers::codec::frame::FrameConfig;
use netloop_servers::codec::http::HttpLimits;
use netloop_servers::codec::resp::RespLimits;
use netloop_servers::http::{Hello, HttpConn};
use netloop_servers::kv::{Kv, KvConn, Store};
use support::Running;

const LIMIT: Duration = Duration::from_secs(10);

fn client(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream
}

/// Reads until `done` holds for what arrived, or the peer closes.
fn read_until(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !done(&got) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    read_until(stream, |_| false)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

// ---------------------------------------------------------------- HTTP

fn http_server(config: Config) -> Running<HttpConn> {
    let limits = HttpLimits {
        max_header_bytes: 1024,
        max_body: 4096,
        ..HttpLimits::default()
    };
    Running::start(config, Hello::new(limits, Duration::from_millis(300)))
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn http_pipelined_requests_are_answered_in_order_in_one_write() {
    let server = http_server(Config::default());
    let mut c = client(server.addr);
    // Warm up: the first exchange opens the connection.
    c.write_all(GET).expect("write");
    read_until(&mut c, |g| g.ends_with(b"Hello, World!"));
    let before = server.stats().write_calls;
    let mut batch = Vec::new();
    for i in 0..16 {
        batch.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    batch.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    c.write_all(&batch).expect("write");
    let got = read_until(&mut c, |g| count(g, b"HTTP/1.1 200 OK") == 17);
    assert_eq!(count(&got, b"Hello, World!"), 16, "HEAD has no body");
    assert!(
        got.ends_with(b"Content-Length: 13\r\n\r\n"),
        "the HEAD answer comes last"
    );
    assert_eq!(
        server.stats().write_calls - before,
        1,
        "17 responses, one write"
    );
    server.finish();
}

#[test]
fn http_1_0_is_closed_unless_it_asks_for_keep_alive() {
    let server = http_server(Config::default());
    let mut c = client(server.addr);
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let got = read_to_close(&mut c);
    assert!(got.starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(count(&got, b"Connection: close"), 1);

    let mut c = client(server.addr);
    c.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .expect("write");
    let got = read_until(&mut c, |g| count(g, b"Hello, World!") == 2);
    assert_eq!(count(&got, b"Connection: keep-alive"), 2);
    server.finish();
}

#[test]
fn http_request_bodies_are_skipped_without_misframing_the_next_request() {
    let server = http_server(Config::default());
    let mut c = client(server.addr);
    let mut requests = Vec::new();
    requests.extend_from_slice(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nGET / HTTP/1",
    );
    requests
        .extend_from_slice(b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    requests.extend_from_slice(b"5;ext=1\r\nGET /\r\n0\r\nTrailer: t\r\n\r\n");
    requests.extend_from_slice(GET);
    // Dribble it in small pieces: framing must not depend on how bytes arrive.
    for piece in requests.chunks(7) {
        c.write_all(piece).expect("write");
        thread::sleep(Duration::from_millis(1));
    }
    let got = read_until(&mut c, |g| count(g, b"Hello, World!") == 3);
    assert_eq!(count(&got, b"HTTP/1.1 200 OK"), 3);
    assert_eq!(count(&got, b"400"), 0);
    server.finish();
}

fn expect_refusal(server: &Running<HttpConn>, request: &[u8], status: &str) {
    let mut c = client(server.addr);
    c.write_all(request).expect("write");
    let got = read_to_close(&mut c);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with(&format!("HTTP/1.1 {status}")),
        "{status}: got {text:?}"
    );
    assert!(text.contains("Connection: close"), "{text}");
}

#[test]
fn http_bad_input_is_answered_then_closed() {
    let server = http_server(Config::default());
    expect_refusal(&server, b"GARBAGE\r\n\r\n", "400");
    expect_refusal(&server, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", "400");
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(4000));
    expect_refusal(&server, huge.as_bytes(), "431");
    expect_refusal(
        &server,
        b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",
        "413",
    );
    expect_refusal(
        &server,
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "400",
    );
    expect_refusal(
        &server,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "501",
    );
    expect_refusal(
        &server,
        // (Host: a head without it would be refused before the body.)
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFF\r\n",
        "413",
    );
    // Nothing else was disturbed: a good request on a fresh connection works.
    let mut c = client(server.addr);
    c.write_all(GET).expect("write");
    read_until(&mut c, |g| g.ends_with(b"Hello, World!"));
    let stats = server.finish();
    assert_eq!(
        stats.closed_for(CloseReason::Protocol("http_bad_request")),
        7
    );
}

#[test]
fn http_slow_header_is_timed_out_and_idle_keep_alive_is_closed() {
    let config = Config {
        idle_timeout: Some(Duration::from_millis(400)),
        ..Config::default()
    };
    let server = http_server(config);
    let mut slow = client(server.addr);
    slow.write_all(b"GET / HTTP/1.1\r\nHost:").expect("write");
    let started = Instant::now();
    let got = read_to_close(&mut slow);
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut idle = client(server.addr);
    idle.write_all(GET).expect("write");
    read_until(&mut idle, |g| g.ends_with(b"Hello, World!"));
    let got = read_to_close(&mut idle);
    assert!(got.is_empty(), "closed without another response");
    let stats = server.finish();
    assert_eq!(stats.closed_for(CloseReason::IdleTimeout), 2);
}

// ---------------------------------------------------------------- RESP

fn kv_server() -> Running<KvConn> {
    let limits = RespLimits {
        max_bulk_len: 1024 * 1024,
        ..RespLimits::default()
    };
    Running::start(
        Config::default(),
        Kv::new(std::sync::Arc::new(Store::new()), limits),
    )
}

fn exchange(c: &mut TcpStream, request: &[u8], reply: &[u8]) {
    c.write_all(request).expect("write");
    let got = read_until(c, |g| g.len() >= reply.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply),
        "for {:?}",
        String::from_utf8_lossy(request)
    );
}

#[test]
fn resp_commands_inline_and_multibulk() {
    let server = kv_server();
    let mut c = client(server.addr);
    exchange(&mut c, b"PING\r\n", b"+PONG\r\n");
    exchange(
        &mut c,
        b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n",
        b"$5\r\nhello\r\n",
    );
    exchange(&mut c, b"SET greeting \"hello world\"\r\n", b"+OK\r\n");
    exchange(&mut c, b"GET greeting\r\n", b"$11\r\nhello world\r\n");
    exchange(&mut c, b"SET greeting x NX\r\n", b"$-1\r\n");
    exchange(&mut c, b"SET fresh x XX\r\n", b"$-1\r\n");
    exchange(
        &mut c,
        b"SET n 41 EX 100\r\nINCR n\r\nTTL n\r\n",
        b"+OK\r\n:42\r\n:100\r\n",
    );
    exchange(
        &mut c,
        b"DECR n\r\nINCR greeting\r\n",
        b":41\r\n-ERR value is not an integer or out of range\r\n",
    );
    exchange(
        &mut c,
        b"MSET a 1 b 2\r\nMGET a b zz\r\n",
        b"+OK\r\n*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n",
    );
    exchange(
        &mut c,
        b"EXISTS a b zz\r\nDEL a zz\r\nDBSIZE\r\n",
        b":2\r\n:1\r\n:3\r\n",
    );
    exchange(
        &mut c,
        b"EXPIRE b 100\r\nTTL b\r\nTTL zz\r\nTTL greeting\r\n",
        b":1\r\n:100\r\n:-2\r\n:-1\r\n",
    );
    exchange(&mut c, b"SET t v PX 50\r\n", b"+OK\r\n");
    thread::sleep(Duration::from_millis(80));
    exchange(
        &mut c,
        b"GET t\r\nFLUSHALL\r\nDBSIZE\r\n",
        b"$-1\r\n+OK\r\n:0\r\n",
    );
    exchange(&mut c, b"COMMAND\r\n", b"*0\r\n");
    server.finish();
}

#[test]
fn resp_errors_keep_the_connection_usable() {
    let server = kv_server();
    let mut c = client(server.addr);
    exchange(
        &mut c,
        b"NOSUCH a b\r\n",
        b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n",
    );
    exchange(
        &mut c,
        b"GET\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    exchange(
        &mut c,
        b"SET k v EX 0\r\n",
        b"-ERR invalid expire time in 'set' command\r\n",
    );
    exchange(&mut c, b"SET k v BOGUS\r\n", b"-ERR syntax error\r\n");
    exchange(&mut c, b"PING\r\n", b"+PONG\r\n");
    server.finish();
}

#[test]
fn resp_pipelined_commands_are_answered_in_order_in_one_write() {
    let server = kv_server();
    let mut c = client(server.addr);
    exchange(&mut c, b"PING\r\n", b"+PONG\r\n");
    let before = server.stats().write_calls;
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..100 {
        batch.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$2\r\nk{}\r\n$3\r\nv{:02}\r\n",
                i % 10,
                i
            )
            .as_bytes(),
        );
        batch.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n$2\r\nk{}\r\n", i % 10).as_bytes());
        expected.extend_from_slice(format!("+OK\r\n$3\r\nv{i:02}\r\n").as_bytes());
    }
    exchange(&mut c, &batch, &expected);
    assert_eq!(
        server.stats().write_calls - before,
        1,
        "200 replies, one write"
    );
    server.finish();
}

#[test]
fn resp_protocol_errors_reply_then_close_and_limits_come_before_allocation() {
    let server = kv_server();
    for (request, reply) in [
        (
            &b"*1\r\n$abc\r\n"[..],
            &b"-ERR Protocol error: invalid bulk length\r\n"[..],
        ),
        (
            b"*99999999999\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$2000000\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\nPING\r\n",
            b"-ERR Protocol error: expected '$', got 'P'\r\n",
        ),
        (
            b"SET \"unbalanced\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ] {
        let mut c = client(server.addr);
        c.write_all(request).expect("write");
        let got = read_to_close(&mut c);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply)
        );
    }
    let mut c = client(server.addr);
    exchange(&mut c, b"QUIT\r\n", b"+OK\r\n");
    assert!(read_to_close(&mut c).is_empty(), "QUIT closes");
    let stats = server.finish();
    assert_eq!(
        stats.closed_for(CloseReason::Protocol("resp_protocol_error")),
        5
    );
}

/// Sends `request` and checks the reply byte for byte (invalid UTF-8 and
/// all), unlike `exchange`, which compares text.
fn exchange_exact(c: &mut TcpStream, request: &[u8], reply: &[u8]) {
    c.write_all(request).expect("write");
    let got = read_until(c, |g| g.len() >= reply.len());
    assert!(
        got == reply,
        "for {request:?}\n got {got:?}\nwant {reply:?}",
        request = String::from_utf8_lossy(request),
        got = got.escape_ascii().to_string(),
        reply = reply.escape_ascii().to_string(),
    );
}

/// Sends each request on one connection and checks its reply, byte for byte.
fn exchanges(c: &mut TcpStream, cases: &[(&[u8], &[u8])]) {
    for (request, reply) in cases {
        exchange_exact(c, request, reply);
    }
}

const NOT_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";
const SYNTAX: &[u8] = b"-ERR syntax error\r\n";

#[test]
fn resp_expiry_times_that_overflow_are_refused_and_nothing_panics() {
    let server = kv_server();
    let mut c = client(server.addr);
    let set_err: &[u8] = b"-ERR invalid expire time in 'set' command\r\n";
    let expire_err: &[u8] = b"-ERR invalid expire time in 'expire' command\r\n";
    exchanges(
        &mut c,
        &[
            (b"SET k v EX 9223372036854775807\r\n", set_err),
            (b"SET k v EX 9223372036854775\r\n", set_err),
            (b"SET k v PX 9223372036854775807\r\n", set_err),
            (b"SET k v EX -5\r\n", set_err),
            (b"SET k v PX 0\r\n", set_err),
            (
                b"SETEX k 0 v\r\n",
                b"-ERR invalid expire time in 'setex' command\r\n",
            ),
            (b"SET k v\r\n", b"+OK\r\n"),
            (b"EXPIRE k 9223372036854775807\r\n", expire_err),
            (b"EXPIRE k -9223372036854775808\r\n", expire_err),
            (
                b"PEXPIRE k 9223372036854775807\r\n",
                b"-ERR invalid expire time in 'pexpire' command\r\n",
            ),
            // Far, but within range: accepted, as Redis accepts it.
            (
                b"EXPIRE k 9223372036854\r\nTTL k\r\n",
                b":1\r\n:9223372036854\r\n",
            ),
            (b"SET k v EX 922337203685477\r\n", b"+OK\r\n"),
            // A non-positive EXPIRE deletes the key.
            (b"EXPIRE k -5\r\nEXISTS k\r\n", b":1\r\n:0\r\n"),
            (b"PING\r\n", b"+PONG\r\n"),
        ],
    );
    let stats = server.finish();
    assert_eq!(stats.closed_for(CloseReason::HandlerPanic), 0);
}

#[test]
fn resp_numbers_are_read_as_redis_string2ll_reads_them() {
    let server = kv_server();
    let mut c = client(server.addr);
    for bad in ["+5", "007", "-0", " 5", "5 ", "9223372036854775808", ""] {
        let quoted = format!("\"{bad}\"");
        for request in [
            format!("SET n {quoted}\r\nINCR n\r\n"),
            format!("INCRBY n2 {quoted}\r\n"),
            format!("SET k v EX {quoted}\r\n"),
            format!("EXPIRE n {quoted}\r\n"),
            format!("SELECT {quoted}\r\n"),
        ] {
            let expected: Vec<u8> = if request.starts_with("SET n") {
                [&b"+OK\r\n"[..], NOT_INTEGER].concat()
            } else {
                NOT_INTEGER.to_vec()
            };
            exchange_exact(&mut c, request.as_bytes(), &expected);
        }
    }
    exchanges(
        &mut c,
        &[
            (b"SET n -12\r\nINCRBY n 2\r\n", b"+OK\r\n:-10\r\n"),
            (
                b"DECRBY n -9223372036854775808\r\n",
                b"-ERR decrement would overflow\r\n",
            ),
            (
                b"SELECT 3000000000\r\n",
                b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n",
            ),
            (b"SELECT 0\r\n", b"+OK\r\n"),
        ],
    );
    server.finish();
}

#[test]
fn resp_set_options_are_checked_as_redis_checks_them() {
    let server = kv_server();
    let mut c = client(server.addr);
    exchanges(
        &mut c,
        &[
            (b"SET k v EX 10 EX 2000\r\nTTL k\r\n", b"+OK\r\n:2000\r\n"),
            (
                b"SET k v PX 10 PX 3000000\r\nTTL k\r\n",
                b"+OK\r\n:3000\r\n",
            ),
            (b"SET k v EX 10 PX 20\r\n", SYNTAX),
            (b"SET k v NX XX\r\n", SYNTAX),
            // The syntax of every option is checked before any number.
            (b"SET k v EX abc NX XX\r\n", SYNTAX),
            (b"SET k v EX 0 FOO\r\n", SYNTAX),
            (b"SET k v EX abc\r\n", NOT_INTEGER),
            (b"SET k v EX\r\n", SYNTAX),
            (b"SET k v EX 10 KEEPTTL\r\n", SYNTAX),
            (b"SET k w KEEPTTL GET\r\nTTL k\r\n", b"$1\r\nv\r\n:3000\r\n"),
            (b"SET k x NX GET\r\nGET k\r\n", b"$1\r\nw\r\n$1\r\nw\r\n"),
            (b"SET k v NX NX\r\n", b"$-1\r\n"),
        ],
    );
    server.finish();
}

#[test]
fn resp_unknown_command_quotes_at_most_128_raw_bytes() {
    let server = kv_server();
    let mut c = client(server.addr);
    let long = "a".repeat(100);
    let request = format!("*4\r\n$6\r\nNOSUCH\r\n$100\r\n{long}\r\n$100\r\n{long}\r\n$1\r\nz\r\n");
    // 100 bytes fill the first quote (103 with quotes and space); the
    // second gets the 25 left; the third is never reached.
    let expected = format!(
        "-ERR unknown command 'NOSUCH', with args beginning with: '{long}' '{}' \r\n",
        "a".repeat(25)
    );
    exchange_exact(&mut c, request.as_bytes(), expected.as_bytes());
    // Invalid UTF-8 is copied as it came; a NUL ends an argument as in C.
    exchange_exact(
        &mut c,
        b"*3\r\n$3\r\nX\xff\xfe\r\n$2\r\n\xc3(\r\n$3\r\na\0b\r\n",
        b"-ERR unknown command 'X\xff\xfe', with args beginning with: '\xc3(' 'a' \r\n",
    );
    server.finish();
}

// ---------------------------------------------------------------- chat

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = b"NLOP".to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn chat(max_output: usize) -> Chat {
    let frames = FrameConfig {
        max_payload: 64 * 1024,
        ..FrameConfig::default()
    };
    Chat::new(frames, max_output, Rooms::default())
}

fn chat_server(max_output: usize) -> Running<()> {
    Running::start(Config::default(), chat(max_output))
}

/// A chat handler that also records the reason of every close.
struct RecordedChat {
    chat: Chat,
    closes: Arc<Mutex<Vec<CloseReason>>>,
}

impl Handler for RecordedChat {
    type State = ();

    fn on_start(&mut self, handle: LoopHandle<()>) {
        self.chat.on_start(handle);
    }

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        self.chat.on_open(conn);
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        self.chat.on_data(conn);
    }

    fn on_eof(&mut self, conn: &mut Conn<'_, ()>) -> AfterEof {
        self.chat.on_eof(conn)
    }

    fn on_drained(&mut self, conn: &mut Conn<'_, ()>) {
        self.chat.on_drained(conn);
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, ()>, timer: TimerId, data: u64) {
        self.chat.on_timer(conn, timer, data);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, ()>, id: ConnId, state: (), reason: CloseReason) {
        self.closes.lock().expect("closes").push(reason);
        self.chat.on_close(ctx, id, state, reason);
    }
}

/// Connects `n` clients and waits until the server has them all.
fn members(server: &Running<()>, n: usize) -> Vec<TcpStream> {
    let clients: Vec<TcpStream> = (0..n).map(|_| client(server.addr)).collect();
    let deadline = Instant::now() + LIMIT;
    while server.stats().accepted < n as u64 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    clients
}

#[test]
fn chat_relays_every_frame_in_order_to_everyone_however_it_is_split() {
    let server = chat_server(1 << 20);
    let mut clients = members(&server, 4);
    let mut stream = Vec::new();
    for i in 0..50 {
        stream.extend_from_slice(&frame(format!("message {i:03}").as_bytes()));
    }
    // Merged and split at odd places (粘包拆包).
    for piece in stream.chunks(13) {
        clients[1].write_all(piece).expect("write");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let got = read_until(c, |g| g.len() >= stream.len());
        assert!(got == stream, "client {i} got every frame, in order");
    }
    server.finish();
}

#[test]
fn chat_bad_magic_and_oversized_frames_close_only_their_sender() {
    let closes = Arc::new(Mutex::new(Vec::new()));
    let server = Running::start(
        Config::default(),
        RecordedChat {
            chat: chat(1 << 20),
            closes: Arc::clone(&closes),
        },
    );
    let mut clients = members(&server, 3);
    clients[0].write_all(b"XXXX\0\0\0\x01a").expect("write");
    assert!(read_to_close(&mut clients[0]).is_empty());
    let mut too_big = b"NLOP".to_vec();
    too_big.extend_from_slice(&(1u32 << 30).to_be_bytes());
    clients[1].write_all(&too_big).expect("write");
    assert!(read_to_close(&mut clients[1]).is_empty());
    clients[2].write_all(&frame(b"still here")).expect("write");
    assert_eq!(
        read_until(&mut clients[2], |g| g.len() >= 18),
        frame(b"still here")
    );
    let stats = server.finish();
    let protocol_errors: Vec<CloseReason> = closes
        .lock()
        .expect("closes")
        .iter()
        .copied()
        .filter(|reason| matches!(reason, CloseReason::Protocol(_)))
        .collect();
    assert_eq!(
        protocol_errors,
        [
            CloseReason::Protocol("bad_magic"),
            CloseReason::Protocol("frame_too_large")
        ]
    );
    assert_eq!(
        stats.closed_for(CloseReason::Protocol("bad_magic")),
        2,
        "one counter for every protocol error"
    );
}

/// A sender that waits for its readers to keep up.
struct Pacer {
    stream: TcpStream,
    progress: Vec<Arc<AtomicUsize>>,
}

impl Pacer {
    /// Waits until every reader has received all but `slack` of `sent` bytes.
    fn wait_for_readers(&mut self, sent: usize, slack: usize) {
        let deadline = Instant::now() + LIMIT;
        while self
            .progress
            .iter()
            .any(|p| p.load(Ordering::Acquire) + slack < sent)
        {
            assert!(Instant::now() < deadline, "the readers stalled");
            thread::sleep(Duration::from_micros(200));
        }
    }
}

#[test]
fn chat_a_client_that_stops_reading_is_cut_off_and_stalls_nobody() {
    let limit = 4 << 20;
    let server = chat_server(limit);
    let mut clients = members(&server, 3);
    // A small receive buffer, so the kernel cannot hide the backlog.
    socket2::SockRef::from(&clients[2])
        .set_recv_buffer_size(64 * 1024)
        .expect("SO_RCVBUF");
    let payload = vec![b'z'; 8 * 1024];
    let one = frame(&payload);
    // 24 MiB to each member: past what the kernel buffers for the slow one
    // (a server send buffer of up to 4 MiB), and far past its limit.
    let frames = 3000;
    let expected = frames * one.len();
    let talker_stream = clients[0].try_clone().expect("clone");
    // clients[0] and clients[1] read everything; clients[2] reads nothing.
    let progress: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let readers: Vec<_> = clients
        .drain(..2)
        .zip(progress.iter().cloned())
        .map(|(mut c, seen)| {
            thread::spawn(move || {
                let mut total = 0;
                let mut buf = vec![0u8; 1 << 16];
                while total < expected {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                    seen.store(total, Ordering::Release);
                }
                total
            })
        })
        .collect();
    let mut talker = Pacer {
        stream: talker_stream,
        progress,
    };
    // The talker paces itself by the fast readers, so however loaded the
    // machine, they never fall a limit behind; only the one that does not
    // read does.
    let sender = thread::spawn(move || {
        for sent in 0..frames {
            if sent % 64 == 0 {
                talker.wait_for_readers(sent * one.len(), limit / 2);
            }
            talker.stream.write_all(&one).expect("write");
        }
    });
    for r in readers {
        assert_eq!(r.join().expect("reader"), expected);
    }
    sender.join().expect("sender");
    let stats = server.stats();
    assert_eq!(
        stats.closed_for(CloseReason::OutputLimit),
        1,
        "the slow reader was cut off: {stats:?}"
    );
    let mut slow = clients.pop().expect("slow client");
    let got = read_to_close(&mut slow);
    assert!(got.len() < expected, "it did not get everything");
    server.finish();
}
