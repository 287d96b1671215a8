//! The servers with real clients nobody on this project wrote: curl and wrk
//! against `netloop http`, redis-cli and redis-benchmark against `netloop kv`.
//! `.ci/run` installs them (Debian: curl, wrk, redis-tools).

mod support;

use std::process::{Command, Output};

use support::Server;

fn start(args: &[&str]) -> Server {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--addr", "127.0.0.1:0", "--stop-timeout", "0.5"]);
    Server::start(&[], &all)
}

/// Runs a client tool; a missing tool fails with a hint, not a skip.
fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); install it as .ci/run does"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn curl_reuses_the_connection_speaks_http_1_0_and_head() {
    let server = start(&["http", "--threads", "1"]);
    let out = tool("curl", &["-sv", &server.url("/"), &server.url("/again")]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "Hello, World!Hello, World!");
    let log = text(&out.stderr);
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert!(log.contains("< Content-Type: text/plain"), "{log}");
    assert!(log.contains("< Date: "), "{log}");

    let out = tool("curl", &["-s", "-0", "-D", "-", &server.url("/")]);
    let response = text(&out.stdout);
    assert!(response.contains("Connection: close"), "{response}");
    assert!(response.ends_with("Hello, World!"));

    let out = tool("curl", &["-s", "-I", &server.url("/")]);
    let response = text(&out.stdout);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("Content-Length: 13"));
    assert!(!response.contains("Hello"), "HEAD has no body");
}

#[test]
fn curl_posting_4_kib_gets_100_continue_without_waiting() {
    let server = start(&["http", "--threads", "1"]);
    let body = "b".repeat(4096);
    let started = std::time::Instant::now();
    // curl sends `Expect: 100-continue` by itself above a size that
    // changed across versions (1 KiB, later 1 MiB); ask for it explicitly,
    // and give up waiting for the interim answer only after 30 s, so that a
    // server that never sends it shows.
    let out = tool(
        "curl",
        &[
            "-sv",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "30",
            "--data-binary",
            &body,
            &server.url("/upload"),
        ],
    );
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Hello, World!");
    let log = text(&out.stderr);
    assert!(log.contains("> Expect: 100-continue"), "{log}");
    assert!(log.contains("< HTTP/1.1 100 Continue"), "{log}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

#[test]
fn curl_fetches_the_large_body_whole_beside_hello() {
    const SIZE: usize = 3 * 1024 * 1024 + 7;
    let size = SIZE.to_string();
    let server = start(&["http", "--threads", "1", "--large-body", &size]);
    // Twice on one connection, then hello: the large response must end
    // where its length says, or the next response would be misread.
    let out = tool(
        "curl",
        &[
            "-s",
            &server.url("/large"),
            &server.url("/large"),
            &server.url("/"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body: Vec<u8> = (0..SIZE).map(|i| b'a' + (i % 26) as u8).collect();
    let mut expected = body.clone();
    expected.extend_from_slice(&body);
    expected.extend_from_slice(b"Hello, World!");
    assert!(out.stdout == expected, "got {} bytes", out.stdout.len());
}

#[test]
fn wrk_short_run_has_no_errors() {
    let server = start(&["http", "--threads", "1"]);
    let out = tool("wrk", &["-t1", "-c32", "-d2s", &server.url("/")]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("requests in"), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
}

#[test]
fn redis_cli_works_against_netloop_kv() {
    let server = start(&["kv", "--threads", "2"]);
    let port = server.port();
    let cli = |args: &[&str]| {
        let mut all = vec!["-p", port.as_str()];
        all.extend_from_slice(args);
        let out = tool("redis-cli", &all);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim_end().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello world");
    assert_eq!(cli(&["INCR", "counter"]), "1");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2"]), "OK");
    // The missing key prints as an empty line, trimmed away here.
    assert_eq!(cli(&["MGET", "a", "b", "missing"]), "1\n2");
    assert_eq!(cli(&["EXPIRE", "a", "100"]), "1");
    assert_eq!(cli(&["TTL", "a"]), "100");
    assert_eq!(cli(&["DBSIZE"]), "4");
    assert!(cli(&["NOSUCH"]).starts_with("ERR unknown command"));
    assert_eq!(cli(&["DEL", "a", "b"]), "2");
    assert_eq!(cli(&["FLUSHALL"]), "OK");
    assert_eq!(cli(&["DBSIZE"]), "0");
}

#[test]
fn redis_benchmark_ping_set_get_plain_and_pipelined_has_no_errors() {
    let server = start(&["kv", "--threads", "1"]);
    let port = server.port();
    for pipeline in ["1", "16"] {
        let out = tool(
            "redis-benchmark",
            &[
                "-p",
                &port,
                "-t",
                "ping,set,get",
                "-n",
                "20000",
                "-P",
                pipeline,
                "-q",
            ],
        );
        let report = text(&out.stdout);
        assert!(out.status.success(), "{report}{}", text(&out.stderr));
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
            assert!(
                report.contains(&format!("{test}: ")) && report.contains("requests per second"),
                "-P {pipeline}: {test} missing in {report}"
            );
        }
        assert!(!report.to_lowercase().contains("error"), "{report}");
    }
}
