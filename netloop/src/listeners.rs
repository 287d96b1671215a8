//! A loop's listening sockets, and whether it accepts from them now.

use std::net::TcpListener;
use std::sync::Arc;

use crate::token::{ConnId, RESERVED_INDEX_BASE};

pub(crate) struct Listener {
    pub(crate) socket: Arc<TcpListener>,
    pub(crate) interest: u32,
}

/// A loop's listeners and whether it accepts from them now.
pub(crate) struct Listeners {
    pub(crate) list: Vec<Listener>,
    /// Whether the listeners are registered with epoll now.
    pub(crate) registered: bool,
    /// Descriptors ran out; accepting resumes at a timer.
    pub(crate) backing_off: bool,
    /// The pool is full and new connections wait in the backlog.
    pub(crate) waiting_for_slot: bool,
    /// The last accept failed for lack of descriptors (for logging only).
    pub(crate) failing: bool,
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            registered: true,
            backing_off: false,
            waiting_for_slot: false,
            failing: false,
        }
    }
}

impl Listeners {
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The epoll token of listener `index`.
    #[cfg(feature = "testing")]
    pub(crate) fn token(&self, index: usize) -> Option<u64> {
        (index < self.list.len()).then(|| listener_token(index))
    }
}

pub(crate) fn listener_token(index: usize) -> u64 {
    ConnId::new(RESERVED_INDEX_BASE + index as u32, 0).to_u64()
}
