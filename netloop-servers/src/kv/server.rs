//! Connection and server commands: PING, ECHO, HELLO, COMMAND, QUIT, and
//! the CONFIG, SELECT and CLIENT calls clients make at start.

use super::reply::{CmdError, Protocol, Reply};
use super::strings::integer;
use super::{COMMANDS, Call, Client, Next, Outcome};

/// PING [message]
pub(super) fn ping(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    match call.args.len() {
        1 => reply.simple("PONG"),
        2 => reply.bulk(call.args.at(1)),
        _ => return Err(CmdError::Arity("ping")),
    }
    Ok(Next::Continue)
}

/// ECHO message
pub(super) fn echo(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    reply.bulk(call.args.at(1));
    Ok(Next::Continue)
}

impl Client {
    /// This connection's id, assigned on first use.
    fn id(&mut self, call_store: &super::Store) -> u64 {
        if self.id == 0 {
            self.id = call_store.next_client_id();
        }
        self.id
    }
}

/// Redis' `clientSetNameOrReply`: no spaces, newlines or other bytes outside
/// `!`..=`~`; an empty name clears the name.
fn set_name(client: &mut Client, name: &[u8]) -> Result<(), CmdError> {
    if name.iter().any(|byte| !(b'!'..=b'~').contains(byte)) {
        return Err(CmdError::BadClientName);
    }
    client.name = (!name.is_empty()).then(|| name.to_vec());
    Ok(())
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]]
///
/// Switches the connection to RESP2 or RESP3 and describes the server, as
/// Redis 7 does. There are no users, so AUTH succeeds for `default`, the
/// user Redis has when none are configured.
pub(super) fn hello(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let protocol = match call.args.get(1) {
        None => None,
        Some(version) => match parse_i64_or(version, CmdError::ProtocolNotAnInteger)? {
            2 => Some(Protocol::Resp2),
            3 => Some(Protocol::Resp3),
            _ => return Err(CmdError::NoProto),
        },
    };
    let mut i = 2;
    let mut name = None;
    while let Some(option) = call.args.get(i) {
        let more = call.args.len() - 1 - i;
        if option.eq_ignore_ascii_case(b"auth") && more >= 2 {
            if call.args.at(i + 1) != b"default" {
                return Err(CmdError::WrongPass);
            }
            i += 3;
        } else if option.eq_ignore_ascii_case(b"setname") && more >= 1 {
            name = Some(call.args.at(i + 1));
            i += 2;
        } else {
            return Err(CmdError::quoting(
                "Syntax error in HELLO option '",
                option,
                "'",
            ));
        }
    }
    if let Some(name) = name {
        set_name(call.client, name)?;
    }
    if let Some(protocol) = protocol {
        call.client.protocol = protocol;
        reply.protocol = protocol;
    }
    let id = call.client.id(&call.kv.store);
    describe_server(reply, id);
    Ok(Next::Continue)
}

fn describe_server(reply: &mut Reply<'_>, id: u64) {
    reply.map(7);
    reply.bulk(b"server");
    reply.bulk(b"netloop");
    reply.bulk(b"version");
    reply.bulk(env!("CARGO_PKG_VERSION").as_bytes());
    reply.bulk(b"proto");
    reply.integer(match reply.protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    });
    reply.bulk(b"id");
    reply.integer(i64::try_from(id).unwrap_or(i64::MAX));
    reply.bulk(b"mode");
    reply.bulk(b"standalone");
    reply.bulk(b"role");
    reply.bulk(b"master");
    reply.bulk(b"modules");
    reply.array(0);
}

fn parse_i64_or(arg: &[u8], error: CmdError) -> Result<i64, CmdError> {
    integer(arg).map_err(|_| error)
}

/// Enough for clients that introspect at start: no command documentation.
pub(super) fn command(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    if call
        .args
        .get(1)
        .is_some_and(|sub| sub.eq_ignore_ascii_case(b"count"))
    {
        reply.integer(i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX));
    } else {
        reply.array(0);
    }
    Ok(Next::Continue)
}

/// QUIT
pub(super) fn quit(_: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    reply.ok();
    Ok(Next::Close)
}

/// `CONFIG GET` answers what redis-benchmark asks at start; `CONFIG SET`
/// accepts and ignores.
pub(super) fn config(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let sub = call.args.at(1);
    if sub.eq_ignore_ascii_case(b"get") && call.args.len() == 3 {
        let known: &[(&[u8], &[u8])] = &[(b"save", b""), (b"appendonly", b"no")];
        match known
            .iter()
            .find(|(name, _)| call.args.at(2).eq_ignore_ascii_case(name))
        {
            Some((name, value)) => {
                reply.map(1);
                reply.bulk(name);
                reply.bulk(value);
            }
            None => reply.map(0),
        }
    } else if sub.eq_ignore_ascii_case(b"set") && call.args.len() >= 4 {
        reply.ok();
    } else {
        return Err(CmdError::Subcommand("config"));
    }
    Ok(Next::Continue)
}

/// SELECT index: only database 0 exists.
pub(super) fn select(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let index = integer(call.args.at(1))?;
    // Redis reads the index as a C int first.
    i32::try_from(index).map_err(|_| CmdError::NotAnInt32)?;
    if index != 0 {
        return Err(CmdError::DbIndex);
    }
    reply.ok();
    Ok(Next::Continue)
}

/// CLIENT ID, GETNAME and SETNAME; other subcommands are accepted and
/// ignored (clients send them at start).
pub(super) fn client(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let sub = call.args.at(1);
    if sub.eq_ignore_ascii_case(b"getname") {
        reply.bulk_or_null(call.client.name.as_deref());
    } else if sub.eq_ignore_ascii_case(b"setname") && call.args.len() == 3 {
        set_name(call.client, call.args.at(2))?;
        reply.ok();
    } else if sub.eq_ignore_ascii_case(b"id") {
        let id = call.client.id(&call.kv.store);
        reply.integer(i64::try_from(id).unwrap_or(i64::MAX));
    } else {
        reply.ok();
    }
    Ok(Next::Continue)
}
