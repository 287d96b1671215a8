//! The few system calls the command makes outside the event core:
//! termination and upgrade signals through a signalfd, the environment, the open-files limit, the clock
//! tick rate. Every `unsafe` block of the command lives under this module,
//! each with a `// SAFETY:` line saying why the call is sound.

pub mod env;
pub mod rlimit;
pub mod signal;
pub mod timer_slack;

use std::io;

/// Turns a `-1` return value into the thread's `errno` as an `io::Error`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`] for calls that return a byte count.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// The kernel's clock tick rate (`sysconf(_SC_CLK_TCK)`, USER_HZ): the unit
/// of the CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}
