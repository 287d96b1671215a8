//! The open-files limit.

use std::io;

use super::cvt;

/// The soft and hard `RLIMIT_NOFILE` of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The limit the kernel enforces now.
    pub soft: u64,
    /// The ceiling the soft limit may be raised to without privilege.
    pub hard: u64,
}

/// Reads `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok(NofileLimit {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go's runtime does at
/// start, so that a large connection limit can actually be reached. Returns
/// the limit now in force.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let current = nofile_limit()?;
    if current.soft >= current.hard {
        return Ok(current);
    }
    let lim = libc::rlimit {
        rlim_cur: current.hard,
        rlim_max: current.hard,
    };
    // SAFETY: `lim` is a valid rlimit; raising soft up to hard needs no privilege.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    nofile_limit()
}
