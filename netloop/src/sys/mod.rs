//! The system layer: thin, safe wrappers over the Linux calls the event core
//! makes. Every `unsafe` block of the crate lives under this module, each with
//! a `// SAFETY:` line saying why the call is sound.

pub(crate) mod epoll;
pub(crate) mod eventfd;
pub(crate) mod inherit;
pub(crate) mod socket;
pub(crate) mod spawn;

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
