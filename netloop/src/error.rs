//! The library's error type.

use std::io;
use std::net::SocketAddr;

use crate::token::ConnId;

/// Everything that can go wrong in netloop's API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Binding or listening on an address failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// The connection this id named has closed; its slot may hold another.
    #[error("connection {0} is closed")]
    StaleConn(ConnId),
    /// One-shot mode: another worker is serving that connection right now.
    /// Try again later (from a timer or the connection's next event).
    #[error("connection {0} is being served by another worker")]
    Busy(ConnId),
    /// An operation between two connections named the same one twice.
    #[error("connection {0} cannot be both ends")]
    SameConn(ConnId),
    /// The connection pool is full.
    #[error("the connection pool is full")]
    PoolFull,
    /// An event loop failed outside any handler callback (its `epoll_wait`
    /// failed, or the loop itself panicked); the server was stopped.
    #[error("an event loop died: {0}")]
    LoopDied(String),
    /// The loop has stopped and no longer takes commands.
    #[error("the event loop has stopped")]
    LoopStopped,
}
