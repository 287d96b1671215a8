//! Key commands: DEL, EXISTS, expiry, TYPE, KEYS, SCAN, DBSIZE, FLUSHALL.

use super::glob;
use super::reply::{CmdError, Reply, c_str};
use super::strings::integer;
use super::{Call, Next, Outcome};

/// DEL key...: atomic over all its keys.
pub(super) fn del(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let mut locked = call.store().lock(call.args.from(1));
    let removed = call
        .args
        .from(1)
        .filter(|key| locked.remove(key).is_some())
        .count();
    reply.integer(i64::try_from(removed).unwrap_or(i64::MAX));
    Ok(Next::Continue)
}

/// EXISTS key...: a key named twice counts twice, as in Redis.
pub(super) fn exists(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let mut locked = call.store().lock(call.args.from(1));
    let live = call.args.from(1).filter(|key| locked.exists(key)).count();
    reply.integer(i64::try_from(live).unwrap_or(i64::MAX));
    Ok(Next::Continue)
}

/// EXPIRE's conditions (Redis 7).
#[derive(Debug, Default)]
struct Conditions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl Conditions {
    /// Redis' `parseExtendedExpireArgumentsOrReply`.
    fn parse<'a>(options: impl Iterator<Item = &'a [u8]>) -> Result<Self, CmdError> {
        let mut found = Self::default();
        for option in options {
            let flag = match option.to_ascii_lowercase().as_slice() {
                b"nx" => &mut found.nx,
                b"xx" => &mut found.xx,
                b"gt" => &mut found.gt,
                b"lt" => &mut found.lt,
                _ => return Err(CmdError::quoting("Unsupported option ", option, "")),
            };
            *flag = true;
        }
        if found.nx && (found.xx || found.gt || found.lt) {
            return Err(CmdError::ExpireNxWithOthers);
        }
        if found.gt && found.lt {
            return Err(CmdError::ExpireGtWithLt);
        }
        Ok(found)
    }

    /// Whether the new deadline `when` may replace `current`; no expiry
    /// counts as an infinite one.
    fn allow(&self, current: Option<i64>, when: i64) -> bool {
        let refused = (self.nx && current.is_some())
            || (self.xx && current.is_none())
            || (self.gt && current.is_none_or(|current| when <= current))
            || (self.lt && current.is_some_and(|current| when >= current));
        !refused
    }
}

/// Redis' `expireGenericCommand` with the current time as base: a number
/// of seconds or milliseconds, possibly negative (the key is then deleted),
/// refused when converting it or adding the time would overflow.
fn expire_generic(
    call: &Call<'_, '_>,
    reply: &mut Reply<'_>,
    millis_per_unit: i64,
    command: &'static str,
) -> Outcome {
    let key = call.arg(1);
    let conditions = Conditions::parse(call.args.from(3))?;
    let amount = integer(call.arg(2))?;
    let invalid = CmdError::InvalidExpire(command);
    let mut locked = call.store().lock_one(key);
    let now = locked.now();
    let when = amount
        .checked_mul(millis_per_unit)
        .and_then(|millis| millis.checked_add(now))
        .ok_or(invalid)?;
    let Some(entry) = locked.get_mut(key) else {
        reply.integer(0);
        return Ok(Next::Continue);
    };
    if !conditions.allow(entry.expires_at, when) {
        reply.integer(0);
        return Ok(Next::Continue);
    }
    if when <= now {
        locked.remove(key);
    } else {
        entry.expires_at = Some(when);
    }
    reply.integer(1);
    Ok(Next::Continue)
}

/// EXPIRE key seconds [NX | XX | GT | LT]
pub(super) fn expire(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    expire_generic(call, reply, 1000, "expire")
}

/// PEXPIRE key milliseconds [NX | XX | GT | LT]
pub(super) fn pexpire(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    expire_generic(call, reply, 1, "pexpire")
}

/// Milliseconds left: -2 for no key, -1 for no expiry.
fn millis_left(call: &Call<'_, '_>) -> i64 {
    let mut locked = call.store().lock_one(call.arg(1));
    let now = locked.now();
    match locked.get_mut(call.arg(1)) {
        None => -2,
        Some(entry) => entry
            .expires_at
            .map_or(-1, |at| at.saturating_sub(now).max(0)),
    }
}

/// TTL key: seconds, rounded to the nearest as Redis rounds.
pub(super) fn ttl(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let left = millis_left(call);
    reply.integer(if left < 0 {
        left
    } else {
        left.saturating_add(500) / 1000
    });
    Ok(Next::Continue)
}

/// PTTL key
pub(super) fn pttl(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    reply.integer(millis_left(call));
    Ok(Next::Continue)
}

/// PERSIST key: 1 if an expiry was removed.
pub(super) fn persist(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let mut locked = call.store().lock_one(call.arg(1));
    let removed = locked
        .get_mut(call.arg(1))
        .and_then(|entry| entry.expires_at.take())
        .is_some();
    reply.integer(i64::from(removed));
    Ok(Next::Continue)
}

/// TYPE key: every value is a string.
pub(super) fn key_type(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let exists = call.store().lock_one(call.arg(1)).exists(call.arg(1));
    reply.simple(if exists { "string" } else { "none" });
    Ok(Next::Continue)
}

/// A MATCH filter; a lone `*` matches every key (even the empty one, which
/// the glob itself would not), as in Redis.
fn pattern_filter(pattern: Option<&[u8]>) -> impl Fn(&[u8]) -> bool + '_ {
    move |key| match pattern {
        None | Some(b"*") => true,
        Some(pattern) => glob::matches(pattern, key),
    }
}

fn keys_reply(reply: &mut Reply<'_>, keys: &[Vec<u8>]) {
    reply.array(keys.len());
    keys.iter().for_each(|key| reply.bulk(key));
}

/// KEYS pattern
pub(super) fn keys(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let found = call
        .store()
        .lock_all()
        .keys(pattern_filter(Some(call.arg(1))));
    keys_reply(reply, &found);
    Ok(Next::Continue)
}

/// SCAN's options.
#[derive(Debug)]
struct ScanRequest<'a> {
    pattern: Option<&'a [u8]>,
    count: usize,
    type_name: Option<&'a [u8]>,
}

impl<'a> ScanRequest<'a> {
    /// Redis' option loop in `scanGenericCommand`: each option needs its
    /// value; COUNT must be a positive integer.
    fn parse(options: &[&'a [u8]]) -> Result<Self, CmdError> {
        let mut request = Self {
            pattern: None,
            count: 10,
            type_name: None,
        };
        let mut pairs = options.chunks(2);
        for pair in pairs.by_ref() {
            let [option, value] = *pair else {
                return Err(CmdError::Syntax);
            };
            if option.eq_ignore_ascii_case(b"count") {
                let count = integer(value)?;
                request.count = usize::try_from(count)
                    .ok()
                    .filter(|count| *count >= 1)
                    .ok_or(CmdError::Syntax)?;
            } else if option.eq_ignore_ascii_case(b"match") {
                request.pattern = Some(value);
            } else if option.eq_ignore_ascii_case(b"type") {
                request.type_name = Some(value);
            } else {
                return Err(CmdError::Syntax);
            }
        }
        Ok(request)
    }
}

/// A cursor as Redis reads it (`strtoul` in base 10): optional sign (a
/// minus wraps around), digits up to a NUL, nothing else; no leading space.
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let text = c_str(arg);
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        // strtoul converts nothing, and only the empty string ends there.
        return text.is_empty().then_some(0);
    }
    let value = digits.iter().try_fold(0u64, |acc, &byte| {
        let digit = u64::from(byte.checked_sub(b'0').filter(|d| *d <= 9)?);
        acc.checked_mul(10)?.checked_add(digit)
    })?;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
///
/// The cursor is a position in the order of the keys' hashes (not Redis'
/// bucket order): every key present for the whole scan is returned.
pub(super) fn scan(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let cursor = parse_cursor(call.arg(1)).ok_or(CmdError::InvalidCursor)?;
    let options: Vec<&[u8]> = call.args.from(2).collect();
    let request = ScanRequest::parse(&options)?;
    let (next, mut found) = call.store().lock_all().scan(cursor, request.count);
    let wanted = pattern_filter(request.pattern);
    let string_type = request
        .type_name
        .is_none_or(|name| name.eq_ignore_ascii_case(b"string"));
    found.retain(|key| string_type && wanted(key));
    reply.array(2);
    let mut cursor_text = Vec::new();
    crate::codec::push_u64(&mut cursor_text, next);
    reply.bulk(&cursor_text);
    keys_reply(reply, &found);
    Ok(Next::Continue)
}

/// DBSIZE
pub(super) fn dbsize(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let len = call.store().lock_all().len();
    reply.integer(i64::try_from(len).unwrap_or(i64::MAX));
    Ok(Next::Continue)
}

/// FLUSHALL [ASYNC | SYNC]
pub(super) fn flushall(call: &mut Call<'_, '_>, reply: &mut Reply<'_>) -> Outcome {
    let mode_ok = match call.args.get(1) {
        None => true,
        Some(mode) => {
            call.args.len() == 2
                && (mode.eq_ignore_ascii_case(b"async") || mode.eq_ignore_ascii_case(b"sync"))
        }
    };
    if !mode_ok {
        return Err(CmdError::Syntax);
    }
    call.store().lock_all().clear();
    reply.ok();
    Ok(Next::Continue)
}
