//! Sockets: listeners, accept4, and the read/write calls of the data path.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::cvt_size;
use super::epoll::{EDGE, Epoll, Events, READ_HUP, READABLE};

/// How to create a listening socket.
#[derive(Clone, Copy, Debug)]
pub struct ListenOptions {
    /// The `listen(2)` backlog.
    pub backlog: i32,
    /// Set `SO_REUSEPORT`, so several loops can each own a listener on one port.
    pub reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            backlog: 1024,
            reuse_port: false,
        }
    }
}

/// Binds a non-blocking, close-on-exec TCP listener with `SO_REUSEADDR`.
pub fn listen(addr: SocketAddr, options: ListenOptions) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    socket.set_reuse_address(true)?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(options.backlog)?;
    Ok(socket.into())
}

/// Starts a non-blocking, close-on-exec connect to `addr`, from the local
/// address `source` when given (its port chosen at connect time). The
/// connect usually completes later: the socket turns writable, and
/// `SO_ERROR` tells whether it succeeded ([`take_error`]).
pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<OwnedFd> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    if let Some(ip) = source {
        // Without IP_BIND_ADDRESS_NO_PORT, bind would pick a port unique to
        // the address alone; with it, the port is picked at connect and only
        // the four-tuple must be unique, so ports are not used up early.
        set_bind_address_no_port(&socket)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the duration of the call and its size
    // is passed along; the fd is a live socket owned by `socket`.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Accepts one connection as a non-blocking, close-on-exec socket, in one
/// `accept4` call. Returns the socket and the peer's address.
pub fn accept(listener: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    // SAFETY: try_init hands accept4 a zeroed sockaddr_storage and its length,
    // both valid for writes, and trusts the length the kernel writes back.
    let (fd, addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(
                listener,
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            );
            if fd == -1 {
                Err(io::Error::last_os_error())
            } else {
                Ok(fd)
            }
        })?
    };
    // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((fd, addr.as_socket()))
}

/// Reads into the spare capacity of `buf`, appending what arrives;
/// `Ok(0)` is end of stream (or no spare capacity).
pub fn read_append(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is valid for `spare.len()` writable bytes for the call;
    // the kernel writes at most that many.
    let n = cvt_size(unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) })?;
    // SAFETY: the kernel initialised exactly `n` bytes after the old length,
    // and `n` is at most the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes from `buf`, returning how much the kernel took.
///
/// Uses `send(MSG_NOSIGNAL)` so a peer that has gone away yields EPIPE
/// instead of killing the process with SIGPIPE.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` readable bytes for the whole call.
    cvt_size(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

/// Shuts down one or both halves of a connected socket.
pub fn shutdown(fd: impl AsFd, how: Shutdown) -> io::Result<()> {
    SockRef::from(&fd).shutdown(how)
}

/// Disables Nagle's algorithm: replies are written whole, once per turn, so
/// delaying small segments would only add latency.
pub fn set_nodelay(fd: impl AsFd) -> io::Result<()> {
    SockRef::from(&fd).set_tcp_nodelay(true)
}

/// Takes the pending socket error (`SO_ERROR`), if any.
pub fn take_error(fd: impl AsFd) -> io::Result<Option<io::Error>> {
    SockRef::from(&fd).take_error()
}

/// Duplicates a file descriptor (close-on-exec). The duplicate refers to the
/// same open file, so its epoll registration outlives the original's close.
pub fn duplicate(fd: impl AsFd) -> io::Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned()
}

/// Checks once whether this kernel reports `EPOLLRDHUP`, as nginx's
/// `ngx_epoll_test_rdhup` does: register one end of a socket pair for
/// read-hangup, close the other end, and see whether the bit is reported.
pub fn probe_rdhup() -> bool {
    let probe = || -> io::Result<bool> {
        let (ours, theirs) = UnixStream::pair()?;
        let epoll = Epoll::new()?;
        epoll.add(ours.as_raw_fd(), 0, READABLE | READ_HUP | EDGE)?;
        drop(theirs);
        let mut events = Events::with_capacity(1);
        epoll.wait(&mut events, Some(std::time::Duration::ZERO))?;
        Ok(events.get(0).is_some_and(|e| e.events & READ_HUP != 0))
    };
    probe().unwrap_or(false)
}
