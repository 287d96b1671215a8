//! Moving bytes: reading a connection until EAGAIN or its budget, handing
//! input to the handler, and flushing output once per batch of events; with the
//! bookkeeping that follows every callback (limits, backpressure, FIN).

use crate::close_reason::CloseReason;
use crate::connection::{
    AfterEof, Connection, OutputLevel, Phase, ReadOutcome, ReadSide, WriteOutcome,
};
use crate::core::CloseMode;
use crate::event_loop::EventLoop;
use crate::handler::Handler;
use crate::sys::epoll::{ERROR, HUP, READABLE, WRITABLE};
use crate::sys::socket;
use crate::token::ConnId;

/// Events a turn dispatches between flushes.
pub(crate) const FLUSH_BATCH: usize = 32;

impl<H: Handler> EventLoop<H> {
    pub(crate) fn on_readable(&mut self, id: ConnId, hangup: bool) {
        if let Some(conn) = self.core.conns.get_mut(id) {
            // Recorded even when reading is held: the event that announced
            // the FIN is consumed now, and a read resumed later must not
            // trust a short read.
            conn.hangup_seen |= hangup;
        }
        let mut total = 0usize;
        while self.core.conns.get(id).is_some_and(Connection::may_read) {
            let (conns, mut io) = self.core.io_context();
            let Some(conn) = conns.get_mut(id) else {
                return;
            };
            match conn.read_once(&mut io) {
                ReadOutcome::Data { bytes, drained } => {
                    total += bytes;
                    self.deliver_input(id);
                    self.write_through(id);
                    if drained {
                        return;
                    }
                    if total >= self.core.config.read_budget {
                        self.core.post_read(id);
                        return;
                    }
                }
                ReadOutcome::Eof => return self.on_peer_eof(id),
                ReadOutcome::Nothing => return,
                ReadOutcome::Failed(reason) => {
                    self.core.request_close(id, reason, CloseMode::Now);
                    self.drain_closes();
                    return;
                }
            }
        }
    }

    fn deliver_input(&mut self, id: ConnId) {
        match self.core.conns.get_mut(id) {
            Some(conn) if conn.delivers_input() => {
                self.call(id, |handler, conn| handler.on_data(conn));
            }
            Some(_) => self.discard_lingering_input(id),
            None => {}
        }
    }

    /// Output that fills a standard buffer goes out now, before the next
    /// read, instead of at the end of the turn. A bulk echo or relay then
    /// hands each buffer from input to output and back to the pool while
    /// its bytes are still in cache, rather than appending read after read
    /// to an output that waits for the turn's flush (a copy per byte, and
    /// a buffer grown past the pool's size, freed and faulted in again on
    /// every turn). Small responses still wait and go out once per turn.
    fn write_through(&mut self, id: ConnId) {
        let chunk = self.core.buffers.chunk();
        if self
            .core
            .conns
            .get(id)
            .is_some_and(|c| c.output.len() >= chunk && c.listed.flush)
        {
            self.flush_conn(id);
        }
    }

    fn on_peer_eof(&mut self, id: ConnId) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        conn.read = ReadSide::Eof(AfterEof::Close);
        let after = if conn.delivers_input() {
            self.call(id, |handler, conn| handler.on_eof(conn))
                .unwrap_or_default()
        } else {
            AfterEof::Close
        };
        if let Some(conn) = self.core.conns.get_mut(id) {
            conn.read = ReadSide::Eof(after);
        }
        match after {
            AfterEof::Close => {
                self.core
                    .request_close(id, CloseReason::PeerClosed, CloseMode::AfterOutput);
                self.drain_closes();
            }
            AfterEof::KeepWriting => self.close_if_both_halves_done(id),
        }
        self.core.update_interest(id);
    }

    pub(crate) fn on_writable(&mut self, id: ConnId) {
        // Output left over from an earlier flush means the kernel refused
        // it then; this readiness says it has room now.
        let waiting = self
            .core
            .conns
            .get(id)
            .is_some_and(|c| !c.output.is_empty() && !c.listed.flush);
        if waiting {
            self.flush_conn(id);
        }
    }

    /// Bookkeeping after any callback on connection `id`.
    pub(crate) fn after_callback(&mut self, id: ConnId) {
        let max_input = self.core.config.max_input;
        if let Some(conn) = self.core.conns.get_mut(id) {
            let over_input = conn.input.len() > max_input;
            conn.input.release_if_empty(&mut self.core.buffers);
            if !conn.output.is_empty() {
                // Output appended through `Conn::parts` is noticed here.
                self.core.output_grew(id);
            }
            if over_input {
                self.core
                    .request_close(id, CloseReason::InputLimit, CloseMode::Now);
            }
        }
        self.drain_closes();
    }

    pub(crate) fn flush_conn(&mut self, id: ConnId) {
        let (conns, mut io) = self.core.io_context();
        let Some(conn) = conns.get_mut(id) else {
            return;
        };
        if conn.is_connecting() {
            // Output queued before the connect completes waits for it.
            return;
        }
        let outcome = conn.write_out(&mut io);
        let fin = match outcome {
            WriteOutcome::Drained => conn.send_fin_if_due(),
            WriteOutcome::Blocked => {
                self.core.arm_send_timer(id);
                Ok(())
            }
            WriteOutcome::Failed(reason) => Err(reason),
        };
        if let Err(reason) = fin {
            self.core.request_close(id, reason, CloseMode::Now);
            self.drain_closes();
            return;
        }
        self.after_flush(id);
    }

    fn after_flush(&mut self, id: ConnId) {
        let Some(conn) = self.core.conns.get_mut(id) else {
            return;
        };
        match conn.phase {
            Phase::Closing { reason, .. } if conn.output.is_empty() => {
                return self.output_delivered_on_close(id, reason);
            }
            Phase::Lingering { .. } => return,
            _ => {}
        }
        self.core.output_drained(id);
        self.close_if_both_halves_done(id);
        self.core.update_interest(id);
    }

    /// A half-closed connection whose own FIN is out too has nothing left.
    fn close_if_both_halves_done(&mut self, id: ConnId) {
        if self
            .core
            .conns
            .get(id)
            .is_some_and(Connection::both_halves_done)
        {
            self.core
                .request_close(id, CloseReason::PeerClosed, CloseMode::AfterOutput);
            self.drain_closes();
        }
    }

    /// Tells handlers whose connections drained to the low-water mark, and
    /// flushes what they queued. A connection that drains again during
    /// that flush is told in the next turn, which then does not block: a
    /// handler that refills its output on every drain would otherwise keep
    /// one turn going for as long as the kernel takes its bytes, and no
    /// other connection, timer or stop request would be served meanwhile.
    /// (A one-shot worker keeps such a connection checked out until then.)
    /// One that filled up again before its notice is not told: it will
    /// drain again, and be told then.
    pub(crate) fn notify_drained(&mut self) {
        if self.core.drained.is_empty() {
            return;
        }
        let drained = std::mem::take(&mut self.core.drained);
        for &id in &drained {
            let Some(conn) = self.core.conns.get_mut(id) else {
                continue;
            };
            conn.listed.drained = false;
            if conn.phase == Phase::Open && conn.output_level == OutputLevel::Normal {
                self.call(id, |handler, conn| handler.on_drained(conn));
            }
        }
        self.core.give_back_drained(drained);
        self.flush_all();
    }

    /// Serves the reads posted so far. Reads posted while this batch runs
    /// wait for the next turn, which then does not block: one busy
    /// connection cannot starve the others' events.
    pub(crate) fn run_posted(&mut self) {
        if self.core.posted.is_empty() {
            return;
        }
        self.core.stats.posted_runs += 1;
        let batch = self.core.posted.take();
        for &id in &batch {
            if let Some(conn) = self.core.conns.get_mut(id) {
                conn.listed.posted = false;
                self.on_readable(id, false);
            }
        }
        self.core.posted.give_back(batch);
    }

    /// Flushes after every [`FLUSH_BATCH`] events of a turn, `dispatched`
    /// being how many it has dispatched so far. Queued output holds its
    /// buffer until it is written, so a burst of a thousand ready
    /// connections flushed only at the turn's end would hold a thousand
    /// 16 KiB buffers at once, and malloc keeps such a peak after they are
    /// freed (~120 B of every idle connection's share in `bench/scale.sh`).
    /// Counting events, not queued connections, bounds the writes: a
    /// connection that every event writes to (a chat room's member) is
    /// written at most once per batch, not once per event.
    pub(crate) fn flush_every_batch(&mut self, dispatched: usize) {
        if dispatched.is_multiple_of(FLUSH_BATCH) {
            self.flush_all();
        }
    }

    pub(crate) fn flush_all(&mut self) {
        while !self.core.flush_list.is_empty() {
            let batch = self.core.flush_list.take();
            for &id in &batch {
                if let Some(conn) = self.core.conns.get_mut(id) {
                    conn.listed.flush = false;
                    self.flush_conn(id);
                }
            }
            self.core.flush_list.give_back(batch);
        }
    }

    /// Completes an outbound connect on its first readiness event; returns
    /// whether the connection is up and the event should be dispatched.
    pub(crate) fn finish_connect(&mut self, id: ConnId, bits: u32) -> bool {
        let connected_phase = self.core.connected_phase();
        let Some(conn) = self.core.conns.get_mut(id) else {
            return false;
        };
        let failed = match socket::take_error(&conn.fd) {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => bits & (ERROR | HUP) != 0,
        };
        if failed {
            self.core
                .request_close(id, CloseReason::ConnectFailed, CloseMode::Now);
            self.drain_closes();
            return false;
        }
        if bits & (WRITABLE | READABLE) == 0 {
            return false;
        }
        if let Phase::Connecting { timeout } = conn.phase {
            conn.phase = connected_phase;
            self.core.timers.cancel(timeout);
        }
        self.core.stats.connected += 1;
        self.core.arm_idle_timer(id);
        self.core.update_interest(id);
        // Output, or a FIN, asked for while connecting goes out now.
        self.core.schedule_flush(id);
        self.call(id, |handler, conn| handler.on_open(conn));
        self.core.conns.contains(id)
    }
}
