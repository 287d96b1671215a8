//! Replies in the protocol version the client chose with HELLO.

use thiserror::Error;

use crate::codec::resp;

/// The reply protocol of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, every connection's start.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// Appends replies to a connection's output in its protocol.
pub(crate) struct Reply<'o> {
    out: &'o mut Vec<u8>,
    pub(crate) protocol: Protocol,
}

impl<'o> Reply<'o> {
    pub(crate) fn new(out: &'o mut Vec<u8>, protocol: Protocol) -> Self {
        Self { out, protocol }
    }

    pub(crate) fn simple(&mut self, text: &str) {
        resp::simple(self.out, text);
    }

    pub(crate) fn ok(&mut self) {
        self.simple("OK");
    }

    pub(crate) fn error(&mut self, error: &CmdError) {
        resp::error_bytes(self.out, &error.text());
    }

    pub(crate) fn integer(&mut self, value: i64) {
        resp::integer(self.out, value);
    }

    pub(crate) fn bulk(&mut self, data: &[u8]) {
        resp::bulk(self.out, data);
    }

    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    pub(crate) fn null(&mut self) {
        match self.protocol {
            Protocol::Resp2 => resp::null_bulk(self.out),
            Protocol::Resp3 => resp::null(self.out),
        }
    }

    pub(crate) fn bulk_or_null(&mut self, data: Option<&[u8]>) {
        match data {
            Some(data) => self.bulk(data),
            None => self.null(),
        }
    }

    pub(crate) fn array(&mut self, len: usize) {
        resp::array_header(self.out, len);
    }

    /// A map of `len` pairs: RESP3's `%`, or a flat array in RESP2.
    pub(crate) fn map(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => resp::array_header(self.out, len.saturating_mul(2)),
            Protocol::Resp3 => resp::map_header(self.out, len),
        }
    }
}

/// A command's failure; the text is Redis' (`-ERR ` is added unless the
/// text starts with its own code).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum CmdError {
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    #[error("value is out of range, value must between -2147483648 and 2147483647")]
    NotAnInt32,
    #[error("syntax error")]
    Syntax,
    #[error("invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    #[error("increment or decrement would overflow")]
    Overflow,
    #[error("decrement would overflow")]
    DecrementOverflow,
    #[error("wrong number of arguments for '{0}' command")]
    Arity(&'static str),
    #[error("DB index is out of range")]
    DbIndex,
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("NX and XX, GT or LT options at the same time are not compatible")]
    ExpireNxWithOthers,
    #[error("GT and LT options at the same time are not compatible")]
    ExpireGtWithLt,
    #[error("string exceeds maximum allowed size (proto-max-bulk-len)")]
    StringTooLong,
    #[error("-NOPROTO unsupported protocol version")]
    NoProto,
    #[error("Protocol version is not an integer or out of range")]
    ProtocolNotAnInteger,
    #[error("-WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    #[error("Client names cannot contain spaces, newlines or special characters.")]
    BadClientName,
    #[error("unknown subcommand or wrong number of arguments for '{0}' command")]
    Subcommand(&'static str),
    /// Messages that quote the peer's bytes, kept raw as Redis keeps them.
    #[error("{}", String::from_utf8_lossy(.0))]
    Quoted(Vec<u8>),
}

impl CmdError {
    /// The message's bytes (raw for messages quoting the peer).
    fn text(&self) -> Vec<u8> {
        match self {
            Self::Quoted(bytes) => bytes.clone(),
            other => other.to_string().into_bytes(),
        }
    }

    /// `prefix` + `arg` + `suffix`, where `arg` is cut at its first NUL as
    /// C's `%s` cuts it in Redis.
    pub(crate) fn quoting(prefix: &str, arg: &[u8], suffix: &str) -> Self {
        Self::Quoted([prefix.as_bytes(), c_str(arg), suffix.as_bytes()].concat())
    }
}

/// The bytes C's `%s` would print of `bytes`: up to the first NUL.
pub(crate) fn c_str(bytes: &[u8]) -> &[u8] {
    bytes.split(|&byte| byte == 0).next().unwrap_or_default()
}
