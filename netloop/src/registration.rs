//! How a loop's connections are registered with epoll, and the interest
//! each needs.

use crate::config::Trigger;
use crate::connection::Connection;
use crate::sys::epoll::{EDGE, ONESHOT, READ_HUP, READABLE, WRITABLE};

/// How a loop's connections are registered with epoll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registration {
    /// Edge-triggered, registered once, never modified.
    Edge,
    /// Level-triggered; the interest follows what the connection waits for.
    Level,
    /// Edge-triggered and one-shot: re-armed after every event, by whichever
    /// worker served it.
    OneShot,
}

impl Registration {
    /// The interest a connection registers with now.
    pub(crate) fn interest_of<S>(self, conn: &Connection<S>) -> u32 {
        match self {
            Registration::Edge => READABLE | WRITABLE | READ_HUP | EDGE,
            Registration::Level => wanted_interest(conn),
            Registration::OneShot => wanted_interest(conn) | EDGE | ONESHOT,
        }
    }

    pub(crate) fn from_trigger(trigger: Trigger) -> Self {
        match trigger {
            Trigger::Edge => Registration::Edge,
            Trigger::Level => Registration::Level,
        }
    }

    /// Whether readiness is reported again while it lasts, so a read left
    /// unfinished needs no posting and a short read ends reading.
    pub(crate) fn rereports(self) -> bool {
        self != Registration::Edge
    }
}

/// The interest a level-triggered or one-shot registration needs now.
fn wanted_interest<S>(conn: &Connection<S>) -> u32 {
    if conn.is_connecting() {
        return WRITABLE;
    }
    // Read-hangup only together with readable: once the peer's FIN is in,
    // a level-triggered RDHUP would be reported on every wait.
    let mut wanted = 0;
    if conn.may_read() {
        wanted |= READABLE | READ_HUP;
    }
    if !conn.output.is_empty() {
        wanted |= WRITABLE;
    }
    wanted
}
