//! `netloop load`'s own timing and connection set-up: the open-loop
//! schedule is kept to well under a millisecond, and connections come from
//! the `--sources` addresses.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::Duration;

use support::Server;

/// The tests of this file run one at a time: the schedule test measures
/// the client's timing, which the others' processes would disturb.
static ALONE: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netloop"))
        .arg("load")
        .args(args)
        .output()
        .expect("run load")
}

/// The number after `"key":` inside the JSON object `"section":{…}`.
fn field(json: &str, section: &str, key: &str) -> f64 {
    let start = json
        .find(&format!("\"{section}\":{{"))
        .unwrap_or_else(|| panic!("no {section} in {json}"));
    let inner = &json[start..];
    let inner = &inner[..inner.find('}').expect("section end")];
    let at = inner
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {section}.{key} in {json}"));
    let value = &inner[at + key.len() + 3..];
    let end = value.find([',', '}']).unwrap_or(value.len());
    value[..end].parse().expect("number")
}

fn top_field(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let value = &json[at + key.len() + 3..];
    let end = value.find([',', '}']).unwrap_or(value.len());
    value[..end].parse().expect("number")
}

#[test]
fn open_loop_sends_are_spread_on_schedule_not_bunched_per_millisecond() {
    let _alone = alone();
    let server = Server::start(&[], &["echo", "--addr", "127.0.0.1:0"]);
    let addr = server.addr.to_string();
    // A loop that can only sleep whole milliseconds fails every attempt;
    // one on time may still be preempted on a shared machine, so it gets
    // three.
    let mut failures = Vec::new();
    for _ in 0..3 {
        match schedule_miss(&addr) {
            None => return,
            Some(why) => failures.push(why),
        }
    }
    panic!("every attempt missed the schedule: {failures:#?}");
}

/// One second of open-loop load; why its schedule was missed, if it was.
fn schedule_miss(addr: &str) -> Option<String> {
    // 20,000 req/s on one connection: one send every 50 µs. A loop that
    // can only sleep whole milliseconds sends them in bursts of about 20,
    // back to back (gaps of a microsecond or two) and up to 1 ms late.
    let out = load(&[
        "echo",
        "--target",
        addr,
        "--conns",
        "1",
        "--rate",
        "20000",
        "--duration",
        "1",
        "--json",
    ]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{json}");
    assert_eq!(top_field(&json, "errors"), 0.0, "{json}");
    let gap_p50 = field(&json, "send_gap_us", "p50");
    let late_p50 = field(&json, "lateness_us", "p50");
    if gap_p50 < 25.0 {
        return Some(format!(
            "half the sends follow the one before within half an interval: bunched ({json})"
        ));
    }
    if late_p50 >= 250.0 {
        return Some(format!(
            "the median send is more than five intervals late ({json})"
        ));
    }
    None
}

/// Accepts on 127.0.0.1 and echoes on every connection; reports the
/// source address of each accepted connection.
fn echo_listener() -> (String, mpsc::Receiver<IpAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let peer = stream.peer_addr().expect("peer").ip();
            if tx.send(peer).is_err() {
                return;
            }
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn connections_come_from_the_sources_in_turn_and_idle_ones_are_opened_too() {
    let _alone = alone();
    let (addr, accepted) = echo_listener();
    let out = load(&[
        "echo",
        "--target",
        &addr,
        "--conns",
        "4",
        "--idle-conns",
        "2",
        "--sources",
        "127.0.0.2-127.0.0.3",
        "--duration",
        "0.3",
        "--json",
    ]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{json}");
    assert_eq!(top_field(&json, "opened"), 6.0, "{json}");
    assert!(top_field(&json, "messages") > 0.0, "{json}");
    let mut by_source = BTreeMap::new();
    while let Ok(ip) = accepted.recv_timeout(Duration::from_millis(200)) {
        *by_source.entry(ip.to_string()).or_insert(0) += 1;
    }
    let want: BTreeMap<String, i32> = [("127.0.0.2".to_string(), 3), ("127.0.0.3".to_string(), 3)]
        .into_iter()
        .collect();
    assert_eq!(by_source, want);
}

#[test]
fn sources_outside_loopback_are_refused() {
    let _alone = alone();
    let out = load(&[
        "echo",
        "--target",
        "127.0.0.1:9",
        "--sources",
        "192.168.0.1",
        "--duration",
        "0.1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.0/8"));
}
