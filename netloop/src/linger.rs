//! Lingering close (nginx's `lingering_close`): a connection closed by this
//! side while its peer may still be sending is not closed the moment its
//! output is delivered. Its FIN goes out, and the peer's further input is
//! read and discarded until the peer's own FIN, `Config::linger_bytes` or
//! `Config::linger_timeout`, whichever comes first. Closing a socket with
//! unread input makes the kernel send RST, and a reset can destroy the
//! response in the peer's receive buffer before it is read: the `400` a
//! client pipelining behind a bad request never sees.

use crate::close_reason::CloseReason;
use crate::connection::{Phase, ReadSide, WriteSide};
use crate::core::CloseMode;
use crate::event_loop::EventLoop;
use crate::handler::Handler;
use crate::sys::socket;
use crate::timer::TimerKind;
use crate::token::ConnId;

impl<H: Handler> EventLoop<H> {
    /// A closing connection's output has been delivered: linger if the
    /// peer may still send and the config asks for it, else close now.
    pub(crate) fn output_delivered_on_close(&mut self, id: ConnId, reason: CloseReason) {
        let linger = self.core.config.linger_timeout;
        let left = self.core.config.linger_bytes;
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        let (Some(linger), Phase::Closing { deadline, .. }, ReadSide::Open) =
            (linger, conn.phase, conn.read)
        else {
            return self.close_delivered(id, reason);
        };
        if conn.write != WriteSide::FinSent {
            conn.write = WriteSide::FinSent;
            if socket::shutdown(&conn.fd, std::net::Shutdown::Write).is_err() {
                return self.close_delivered(id, reason);
            }
        }
        self.core.timers.cancel(deadline);
        let at = self.core.clock.after(linger);
        let deadline = self.core.timers.insert(at, TimerKind::CloseDeadline(id));
        if let Some(conn) = self.core.conns.get_mut(id) {
            conn.phase = Phase::Lingering {
                reason,
                deadline,
                left,
            };
        }
        self.core.stats.lingering_closes += 1;
        // Edge-triggered: input that arrived while closing raised its edge
        // already.
        self.core.post_read(id);
        self.core.update_interest(id);
    }

    fn close_delivered(&mut self, id: ConnId, reason: CloseReason) {
        self.core.request_close(id, reason, CloseMode::Now);
        self.drain_closes();
    }

    /// Discards `id`'s input while it lingers; closes it once more than
    /// `Config::linger_bytes` were discarded.
    pub(crate) fn discard_lingering_input(&mut self, id: ConnId) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        let discarded = conn.input.len();
        conn.input.consume(usize::MAX);
        conn.input.release_if_empty(&mut self.core.buffers);
        if let Phase::Lingering { reason, left, .. } = &mut conn.phase {
            match left.checked_sub(discarded) {
                Some(rest) if rest > 0 => *left = rest,
                _ => {
                    let reason = *reason;
                    self.close_delivered(id, reason);
                }
            }
        }
    }
}
