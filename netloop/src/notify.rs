//! systemd's readiness protocol (`sd_notify(3)`): a service of
//! `Type=notify` sends `READY=1` in a datagram to the Unix socket named by
//! `NOTIFY_SOCKET` once it serves, and may send `MAINPID=`, `STOPPING=1`
//! or `STATUS=` later. A name starting with `@` is in the abstract
//! namespace.
//!
//! ```no_run
//! // After the server is listening:
//! netloop::notify::notify("READY=1")?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (lines such as `READY=1`) to the socket `NOTIFY_SOCKET`
/// names; `Ok(false)` when the variable is not set (not run by systemd).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (a path, or `@name`
/// for the abstract namespace).
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let address = socket_address(socket)?;
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

/// The address a `NOTIFY_SOCKET` value names.
pub fn socket_address(socket: &OsStr) -> io::Result<SocketAddr> {
    match socket.as_bytes().split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name),
        Some(_) => SocketAddr::from_pathname(socket),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty notification socket name",
        )),
    }
}
