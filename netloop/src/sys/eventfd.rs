//! eventfd: a counter file descriptor used to wake a loop from another thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_size};

/// A non-blocking, close-on-exec eventfd.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates an eventfd with `EFD_NONBLOCK | EFD_CLOEXEC` and a zero counter.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the flags are valid constants.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adds one to the counter, making the fd readable.
    pub fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: the buffer is 8 valid bytes, as eventfd requires.
        let ret = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        match cvt_size(ret) {
            Ok(_) => Ok(()),
            // The counter is saturated: the fd is already readable, which is all we want.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Resets the counter to zero; returns the value it had.
    pub fn drain(&self) -> io::Result<u64> {
        let mut value: u64 = 0;
        // SAFETY: the buffer is 8 writable bytes, as eventfd requires.
        let ret = unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        match cvt_size(ret) {
            Ok(_) => Ok(value),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
