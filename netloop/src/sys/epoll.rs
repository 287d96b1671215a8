//! epoll: create, control, and wait into a reused event array.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::cvt;

/// Readiness for reading (`EPOLLIN`).
pub const READABLE: u32 = libc::EPOLLIN as u32;
/// Readiness for writing (`EPOLLOUT`).
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// The peer shut down its writing half (`EPOLLRDHUP`).
pub const READ_HUP: u32 = libc::EPOLLRDHUP as u32;
/// Both halves hung up (`EPOLLHUP`).
pub const HUP: u32 = libc::EPOLLHUP as u32;
/// An error is pending on the socket (`EPOLLERR`).
pub const ERROR: u32 = libc::EPOLLERR as u32;
/// Edge-triggered registration (`EPOLLET`).
pub const EDGE: u32 = libc::EPOLLET as u32;
/// Disarm after one event until re-armed (`EPOLLONESHOT`).
pub const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
/// Wake only one of the epoll instances sharing a file (`EPOLLEXCLUSIVE`).
pub const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;

/// One readiness event: the registered 64-bit token and the event bits.
///
/// This is a plain copy of `struct epoll_event`, so a test can build a batch
/// by hand and feed it to the dispatcher in an exact order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The `epoll_data.u64` given at registration.
    pub token: u64,
    /// The `EPOLL*` bits reported.
    pub events: u32,
}

/// An epoll instance, closed on drop.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Creates an epoll instance with `EPOLL_CLOEXEC`.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; the flag is a valid constant.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Registers `fd` with interest `events` and the given token.
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Changes the interest and token of a registered `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Removes `fd` from the interest list.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is a valid, initialised epoll_event that outlives the call;
        // an invalid `fd` is reported by the kernel as EBADF, not undefined behaviour.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) })?;
        Ok(())
    }

    /// Waits for events into `events`, replacing its contents.
    ///
    /// `None` waits without limit. A timeout is kept to the nanosecond with
    /// `epoll_pwait2` (Linux 5.11), so a timer due in 50 µs wakes the loop
    /// then and not at the next millisecond; kernels without it get
    /// `epoll_wait`, the timeout rounded up to whole milliseconds. EINTR is
    /// reported as zero events, so a signal simply ends the wait early.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.len = 0;
        let ret = match timeout {
            Some(d) if !d.is_zero() && HAS_PWAIT2.load(Ordering::Relaxed) => {
                match self.wait_ns(events, d) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                        HAS_PWAIT2.store(false, Ordering::Relaxed);
                        self.wait_ms(events, timeout_ms(timeout))
                    }
                    other => other,
                }
            }
            // No timeout and a zero timeout need no precision: the plain call.
            _ => self.wait_ms(events, timeout_ms(timeout)),
        };
        match ret {
            Ok(n) => {
                events.len = n;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn wait_ms(&self, events: &mut Events, timeout_ms: libc::c_int) -> io::Result<usize> {
        // SAFETY: `raw` holds `capacity()` writable epoll_event entries that live
        // for the whole call; the kernel writes at most that many of them.
        let ret = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.raw.as_mut_ptr(),
                events.capacity(),
                timeout_ms,
            )
        };
        cvt(ret).map(|n| n as usize)
    }

    fn wait_ns(&self, events: &mut Events, timeout: Duration) -> io::Result<usize> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: as in `wait_ms` for the event array; `timeout` is a valid
        // timespec that outlives the call, and a null sigmask leaves the
        // thread's signal mask alone (the sigsetsize is then ignored).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.fd.as_raw_fd(),
                events.raw.as_mut_ptr(),
                events.capacity(),
                &timeout as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if ret == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        }
    }
}

/// Whether `epoll_pwait2` may be tried; cleared the first time it is
/// missing (ENOSYS), for the whole process.
static HAS_PWAIT2: AtomicBool = AtomicBool::new(true);

/// `epoll_wait`'s millisecond timeout: -1 for none, rounded up so that a
/// timer due in 0.4 ms does not become a busy loop of 0 ms waits.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A reusable array that `epoll_wait` fills; allocated once per loop.
///
/// `Events::default()` holds no memory: a placeholder to swap in while the
/// real array is borrowed, never to wait with.
#[derive(Default)]
pub struct Events {
    raw: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Allocates room for `capacity` events per wait (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let raw = vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)];
        Self { raw, len: 0 }
    }

    /// Room for events per wait, as the kernel calls take it.
    fn capacity(&self) -> libc::c_int {
        self.raw.len().min(libc::c_int::MAX as usize) as libc::c_int
    }

    /// The number of events the last wait returned.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last wait returned no events.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th event of the last wait.
    pub fn get(&self, i: usize) -> Option<Event> {
        if i >= self.len {
            return None;
        }
        let raw = self.raw[i];
        Some(Event {
            token: raw.u64,
            events: raw.events,
        })
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("capacity", &self.raw.len())
            .field("len", &self.len)
            .finish()
    }
}
