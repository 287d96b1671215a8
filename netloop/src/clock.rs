//! The loop's cached clock: read once per turn, in nanoseconds since the
//! loop started, so callbacks of one turn see one "now".

use std::time::{Duration, Instant};

/// The loop's clock, read once per turn: callbacks see one "now".
pub(crate) struct Clock {
    origin: Instant,
    now_ns: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            now_ns: 0,
        }
    }

    pub(crate) fn refresh(&mut self) {
        self.now_ns = duration_ns(self.origin.elapsed());
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.now_ns
    }

    pub(crate) fn now(&self) -> Instant {
        self.origin + Duration::from_nanos(self.now_ns)
    }

    pub(crate) fn elapsed_ns(&self) -> u64 {
        duration_ns(self.origin.elapsed())
    }

    /// The loop-clock time `delay` from now, saturating.
    pub(crate) fn after(&self, delay: Duration) -> u64 {
        self.now_ns.saturating_add(duration_ns(delay))
    }
}

pub(crate) fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}
