//! `netloop kv` as a process: atomicity of multi-key commands across
//! threads in every mode, and redis-py (installed by `.ci/run`) at its
//! defaults.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use support::Server;
use support::resp::{Client, Value};

const KEYS: usize = 16;

fn start(args: &[&str]) -> Server {
    let mut all = vec!["kv"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--addr", "127.0.0.1:0", "--stop-timeout", "0.5"]);
    Server::start(&[], &all)
}

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("atomic:{i}").into_bytes())
        .collect()
}

/// MSETs all keys to one value, again and again, until told to stop.
fn writer(port: u16, id: usize, stop: Arc<AtomicBool>) {
    let mut client = Client::connect(port);
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = format!("w{id}-{round}").into_bytes();
        let mut args = vec![b"MSET".to_vec()];
        for key in keys() {
            args.push(key);
            args.push(value.clone());
        }
        assert_eq!(client.call(&args), b"+OK\r\n");
        round += 1;
    }
}

/// MGETs all keys; counts the replies whose values are not all one.
fn reader(port: u16, stop: Arc<AtomicBool>, reads: Arc<AtomicU64>, mixed: Arc<AtomicU64>) {
    let mut client = Client::connect(port);
    let mut args = vec![b"MGET".to_vec()];
    args.extend(keys());
    while !stop.load(Ordering::Relaxed) {
        let reply = support::resp::parse(&client.call(&args));
        let Value::Many(b'*', Some(values)) = reply else {
            panic!("MGET answered {reply:?}");
        };
        if values.iter().any(|v| *v != values[0]) {
            mixed.fetch_add(1, Ordering::Relaxed);
        }
        reads.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn mset_and_mget_are_atomic_with_two_threads_in_every_mode() {
    let modes: [&[&str]; 4] = [
        &["--mode", "reuseport"],
        &["--mode", "reuseport", "--exclusive"],
        &["--mode", "acceptor"],
        &["--mode", "oneshot"],
    ];
    for mode in modes {
        let mut args = vec!["--threads", "2"];
        args.extend_from_slice(mode);
        let server = start(&args);
        let port = server.addr.port();
        let stop = Arc::new(AtomicBool::new(false));
        let (reads, mixed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut workers = Vec::new();
        for id in 0..2 {
            let stop = Arc::clone(&stop);
            workers.push(thread::spawn(move || writer(port, id, stop)));
        }
        for _ in 0..2 {
            let (stop, reads, mixed) = (Arc::clone(&stop), Arc::clone(&reads), Arc::clone(&mixed));
            workers.push(thread::spawn(move || reader(port, stop, reads, mixed)));
        }
        thread::sleep(Duration::from_millis(750));
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .for_each(|w| w.join().expect("client thread"));
        let (reads, mixed) = (reads.load(Ordering::Relaxed), mixed.load(Ordering::Relaxed));
        assert!(reads > 100, "{mode:?}: only {reads} reads");
        assert_eq!(mixed, 0, "{mode:?}: {mixed} of {reads} MGETs saw two MSETs");
    }
}

/// The script redis-py runs: the calls a user makes first, through the
/// client's own defaults (which negotiate RESP3 with HELLO 3).
const REDIS_PY: &str = r#"
import sys
import redis

r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
assert r.ping()
assert r.set("greeting", "hello")
assert r.get("greeting") == b"hello"
assert r.get("missing") is None
assert r.incr("n") == 1 and r.incr("n", 5) == 6 and r.decr("n") == 5 and r.decr("n", 3) == 2
assert r.setnx("once", "a") and not r.setnx("once", "b")
assert r.setex("temp", 100, "x") and 99 <= r.ttl("temp") <= 100
assert r.psetex("ptemp", 100000, "y") and 0 < r.pttl("ptemp") <= 100000
assert r.getset("greeting", "hi") == b"hello"
assert r.append("greeting", "!") == 3 and r.strlen("greeting") == 3
assert r.getdel("greeting") == b"hi!" and r.get("greeting") is None
assert r.pexpire("once", 100000) and r.persist("once") and r.ttl("once") == -1
assert r.type("once") == b"string" and r.type("missing") == b"none"
assert r.mset({"a": "1", "b": "2"}) and r.mget("a", "b", "missing") == [b"1", b"2", None]
assert sorted(r.keys("[ab]")) == [b"a", b"b"]
assert sorted(r.scan_iter(match="*", count=2)) == sorted(r.keys("*"))
assert r.exists("a", "b", "missing") == 2 and r.delete("a", "b") == 2
assert r.expire("n", 100) and r.ttl("n") == 100
assert r.execute_command("HELLO")[b"proto"] == 3, "redis-py negotiated RESP3"
print("ok")
"#;

#[test]
fn redis_py_works_at_its_defaults() {
    let probe = Command::new("python3")
        .args(["-c", "import redis; print(redis.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); install it as .ci/run does"));
    assert!(
        probe.status.success(),
        "the redis module is missing: `pip install redis`, as .ci/run does ({})",
        String::from_utf8_lossy(&probe.stderr)
    );
    let server = start(&["--threads", "1"]);
    let out = Command::new("python3")
        .args(["-c", REDIS_PY, &server.port()])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "redis-py failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
