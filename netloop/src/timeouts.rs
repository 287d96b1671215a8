//! What happens when the loop's timers expire: idle and connect timeouts,
//! the close and stop deadlines, the end of an accept back-off, and the
//! handler's own timers.

use crate::close_reason::CloseReason;
use crate::core::CloseMode;
use crate::event_loop::EventLoop;
use crate::handler::Handler;
use crate::shared::Deferred;
use crate::slots::Acquire;
use crate::timer::{TimerId, TimerKind};
use crate::token::ConnId;

impl<H: Handler> EventLoop<H> {
    pub(crate) fn expire_timers(&mut self) {
        self.core.timers.apply_cancels();
        let now = self.core.clock.now_ns();
        while let Some((timer, kind)) = self.core.timers.pop_expired(now) {
            self.on_timer_expired(timer, kind);
        }
    }

    fn on_timer_expired(&mut self, timer: TimerId, kind: TimerKind) {
        if let Some(id) = kind.conn() {
            // One-shot: a worker serving the connection now runs it.
            let (found, _) = self.core.conns.defer(id, Deferred::Timer(timer, kind));
            if found != Acquire::Held {
                return;
            }
        }
        self.run_timer(timer, kind);
    }

    /// Carries out an expired timer whose connection (if any) is held.
    pub(crate) fn run_timer(&mut self, timer: TimerId, kind: TimerKind) {
        match kind {
            TimerKind::Idle(id) => self.idle_check(id),
            TimerKind::Send(id) => self.send_check(id),
            TimerKind::User { conn, data } => {
                self.call(conn, |handler, c| handler.on_timer(c, timer, data));
            }
            TimerKind::ConnectTimeout(id) => {
                if self.core.conns.get(id).is_some_and(|c| c.is_connecting()) {
                    self.close_now(id, CloseReason::ConnectTimeout);
                }
            }
            TimerKind::CloseDeadline(id) => {
                if let Some(reason) = self.core.conns.get(id).and_then(|c| c.closing_reason()) {
                    self.close_now(id, reason);
                }
            }
            TimerKind::AcceptResume => self.core.resume_accepting(),
            TimerKind::RoomCheck => self.check_for_room(),
            TimerKind::StopDeadline => self.stop_deadline_passed(),
        }
    }

    fn close_now(&mut self, id: ConnId, reason: CloseReason) {
        self.core.request_close(id, reason, CloseMode::Now);
        self.drain_closes();
    }

    fn stop_deadline_passed(&mut self) {
        for id in self.core.conns.acquire_all() {
            self.core
                .request_close(id, CloseReason::Shutdown, CloseMode::Now);
        }
        self.drain_closes();
    }

    /// The send timeout: output queued and no write progress for that long.
    fn send_check(&mut self, id: ConnId) {
        let Some(timeout) = self.core.config.send_timeout else {
            return;
        };
        let now = self.core.clock.now_ns();
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        conn.send_timer = None;
        if conn.output.is_empty() {
            // Drained since: the next refused write arms it again.
            return;
        }
        let deadline = conn
            .last_sent_ns
            .saturating_add(crate::clock::duration_ns(timeout));
        if deadline <= now {
            self.close_now(id, CloseReason::SendTimeout);
        } else {
            let timer = self.core.timers.insert(deadline, TimerKind::Send(id));
            if let Some(conn) = self.core.conns.get_mut(id) {
                conn.send_timer = Some(timer);
            }
        }
    }

    fn idle_check(&mut self, id: ConnId) {
        let Some(idle) = self.core.config.idle_timeout else {
            return;
        };
        let now = self.core.clock.now_ns();
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        let deadline = conn
            .last_active_ns
            .saturating_add(crate::clock::duration_ns(idle));
        if deadline <= now {
            self.close_now(id, CloseReason::IdleTimeout);
        } else {
            // Activity moved the deadline: re-arm lazily instead of on every read.
            self.core.timers.insert_idle(deadline, id);
        }
    }
}
