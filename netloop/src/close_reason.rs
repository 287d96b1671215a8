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
    /// A frame announced a length over the limit.
    FrameTooLarge,
    /// A frame did not start with the expected magic.
    BadMagic,
    /// The peer broke the protocol in some other way.
    ProtocolError,
    /// Buffered input passed the per-connection input limit.
    InputLimit,
    /// Queued output passed the per-connection output limit (a slow reader).
    OutputLimit,
    /// An outbound connection was refused or failed to connect.
    ConnectFailed,
    /// An outbound connection did not connect within the connect timeout.
    ConnectTimeout,
}

impl CloseReason {
    /// Every reason, in the order [`Stats::closed`](crate::Stats::closed)
    /// counts them.
    pub const ALL: [CloseReason; 13] = [
        CloseReason::PeerClosed,
        CloseReason::Reset,
        CloseReason::IdleTimeout,
        CloseReason::PoolFull,
        CloseReason::Shutdown,
        CloseReason::Closed,
        CloseReason::FrameTooLarge,
        CloseReason::BadMagic,
        CloseReason::ProtocolError,
        CloseReason::InputLimit,
        CloseReason::OutputLimit,
        CloseReason::ConnectFailed,
        CloseReason::ConnectTimeout,
    ];

    /// A short lowercase name, for logs and tables.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Reset => "reset",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::PoolFull => "pool_full",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Closed => "closed",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::BadMagic => "bad_magic",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InputLimit => "input_limit",
            CloseReason::OutputLimit => "output_limit",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::ConnectTimeout => "connect_timeout",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
