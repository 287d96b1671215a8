//! Starting a process with some of our descriptors at 3, 4, … and its own
//! pid in `LISTEN_PID`, as socket activation wants it (`sd_listen_fds(3)`
//! checks that `LISTEN_PID` is the pid of the process reading it).
//!
//! The pid of the child is known only inside the child, after `fork` and
//! before `execve`, so this is a hand-written `fork` + `execve`: everything
//! is allocated before the fork (a multi-threaded process may only make
//! async-signal-safe calls in the child), and the child only writes the pid
//! digits into a slot reserved in its environment, moves the descriptors
//! into place, clears its signal mask and execs.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use super::cvt;

/// The environment variable whose value the child fills in with its pid.
const PID_VARIABLE: &[u8] = b"LISTEN_PID=";
/// Room for the decimal digits of any pid, and the terminating NUL.
const PID_ROOM: usize = 21;

/// Everything the child needs, allocated before the fork.
struct Prepared {
    program: CString,
    /// Owned strings behind `argv` and `envp`.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` followed by `PID_ROOM` bytes the child fills in.
    pid_slot: Vec<u8>,
    envp: Vec<*const libc::c_char>,
    /// Duplicates of the descriptors to pass, numbered above the range they
    /// are moved into, so moving one never overwrites another.
    fds: Vec<OwnedFd>,
    empty_mask: libc::sigset_t,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn env_entry(name: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut entry = name.as_bytes().to_vec();
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    cstring(&entry)
}

fn empty_signal_set() -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given a valid pointer to.
    cvt(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
    // SAFETY: initialised just above.
    Ok(unsafe { set.assume_init() })
}

impl Prepared {
    fn new(
        program: &OsStr,
        args: &[OsString],
        env: &[(OsString, OsString)],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<Self> {
        let program = cstring(program.as_bytes())?;
        let mut strings = Vec::with_capacity(args.len() + env.len());
        for arg in args {
            strings.push(cstring(arg.as_bytes())?);
        }
        let argc = strings.len();
        for (name, value) in env {
            strings.push(env_entry(name, value)?);
        }
        let mut argv: Vec<*const libc::c_char> =
            strings[..argc].iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut pid_slot = PID_VARIABLE.to_vec();
        pid_slot.extend_from_slice(&[0u8; PID_ROOM]);
        let mut envp: Vec<*const libc::c_char> =
            strings[argc..].iter().map(|s| s.as_ptr()).collect();
        envp.push(pid_slot.as_ptr().cast());
        envp.push(std::ptr::null());
        let lowest = 3 + fds.len() as libc::c_int;
        let fds = fds
            .iter()
            .map(|fd| duplicate_at_least(fd.as_raw_fd(), lowest))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            program,
            _strings: strings,
            argv,
            pid_slot,
            envp,
            fds,
            empty_mask: empty_signal_set()?,
        })
    }
}

/// A close-on-exec duplicate of `fd` numbered `lowest` or above.
fn duplicate_at_least(fd: RawFd, lowest: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer; `fd` is borrowed and open.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, lowest) })?;
    // SAFETY: the kernel just returned `new`, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Writes the decimal digits of `value` and a NUL at `dst` (room for
/// `PID_ROOM` bytes). Async-signal-safe: no allocation, no locks.
///
/// # Safety
/// `dst` must be valid for `PID_ROOM` writable bytes.
unsafe fn write_decimal(mut value: u32, dst: *mut u8) {
    let mut digits = [0u8; PID_ROOM];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: `len` is at most 10 for a u32, within the caller's room.
        unsafe { *dst.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above; the NUL ends the variable there.
    unsafe { *dst.add(len) = 0 };
}

/// Starts `program` with `args` (argv, `argv[0]` included) and exactly the
/// environment `env` plus `LISTEN_PID=<its own pid>`; `fds[i]` becomes its
/// descriptor `3 + i`, without close-on-exec. Returns the child's pid.
pub(crate) fn spawn(
    program: &OsStr,
    args: &[OsString],
    env: &[(OsString, OsString)],
    fds: &[BorrowedFd<'_>],
) -> io::Result<u32> {
    let mut prepared = Prepared::new(program, args, env, fds)?;
    let slot = prepared.pid_slot[PID_VARIABLE.len()..].as_mut_ptr();
    // SAFETY: after fork the child calls only async-signal-safe functions
    // (sigprocmask, getpid, dup2, execve, _exit) and writes only to memory
    // allocated before the fork (its own copy of it).
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: in the child; see above. The mask was blocked for the
        // parent's signalfd and would otherwise be inherited across exec.
        unsafe {
            libc::sigprocmask(
                libc::SIG_SETMASK,
                &prepared.empty_mask,
                std::ptr::null_mut(),
            );
            write_decimal(libc::getpid() as u32, slot);
            for (i, fd) in prepared.fds.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor. The
                // sources are numbered above the targets, so none is lost.
                if libc::dup2(fd.as_raw_fd(), 3 + i as libc::c_int) == -1 {
                    libc::_exit(126);
                }
            }
            libc::execve(
                prepared.program.as_ptr(),
                prepared.argv.as_ptr(),
                prepared.envp.as_ptr(),
            );
            libc::_exit(127);
        }
    }
    // The parent's duplicates close here; the child holds its own.
    prepared.fds.clear();
    Ok(pid as u32)
}

/// A child's exit status if it has exited (reaping it), without blocking.
pub(crate) fn try_wait(pid: u32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: `status` is a valid int to write; WNOHANG never blocks.
    let ret = cvt(unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) })?;
    Ok((ret != 0).then(|| ExitStatus::from_raw(status)))
}

/// Waits for a child to exit and reaps it.
pub(crate) fn wait(pid: u32) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int to write.
        match cvt(unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) }) {
            Ok(_) => return Ok(ExitStatus::from_raw(status)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sends `signal` to process `pid`.
pub(crate) fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers.
    cvt(unsafe { libc::kill(pid as libc::pid_t, signal) }).map(drop)
}
