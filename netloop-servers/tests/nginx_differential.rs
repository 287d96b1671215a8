//! `netloop http` side by side with nginx on a corpus of tricky requests.
//!
//! The test starts Debian's nginx (`.ci/run` installs it) with a config of
//! its own in a temporary directory, answering `200 Hello, World!` to every
//! request as netloop's server does. Each request of the corpus is sent to
//! both, followed by a pipelined valid GET; the status codes and whether the
//! connection stayed open must agree, except where netloop differs on
//! purpose ([`DIFFERENCES`], each with its reason).

#[path = "../../netloop/tests/support/mod.rs"]
mod support;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use netloop::Config;
use netloop_servers::codec::http::HttpLimits;
use netloop_servers::http::Hello;
use support::Running;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// Where netloop answers otherwise than nginx 1.22, on purpose.
const DIFFERENCES: &[(&str, &str)] = &[
    (
        "duplicate-content-length-same",
        "RFC 9112 §6.3 lets a recipient accept repeated identical lengths; nginx refuses any duplicate",
    ),
    (
        "content-length-list-same",
        "same: `3, 3` is one length (RFC 9110 §8.6); nginx refuses the list",
    ),
    (
        "host-empty",
        "RFC 9112 §3.2 allows an empty Host (a target without authority); nginx refuses it",
    ),
    (
        "host-dot-dot",
        "`a..b` is a valid reg-name (RFC 3986); nginx refuses it to protect its file paths, \
         which this server has none of",
    ),
    (
        "host-at-sign",
        "`@` is not allowed in uri-host (RFC 3986 §3.2.2); nginx does not check",
    ),
    (
        "host-bad-port",
        "a port is digits (RFC 3986 §3.2.3); nginx does not check",
    ),
    (
        "lowercase-method",
        "methods are case-sensitive tokens (RFC 9110 §9.1): `get` is a valid, unknown method, \
         answered like any other; nginx accepts only upper-case methods",
    ),
    (
        "options-asterisk",
        "`OPTIONS *` is a valid asterisk-form request (RFC 9112 §3.2.4), answered 200; \
         nginx refuses it",
    ),
    (
        "target-without-slash",
        "httparse accepts any visible target; the hello server ignores it, nginx refuses \
         what is not origin- or absolute-form",
    ),
    (
        "content-length-huge",
        "a length beyond every limit is too large (413), not malformed: digits saturate instead \
         of overflowing; nginx answers 400",
    ),
    (
        "chunk-size-overflow",
        "same for a chunk size: 413 as soon as it passes the body limit; nginx answers 400",
    ),
    (
        "content-length-over-limit",
        "after a 413 the connection closes rather than reading and discarding an unwanted body \
         of up to the announced length; nginx keeps it open to discard it",
    ),
    (
        "header-too-large",
        "431 (RFC 6585) for an oversized field section; nginx uses its own \
         `400 Request Header Or Cookie Too Large`",
    ),
    (
        "http-0.9",
        "HTTP/0.9 is not served (400); nginx answers it with a bare body",
    ),
    (
        "http-2.0-version",
        "400 for a request line with an HTTP/2 version; nginx answers 505",
    ),
    (
        "expect-continue-body-sent",
        "no interim 100 when the body is already here (RFC 9110 §10.1.1 lets a server omit it); \
         nginx sends it anyway",
    ),
];

/// The corpus: a name and the bytes of one request (or of a broken one).
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("plain-get", GET.to_vec()),
        ("head", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "post-content-length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        ),
        (
            "post-chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        // Framing conflicts and malformed lengths.
        (
            "content-length-and-chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "duplicate-content-length-same",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        ),
        (
            "duplicate-content-length-differ",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
        ),
        (
            "content-length-list-same",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc".to_vec(),
        ),
        (
            "content-length-negative",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
        (
            "content-length-plus",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc".to_vec(),
        ),
        (
            "content-length-hex",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc".to_vec(),
        ),
        (
            "content-length-huge",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
        ),
        (
            "content-length-over-limit",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n".to_vec(),
        ),
        // Codings and chunks.
        (
            "te-gzip",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        ),
        (
            "te-http-1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "chunk-size-not-hex",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "chunk-size-overflow",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n"
                .to_vec(),
        ),
        (
            "chunk-extension",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "chunk-data-too-long",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "chunked-with-trailer",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n".to_vec(),
        ),
        // Whitespace and line endings.
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
        ),
        ("bare-lf", b"GET / HTTP/1.1\nHost: x\n\n".to_vec()),
        (
            "space-before-colon",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
        ),
        (
            "header-without-colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(),
        ),
        // Methods, targets, versions.
        ("garbage", b"GARBAGE\r\n\r\n".to_vec()),
        ("invalid-method", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("lowercase-method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("options-asterisk", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "absolute-form",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("target-without-slash", b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("http-1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n".to_vec()),
        ("http-1.0", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        (
            "http-1.0-keep-alive",
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec(),
        ),
        ("http-0.9", b"GET /\r\n".to_vec()),
        ("http-2.0-version", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec()),
        ("lowercase-version", b"GET / http/1.1\r\nHost: x\r\n\r\n".to_vec()),
        // Host.
        ("host-missing", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "host-twice",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
        ),
        ("host-empty", b"GET / HTTP/1.1\r\nHost: \r\n\r\n".to_vec()),
        ("host-slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".to_vec()),
        ("host-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec()),
        ("host-port", b"GET / HTTP/1.1\r\nHost: a:8080\r\n\r\n".to_vec()),
        ("host-ipv6", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n".to_vec()),
        ("host-dot-dot", b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n".to_vec()),
        ("host-at-sign", b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n".to_vec()),
        ("host-bad-port", b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n".to_vec()),
        // CONNECT and 100-continue.
        (
            "connect",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
        ),
        (
            "expect-continue-body-sent",
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
    ];
    // Oversized lines.
    let mut long_target = b"GET /".to_vec();
    long_target.extend(std::iter::repeat_n(b'a', 10 * 1024));
    long_target.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    cases.push(("request-line-too-long", long_target));
    let mut long_header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    long_header.extend(std::iter::repeat_n(b'a', 10 * 1024));
    long_header.extend_from_slice(b"\r\n\r\n");
    cases.push(("header-too-large", long_header));
    cases
}

/// What a server did with one case and the GET behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    statuses: Vec<u16>,
    /// The connection was still open after the answers.
    open: bool,
}

fn outcome(addr: SocketAddr, request: &[u8]) -> Outcome {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(GET);
    // A peer may close before it has read everything: that is an answer.
    let _ = c.write_all(&bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let mut quiet_since = Instant::now();
    let open = loop {
        match c.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                quiet_since = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if quiet_since.elapsed() > Duration::from_millis(400) {
                    break true;
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break false,
            Err(e) => panic!("read: {e}"),
        }
    };
    Outcome {
        statuses: statuses(&got),
        open,
    }
}

fn statuses(got: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(got);
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// nginx, running from a config of its own; stopped when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    fn start() -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| fs::metadata(path).is_ok())
            .unwrap_or_else(|| {
                panic!("nginx is not installed: `apt-get install nginx-light` (as .ci/run does)")
            });
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!("netloop-nginx-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let d = dir.display();
        // As close to netloop's defaults as nginx goes: 8 KiB heads, 1 MiB
        // bodies, keep-alive, 200 "Hello, World!" for every request.
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               client_max_body_size 1m;\n  large_client_header_buffers 4 8k;\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"Hello, World!\"; }}\n  }}\n}}\n"
        );
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config).expect("config");
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start listening");
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn netloop_http_agrees_with_nginx_except_where_it_differs_on_purpose() {
    let nginx = Nginx::start();
    let netloop = Running::start(
        Config::default(),
        Hello::new(HttpLimits::default(), Duration::from_secs(5)),
    );
    let mut mismatches = Vec::new();
    let mut differing = Vec::new();
    for (name, request) in corpus() {
        // Both at once: each waits for a quiet connection.
        let (theirs, ours) = thread::scope(|scope| {
            let theirs = scope.spawn(|| outcome(nginx.addr, &request));
            let ours = outcome(netloop.addr, &request);
            (theirs.join().expect("nginx client"), ours)
        });
        let reason = DIFFERENCES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r);
        eprintln!(
            "{name:32} nginx {:?} {:6} netloop {:?} {}",
            theirs.statuses,
            if theirs.open { "open" } else { "closed" },
            ours.statuses,
            if ours.open { "open" } else { "closed" },
        );
        match (theirs == ours, reason) {
            (true, _) => {}
            (false, Some(reason)) => differing.push(format!("{name}: {reason}")),
            (false, None) => mismatches.push(format!("{name}: nginx {theirs:?}, netloop {ours:?}")),
        }
    }
    eprintln!("deliberate differences:\n  {}", differing.join("\n  "));
    assert!(
        mismatches.is_empty(),
        "netloop differs from nginx without a recorded reason:\n  {}",
        mismatches.join("\n  ")
    );
    netloop.finish();
}
