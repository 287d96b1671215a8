//! The acceptor-and-loops mode (muduo's `EventLoopThreadPool`): one thread
//! accepts and hands each connection to a loop through its mailbox.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::close_reason::CloseReason;
use crate::config::Config;
use crate::conn::Conn;
use crate::error::Error;
use crate::event_loop::{EventLoop, Handoff};
use crate::handle::LoopHandle;
use crate::handler::Handler;
use crate::loop_thread::{Health, LoopThread, spawn_loop};
use crate::sys::epoll::READABLE;

/// Chooses the loop for a connection in the acceptor mode.
#[derive(Clone, Default)]
pub enum Dispatch {
    /// Each loop in turn.
    #[default]
    RoundRobin,
    /// `hash(peer) % threads`, e.g. to keep one client's connections together.
    Hash(Arc<dyn Fn(Option<SocketAddr>) -> usize + Send + Sync>),
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dispatch::RoundRobin => f.write_str("RoundRobin"),
            Dispatch::Hash(_) => f.write_str("Hash(..)"),
        }
    }
}

/// The acceptor's handler: it never serves a connection itself.
struct AcceptOnly;

impl Handler for AcceptOnly {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        conn.abort(CloseReason::Closed);
    }
}

/// Starts the acceptor thread on `sockets`, handing connections to `targets`.
pub(crate) fn spawn_acceptor<S: 'static>(
    sockets: Vec<Arc<TcpListener>>,
    loop_config: &Config,
    dispatch: Dispatch,
    targets: &[LoopHandle<S>],
    health: Arc<Health>,
) -> Result<(LoopHandle<()>, LoopThread), Error> {
    let distributor = Distributor::new(targets.to_vec(), dispatch);
    let config = Config {
        max_connections: 1,
        ..loop_config.clone()
    };
    let build = move || {
        let mut event_loop = EventLoop::new(config, AcceptOnly)?;
        event_loop.handoff = Some(Box::new(distributor));
        for socket in sockets {
            event_loop.add_listener_with(socket, READABLE)?;
        }
        Ok((event_loop, None))
    };
    let (thread, ready) = spawn_loop("netloop-acceptor".to_string(), health, build)?;
    let (handle, _) = ready?;
    Ok((handle, thread))
}

/// Picks target loops for accepted connections.
struct Distributor<S> {
    targets: Vec<LoopHandle<S>>,
    dispatch: Dispatch,
    next: usize,
}

impl<S: 'static> Handoff for Distributor<S> {
    fn has_room(&self) -> bool {
        self.targets.iter().any(LoopHandle::has_room)
    }

    fn hand_off(&mut self, fd: OwnedFd, peer: Option<SocketAddr>) {
        Distributor::hand_off(self, fd, peer);
    }
}

impl<S> Distributor<S> {
    fn new(targets: Vec<LoopHandle<S>>, dispatch: Dispatch) -> Self {
        Self {
            targets,
            dispatch,
            next: 0,
        }
    }

    /// The next loop in turn, skipping full ones (all full: the next in turn,
    /// whose pool policy then decides).
    fn next_with_room(&mut self) -> usize {
        let count = self.targets.len();
        for step in 1..=count {
            let index = (self.next + step) % count;
            if self.targets[index].has_room() {
                self.next = index;
                return index;
            }
        }
        self.next = (self.next + 1) % count;
        self.next
    }

    fn hand_off(&mut self, fd: OwnedFd, peer: Option<SocketAddr>) {
        if self.targets.is_empty() {
            return;
        }
        let index = match &self.dispatch {
            Dispatch::RoundRobin => self.next_with_room(),
            Dispatch::Hash(hash) => hash(peer) % self.targets.len(),
        };
        if let Err(e) = self.targets[index].adopt_fd(fd, peer) {
            tracing::warn!(error = %e, loop_index = index, "cannot hand off a connection");
        }
    }
}
