//! Socket activation: listening sockets handed over by the process that
//! started this one (systemd, `systemd-socket-activate`, or an older
//! version of this server during a live upgrade), as `sd_listen_fds(3)`
//! defines it, and the other side of it, starting a process with sockets.
//!
//! The protocol: the sockets are descriptors 3, 4, …; `LISTEN_FDS` says how
//! many; `LISTEN_PID` is the pid they are meant for (a child that inherited
//! the variables by accident sees another pid and ignores them);
//! `LISTEN_FDNAMES` optionally names them, separated by `:`.
//!
//! ```no_run
//! use netloop::activation;
//! use netloop::server::{Server, ServerConfig};
//!
//! let config = ServerConfig::default();
//! let server = match activation::listen_fds()? {
//!     // Started by systemd with a .socket unit: serve what it holds.
//!     Some(sockets) => {
//!         let listeners = sockets.into_iter().map(|s| s.listener).collect();
//!         Server::start_on(listeners, config, |_| netloop::echo::Echo)?
//!     }
//!     None => Server::start("127.0.0.1:7000".parse().unwrap(), config, |_| netloop::echo::Echo)?,
//! };
//! println!("listening on {}", server.local_addr());
//! server.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, SockRef, Type};

use crate::sys::{inherit, spawn};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The environment variables of the protocol; [`spawn`] sets them and
/// drops any inherited ones.
pub const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Set once the passed sockets have been taken: each has one owner.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// A listening socket passed to this process.
#[derive(Debug)]
pub struct ActivatedListener {
    /// Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`),
    /// or `"unknown"` when none was given, as systemd names it.
    pub name: String,
    /// The socket: a listening TCP socket, close-on-exec.
    pub listener: TcpListener,
}

/// Why the passed sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A variable of the protocol is not what it must be.
    #[error("{name}={value:?} is not valid")]
    BadVariable {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// `LISTEN_FDNAMES` does not name as many sockets as `LISTEN_FDS` says.
    #[error("LISTEN_FDNAMES names {names} socket(s) but LISTEN_FDS is {fds}")]
    NameCount {
        /// Names given.
        names: usize,
        /// Sockets passed.
        fds: usize,
    },
    /// A passed descriptor is not open.
    #[error("descriptor {fd} was passed but is not open: {source}")]
    NotOpen {
        /// The descriptor.
        fd: RawFd,
        /// What the kernel said.
        source: io::Error,
    },
    /// A passed descriptor is not a TCP stream socket (IPv4 or IPv6); a
    /// datagram, Unix or netlink socket in the `.socket` unit, say.
    #[error("descriptor {fd} is not a TCP stream socket")]
    NotTcpStream {
        /// The descriptor.
        fd: RawFd,
    },
    /// A passed socket is not listening (`SO_ACCEPTCONN` is off): an
    /// `Accept=yes` unit passes connections, which netloop does not serve.
    #[error("descriptor {fd} is not a listening socket")]
    NotListening {
        /// The descriptor.
        fd: RawFd,
    },
    /// The sockets were taken by an earlier call in this process.
    #[error("the passed sockets were taken already")]
    AlreadyTaken,
}

/// The listening sockets passed to this process, or `None` when none were
/// (no `LISTEN_FDS`, or a `LISTEN_PID` that is not this process).
///
/// Like `sd_listen_fds(3)`, it checks `LISTEN_PID` against this process,
/// reads `LISTEN_FDS` and `LISTEN_FDNAMES`, and marks the sockets
/// close-on-exec; beyond it, it checks that each is a listening TCP stream
/// socket. The sockets are taken once per process: a second call answers
/// [`ActivationError::AlreadyTaken`].
///
/// The variables are left in the environment: removing them is not
/// thread-safe, `LISTEN_PID` already keeps a child from taking them, and
/// the sockets themselves do not leak into children. A program that starts
/// other programs can remove [`VARIABLES`] itself while it has one thread.
/// Call it early, before the program opens descriptors of its own.
pub fn listen_fds() -> Result<Option<Vec<ActivatedListener>>, ActivationError> {
    let Some(count) = passed_count()? else {
        return Ok(None);
    };
    let names = names(count)?;
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(ActivationError::AlreadyTaken);
    }
    let mut sockets = Vec::with_capacity(count);
    for (offset, name) in names.into_iter().enumerate() {
        let fd = LISTEN_FDS_START + offset as RawFd;
        let owned = inherit::adopt(fd).map_err(|source| ActivationError::NotOpen { fd, source })?;
        check_listening_tcp(owned.as_fd(), fd)?;
        sockets.push(ActivatedListener {
            name,
            listener: TcpListener::from(owned),
        });
    }
    Ok(Some(sockets))
}

fn variable(name: &'static str) -> Result<Option<String>, ActivationError> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(value) => {
            value
                .into_string()
                .map(Some)
                .map_err(|value| ActivationError::BadVariable {
                    name,
                    value: value.to_string_lossy().into_owned(),
                })
        }
    }
}

fn number(name: &'static str, value: &str) -> Result<u32, ActivationError> {
    value.parse().map_err(|_| ActivationError::BadVariable {
        name,
        value: value.to_string(),
    })
}

/// `LISTEN_FDS` when `LISTEN_PID` is this process.
fn passed_count() -> Result<Option<usize>, ActivationError> {
    let Some(pid) = variable("LISTEN_PID")? else {
        return Ok(None);
    };
    if number("LISTEN_PID", &pid)? != std::process::id() {
        return Ok(None);
    }
    let Some(fds) = variable("LISTEN_FDS")? else {
        return Ok(None);
    };
    let count = number("LISTEN_FDS", &fds)? as usize;
    // Descriptor numbers must stay within RawFd.
    if count > (RawFd::MAX - LISTEN_FDS_START) as usize {
        return Err(ActivationError::BadVariable {
            name: "LISTEN_FDS",
            value: fds,
        });
    }
    Ok((count > 0).then_some(count))
}

fn names(count: usize) -> Result<Vec<String>, ActivationError> {
    match variable("LISTEN_FDNAMES")? {
        None => Ok(vec!["unknown".to_string(); count]),
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_string).collect();
            if names.len() != count {
                return Err(ActivationError::NameCount {
                    names: names.len(),
                    fds: count,
                });
            }
            Ok(names)
        }
    }
}

fn check_listening_tcp(socket: BorrowedFd<'_>, fd: RawFd) -> Result<(), ActivationError> {
    let socket = SockRef::from(&socket);
    let not_tcp = |_| ActivationError::NotTcpStream { fd };
    let domain = socket.domain().map_err(not_tcp)?;
    let kind = socket.r#type().map_err(not_tcp)?;
    if !(domain == Domain::IPV4 || domain == Domain::IPV6) || kind != Type::STREAM {
        return Err(ActivationError::NotTcpStream { fd });
    }
    if !socket.is_listener().map_err(not_tcp)? {
        return Err(ActivationError::NotListening { fd });
    }
    Ok(())
}

/// A process started by [`spawn`].
#[derive(Debug)]
pub struct Child {
    pid: u32,
}

impl Child {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status if it has exited (and reaps it), without blocking.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        spawn::try_wait(self.pid)
    }

    /// Waits for it to exit, and reaps it.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        spawn::wait(self.pid)
    }

    /// Sends it `signal` (`libc::SIGKILL`, say).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        spawn::kill(self.pid, signal)
    }
}

/// Starts `program` with arguments `args` (`args[0]` is its `argv[0]`),
/// passing `listeners` by socket activation: descriptor `3 + i` is
/// `listeners[i].1`, `LISTEN_FDS` their count, `LISTEN_FDNAMES` their names
/// (which must not contain `:`), and `LISTEN_PID` the child's own pid, set
/// between `fork` and `exec`.
///
/// The child's environment is this process's, without any inherited
/// [`VARIABLES`] or variable named in `env`, plus `env`. Its signal mask is
/// cleared. The caller reaps it ([`Child::wait`] or [`Child::try_wait`]).
/// This is how a server hands its sockets to its next version in a live
/// upgrade (nginx's SIGUSR2, HAProxy's `-x`), and how a test starts a
/// server the way systemd does.
pub fn spawn(
    program: &OsStr,
    args: &[OsString],
    listeners: &[(&str, BorrowedFd<'_>)],
    env: &[(OsString, OsString)],
) -> io::Result<Child> {
    if listeners.iter().any(|(name, _)| name.contains(':')) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a socket name cannot contain ':'",
        ));
    }
    let overridden = |name: &OsStr| {
        VARIABLES.iter().any(|v| OsStr::new(v) == name) || env.iter().any(|(n, _)| n == name)
    };
    let mut full: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(name, _)| !overridden(name))
        .collect();
    full.extend(env.iter().cloned());
    if !listeners.is_empty() {
        let names: Vec<&str> = listeners.iter().map(|(name, _)| *name).collect();
        full.push(("LISTEN_FDS".into(), listeners.len().to_string().into()));
        full.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
    }
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| *fd).collect();
    let pid = spawn::spawn(program, args, &full, &fds)?;
    Ok(Child { pid })
}
