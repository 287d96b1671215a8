//! Closing: requests made during a turn are carried out between callbacks,
//! never inside one, so a connection a callback is about cannot vanish
//! under it; and the graceful stop.

use std::os::fd::AsRawFd;

use crate::close_reason::CloseReason;
use crate::config::StopStyle;
use crate::connection::{Phase, WriteSide};
use crate::core::{CloseMode, CloseRequest, Core};
use crate::event_loop::EventLoop;
use crate::handle::StopKind;
use crate::handler::Handler;
use crate::timer::TimerKind;
use crate::token::ConnId;

impl<H: Handler> EventLoop<H> {
    /// Carries out close requests, including those made by `on_close` itself.
    pub(crate) fn drain_closes(&mut self) {
        while let Some(request) = self.core.close_requests.pop() {
            self.carry_out(request);
        }
    }

    fn carry_out(&mut self, request: CloseRequest) {
        let CloseRequest { id, reason, mode } = request;
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        if mode == CloseMode::Now || conn.output.is_empty() || conn.is_connecting() {
            self.finalize(id, reason);
            return;
        }
        if conn.closing_reason().is_some() {
            // Keep the first reason: a later EOF does not rename a protocol error.
            return;
        }
        // A peer that never reads would hold the slot forever.
        let deadline = self.core.clock.after(self.core.config.close_timeout);
        let deadline = self
            .core
            .timers
            .insert(deadline, TimerKind::CloseDeadline(id));
        if let Some(conn) = self.core.conns.get_mut(id) {
            let reason = stopping_renames(conn.phase, reason);
            conn.phase = Phase::Closing { reason, deadline };
        }
        self.core.schedule_flush(id);
        self.core.update_interest(id);
    }

    fn finalize(&mut self, id: ConnId, reason: CloseReason) {
        let Some(mut conn) = self.core.conns.remove(id) else {
            return;
        };
        self.core.occupants.publish_close(id);
        let reason = match conn.phase {
            // The close was decided before lingering; what ends the
            // lingering (the peer's FIN, a reset, the deadline) does not
            // rename it.
            Phase::Lingering { reason, .. } => reason,
            phase => stopping_renames(phase, reason),
        };
        // Deleting explicitly matters when the fd was dup'd: close alone
        // would leave the registration alive for the duplicate.
        let _ = self.core.epoll.delete(conn.fd.as_raw_fd());
        // The idle check is not cancelled: it finds this id stale.
        let timers = [
            conn.send_timer.take(),
            match conn.phase {
                Phase::Connecting { timeout } => Some(timeout),
                Phase::Closing { deadline, .. } | Phase::Lingering { deadline, .. } => {
                    Some(deadline)
                }
                Phase::Open | Phase::Stopping => None,
            },
        ];
        for timer in timers.into_iter().flatten() {
            self.core.timers.cancel(timer);
        }
        conn.release_buffers(&mut self.core.buffers);
        self.core.stats.count_close(reason);
        tracing::trace!(%id, %reason, "connection closed");
        let state = conn.state;
        drop(conn.fd);
        self.core.slot_freed();
        self.call_with_ctx("on_close", |handler, ctx| {
            handler.on_close(ctx, id, state, reason)
        });
    }
}

/// A connection closed while the loop stops closes as `Shutdown`, unless
/// it failed on its own.
fn stopping_renames(phase: Phase, reason: CloseReason) -> CloseReason {
    match (phase, reason) {
        (Phase::Stopping, CloseReason::Reset | CloseReason::HandlerPanic) => reason,
        (Phase::Stopping, _) => CloseReason::Shutdown,
        _ => reason,
    }
}

impl<S> Core<S> {
    /// Stops accepting, lets every connection drain its output and send
    /// FIN (or, handing over, finish on its own), and arms the deadline
    /// after which the rest are closed.
    pub(crate) fn begin_stop(&mut self, kind: StopKind) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.handing_over = kind == StopKind::HandOver;
        self.close_listeners(kind);
        let deadline = self.clock.after(self.config.stop_timeout);
        self.timers.insert(deadline, TimerKind::StopDeadline);
        if let Some(slab) = self.conns.shared_slab() {
            // Before the sweep, so the other workers know what holds their
            // connections for a moment.
            slab.begin_stop(kind == StopKind::HandOver);
        }
        for id in self.conns.acquire_all() {
            self.stop_conn(id);
        }
    }

    /// One-shot: a worker that learns another began the pool's stop takes
    /// part in it (its own listener copy, deadline, and the connections it
    /// finds parked). Returns whether it did so now.
    pub(crate) fn follow_shared_stop(&mut self) -> bool {
        let Some(slab) = self.conns.shared_slab() else {
            return false;
        };
        let (stopping, handover) = (slab.is_stopping(), slab.is_handing_over());
        if stopping && !self.stopping {
            let kind = if handover {
                StopKind::HandOver
            } else {
                StopKind::Drain
            };
            self.begin_stop(kind);
            return true;
        }
        false
    }

    /// Whether the stop under way leaves connections to end on their own.
    fn lets_finish(&self) -> bool {
        self.handing_over || self.config.stop_style == StopStyle::LetFinish
    }

    /// The phase of an outbound connection whose connect completes now: a
    /// stop that lets connections finish serves it as any other (a relay's
    /// upstream that connects just after the stop began).
    pub(crate) fn connected_phase(&self) -> Phase {
        if self.stopping && !self.lets_finish() {
            Phase::Stopping
        } else {
            Phase::Open
        }
    }

    fn stop_conn(&mut self, id: ConnId) {
        if self.lets_finish() {
            // Left to end on its own, or at the stop deadline.
            return;
        }
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.phase == Phase::Open {
            conn.phase = Phase::Stopping;
        }
        if conn.write == WriteSide::Open {
            conn.write = WriteSide::FinAfterOutput;
        }
        if conn.read != crate::connection::ReadSide::Open {
            self.request_close(id, CloseReason::Shutdown, CloseMode::AfterOutput);
        } else {
            self.schedule_flush(id);
        }
    }
}
