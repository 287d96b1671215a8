//! Live upgrade on SIGUSR2, as nginx swaps its binary and HAProxy hands its
//! sockets over: start the executable this process was started from (which
//! may hold a new binary by now) with the same arguments, pass it every
//! listening socket by socket activation, wait until it says it is ready
//! over systemd's notification protocol, and only then stop accepting and
//! let this process's own connections finish.
//!
//! Under systemd (`Type=notify`), the process systemd watches changes:
//! the old process, still the main one, sends `MAINPID=<new pid>` to
//! systemd's socket before it drains, and passes that socket on to the new
//! process (`NETLOOP_SYSTEMD_NOTIFY_SOCKET`) for the next upgrade, while
//! the new process's own `NOTIFY_SOCKET` is the old process's private one.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netloop::activation::{self, Child};
use netloop::notify;

use crate::sys::signal::{SIGINT, SIGTERM, SIGUSR2, SignalFd};

/// The variable that carries systemd's notification socket to the new
/// process, whose `NOTIFY_SOCKET` names the old process's instead.
pub const SYSTEMD_SOCKET_VARIABLE: &str = "NETLOOP_SYSTEMD_NOTIFY_SOCKET";

/// How often the wait for readiness looks at the child and the signals.
const POLL: Duration = Duration::from_millis(10);

/// What the process knows at start that an upgrade needs later.
#[derive(Debug)]
pub struct Upgrader {
    /// The executable, resolved at start: once the file is replaced,
    /// `/proc/self/exe` names the deleted old inode.
    exe: PathBuf,
    /// The arguments, `argv[0]` included.
    args: Vec<OsString>,
    timeout: Duration,
    /// Where this process says it is ready: systemd's socket, or the old
    /// process's during an upgrade.
    ready_to: Option<OsString>,
    /// systemd's socket, to tell it the main pid moves.
    systemd: Option<OsString>,
}

/// How an upgrade ended.
#[derive(Debug)]
pub enum Outcome {
    /// The new process serves; this one hands over and drains.
    Ready(u32),
    /// The new process did not become ready; this one serves on.
    Failed,
    /// SIGINT or SIGTERM came while waiting: the new process was stopped,
    /// and this one stops too.
    Stop(libc::c_int),
}

fn non_empty(value: Option<OsString>) -> Option<OsString> {
    value.filter(|v| !v.is_empty())
}

impl Upgrader {
    /// Records the executable, arguments and notification sockets; call it
    /// first thing, before the environment is cleaned.
    pub fn at_start(timeout: Duration) -> std::io::Result<Self> {
        let notify_socket = non_empty(std::env::var_os("NOTIFY_SOCKET"));
        let (ready_to, systemd) = match std::env::var_os(SYSTEMD_SOCKET_VARIABLE) {
            // Started by an upgrade: ready goes to the old process.
            Some(systemd) => (notify_socket, non_empty(Some(systemd))),
            None => (notify_socket.clone(), notify_socket),
        };
        Ok(Self {
            exe: std::env::current_exe()?,
            args: std::env::args_os().collect(),
            timeout,
            ready_to,
            systemd,
        })
    }

    /// Tells whoever started this process that it serves now.
    pub fn announce_ready(&self) {
        let Some(socket) = &self.ready_to else {
            return;
        };
        let state = format!("READY=1\nMAINPID={}", std::process::id());
        if let Err(e) = notify::notify_to(socket, &state) {
            tracing::warn!(error = %e, socket = ?socket, "cannot send READY=1");
        }
    }

    /// Tells systemd this process is stopping (a no-op without systemd).
    pub fn announce_stopping(&self) {
        if let Some(socket) = &self.systemd {
            let _ = notify::notify_to(socket, "STOPPING=1");
        }
    }

    /// Starts the new process on `sockets` and waits until it is ready, it
    /// fails, the timeout passes, or a stop signal comes.
    pub fn upgrade(&self, sockets: Vec<TcpListener>, signals: &SignalFd) -> Outcome {
        let pid = std::process::id();
        let (child, ready) = match self.start(&sockets) {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(pid, error = %e, exe = %self.exe.display(), "upgrade failed: cannot start the new process; still serving");
                return Outcome::Failed;
            }
        };
        drop(sockets);
        let new_pid = child.id();
        tracing::info!(pid, new_pid, exe = %self.exe.display(), "started the new process; waiting for READY=1");
        let outcome = self.wait_ready(&child, &ready, signals);
        if let Outcome::Ready(_) = outcome {
            tracing::info!(
                pid,
                new_pid,
                "the new process is ready; this one stops accepting and lets its connections finish"
            );
            if let Some(systemd) = &self.systemd
                && let Err(e) = notify::notify_to(systemd, &format!("MAINPID={new_pid}"))
            {
                tracing::warn!(error = %e, "cannot tell systemd the new main pid");
            }
        }
        outcome
    }

    /// Binds this upgrade's notification socket and starts the child.
    fn start(&self, sockets: &[TcpListener]) -> std::io::Result<(Child, UnixDatagram)> {
        static UPGRADES: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "@netloop-upgrade-{}-{}",
            std::process::id(),
            UPGRADES.fetch_add(1, Ordering::Relaxed)
        );
        let ready = UnixDatagram::bind_addr(&notify::socket_address(name.as_ref())?)?;
        ready.set_read_timeout(Some(POLL))?;
        let passed: Vec<_> = sockets.iter().map(|s| ("netloop", s.as_fd())).collect();
        let env = [
            (OsString::from("NOTIFY_SOCKET"), OsString::from(&name)),
            (
                OsString::from(SYSTEMD_SOCKET_VARIABLE),
                self.systemd.clone().unwrap_or_default(),
            ),
        ];
        let child = activation::spawn(self.exe.as_os_str(), &self.args, &passed, &env)?;
        Ok((child, ready))
    }

    fn wait_ready(&self, child: &Child, ready: &UnixDatagram, signals: &SignalFd) -> Outcome {
        let (pid, new_pid) = (std::process::id(), child.id());
        let deadline = Instant::now() + self.timeout;
        let mut message = [0u8; 4096];
        loop {
            // A datagram from anyone but the child would need its
            // credentials checked; the abstract name holds the pids.
            if let Ok(n) = ready.recv(&mut message)
                && message[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1")
            {
                return Outcome::Ready(new_pid);
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::error!(pid, new_pid, %status, "upgrade failed: the new process exited before it was ready; still serving");
                    return Outcome::Failed;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(pid, new_pid, error = %e, "upgrade failed: cannot watch the new process; still serving");
                    return Outcome::Failed;
                }
            }
            if Instant::now() >= deadline {
                tracing::error!(pid, new_pid, timeout = ?self.timeout, "upgrade failed: the new process was not ready in time; killed it; still serving");
                stop_child(child);
                return Outcome::Failed;
            }
            match signals.wait_timeout(Duration::ZERO) {
                Ok(Some(SIGUSR2)) => {
                    tracing::warn!(
                        pid,
                        new_pid,
                        "SIGUSR2 ignored: an upgrade is already under way"
                    );
                }
                Ok(Some(signal @ (SIGINT | SIGTERM))) => {
                    tracing::warn!(
                        pid,
                        new_pid,
                        signal,
                        "stop signal during an upgrade: killed the new process"
                    );
                    stop_child(child);
                    return Outcome::Stop(signal);
                }
                _ => {}
            }
        }
    }
}

/// Kills a child that did not become ready, and reaps it.
fn stop_child(child: &Child) {
    let _ = child.signal(libc::SIGKILL);
    let _ = child.wait();
}
