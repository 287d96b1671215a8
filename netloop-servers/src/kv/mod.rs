//! An in-memory key-value server speaking RESP2 and RESP3 (`netloop kv`),
//! so that `redis-cli`, `redis-benchmark` and client libraries such as
//! redis-py work against it unmodified.
//!
//! Inline and multibulk requests, pipelining (every reply of a turn in one
//! write), Redis' error texts, and a protocol error answered with
//! `-ERR Protocol error: …` before the connection is closed, as Redis does
//! (`CloseReason::Protocol("resp_protocol_error")`). Each connection keeps
//! its parser's place in a pending request and the protocol HELLO chose.
//! The store is shared by all loops, in shards behind mutexes; a command
//! holds the shards it touches for its whole run, so multi-key commands
//! are atomic across threads.

mod glob;
mod keys;
mod reply;
mod server;
mod store;
mod strings;

use std::sync::Arc;

use netloop::Buffer;
use netloop::{CloseReason, Conn, Handler};

use crate::codec::resp::{self, ArgBuf, RespLimits, RespParser};
pub use reply::Protocol;
use reply::{CmdError, Reply, c_str};
pub use store::Store;

/// Argument slots kept after a request: a connection that once sent a huge
/// request does not keep its memory.
const KEEP_ARGS: usize = 1024;

/// The RESP handler.
pub struct Kv {
    store: Arc<Store>,
    limits: RespLimits,
}

/// One connection: where its parser stands and what HELLO set.
#[derive(Debug, Default)]
pub struct KvConn {
    parser: RespParser,
    client: Client,
}

/// What a connection's commands set about it.
#[derive(Debug, Default)]
struct Client {
    protocol: Protocol,
    /// Assigned on first use (HELLO, CLIENT ID); 0 until then.
    id: u64,
    name: Option<Vec<u8>>,
}

impl KvConn {
    /// The reply protocol this connection chose (RESP2 until `HELLO 3`).
    pub fn protocol(&self) -> Protocol {
        self.client.protocol
    }
}

/// What a command asks of the connection after its reply.
enum Next {
    Continue,
    Close,
}

/// What a command returns: what comes next, or its error reply.
type Outcome = Result<Next, CmdError>;

impl Kv {
    /// A handler over `store`.
    pub fn new(store: Arc<Store>, limits: RespLimits) -> Self {
        Self { store, limits }
    }

    /// Answers every complete command in `input`, in order; says whether,
    /// and why, the connection must close after the replies are written.
    fn process(
        &self,
        input: &mut Buffer,
        out: &mut Vec<u8>,
        conn: &mut KvConn,
    ) -> Option<CloseReason> {
        loop {
            match conn.parser.parse(input.as_slice(), &self.limits) {
                Ok(None) => return None,
                Ok(Some(consumed)) => {
                    let args = Args {
                        parsed: conn.parser.args(),
                        input: input.as_slice(),
                    };
                    let next = if args.len() == 0 {
                        Next::Continue
                    } else {
                        self.execute(&args, &mut conn.client, out)
                    };
                    input.consume(consumed);
                    conn.parser.shrink_to(KEEP_ARGS);
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

    fn execute(&self, args: &Args<'_>, client: &mut Client, out: &mut Vec<u8>) -> Next {
        let mut reply = Reply::new(out, client.protocol);
        let name = args.at(0);
        let outcome = match COMMANDS
            .iter()
            .find(|c| name.eq_ignore_ascii_case(c.name.as_bytes()))
        {
            None => Err(unknown_command(args)),
            Some(command) if !command.arity_ok(args.len()) => Err(CmdError::Arity(command.name)),
            Some(command) => {
                let mut call = Call {
                    kv: self,
                    args,
                    client,
                };
                (command.run)(&mut call, &mut reply)
            }
        };
        outcome.unwrap_or_else(|error| {
            reply.error(&error);
            Next::Continue
        })
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

    /// Argument `index`, if there is one.
    fn get(&self, index: usize) -> Option<&'a [u8]> {
        self.parsed.get(self.input, index)
    }

    /// The arguments from `index` on.
    fn from(&self, index: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        (index..self.len()).map(|i| self.at(i))
    }
}

/// Everything a command may use.
struct Call<'c, 'a> {
    kv: &'c Kv,
    args: &'c Args<'a>,
    client: &'c mut Client,
}

impl Call<'_, '_> {
    fn store(&self) -> &Store {
        &self.kv.store
    }

    fn arg(&self, index: usize) -> &[u8] {
        self.args.at(index)
    }
}

struct Command {
    name: &'static str,
    /// As in Redis: N means exactly N arguments with the name, -N at least N.
    arity: i32,
    run: fn(&mut Call<'_, '_>, &mut Reply<'_>) -> Outcome,
}

impl Command {
    fn arity_ok(&self, len: usize) -> bool {
        let wanted = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            len == wanted
        } else {
            len >= wanted
        }
    }
}

macro_rules! commands {
    ($($name:literal $arity:literal $run:path),* $(,)?) => {
        &[$(Command { name: $name, arity: $arity, run: $run }),*]
    };
}

/// Every command, with Redis 7's arity.
const COMMANDS: &[Command] = commands![
    "get" 2 strings::get,
    "set" -3 strings::set,
    "setnx" 3 strings::setnx,
    "setex" 4 strings::setex,
    "psetex" 4 strings::psetex,
    "getset" 3 strings::getset,
    "getdel" 2 strings::getdel,
    "append" 3 strings::append,
    "strlen" 2 strings::strlen,
    "incr" 2 strings::incr,
    "decr" 2 strings::decr,
    "incrby" 3 strings::incrby,
    "decrby" 3 strings::decrby,
    "mget" -2 strings::mget,
    "mset" -3 strings::mset,
    "del" -2 keys::del,
    "exists" -2 keys::exists,
    "expire" -3 keys::expire,
    "pexpire" -3 keys::pexpire,
    "ttl" 2 keys::ttl,
    "pttl" 2 keys::pttl,
    "persist" 2 keys::persist,
    "type" 2 keys::key_type,
    "keys" 2 keys::keys,
    "scan" -2 keys::scan,
    "dbsize" 1 keys::dbsize,
    "flushall" -1 keys::flushall,
    "ping" -1 server::ping,
    "echo" 2 server::echo,
    "hello" -1 server::hello,
    "command" -1 server::command,
    "quit" -1 server::quit,
    "config" -2 server::config,
    "select" 2 server::select,
    "client" -2 server::client,
];

/// Redis' text: the name (at most 128 bytes), then the arguments quoted
/// until the quoted list reaches 128 bytes, quotes and spaces included;
/// each argument is cut to what is left of those 128, and at a NUL byte as
/// C's `%.*s` cuts it. Bytes are
/// copied raw; only CR and LF become spaces (in the reply encoder).
fn unknown_command(args: &Args<'_>) -> CmdError {
    const QUOTED: usize = 128;
    let name = c_str(args.at(0));
    let mut quoted: Vec<u8> = Vec::new();
    for arg in args.from(1) {
        if quoted.len() >= QUOTED {
            break;
        }
        let arg = c_str(arg);
        let room = QUOTED - quoted.len();
        quoted.push(b'\'');
        quoted.extend_from_slice(&arg[..arg.len().min(room)]);
        quoted.extend_from_slice(b"' ");
    }
    let mut message = b"unknown command '".to_vec();
    message.extend_from_slice(&name[..name.len().min(QUOTED)]);
    message.extend_from_slice(b"', with args beginning with: ");
    message.extend_from_slice(&quoted);
    CmdError::Quoted(message)
}

impl Handler for Kv {
    type State = KvConn;

    fn on_data(&mut self, conn: &mut Conn<'_, KvConn>) {
        let parts = conn.parts();
        let mut output = parts.output;
        if let Some(reason) = self.process(parts.input, output.vec(), parts.state) {
            conn.close_with(reason);
        }
    }
}
