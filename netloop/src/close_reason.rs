//! Why a connection ended.

use std::fmt;

/// Why a connection ended. Every close carries one, the handler sees it in
/// [`Handler::on_close`](crate::Handler::on_close), and
/// [`Stats`](crate::Stats) counts them.
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
    /// The peer broke the protocol the handler speaks. The handler names
    /// the error with a short lowercase word (`"bad_magic"`,
    /// `"frame_too_large"`, `"http_bad_request"`, …), which is what
    /// `Display` prints; [`Stats`](crate::Stats) counts every protocol
    /// error, whatever its name, under `protocol_error`.
    Protocol(&'static str),
    /// Buffered input passed the per-connection input limit.
    InputLimit,
    /// Queued output passed the per-connection output limit (a slow reader).
    OutputLimit,
    /// An outbound connection was refused or failed to connect.
    ConnectFailed,
    /// An outbound connection did not connect within the connect timeout.
    ConnectTimeout,
    /// A handler callback panicked; the connection was aborted.
    HandlerPanic,
}

impl CloseReason {
    /// Every reason, in the order [`Stats::closed`](crate::Stats::closed)
    /// counts them. `Protocol("protocol_error")` stands for every
    /// [`Protocol`](CloseReason::Protocol) reason, which share one counter.
    pub const ALL: [CloseReason; 12] = [
        CloseReason::PeerClosed,
        CloseReason::Reset,
        CloseReason::IdleTimeout,
        CloseReason::PoolFull,
        CloseReason::Shutdown,
        CloseReason::Closed,
        CloseReason::Protocol("protocol_error"),
        CloseReason::InputLimit,
        CloseReason::OutputLimit,
        CloseReason::ConnectFailed,
        CloseReason::ConnectTimeout,
        CloseReason::HandlerPanic,
    ];

    /// A short lowercase name for the reason's counter, for tables and
    /// metrics: `"protocol_error"` for every
    /// [`Protocol`](CloseReason::Protocol) reason, whose own name `Display`
    /// prints instead.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Reset => "reset",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::PoolFull => "pool_full",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Closed => "closed",
            CloseReason::Protocol(_) => "protocol_error",
            CloseReason::InputLimit => "input_limit",
            CloseReason::OutputLimit => "output_limit",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::HandlerPanic => "handler_panic",
        }
    }

    /// The reason's index in [`CloseReason::ALL`] and in
    /// [`Stats::closed`](crate::Stats::closed).
    pub(crate) const fn slot(self) -> usize {
        match self {
            CloseReason::PeerClosed => 0,
            CloseReason::Reset => 1,
            CloseReason::IdleTimeout => 2,
            CloseReason::PoolFull => 3,
            CloseReason::Shutdown => 4,
            CloseReason::Closed => 5,
            CloseReason::Protocol(_) => 6,
            CloseReason::InputLimit => 7,
            CloseReason::OutputLimit => 8,
            CloseReason::ConnectFailed => 9,
            CloseReason::ConnectTimeout => 10,
            CloseReason::HandlerPanic => 11,
        }
    }
}

/// The counter name ([`CloseReason::as_str`]), or for a protocol error the
/// handler's name for it (`bad_magic`, not `protocol_error`).
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
    fn slots_follow_all() {
        for (n, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(reason.slot(), n, "{reason}");
        }
        assert_eq!(
            CloseReason::Protocol("bad_magic").slot(),
            CloseReason::Protocol("protocol_error").slot()
        );
    }

    #[test]
    fn protocol_errors_print_their_name_and_count_as_protocol_error() {
        let reason = CloseReason::Protocol("bad_magic");
        assert_eq!(reason.to_string(), "bad_magic");
        assert_eq!(reason.as_str(), "protocol_error");
        assert_ne!(reason, CloseReason::Protocol("frame_too_large"));
        for reason in CloseReason::ALL {
            assert_eq!(reason.to_string(), reason.as_str());
        }
        assert_eq!(CloseReason::HandlerPanic.to_string(), "handler_panic");
    }
}
