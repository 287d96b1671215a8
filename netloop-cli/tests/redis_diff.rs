//! Differential test: seeded random command sequences over every command
//! `netloop kv` supports, with the tricky numbers, options and errors, sent
//! to `netloop kv` and to a redis-server this test starts; the replies must
//! match byte for byte, except where Redis' answer depends on time or on
//! its hash table (TTLs within a tolerance, KEYS and whole SCANs as sets,
//! HELLO's server name, version and id).
//!
//! `.ci/run` installs redis-server (Debian); without it this test fails.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::Server;
use support::resp::{Client, Value, parse};

/// A reference redis-server on a free port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install Debian's redis-server, as .ci/run does")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// splitmix64: a seeded generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const KEYS: &[&str] = &["k0", "k1", "k2", "n", "x", "", "k[1]"];
/// Numbers Redis reads strictly, or that sit on an overflow boundary.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "10",
    "-0",
    "+5",
    "007",
    " 5",
    "5 ",
    "",
    "abc",
    "1.5",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "9223372036854775",
    "-9223372036854775",
    "-9223372036854776",
    "922337203685477",
];
/// Expiry amounts that keep every key alive for the whole run (or delete
/// it at once, or are refused): no key expires mid-test on one server only.
const SECONDS: &[&str] = &[
    "0",
    "-1",
    "-5",
    "100000",
    "2000000",
    "abc",
    "+5",
    "007",
    "-0",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775",
    "922337203685477",
    "9223372036854",
];
const MILLIS: &[&str] = &[
    "0",
    "-1",
    "100000000",
    "2000000000",
    "abc",
    "9223372036854775807",
    "9223372036854775",
];
const PATTERNS: &[&str] = &[
    "*", "k?", "k[0-1]", "k*", "[^k]*", "\\k1", "k\\[1]", "x*", "*[", "[a-z]", "", "k[1",
];

struct Gen {
    rng: Rng,
    /// Unix seconds a day from now, for EXAT/PXAT in the future.
    future: u64,
}

impl Gen {
    fn key(&mut self) -> String {
        self.rng.pick(KEYS).to_string()
    }

    fn value(&mut self) -> String {
        if self.rng.chance(60) {
            self.rng.pick(NUMBERS).to_string()
        } else {
            self.rng.pick(&["v", "hello", "a b", "\u{e9}"]).to_string()
        }
    }

    fn set_options(&mut self) -> Vec<String> {
        let mut options = Vec::new();
        for _ in 0..self.rng.below(4) {
            let at_s = (self.future + self.rng.next() % 1000).to_string();
            let at_ms = ((self.future + self.rng.next() % 1000) * 1000).to_string();
            let option: Vec<String> = match self.rng.below(10) {
                0 => vec!["NX".into()],
                1 => vec!["XX".into()],
                2 => vec!["GET".into()],
                3 => vec!["KEEPTTL".into()],
                4 => vec!["EX".into(), self.rng.pick(SECONDS).into()],
                5 => vec!["PX".into(), self.rng.pick(MILLIS).into()],
                6 => vec!["EXAT".into(), at_s],
                7 => vec!["PXAT".into(), at_ms],
                8 => vec![self.rng.pick(&["FOO", "ex", "Px", "nx"]).into()],
                _ => vec![self.rng.pick(&["EX", "PX"]).into()],
            };
            options.extend(option);
        }
        options
    }

    fn expire_options(&mut self) -> Vec<String> {
        (0..self.rng.below(3))
            .map(|_| {
                self.rng
                    .pick(&["NX", "XX", "GT", "LT", "gt", "FOO"])
                    .to_string()
            })
            .collect()
    }

    fn command(&mut self) -> Vec<String> {
        let key = self.key();
        let s = |items: &[&str]| items.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        let mut command = match self.rng.below(34) {
            0 | 1 => s(&["GET", &key]),
            2..=4 => {
                let mut c = s(&["SET", &key, &self.value()]);
                c.extend(self.set_options());
                c
            }
            5 => s(&["SETNX", &key, &self.value()]),
            6 => s(&["SETEX", &key, self.rng.pick(SECONDS), "v"]),
            7 => s(&["PSETEX", &key, self.rng.pick(MILLIS), "v"]),
            8 => s(&["GETSET", &key, &self.value()]),
            9 => s(&["GETDEL", &key]),
            10 => s(&["APPEND", &key, &self.value()]),
            11 => s(&["STRLEN", &key]),
            12 => s(&[self.rng.pick(&["INCR", "DECR"]), &key]),
            13 | 14 => s(&[
                self.rng.pick(&["INCRBY", "DECRBY"]),
                &key,
                self.rng.pick(NUMBERS),
            ]),
            15 => {
                let mut c = s(&["MGET"]);
                (0..1 + self.rng.below(4)).for_each(|_| c.push(self.key()));
                c
            }
            16 => {
                let mut c = s(&["MSET"]);
                (0..1 + self.rng.below(5)).for_each(|_| c.push(self.value()));
                c.insert(1, key);
                c
            }
            17 => {
                let mut c = s(&[self.rng.pick(&["DEL", "EXISTS"])]);
                (0..1 + self.rng.below(3)).for_each(|_| c.push(self.key()));
                c
            }
            18 | 19 => {
                let mut c = s(&["EXPIRE", &key, self.rng.pick(SECONDS)]);
                c.extend(self.expire_options());
                c
            }
            20 => {
                let mut c = s(&["PEXPIRE", &key, self.rng.pick(MILLIS)]);
                c.extend(self.expire_options());
                c
            }
            21 => s(&[self.rng.pick(&["TTL", "PTTL"]), &key]),
            22 => s(&["PERSIST", &key]),
            23 => s(&["TYPE", &key]),
            24 => s(&["KEYS", self.rng.pick(PATTERNS)]),
            25 => self.scan(),
            26 => s(&["DBSIZE"]),
            27 => s(&["ECHO", &self.value()]),
            28 => s(&["PING"]),
            29 => s(&[
                "SELECT",
                self.rng.pick(&["0", "16", "-1", "+0", "00", "3000000000"]),
            ]),
            30 => s(&["NOSUCH", &self.value(), &"q".repeat(self.rng.below(200))]),
            31 => s(&[self.rng.pick(&[
                "HELLO 3",
                "HELLO 2",
                "HELLO",
                "HELLO 4",
                "HELLO abc",
                "HELLO 3 FOO",
            ])])[0]
                .split(' ')
                .map(String::from)
                .collect(),
            32 => s(&["FLUSHALL"]),
            _ => self.wrong_arity(),
        };
        if command[0] == "FLUSHALL" && !self.rng.chance(10) {
            command = s(&["DBSIZE"]);
        }
        command
    }

    fn scan(&mut self) -> Vec<String> {
        let cursor = self
            .rng
            .pick(&["0", "0", "+0", "", "abc", " 0", "-", "18446744073709551616"]);
        let mut c = vec!["SCAN".to_string(), cursor.to_string()];
        for _ in 0..self.rng.below(3) {
            let option: &[&str] = match self.rng.below(5) {
                0 => &["MATCH", self.rng.pick(PATTERNS)],
                1 => &["COUNT", self.rng.pick(&["1", "2", "100", "0", "-1", "abc"])],
                2 => &["TYPE", self.rng.pick(&["string", "STRING", "hash", "none"])],
                3 => &["MATCH"],
                _ => &["FOO", "1"],
            };
            c.extend(option.iter().map(|o| o.to_string()));
        }
        c
    }

    fn wrong_arity(&mut self) -> Vec<String> {
        let name = self.rng.pick(&[
            "GET", "SET", "SETEX", "GETDEL", "INCRBY", "EXPIRE", "TTL", "TYPE", "KEYS", "SCAN",
            "ECHO", "DBSIZE", "STRLEN", "APPEND", "MGET",
        ]);
        let mut c = vec![name.to_string()];
        let extra = [0, 5][self.rng.below(2)];
        (0..extra).for_each(|_| c.push("a".into()));
        c
    }
}

/// A whole SCAN from the command's cursor: the keys, as a sorted set, or
/// the first reply if it is an error.
fn full_scan(client: &mut Client, command: &[Vec<u8>]) -> Value {
    let mut command = command.to_vec();
    let mut keys = Vec::new();
    for _ in 0..1000 {
        let reply = parse(&client.call(&command));
        let Value::Many(_, Some(items)) = &reply else {
            return reply;
        };
        let (Value::Bulk(Some(cursor)), Value::Many(_, Some(batch))) = (&items[0], &items[1])
        else {
            return reply;
        };
        keys.extend(batch.iter().cloned());
        if cursor == b"0" {
            keys.sort();
            keys.dedup();
            return Value::Many(b'*', Some(keys));
        }
        command[1] = cursor.clone();
    }
    panic!("SCAN did not finish");
}

/// Whether two TTL replies agree: the same code (-1, -2), or times within
/// `tolerance` of each other (the servers read their clocks apart).
fn ttl_agrees(expected: &Value, got: &Value, tolerance: i64) -> bool {
    let number = |value: &Value| match value {
        Value::Line(b':', n) => String::from_utf8_lossy(n).parse::<i64>().ok(),
        _ => None,
    };
    match (number(expected), number(got)) {
        (Some(a), Some(b)) if a >= 0 && b >= 0 => (a - b).abs() <= tolerance,
        _ => expected == got,
    }
}

/// What is compared: the reply, with what depends on hash order or on the
/// server's identity normalised.
fn normalise(name: &str, reply: Value) -> Value {
    match (name, reply) {
        ("KEYS", Value::Many(kind, Some(mut keys))) => {
            keys.sort();
            Value::Many(kind, Some(keys))
        }
        ("HELLO", Value::Many(kind, Some(mut fields))) => {
            for pair in fields.chunks_mut(2) {
                if let [Value::Bulk(Some(field)), value] = pair
                    && matches!(field.as_slice(), b"server" | b"version" | b"id")
                {
                    *value = Value::Bulk(None);
                }
            }
            Value::Many(kind, Some(fields))
        }
        (_, reply) => reply,
    }
}

#[test]
fn random_command_sequences_get_the_same_replies_as_redis() {
    let redis = Redis::start();
    let netloop = Server::start(
        &[],
        &[
            "kv",
            "--threads",
            "1",
            "--addr",
            "127.0.0.1:0",
            "--stop-timeout",
            "0.5",
        ],
    );
    let future = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 86_400;
    let started = Instant::now();
    for seed in 1..=20u64 {
        let mut theirs = Client::connect(redis.port);
        let mut ours = Client::connect(netloop.addr.port());
        for client in [&mut theirs, &mut ours] {
            assert_eq!(client.call(&[b"FLUSHALL".to_vec()]), b"+OK\r\n");
        }
        let mut generator = Gen {
            rng: Rng(seed),
            future,
        };
        let mut history = Vec::new();
        for step in 0..500 {
            let command: Vec<Vec<u8>> = generator
                .command()
                .into_iter()
                .map(String::into_bytes)
                .collect();
            let name = String::from_utf8_lossy(&command[0]).to_ascii_uppercase();
            history.push(String::from_utf8_lossy(&command.join(&b' ')).into_owned());
            let (expected, got) = if name == "SCAN" {
                (
                    full_scan(&mut theirs, &command),
                    full_scan(&mut ours, &command),
                )
            } else {
                let (expected, got) = (theirs.call(&command), ours.call(&command));
                if name != "TTL" && name != "PTTL" && name != "KEYS" && name != "HELLO" {
                    assert!(
                        expected == got,
                        "seed {seed} step {step}: {:?}\nredis:   {:?}\nnetloop: {:?}\nhistory: {:#?}",
                        history.last(),
                        String::from_utf8_lossy(&expected),
                        String::from_utf8_lossy(&got),
                        &history[history.len().saturating_sub(12)..]
                    );
                    continue;
                }
                (parse(&expected), parse(&got))
            };
            let (expected, got) = (normalise(&name, expected), normalise(&name, got));
            let agree = match name.as_str() {
                "TTL" => ttl_agrees(&expected, &got, 2),
                "PTTL" => ttl_agrees(&expected, &got, 2000),
                _ => expected == got,
            };
            assert!(
                agree,
                "seed {seed} step {step}: {:?}\nredis:   {expected:?}\nnetloop: {got:?}\nhistory: {:#?}",
                history.last(),
                &history[history.len().saturating_sub(12)..]
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}
