//! Termination signals delivered through a signalfd, so that a server can
//! wait for SIGINT/SIGTERM with an ordinary blocking read instead of running
//! code inside an asynchronous signal handler.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_size};

/// A blocked set of signals readable through a signalfd.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

fn signal_set(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given a valid pointer to.
    cvt(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
    // SAFETY: sigemptyset above initialised the set.
    let mut set = unsafe { set.assume_init() };
    for &sig in signals {
        // SAFETY: `set` is initialised; an invalid signal number yields EINVAL.
        cvt(unsafe { libc::sigaddset(&mut set, sig) })?;
    }
    Ok(set)
}

impl SignalFd {
    /// Blocks `signals` in the calling thread and opens a signalfd for them.
    ///
    /// Call it before spawning threads: they inherit the mask, so the signals
    /// are delivered only through this fd.
    pub fn block(signals: &[libc::c_int]) -> io::Result<Self> {
        let set = signal_set(signals)?;
        // SAFETY: `set` is a valid signal set; the old mask is not requested.
        let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        // SAFETY: `set` is valid; -1 asks for a new fd; the flags are valid constants.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Blocks until one of the signals arrives; returns its number.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        loop {
            let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: `info` is `size` writable bytes, what signalfd reads expect.
            let ret = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
            match cvt_size(ret) {
                Ok(n) if n == size => {
                    // SAFETY: the kernel filled the whole structure.
                    let info = unsafe { info.assume_init() };
                    return Ok(info.ssi_signo as libc::c_int);
                }
                Ok(_) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// SIGINT, as a number for [`SignalFd::block`].
pub const SIGINT: libc::c_int = libc::SIGINT;
/// SIGTERM, as a number for [`SignalFd::block`].
pub const SIGTERM: libc::c_int = libc::SIGTERM;
/// SIGUSR2 (a live upgrade), as a number for [`SignalFd::block`].
pub const SIGUSR2: libc::c_int = libc::SIGUSR2;

impl SignalFd {
    /// Waits up to `timeout` for one of the signals; `None` if none came.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> io::Result<Option<libc::c_int>> {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `poll` is one valid pollfd for the duration of the call.
        match cvt(unsafe { libc::poll(&mut poll, 1, millis) }) {
            Ok(0) => Ok(None),
            Ok(_) => self.wait().map(Some),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }
}
