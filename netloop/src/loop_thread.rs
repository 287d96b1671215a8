//! Running a loop on a thread of its own, and what happens when one dies.
//!
//! Handler panics never reach this far (each costs its connection only).
//! A loop that fails anyway — `epoll_wait` failing, a bug in the loop —
//! stops the whole server: its stopper runs at once, the other loops drain
//! and end, and the server's `join` reports the failure. A server never limps on with a dead loop still being handed
//! connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::{self, JoinHandle};

use crate::callback::guarded;
use crate::error::Error;
use crate::event_loop::EventLoop;
use crate::handle::LoopHandle;
use crate::handler::Handler;
use crate::stats::Stats;

pub(crate) type LoopThread = JoinHandle<Result<Stats, Error>>;

/// What a loop thread reports once it is listening (or failed to).
pub(crate) type Ready<S> = Result<(LoopHandle<S>, Option<SocketAddr>), Error>;

/// Shared by a server's threads: whether one died, and how to stop all.
#[derive(Default)]
pub(crate) struct Health {
    failed: AtomicBool,
    stop_all: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Health {
    /// Sets how every loop is stopped, once all are running.
    pub(crate) fn set_stop_all(&self, stop_all: Box<dyn Fn() + Send + Sync>) {
        let _ = self.stop_all.set(stop_all);
        if self.has_failed() {
            self.stop_everything();
        }
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn loop_died(&self, name: &str, why: &str) {
        tracing::error!(
            thread = name,
            error = why,
            "an event loop died: stopping the server"
        );
        self.failed.store(true, Ordering::Release);
        self.stop_everything();
    }

    fn stop_everything(&self) {
        if let Some(stop_all) = self.stop_all.get() {
            stop_all();
        }
    }
}

/// Spawns a thread that builds a loop with `build`, reports it ready, and
/// runs it until it stops.
pub(crate) fn spawn_loop<H, B>(
    name: String,
    health: Arc<Health>,
    build: B,
) -> Result<(LoopThread, Ready<H::State>), Error>
where
    H: Handler + 'static,
    B: FnOnce() -> Result<(EventLoop<H>, Option<SocketAddr>), Error> + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel::<Ready<H::State>>();
    let thread_name = name.clone();
    let thread =
        thread::Builder::new()
            .name(thread_name)
            .spawn(move || -> Result<Stats, Error> {
                let mut event_loop = match build() {
                    Ok((event_loop, bound)) => {
                        let _ = ready_tx.send(Ok((event_loop.handle(), bound)));
                        event_loop
                    }
                    Err(e) => {
                        let message = e.to_string();
                        let _ = ready_tx.send(Err(e));
                        return Err(Error::Io(std::io::Error::other(message)));
                    }
                };
                let outcome = match guarded(|| event_loop.run()) {
                    Ok(Ok(())) => return Ok(event_loop.stats().clone()),
                    Ok(Err(e)) => e.to_string(),
                    Err(panic) => format!("panicked: {panic}"),
                };
                health.loop_died(&name, &outcome);
                Err(Error::LoopDied(outcome))
            })?;
    let ready = ready_rx
        .recv()
        .unwrap_or_else(|_| Err(Error::Io(std::io::Error::other("loop thread exited early"))));
    Ok((thread, ready))
}
