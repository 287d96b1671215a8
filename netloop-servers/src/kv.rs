//! An in-memory key-value server speaking RESP2 (`netloop kv`), so that
//! `redis-cli` and `redis-benchmark` work against it unmodified.
//!
//! Inline and multibulk requests, pipelining (every reply of a turn in one
//! write), Redis' error texts, and a protocol error answered with
//! `-ERR Protocol error: …` before the connection is closed, as Redis does
//! (`CloseReason::Protocol("resp_protocol_error")`).
//! The store is shared by all loops, in shards behind mutexes; with one
//! thread the mutexes are never contended.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use netloop::Buffer;
use netloop::{CloseReason, Conn, Handler};

use crate::codec::resp::{self, ArgBuf, RespLimits, parse_command_into};

const SHARDS: usize = 64;

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: &mut Option<Instant>) -> bool {
        match self.expires_at {
            None => true,
            Some(at) => at > *now.get_or_insert_with(Instant::now),
        }
    }
}

type Shard = HashMap<Vec<u8>, Entry>;

/// The keyspace, in shards so that loops on several threads rarely meet.
pub struct Store {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty keyspace.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        // A panic elsewhere cannot leave a HashMap half-updated; carry on.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads a live value (expired keys are removed on the way).
    fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Option<&Entry>) -> R) -> R {
        let mut shard = self.shard(key);
        let mut now = None;
        if shard.get(key).is_some_and(|e| !e.live(&mut now)) {
            shard.remove(key);
        }
        f(shard.get(key))
    }

    fn len(&self) -> usize {
        let mut now = None;
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                shard.retain(|_, e| e.live(&mut now));
                shard.len()
            })
            .sum()
    }

    fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

/// The RESP handler.
pub struct Kv {
    store: Arc<Store>,
    limits: RespLimits,
    args: ArgBuf,
}

/// What a command asks of the connection after its reply.
enum Next {
    Continue,
    Close,
}

impl Kv {
    /// A handler over `store`.
    pub fn new(store: Arc<Store>, limits: RespLimits) -> Self {
        Self {
            store,
            limits,
            args: ArgBuf::new(),
        }
    }

    /// Answers every complete command in `input`, in order; says whether,
    /// and why, the connection must close after the replies are written.
    fn process(&mut self, input: &mut Buffer, out: &mut Vec<u8>) -> Option<CloseReason> {
        loop {
            match parse_command_into(input.as_slice(), &self.limits, &mut self.args) {
                Ok(None) => return None,
                Ok(Some(consumed)) => {
                    let next = if self.args.is_empty() {
                        Next::Continue
                    } else {
                        self.execute(input.as_slice(), out)
                    };
                    input.consume(consumed);
                    if let Next::Close = next {
                        return Some(CloseReason::Closed);
                    }
                }
                Err(e) => {
                    resp::protocol_error(out, &e);
                    return Some(CloseReason::Protocol("resp_protocol_error"));
                }
            }
        }
    }

    fn execute(&self, input: &[u8], out: &mut Vec<u8>) -> Next {
        let args = Args {
            parsed: &self.args,
            input,
        };
        let name = args.at(0);
        let Some(command) = COMMANDS
            .iter()
            .find(|c| name.eq_ignore_ascii_case(c.name.as_bytes()))
        else {
            unknown_command(out, &args);
            return Next::Continue;
        };
        let arity_ok = if command.arity >= 0 {
            args.len() == command.arity as usize
        } else {
            args.len() >= command.arity.unsigned_abs() as usize
        };
        if !arity_ok {
            wrong_arity(out, command.name);
            return Next::Continue;
        }
        (command.run)(self, &args, out)
    }
}

/// The arguments of the command being run, borrowed from the input buffer
/// (no copy, no allocation per command).
struct Args<'a> {
    parsed: &'a ArgBuf,
    input: &'a [u8],
}

impl<'a> Args<'a> {
    fn len(&self) -> usize {
        self.parsed.len()
    }

    /// Argument `index`; empty past the end (callers check arity first).
    fn at(&self, index: usize) -> &'a [u8] {
        self.parsed.get(self.input, index).unwrap_or_default()
    }

    /// The arguments from `index` on.
    fn from(&self, index: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        (index..self.len()).map(|i| self.at(i))
    }
}

struct Command {
    name: &'static str,
    /// As in Redis: N means exactly N arguments with the name, -N at least N.
    arity: i32,
    run: fn(&Kv, &Args<'_>, &mut Vec<u8>) -> Next,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "get",
        arity: 2,
        run: cmd_get,
    },
    Command {
        name: "set",
        arity: -3,
        run: cmd_set,
    },
    Command {
        name: "ping",
        arity: -1,
        run: cmd_ping,
    },
    Command {
        name: "echo",
        arity: 2,
        run: cmd_echo,
    },
    Command {
        name: "del",
        arity: -2,
        run: cmd_del,
    },
    Command {
        name: "exists",
        arity: -2,
        run: cmd_exists,
    },
    Command {
        name: "incr",
        arity: 2,
        run: cmd_incr,
    },
    Command {
        name: "decr",
        arity: 2,
        run: cmd_decr,
    },
    Command {
        name: "mget",
        arity: -2,
        run: cmd_mget,
    },
    Command {
        name: "mset",
        arity: -3,
        run: cmd_mset,
    },
    Command {
        name: "expire",
        arity: 3,
        run: cmd_expire,
    },
    Command {
        name: "ttl",
        arity: 2,
        run: cmd_ttl,
    },
    Command {
        name: "dbsize",
        arity: 1,
        run: cmd_dbsize,
    },
    Command {
        name: "flushall",
        arity: -1,
        run: cmd_flushall,
    },
    Command {
        name: "command",
        arity: -1,
        run: cmd_command,
    },
    Command {
        name: "quit",
        arity: -1,
        run: cmd_quit,
    },
    Command {
        name: "config",
        arity: -2,
        run: cmd_config,
    },
    Command {
        name: "select",
        arity: 2,
        run: cmd_select,
    },
    Command {
        name: "client",
        arity: -2,
        run: cmd_client,
    },
];

fn unknown_command(out: &mut Vec<u8>, args: &Args<'_>) {
    let name = args.at(0);
    let mut message = format!(
        "unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&name[..name.len().min(128)])
    );
    for arg in args.from(1) {
        if message.len() > 256 {
            break;
        }
        message.push_str(&format!(
            "'{}' ",
            String::from_utf8_lossy(&arg[..arg.len().min(128)])
        ));
    }
    resp::error(out, &message);
}

fn wrong_arity(out: &mut Vec<u8>, name: &str) {
    resp::error(
        out,
        &format!("wrong number of arguments for '{name}' command"),
    );
}

const NOT_AN_INTEGER: &str = "value is not an integer or out of range";

fn parse_i64(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn cmd_get(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    kv.store.get_with(args.at(1), |entry| match entry {
        Some(entry) => resp::bulk(out, &entry.value),
        None => resp::null_bulk(out),
    });
    Next::Continue
}

/// SET key value [EX seconds | PX milliseconds] [NX | XX]
fn cmd_set(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    let mut ttl: Option<Duration> = None;
    let (mut nx, mut xx) = (false, false);
    let mut i = 3;
    while i < args.len() {
        let option = args.at(i);
        if option.eq_ignore_ascii_case(b"nx") && !xx {
            nx = true;
        } else if option.eq_ignore_ascii_case(b"xx") && !nx {
            xx = true;
        } else if (option.eq_ignore_ascii_case(b"ex") || option.eq_ignore_ascii_case(b"px"))
            && ttl.is_none()
            && i + 1 < args.len()
        {
            let Some(amount) = parse_i64(args.at(i + 1)) else {
                resp::error(out, NOT_AN_INTEGER);
                return Next::Continue;
            };
            if amount <= 0 {
                resp::error(out, "invalid expire time in 'set' command");
                return Next::Continue;
            }
            ttl = Some(if option.eq_ignore_ascii_case(b"ex") {
                Duration::from_secs(amount as u64)
            } else {
                Duration::from_millis(amount as u64)
            });
            i += 1;
        } else {
            resp::error(out, "syntax error");
            return Next::Continue;
        }
        i += 1;
    }
    let mut shard = kv.store.shard(args.at(1));
    let mut now = None;
    let exists = shard.get(args.at(1)).is_some_and(|e| e.live(&mut now));
    if (nx && exists) || (xx && !exists) {
        resp::null_bulk(out);
        return Next::Continue;
    }
    let expires_at = ttl.map(|ttl| now.unwrap_or_else(Instant::now) + ttl);
    let entry = Entry {
        value: args.at(2).to_vec(),
        expires_at,
    };
    shard.insert(args.at(1).to_vec(), entry);
    resp::simple(out, "OK");
    Next::Continue
}

fn cmd_ping(_: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    match args.len() {
        1 => resp::simple(out, "PONG"),
        2 => resp::bulk(out, args.at(1)),
        _ => wrong_arity(out, "ping"),
    }
    Next::Continue
}

fn cmd_echo(_: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    resp::bulk(out, args.at(1));
    Next::Continue
}

fn count_keys<'a>(kv: &Kv, keys: impl Iterator<Item = &'a [u8]>, remove: bool) -> i64 {
    let mut count = 0;
    for key in keys {
        let mut shard = kv.store.shard(key);
        let mut now = None;
        let live = shard.get(key).is_some_and(|e| e.live(&mut now));
        if remove || !live {
            // An expired key is gone either way.
            if shard.remove(key).is_some() && live {
                count += 1;
            }
        } else {
            count += 1;
        }
    }
    count
}

fn cmd_del(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    resp::integer(out, count_keys(kv, args.from(1), true));
    Next::Continue
}

fn cmd_exists(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    resp::integer(out, count_keys(kv, args.from(1), false));
    Next::Continue
}

fn add_to(kv: &Kv, key: &[u8], delta: i64, out: &mut Vec<u8>) -> Next {
    let mut shard = kv.store.shard(key);
    let mut now = None;
    let (current, expires_at) = match shard.get(key) {
        Some(entry) if entry.live(&mut now) => match parse_i64(&entry.value) {
            Some(n) => (n, entry.expires_at),
            None => {
                resp::error(out, NOT_AN_INTEGER);
                return Next::Continue;
            }
        },
        _ => (0, None),
    };
    let Some(next) = current.checked_add(delta) else {
        resp::error(out, "increment or decrement would overflow");
        return Next::Continue;
    };
    let mut value = Vec::new();
    crate::codec::push_i64(&mut value, next);
    shard.insert(key.to_vec(), Entry { value, expires_at });
    resp::integer(out, next);
    Next::Continue
}

fn cmd_incr(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    add_to(kv, args.at(1), 1, out)
}

fn cmd_decr(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    add_to(kv, args.at(1), -1, out)
}

fn cmd_mget(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    resp::array_header(out, args.len() - 1);
    for key in args.from(1) {
        kv.store.get_with(key, |entry| match entry {
            Some(entry) => resp::bulk(out, &entry.value),
            None => resp::null_bulk(out),
        });
    }
    Next::Continue
}

fn cmd_mset(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    if args.len().is_multiple_of(2) {
        wrong_arity(out, "mset");
        return Next::Continue;
    }
    for i in (1..args.len()).step_by(2) {
        let (key, value) = (args.at(i), args.at(i + 1));
        let entry = Entry {
            value: value.to_vec(),
            expires_at: None,
        };
        kv.store.shard(key).insert(key.to_vec(), entry);
    }
    resp::simple(out, "OK");
    Next::Continue
}

fn cmd_expire(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    let Some(seconds) = parse_i64(args.at(2)) else {
        resp::error(out, NOT_AN_INTEGER);
        return Next::Continue;
    };
    let mut shard = kv.store.shard(args.at(1));
    let mut now = None;
    let live = shard.get(args.at(1)).is_some_and(|e| e.live(&mut now));
    if !live {
        shard.remove(args.at(1));
        resp::integer(out, 0);
        return Next::Continue;
    }
    if seconds <= 0 {
        // Redis deletes a key given a non-positive expiry.
        shard.remove(args.at(1));
    } else if let Some(entry) = shard.get_mut(args.at(1)) {
        let now = now.unwrap_or_else(Instant::now);
        entry.expires_at = Some(now + Duration::from_secs(seconds as u64));
    }
    resp::integer(out, 1);
    Next::Continue
}

fn cmd_ttl(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    let ttl = kv.store.get_with(args.at(1), |entry| match entry {
        None => -2,
        Some(Entry {
            expires_at: None, ..
        }) => -1,
        Some(Entry {
            expires_at: Some(at),
            ..
        }) => {
            let left = at.saturating_duration_since(Instant::now());
            // Redis rounds to the nearest second.
            ((left.as_millis() + 500) / 1000) as i64
        }
    });
    resp::integer(out, ttl);
    Next::Continue
}

fn cmd_dbsize(kv: &Kv, _: &Args<'_>, out: &mut Vec<u8>) -> Next {
    resp::integer(out, kv.store.len() as i64);
    Next::Continue
}

fn cmd_flushall(kv: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    let mode_ok = args.len() == 1
        || (args.len() == 2
            && (args.at(1).eq_ignore_ascii_case(b"async")
                || args.at(1).eq_ignore_ascii_case(b"sync")));
    if !mode_ok {
        resp::error(out, "syntax error");
        return Next::Continue;
    }
    kv.store.clear();
    resp::simple(out, "OK");
    Next::Continue
}

/// Enough for clients that introspect at start: no command documentation.
fn cmd_command(_: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    if args.len() >= 2 && args.at(1).eq_ignore_ascii_case(b"count") {
        resp::integer(out, COMMANDS.len() as i64);
    } else {
        resp::array_header(out, 0);
    }
    Next::Continue
}

fn cmd_quit(_: &Kv, _: &Args<'_>, out: &mut Vec<u8>) -> Next {
    resp::simple(out, "OK");
    Next::Close
}

/// `CONFIG GET` answers what redis-benchmark asks at start; `CONFIG SET`
/// accepts and ignores.
fn cmd_config(_: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    if args.at(1).eq_ignore_ascii_case(b"get") && args.len() == 3 {
        let known: &[(&[u8], &[u8])] = &[(b"save", b""), (b"appendonly", b"no")];
        match known
            .iter()
            .find(|(name, _)| args.at(2).eq_ignore_ascii_case(name))
        {
            Some((name, value)) => {
                resp::array_header(out, 2);
                resp::bulk(out, name);
                resp::bulk(out, value);
            }
            None => resp::array_header(out, 0),
        }
    } else if args.at(1).eq_ignore_ascii_case(b"set") && args.len() >= 4 {
        resp::simple(out, "OK");
    } else {
        resp::error(
            out,
            "unknown subcommand or wrong number of arguments for 'config' command",
        );
    }
    Next::Continue
}

fn cmd_select(_: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    match parse_i64(args.at(1)) {
        Some(0) => resp::simple(out, "OK"),
        Some(_) => resp::error(out, "DB index is out of range"),
        None => resp::error(out, NOT_AN_INTEGER),
    }
    Next::Continue
}

fn cmd_client(_: &Kv, args: &Args<'_>, out: &mut Vec<u8>) -> Next {
    if args.at(1).eq_ignore_ascii_case(b"getname") {
        resp::null_bulk(out);
    } else {
        resp::simple(out, "OK");
    }
    Next::Continue
}

impl Handler for Kv {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let parts = conn.parts();
        let mut output = parts.output;
        if let Some(reason) = self.process(parts.input, output.vec()) {
            conn.close_with(reason);
        }
    }
}
