//! Listening sockets and accepting from them: a bounded number per event,
//! the errors that are transient, the back-off when descriptors run out,
//! and the pause while the pool is full.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::close_reason::CloseReason;
use crate::config::PoolFullPolicy;
use crate::core::Core;
use crate::error::Error;
use crate::event_loop::EventLoop;
use crate::handle::StopKind;
use crate::handler::Handler;
use crate::listeners::{Listener, listener_token};
use crate::registration::Registration;
use crate::slots::Slots;
use crate::sys::epoll::{EXCLUSIVE, ONESHOT, READABLE};
use crate::sys::socket::{self, ListenOptions};
use crate::timer::TimerKind;

/// How often an acceptor whose loops are all full looks for room again.
const ROOM_CHECK: Duration = Duration::from_millis(5);

/// What to do after an accept error.
enum AfterAcceptError {
    TryAgain,
    Stop,
}

impl<H: Handler> EventLoop<H> {
    /// Binds a listener on `addr` and accepts from it; returns the bound
    /// address (useful with port 0).
    pub fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        self.listen_with(addr, ListenOptions::default())
    }

    /// Binds a listener with explicit options (`SO_REUSEPORT`, backlog).
    pub fn listen_with(
        &mut self,
        addr: SocketAddr,
        options: ListenOptions,
    ) -> Result<SocketAddr, Error> {
        let socket =
            socket::listen(addr, options).map_err(|source| Error::Listen { addr, source })?;
        self.add_listener(socket, false)
    }

    /// Accepts from an already bound listener (made non-blocking here). With
    /// `exclusive`, it is registered with `EPOLLEXCLUSIVE`, for a listener
    /// shared by several loops.
    pub fn add_listener(
        &mut self,
        socket: TcpListener,
        exclusive: bool,
    ) -> Result<SocketAddr, Error> {
        // Level-triggered: a listener left with a backlog is reported again
        // next turn, so accepting a bounded number per event loses nothing.
        let interest = if exclusive {
            READABLE | EXCLUSIVE
        } else {
            READABLE
        };
        self.add_listener_with(Arc::new(socket), interest)
    }

    pub(crate) fn add_listener_with(
        &mut self,
        socket: Arc<TcpListener>,
        interest: u32,
    ) -> Result<SocketAddr, Error> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let listeners = &mut self.core.listeners;
        let token = listener_token(listeners.list.len());
        if listeners.registered {
            match self.core.epoll.add(socket.as_raw_fd(), token, interest) {
                Ok(()) => {}
                // One-shot workers share the listener and the epoll: the
                // first one registered it for all.
                Err(e)
                    if e.raw_os_error() == Some(libc::EEXIST)
                        && self.core.registration == Registration::OneShot => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.core.listeners.list.push(Listener { socket, interest });
        Ok(local)
    }

    /// The addresses of this loop's listeners.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.core
            .listeners
            .list
            .iter()
            .filter_map(|l| l.socket.local_addr().ok())
            .collect()
    }

    pub(crate) fn accept_from(&mut self, listener: usize) {
        let Some(fd) = self
            .core
            .listeners
            .list
            .get(listener)
            .map(|l| l.socket.as_raw_fd())
        else {
            return;
        };
        let mut waiting_for_slot = false;
        for _ in 0..self.core.config.accepts_per_event.max(1) {
            if !self.core.accepting() {
                break;
            }
            if self.core.config.pool_full == PoolFullPolicy::LeaveInBacklog && self.is_full() {
                self.core.wait_for_slot();
                if self.handoff.is_some() {
                    self.check_for_room();
                }
                waiting_for_slot = true;
                break;
            }
            match socket::accept(fd) {
                Ok((stream, peer)) => self.accepted(stream, peer),
                Err(e) => {
                    if let AfterAcceptError::Stop = self.accept_failed(&e) {
                        break;
                    }
                }
            }
        }
        if self.core.accepting() && !waiting_for_slot {
            self.core.rearm_listener(listener);
        }
    }

    fn accepted(&mut self, stream: std::os::fd::OwnedFd, peer: Option<SocketAddr>) {
        if self.core.listeners.failing {
            self.core.listeners.failing = false;
            tracing::info!("accepting again");
        }
        if let Some(handoff) = self.handoff.as_mut() {
            self.core.stats.accepted += 1;
            handoff.hand_off(stream, peer);
            return;
        }
        if self.core.conns.is_full() {
            self.core.stats.count_close(CloseReason::PoolFull);
            tracing::debug!(?peer, "pool full: connection closed");
            return;
        }
        if let Err(e) = self.open_connection(stream, peer) {
            tracing::warn!(error = %e, "cannot register accepted connection");
        }
    }

    /// Whether a new connection has nowhere to go: this loop's pool is full
    /// or, for an acceptor, every loop it hands to is.
    fn is_full(&self) -> bool {
        match &self.handoff {
            Some(handoff) => !handoff.has_room(),
            None => self.core.conns.is_full(),
        }
    }

    /// An acceptor waiting for room: the loops it hands to free slots on
    /// their own threads, so it looks again shortly.
    pub(crate) fn check_for_room(&mut self) {
        if self.is_full() {
            let deadline = self.core.clock.after(ROOM_CHECK);
            self.core.timers.insert(deadline, TimerKind::RoomCheck);
        } else {
            self.core.slot_freed();
        }
    }

    fn accept_failed(&mut self, error: &io::Error) -> AfterAcceptError {
        match error.raw_os_error() {
            Some(libc::EAGAIN) => AfterAcceptError::Stop,
            Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => {
                AfterAcceptError::TryAgain
            }
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                // Warn when the pause starts; the retries while it lasts are debug.
                if self.core.listeners.failing {
                    tracing::debug!(error = %error, "accept still failing");
                } else {
                    let backoff = self.core.config.accept_backoff;
                    tracing::warn!(error = %error, ?backoff, "accept paused");
                }
                self.core.listeners.failing = true;
                self.core.pause_accepting();
                AfterAcceptError::Stop
            }
            _ => {
                tracing::warn!(error = %error, "accept failed");
                AfterAcceptError::Stop
            }
        }
    }
}

impl<S> Core<S> {
    pub(crate) fn accepting(&self) -> bool {
        let listeners = &self.listeners;
        !listeners.backing_off && !listeners.waiting_for_slot && !self.stopping
    }

    fn pause_accepting(&mut self) {
        self.stats.accept_pauses += 1;
        self.listeners.backing_off = true;
        let deadline = self.clock.after(self.config.accept_backoff);
        self.timers.insert(deadline, TimerKind::AcceptResume);
        if self.registration != Registration::OneShot {
            self.sync_listeners();
        }
    }

    /// The accept back-off is over.
    pub(crate) fn resume_accepting(&mut self) {
        self.listeners.backing_off = false;
        if self.registration == Registration::OneShot {
            // Only this worker paused: the listener has stayed disarmed.
            self.rearm_listeners();
        } else {
            self.sync_listeners();
        }
    }

    fn rearm_listeners(&mut self) {
        for index in 0..self.listeners.list.len() {
            self.rearm_listener(index);
        }
    }

    /// The pool is full: leave new connections in the backlog.
    fn wait_for_slot(&mut self) {
        match &self.conns {
            // The listener stays disarmed; whichever worker frees a slot
            // re-arms it.
            Slots::Shared(checkout) => {
                let slab = checkout.slab();
                slab.set_listener_waiting();
                // A slot freed between the check and the flag would have
                // found no flag to act on.
                if !slab.is_full() && slab.take_listener_waiting() {
                    self.rearm_listeners();
                }
            }
            Slots::Owned(_) => {
                self.listeners.waiting_for_slot = true;
                self.sync_listeners();
            }
        }
    }

    /// A slot freed: a loop leaving connections in the backlog takes them again.
    pub(crate) fn slot_freed(&mut self) {
        match &self.conns {
            Slots::Shared(checkout) => {
                if checkout.slab().take_listener_waiting() {
                    self.rearm_listeners();
                }
            }
            Slots::Owned(_) => {
                if self.listeners.waiting_for_slot {
                    self.listeners.waiting_for_slot = false;
                    self.sync_listeners();
                }
            }
        }
    }

    /// Registers the listeners when accepting is allowed and removes them
    /// otherwise: a level-triggered listener with a waiting backlog would
    /// otherwise wake the loop in a spin while accepting is paused.
    pub(crate) fn sync_listeners(&mut self) {
        let wanted = self.accepting();
        if self.registration == Registration::OneShot && wanted {
            // One-shot listeners are armed by `rearm_listener`, not added.
            return;
        }
        if wanted == self.listeners.registered {
            return;
        }
        for (index, listener) in self.listeners.list.iter().enumerate() {
            let fd = listener.socket.as_raw_fd();
            let result = if wanted {
                self.epoll.add(fd, listener_token(index), listener.interest)
            } else {
                self.epoll.delete(fd)
            };
            match result {
                Ok(()) => {}
                // One-shot workers share the listener: another worker's
                // stop may have removed it already.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOENT)
                        && self.registration == Registration::OneShot => {}
                Err(e) => tracing::warn!(error = %e, "cannot change listener registration"),
            }
        }
        self.listeners.registered = wanted;
    }

    /// One-shot registration: the listener is disarmed after each event
    /// and armed again once this worker has accepted its share.
    fn rearm_listener(&mut self, index: usize) {
        if self.registration != Registration::OneShot || !self.listeners.registered {
            return;
        }
        if let Some(listener) = self.listeners.list.get(index) {
            let fd = listener.socket.as_raw_fd();
            if let Err(e) =
                self.epoll
                    .modify(fd, listener_token(index), listener.interest | ONESHOT)
            {
                tracing::error!(error = %e, "cannot re-arm the listener");
            }
        }
    }

    /// Stops accepting for good and closes the listeners, so new connection
    /// attempts fail at once instead of waiting in a backlog nobody serves.
    /// Handing over, the listeners keep listening: the other process
    /// serves them and the connections in their backlogs.
    pub(crate) fn close_listeners(&mut self, kind: StopKind) {
        self.sync_listeners();
        if self.registration == Registration::OneShot && kind == StopKind::Drain {
            // The workers share it, and the others may only drop their
            // copies much later: stop it listening now.
            for listener in &self.listeners.list {
                let _ = socket::shutdown(&*listener.socket, std::net::Shutdown::Read);
            }
        }
        self.listeners.list.clear();
    }
}
