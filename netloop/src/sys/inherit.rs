//! Descriptors this process inherited from the one that started it: the
//! listening sockets of socket activation.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// Takes ownership of the inherited descriptor `fd` and marks it
/// close-on-exec, so it does not leak into processes this one starts.
///
/// Fails with `EBADF` if `fd` is not open. The caller must call this at most
/// once per descriptor, and only for descriptors the activation protocol
/// says were passed to this process (nothing else in the process owns them).
pub(crate) fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD takes no pointer; on a closed descriptor it fails with
    // EBADF instead of touching anything.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open (F_GETFD succeeded) and, per the
    // activation protocol and this function's contract, owned by nothing
    // else in this process: sd_listen_fds' descriptors are handed over to
    // exactly one owner (activation::listen_fds takes them once per process).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD with an integer argument on a descriptor we own.
    cvt(unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    Ok(owned)
}
