//! Passive health of one upstream, as nginx's `max_fails` and
//! `fail_timeout`: failed connects are counted, and an upstream that failed
//! `max_fails` times within `fail_timeout` is skipped for `fail_timeout`.

use std::time::{Duration, Instant};

/// When an upstream counts as down. The defaults are nginx's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Failed connects within `fail_timeout` that mark an upstream down;
    /// 0 turns passive health off (an upstream is never skipped).
    pub max_fails: u32,
    /// The window failures are counted in, and how long a marked upstream
    /// is skipped.
    pub fail_timeout: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

/// One upstream's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Chosen normally; `fails` failures counted in the window that began
    /// at `since`.
    Up { fails: u32, since: Instant },
    /// Skipped until `until`. After that it is tried again: one more
    /// failure marks it down for another `fail_timeout` at once (as nginx,
    /// which keeps its failure count until a success), a success brings it
    /// back up.
    Down { until: Instant },
}

impl Health {
    pub(crate) fn new(now: Instant) -> Self {
        Health::Up {
            fails: 0,
            since: now,
        }
    }

    /// Whether a session may be sent to it now.
    pub(crate) fn is_available(&self, now: Instant, policy: &HealthPolicy) -> bool {
        match self {
            _ if policy.max_fails == 0 => true,
            Health::Up { .. } => true,
            Health::Down { until } => now >= *until,
        }
    }

    /// A connect to it was refused, failed or timed out.
    pub(crate) fn failed(&mut self, now: Instant, policy: &HealthPolicy) {
        if policy.max_fails == 0 {
            return;
        }
        let down = Health::Down {
            until: later(now, policy.fail_timeout),
        };
        *self = match *self {
            Health::Up { fails, since } => {
                let (fails, since) = if now.saturating_duration_since(since) >= policy.fail_timeout
                {
                    (1, now)
                } else {
                    (fails.saturating_add(1), since)
                };
                if fails >= policy.max_fails {
                    down
                } else {
                    Health::Up { fails, since }
                }
            }
            // The retry after `fail_timeout` failed too.
            Health::Down { until } if now >= until => down,
            // A connect begun before it was marked down failed as well.
            already => already,
        };
    }

    /// A connect to it succeeded.
    pub(crate) fn succeeded(&mut self, now: Instant) {
        *self = Health::new(now);
    }
}

/// `now + delay`, or a century from now if that does not fit in an `Instant`.
pub(crate) fn later(now: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(delay)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn policy(max_fails: u32) -> HealthPolicy {
        HealthPolicy {
            max_fails,
            fail_timeout: 10 * SEC,
        }
    }

    #[test]
    fn one_failure_marks_it_down_for_fail_timeout_by_default() {
        let t0 = Instant::now();
        let p = HealthPolicy::default();
        let mut h = Health::new(t0);
        h.failed(t0, &p);
        assert!(!h.is_available(t0 + 9 * SEC, &p));
        assert!(h.is_available(t0 + 10 * SEC, &p));
    }

    #[test]
    fn failures_count_within_the_window_only() {
        let t0 = Instant::now();
        let p = policy(3);
        let mut h = Health::new(t0);
        h.failed(t0, &p);
        h.failed(t0 + SEC, &p);
        // The window is over: counting starts again.
        h.failed(t0 + 11 * SEC, &p);
        h.failed(t0 + 12 * SEC, &p);
        assert!(h.is_available(t0 + 12 * SEC, &p));
        h.failed(t0 + 13 * SEC, &p);
        assert!(!h.is_available(t0 + 13 * SEC, &p));
    }

    #[test]
    fn a_failed_retry_marks_it_down_again_and_a_success_brings_it_back() {
        let t0 = Instant::now();
        let p = policy(3);
        let mut h = Health::new(t0);
        for _ in 0..3 {
            h.failed(t0, &p);
        }
        let retry = t0 + 10 * SEC;
        assert!(h.is_available(retry, &p));
        h.failed(retry, &p);
        assert!(!h.is_available(retry + SEC, &p));
        h.succeeded(retry + 20 * SEC);
        h.failed(retry + 20 * SEC, &p);
        assert!(h.is_available(retry + 20 * SEC, &p), "one failure of three");
    }

    #[test]
    fn max_fails_0_never_marks_it_down() {
        let t0 = Instant::now();
        let p = policy(0);
        let mut h = Health::new(t0);
        for _ in 0..100 {
            h.failed(t0, &p);
        }
        assert!(h.is_available(t0, &p));
    }
}
