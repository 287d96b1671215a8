//! Why a connection ended.

use std::fmt;

/// Why a connection ended. Every close carries one, the handler sees it in
/// [`Handler::on_close`](crate::Handler::on_close), and
/// [`Stats`](crate::Stats) counts them.
///
/// ```
/// use netloop::CloseReason;
/// let reason = CloseReason::Protocol("bad_magic");
/// assert_eq!(reason.to_string(), "bad_magic");
/// assert_eq!(reason.as_str(), "protocol_error");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer sent FIN (and any queued output was delivered first).
    PeerClosed,
    /// The peer reset the connection, or a read or write failed.
    Reset,
    /// No traffic for longer than the idle timeout.
    IdleTimeout,
    /// The pool was full when the connection arrived.
    PoolFull,
    /// The loop was stopping.
    Shutdown,
    /// The handler closed it.
    Closed,
    /// The peer broke the protocol; the name says how (`"bad_magic"`,
    /// `"frame_too_large"`, ...). Counted together as `protocol_error`.
    Protocol(&'static str),
    /// A handler callback about this connection panicked; the connection was
    /// aborted and the loop went on.
    HandlerPanic,
    /// Buffered input passed the per-connection input limit.
    InputLimit,
    /// Queued output passed the per-connection output limit (a slow reader).
    OutputLimit,
    /// An outbound connection was refused or failed to connect.
    ConnectFailed,
    /// An outbound connection did not connect within the connect timeout.
    ConnectTimeout,
    /// Output was queued and no write made progress for the send timeout
    /// ([`Config::send_timeout`](crate::Config::send_timeout)): a peer that
    /// does not read.
    SendTimeout,
}

impl CloseReason {
    /// One reason per counter, in the order [`Stats::closed`](crate::Stats::closed)
    /// counts them (`Protocol` stands for every protocol error).
    pub const ALL: [CloseReason; 13] = [
        CloseReason::PeerClosed,
        CloseReason::Reset,
        CloseReason::IdleTimeout,
        CloseReason::PoolFull,
        CloseReason::Shutdown,
        CloseReason::Closed,
        CloseReason::Protocol("protocol_error"),
        CloseReason::HandlerPanic,
        CloseReason::InputLimit,
        CloseReason::OutputLimit,
        CloseReason::ConnectFailed,
        CloseReason::ConnectTimeout,
        CloseReason::SendTimeout,
    ];

    /// The counter's name, for logs and tables (`"protocol_error"` for
    /// every protocol error; [`Display`](fmt::Display) gives its own name).
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Reset => "reset",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::PoolFull => "pool_full",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Closed => "closed",
            CloseReason::Protocol(_) => "protocol_error",
            CloseReason::HandlerPanic => "handler_panic",
            CloseReason::InputLimit => "input_limit",
            CloseReason::OutputLimit => "output_limit",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::SendTimeout => "send_timeout",
        }
    }

    /// The index of this reason's counter in [`CloseReason::ALL`].
    pub(crate) const fn counter(self) -> usize {
        match self {
            CloseReason::PeerClosed => 0,
            CloseReason::Reset => 1,
            CloseReason::IdleTimeout => 2,
            CloseReason::PoolFull => 3,
            CloseReason::Shutdown => 4,
            CloseReason::Closed => 5,
            CloseReason::Protocol(_) => 6,
            CloseReason::HandlerPanic => 7,
            CloseReason::InputLimit => 8,
            CloseReason::OutputLimit => 9,
            CloseReason::ConnectFailed => 10,
            CloseReason::ConnectTimeout => 11,
            CloseReason::SendTimeout => 12,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Protocol(name) => f.write_str(name),
            other => f.write_str(other.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_named_once_in_order() {
        for (index, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(reason.counter(), index, "{reason}");
        }
    }
}
