//! The loop's cached clock: read once per turn, in nanoseconds since the
//! loop started, so callbacks of one turn see one "now".

use std::time::{Duration, Instant};

/// The loop's clock, read once per turn: callbacks see one "now".
pub(crate) struct Clock {
    origin: Instant,
    now_ns: u64,
}

impl Clock {
    /// A clock counting from `origin` (one-shot workers share theirs, so
    /// that times one worker records mean the same to another).
    pub(crate) fn starting_at(origin: Instant) -> Self {
        let mut clock = Self { origin, now_ns: 0 };
        clock.refresh();
        clock
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
