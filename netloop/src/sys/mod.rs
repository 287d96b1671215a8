//! The system layer: thin, safe wrappers over the Linux calls the event core
//! makes. Every `unsafe` block of the crate lives under this module, each with
//! a `// SAFETY:` line saying why the call is sound.

pub mod epoll;
pub mod eventfd;
pub mod rlimit;
pub mod signal;
pub mod socket;

use std::io;

/// Turns a `-1` return value into the thread's `errno` as an `io::Error`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`] for calls that return a byte count.
pub(crate) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// The kernel's clock tick rate (`sysconf(_SC_CLK_TCK)`, USER_HZ): the unit
/// of the CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer name and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}
