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
    /// An operation between two connections named the same one twice.
    #[error("connection {0} cannot be both ends")]
    SameConn(ConnId),
    /// The connection pool is full.
    #[error("the connection pool is full")]
    PoolFull,
    /// The loop has stopped and no longer takes commands.
    #[error("the event loop has stopped")]
    LoopStopped,
}
