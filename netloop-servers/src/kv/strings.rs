//! String commands: GET, SET and its variants, counters, APPEND, MGET/MSET.

use super::reply::{CmdError, Reply};
use super::store::{Entry, Locked};
use super::{Call, Next, Outcome};
use crate::codec::resp::parse_i64;

/// Reads a number as Redis' `string2ll` does.
pub(super) fn integer(arg: &[u8]) -> Result<i64, CmdError> {
    parse_i64(arg).ok_or(CmdError::NotAnInteger)
}

/// How a SET-family expiry is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpireKind {
    /// EX: seconds from now.
    Ex,
    /// PX: milliseconds from now.
    Px,
    /// EXAT: a Unix time in seconds.
    ExAt,
    /// PXAT: a Unix time in milliseconds.
    PxAt,
}

impl ExpireKind {
    fn named(option: &[u8]) -> Option<Self> {
        [
            (&b"ex"[..], Self::Ex),
            (b"px", Self::Px),
            (b"exat", Self::ExAt),
            (b"pxat", Self::PxAt),
        ]
        .into_iter()
        .find(|(name, _)| option.eq_ignore_ascii_case(name))
        .map(|(_, kind)| kind)
    }

    /// The deadline `amount` gives, by the rules of Redis'
    /// `getExpireMillisecondsOrReply`: a positive number whose conversion to
    /// milliseconds, and addition to the current time, do not overflow.
    fn deadline(self, amount: &[u8], now: i64, command: &'static str) -> Result<i64, CmdError> {
        let amount = integer(amount)?;
        let invalid = CmdError::InvalidExpire(command);
        if amount <= 0 {
            return Err(invalid);
        }
        let millis = match self {
            Self::Ex | Self::ExAt => amount.checked_mul(1000).ok_or(invalid.clone())?,
            Self::Px | Self::PxAt => amount,
        };
        match self {
            Self::Ex | Self::Px => millis.checked_add(now).ok_or(invalid),
            Self::ExAt | Self::PxAt => Ok(millis),
        }
    }
}

/// What SET was asked, once its options are read.
#[derive(Debug, Default)]
struct SetRequest<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    expire: Option<(ExpireKind, &'a [u8])>,
}

impl<'a> SetRequest<'a> {
    /// Reads SET's options from `options` as Redis'
    /// `parseExtendedStringArgumentsOrReply` does: every option's syntax is
    /// checked before any number is read; a repeated EX (or PX, ...) keeps
    /// the last; conflicting options are a syntax error.
    fn parse(options: &[&'a [u8]]) -> Result<Self, CmdError> {
        let mut request = Self::default();
        let mut i = 0;
        while let Some(&option) = options.get(i) {
            let next = options.get(i + 1).copied();
            let is = |name: &[u8]| option.eq_ignore_ascii_case(name);
            if is(b"nx") && !request.xx {
                request.nx = true;
            } else if is(b"xx") && !request.nx {
                request.xx = true;
            } else if is(b"get") {
                request.get = true;
            } else if is(b"keepttl") && request.expire.is_none() {
                request.keep_ttl = true;
            } else if let Some((kind, amount)) = ExpireKind::named(option).zip(next)
                && !request.keep_ttl
                && request.expire.is_none_or(|(chosen, _)| chosen == kind)
            {
                request.expire = Some((kind, amount));
                i += 1;
            } else {
                return Err(CmdError::Syntax);
            }
            i += 1;
        }
        Ok(request)
    }
}

/// What a successful SET answers.
#[derive(Clone, Copy)]
enum Answer {
    /// `+OK`, or null when NX/XX refused.
    Ok,
    /// `:1`, or `:0` when NX refused (SETNX).
    Integer,
}

/// Redis' `setGenericCommand`.
fn set_generic(
    call: &Call<'_, '_>,
    reply: &mut Reply<'_>,
    (key, value): (&[u8], &[u8]),
    request: &SetRequest<'_>,
    (command, answer): (&'static str, Answer),
) -> Outcome {
    let mut locked = call.store().lock_one(key);
    let now = locked.now();
    let deadline = match request.expire {
        Some((kind, amount)) => Some(kind.deadline(amount, now, command)?),
        None => None,
    };
    let old = locked.get_mut(key);
    let found = old.is_some();
    let kept_ttl = old.as_ref().and_then(|entry| entry.expires_at);
    if request.get {
        reply.bulk_or_null(old.map(|entry| &entry.value[..]));
    }
    if (request.nx && found) || (request.xx && !found) {
        match (request.get, answer) {
            (true, _) => {}
            (false, Answer::Ok) => reply.null(),
            (false, Answer::Integer) => reply.integer(0),
        }
        return Ok(Next::Continue);
    }
    let expires_at = deadline.or(if request.keep_ttl { kept_ttl } else { None });
    locked.insert(key, Entry::new(value.to_vec(), expires_at));
    match (request.get, answer) {
        (true, _) => {}
        (false, Answer::Ok) => reply.ok(),
        (false, Answer::Integer) => reply.integer(1),
    }
    Ok(Next::Continue)
}

/// GET key
pub(super) fn get(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let mut locked = call.store().lock_one(call.arg(1));
    reply.bulk_or_null(locked.get_mut(call.arg(1)).map(|entry| &entry.value[..]));
    Ok(Next::Continue)
}

/// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL]
pub(super) fn set(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let options: Vec<&[u8]> = call.args.from(3).collect();
    let request = SetRequest::parse(&options)?;
    let pair = (call.arg(1), call.arg(2));
    set_generic(call, reply, pair, &request, ("set", Answer::Ok))
}

/// SETNX key value
pub(super) fn setnx(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let request = SetRequest {
        nx: true,
        ..SetRequest::default()
    };
    let pair = (call.arg(1), call.arg(2));
    set_generic(call, reply, pair, &request, ("setnx", Answer::Integer))
}

fn set_expiring(
    call: &Call<'_, '_>,
    reply: &mut Reply<'_>,
    kind: ExpireKind,
    command: &'static str,
) -> Outcome {
    let request = SetRequest {
        expire: Some((kind, call.arg(2))),
        ..SetRequest::default()
    };
    let pair = (call.arg(1), call.arg(3));
    set_generic(call, reply, pair, &request, (command, Answer::Ok))
}

/// SETEX key seconds value
pub(super) fn setex(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    set_expiring(call, reply, ExpireKind::Ex, "setex")
}

/// PSETEX key milliseconds value
pub(super) fn psetex(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    set_expiring(call, reply, ExpireKind::Px, "psetex")
}

/// GETSET key value: the old value; the new one has no expiry.
pub(super) fn getset(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let (key, value) = (call.arg(1), call.arg(2));
    let mut locked = call.store().lock_one(key);
    reply.bulk_or_null(locked.get_mut(key).map(|entry| &entry.value[..]));
    locked.insert(key, Entry::new(value.to_vec(), None));
    Ok(Next::Continue)
}

/// GETDEL key
pub(super) fn getdel(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let mut locked = call.store().lock_one(call.arg(1));
    let old = locked.remove(call.arg(1));
    reply.bulk_or_null(old.as_ref().map(|entry| &entry.value[..]));
    Ok(Next::Continue)
}

/// APPEND key value: the new length; the expiry stays.
pub(super) fn append(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let (key, tail) = (call.arg(1), call.arg(2));
    let mut locked = call.store().lock_one(key);
    let len = match locked.get_mut(key) {
        Some(entry) => {
            let len = entry.value.len().saturating_add(tail.len());
            if len > call.kv.limits.max_bulk_len {
                return Err(CmdError::StringTooLong);
            }
            entry.value.extend_from_slice(tail);
            len
        }
        None => {
            locked.insert(key, Entry::new(tail.to_vec(), None));
            tail.len()
        }
    };
    reply.integer(i64::try_from(len).unwrap_or(i64::MAX));
    Ok(Next::Continue)
}

/// STRLEN key
pub(super) fn strlen(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let mut locked = call.store().lock_one(call.arg(1));
    let len = locked
        .get_mut(call.arg(1))
        .map_or(0, |entry| entry.value.len());
    reply.integer(i64::try_from(len).unwrap_or(i64::MAX));
    Ok(Next::Continue)
}

/// Adds `delta` to the number at `key` (0 when missing); the expiry stays.
fn add_to(locked: &mut Locked<'_>, key: &[u8], delta: i64) -> Result<i64, CmdError> {
    let current = match locked.get_mut(key) {
        Some(entry) => integer(&entry.value)?,
        None => 0,
    };
    let next = current.checked_add(delta).ok_or(CmdError::Overflow)?;
    let mut value = Vec::new();
    crate::codec::push_i64(&mut value, next);
    match locked.get_mut(key) {
        Some(entry) => entry.value = value,
        None => locked.insert(key, Entry::new(value, None)),
    }
    Ok(next)
}

fn counter(call: &Call<'_, '_>, reply: &mut Reply<'_>, delta: i64) -> Outcome {
    let key = call.arg(1);
    let mut locked = call.store().lock_one(key);
    reply.integer(add_to(&mut locked, key, delta)?);
    Ok(Next::Continue)
}

/// INCR key
pub(super) fn incr(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    counter(call, reply, 1)
}

/// DECR key
pub(super) fn decr(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    counter(call, reply, -1)
}

/// INCRBY key increment
pub(super) fn incrby(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let delta = integer(call.arg(2))?;
    counter(call, reply, delta)
}

/// DECRBY key decrement (negating the smallest i64 would overflow).
pub(super) fn decrby(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let delta = integer(call.arg(2))?;
    let negated = delta.checked_neg().ok_or(CmdError::DecrementOverflow)?;
    counter(call, reply, negated)
}

/// MGET key...: all keys read under one lock, so the values are of one
/// moment even while other threads write.
pub(super) fn mget(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let mut locked = call.store().lock(call.args.from(1));
    reply.array(call.args.len() - 1);
    for key in call.args.from(1) {
        reply.bulk_or_null(locked.get_mut(key).map(|entry| &entry.value[..]));
    }
    Ok(Next::Continue)
}

/// MSET key value...: all pairs written under one lock.
pub(super) fn mset(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    if call.args.len().is_multiple_of(2) {
        return Err(CmdError::Arity("mset"));
    }
    let keys = (1..call.args.len()).step_by(2).map(|i| call.arg(i));
    let mut locked = call.store().lock(keys);
    for i in (1..call.args.len()).step_by(2) {
        locked.insert(call.arg(i), Entry::new(call.arg(i + 1).to_vec(), None));
    }
    reply.ok();
    Ok(Next::Continue)
}
