//! Work that reaches a loop from outside its own events: commands from
//! other threads (through a [`LoopHandle`](crate::LoopHandle)), and, in the
//! one-shot mode, work other workers left on a connection this worker holds,
//! done before it hands the connection back.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use crate::close_reason::CloseReason;
use crate::core::CloseMode;
use crate::event_loop::EventLoop;
use crate::handle::Command;
use crate::handler::Handler;
use crate::shared::{CheckIn, Deferred};
use crate::slots::{Acquire, Slots};
use crate::token::ConnId;

impl<H: Handler> EventLoop<H> {
    pub(crate) fn run_commands(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        self.mailbox.take(&mut commands);
        for command in commands.drain(..) {
            self.run_command(command);
            self.drain_closes();
        }
        self.commands = commands;
    }

    fn run_command(&mut self, command: Command<H::State>) {
        match command {
            Command::Stop(kind) => self.core.begin_stop(kind),
            Command::Write(id, bytes) => self.on_conn_command(id, Deferred::Write(bytes)),
            Command::Close(id) => self.on_conn_command(id, Deferred::Close),
            Command::Adopt(fd, peer) => self.adopt_fd(fd, peer),
            Command::Run(task) => self.call_with_ctx("a posted task", |_, ctx| task(ctx)),
            #[cfg(feature = "testing")]
            Command::Crash => panic!("loop crashed on purpose by a test"),
        }
    }

    /// A command for one connection: done here, or (one-shot) left with
    /// the worker serving it, which does it in order before letting go.
    fn on_conn_command(&mut self, id: ConnId, work: Deferred) {
        match self.core.conns.defer(id, work) {
            (Acquire::Held, Some(work)) => self.do_deferred(id, work),
            (Acquire::Busy, _) => {}
            _ => self.core.stats.stale_commands += 1,
        }
    }

    fn adopt_fd(&mut self, fd: OwnedFd, peer: Option<SocketAddr>) {
        if self.core.stopping {
            return;
        }
        if self.core.conns.is_full() {
            self.core.stats.count_close(CloseReason::PoolFull);
        } else if let Err(e) = self.open_connection(fd, peer) {
            tracing::warn!(error = %e, "cannot adopt connection");
        }
    }

    /// One-shot: hands every connection this worker served back to the
    /// shared slab, re-armed for what it waits for.
    pub(crate) fn check_in(&mut self) {
        let registration = self.core.registration;
        // Work other workers left, and closing what failed to re-arm (whose
        // `on_close` may reach other connections), can leave connections
        // held again: hand back until nothing is.
        loop {
            let Slots::Shared(checkout) = &mut self.core.conns else {
                return;
            };
            let CheckIn {
                rearmed,
                failed,
                work,
            } = checkout.check_in_all(&self.core.epoll, |conn| registration.interest_of(conn));
            self.core.stats.rearms += rearmed;
            if failed.is_empty() && work.is_empty() {
                return;
            }
            let mut ids = Vec::with_capacity(failed.len());
            for (id, conn) in failed {
                checkout.hold_again(id, conn);
                ids.push(id);
            }
            for id in ids {
                self.core
                    .request_close(id, CloseReason::Reset, CloseMode::Now);
            }
            self.drain_closes();
            for (id, work) in work {
                self.do_deferred(id, work);
            }
            self.flush_all();
            self.notify_drained();
        }
    }

    /// Work another worker left on a connection this one holds.
    fn do_deferred(&mut self, id: ConnId, work: Deferred) {
        if !self.core.conns.contains(id) {
            return;
        }
        match work {
            Deferred::Write(bytes) => {
                let _ = self.core.write(id, &bytes);
            }
            Deferred::Close => {
                self.core
                    .request_close(id, CloseReason::Closed, CloseMode::AfterOutput);
            }
            Deferred::Timer(timer, kind) => self.run_timer(timer, kind),
        }
        self.drain_closes();
    }
}
