//! The open-files limit.

use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft and hard `RLIMIT_NOFILE` of this process (`u64::MAX`,
/// `RLIM_INFINITY`, when unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The limit the kernel enforces now.
    pub soft: u64,
    /// The ceiling the soft limit may be raised to without privilege.
    pub hard: u64,
}

/// Reads `RLIMIT_NOFILE`.
pub fn nofile_limit() -> NofileLimit {
    let lim = getrlimit(Resource::Nofile);
    NofileLimit {
        soft: lim.current.unwrap_or(u64::MAX),
        hard: lim.maximum.unwrap_or(u64::MAX),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go's runtime does at
/// start, so that a large connection limit can actually be reached. Returns
/// the limit now in force.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        // Raising soft up to hard needs no privilege.
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
    }
    Ok(nofile_limit())
}
