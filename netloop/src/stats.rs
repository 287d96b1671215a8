//! Counters a loop keeps about itself.

use crate::close_reason::CloseReason;

/// A loop's counters. Plain integers, updated only by the loop's own thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted into the pool.
    pub accepted: u64,
    /// Outbound connections that completed their connect.
    pub connected: u64,
    /// Connections closed, indexed like [`CloseReason::ALL`]; every
    /// [`CloseReason::Protocol`] reason in the one `protocol_error` slot.
    pub closed: [u64; CloseReason::ALL.len()],
    /// Events dropped whole because their token's generation was stale on
    /// arrival: the connection closed earlier in the batch, or before it.
    pub stale_events: u64,
    /// Write halves dropped because the read half of the same event closed
    /// the connection (the case nginx 1.1.9 fixed). Normal after a close
    /// during a read; counted apart so `stale_events` stays meaningful.
    pub stale_write_halves: u64,
    /// Cross-thread commands dropped because their connection closed
    /// between the handle's check and the loop's turn.
    pub stale_commands: u64,
    /// Times accepting was paused because the process ran out of descriptors.
    pub accept_pauses: u64,
    /// Bytes read from connections.
    pub bytes_read: u64,
    /// Bytes written to connections.
    pub bytes_written: u64,
    /// `epoll_wait` calls.
    pub wait_calls: u64,
    /// `read` calls on connections.
    pub read_calls: u64,
    /// `write`/`sendmsg` calls on connections.
    pub write_calls: u64,
    /// One-shot mode: `epoll_ctl(MOD)` re-arms, one per event served.
    pub rearms: u64,
    /// One-shot mode: events that found their connection held by another
    /// worker, outside a stop. The holder re-arms it, so nothing is lost;
    /// zero unless handlers use timers or act on other connections by id.
    pub oneshot_contention: u64,
    /// Handler callbacks that panicked. Each cost its connection only
    /// (closed with [`CloseReason::HandlerPanic`]), or, for a posted task or
    /// `on_close`, nothing but the task itself.
    pub handler_panics: u64,
    /// Turns that found posted work (a budget-limited read or a resume).
    pub posted_runs: u64,
    /// Closes that lingered: FIN sent after the output, the peer's further
    /// input read and discarded before the socket closed
    /// ([`Config::linger_timeout`](crate::Config::linger_timeout)).
    pub lingering_closes: u64,
}

impl Stats {
    /// How many connections closed for `reason`.
    ///
    /// Protocol errors share one counter: `closed_for(CloseReason::Protocol(_))`
    /// returns the connections closed for any protocol error, whatever the
    /// name it carries. To tell them apart, look at the reason in
    /// [`Handler::on_close`](crate::Handler::on_close).
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed[reason.counter()]
    }

    /// All connections closed, whatever the reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }

    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        self.closed[reason.counter()] += 1;
    }

    /// Adds another loop's counters to these (for per-process totals).
    pub fn merge(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.connected += other.connected;
        for (mine, theirs) in self.closed.iter_mut().zip(other.closed.iter()) {
            *mine += theirs;
        }
        self.stale_events += other.stale_events;
        self.stale_write_halves += other.stale_write_halves;
        self.accept_pauses += other.accept_pauses;
        self.stale_commands += other.stale_commands;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.wait_calls += other.wait_calls;
        self.read_calls += other.read_calls;
        self.write_calls += other.write_calls;
        self.posted_runs += other.posted_runs;
        self.handler_panics += other.handler_panics;
        self.rearms += other.rearms;
        self.oneshot_contention += other.oneshot_contention;
        self.lingering_closes += other.lingering_closes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let mut stats = Stats::default();
        for (n, reason) in CloseReason::ALL.iter().enumerate() {
            for _ in 0..=n {
                stats.count_close(*reason);
            }
        }
        for (n, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(stats.closed_for(*reason), n as u64 + 1, "{reason}");
        }
    }

    #[test]
    fn protocol_errors_share_one_counter() {
        let mut stats = Stats::default();
        stats.count_close(CloseReason::Protocol("bad_magic"));
        stats.count_close(CloseReason::Protocol("frame_too_large"));
        stats.count_close(CloseReason::Closed);
        assert_eq!(stats.closed_for(CloseReason::Protocol("bad_magic")), 2);
        assert_eq!(stats.closed_for(CloseReason::Protocol("protocol_error")), 2);
        assert_eq!(stats.closed_total(), 3);
    }
}
