//! The one-shot worker pool: one epoll, N threads waiting on it, every
//! socket armed `EPOLLET | EPOLLONESHOT`.
//!
//! The kernel reports a one-shot socket to exactly one waiting thread and
//! then disarms it, so exactly one thread serves a connection at a time.
//! Each worker is an ordinary [`EventLoop`] — the same reading, writing,
//! accepting, timers and close reasons as every other mode — whose
//! connections live in a slab shared with the other workers: it checks a
//! connection out to serve it and back in, re-armed, at the end of its turn.
//! A handler may therefore block or run long (a database call, a disk read)
//! without stalling other connections. The price is one `epoll_ctl` per event.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Config;
use crate::error::Error;
use crate::event_loop::{EventLoop, LoopParts};
use crate::handle::{Command, LoopHandle};
use crate::handler::Handler;
use crate::loop_thread::{Health, LoopThread, spawn_loop};
use crate::occupants::Occupants;
use crate::registration::Registration;
use crate::shared::{Checkout, SharedSlab};
use crate::slots::Slots;
use crate::sys::epoll::{EDGE, Epoll, ONESHOT, READABLE};
use crate::timer::{CancelBoxes, MAX_WHEELS, Timers};
use crate::token::{ConnId, EXIT_INDEX, WAKER_INDEX};
use crate::waker::Mailbox;

/// What every worker of one pool shares.
struct Pool<S> {
    epoll: Arc<Epoll>,
    slab: Arc<SharedSlab<S>>,
    occupants: Arc<Occupants>,
    mailbox: Arc<Mailbox<Command<S>>>,
    cancel_boxes: CancelBoxes,
    listeners: Vec<Arc<TcpListener>>,
    clock_origin: Instant,
}

impl<S> Pool<S> {
    fn new(
        listeners: Vec<Arc<TcpListener>>,
        config: &Config,
        threads: usize,
    ) -> Result<Self, Error> {
        let epoll = Epoll::new()?;
        let mailbox = Mailbox::new()?;
        let slab = SharedSlab::new(config.max_connections)?;
        // Edge-triggered: each wake goes to one worker, which takes every
        // command waiting.
        epoll.add(
            mailbox.eventfd().as_raw_fd(),
            ConnId::new(WAKER_INDEX, 0).to_u64(),
            READABLE | EDGE,
        )?;
        // Level-triggered and never drained: once the pool has stopped,
        // every worker sees it and exits.
        epoll.add(
            slab.stopped_signal().as_raw_fd(),
            ConnId::new(EXIT_INDEX, 0).to_u64(),
            READABLE,
        )?;
        Ok(Self {
            epoll: Arc::new(epoll),
            slab: Arc::new(slab),
            occupants: Arc::new(Occupants::new(config.max_connections)),
            mailbox: Arc::new(mailbox),
            cancel_boxes: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
            listeners,
            clock_origin: Instant::now(),
        })
    }

    fn parts(&self, index: usize) -> LoopParts<S> {
        LoopParts {
            registration: Registration::OneShot,
            epoll: Arc::clone(&self.epoll),
            slots: Slots::Shared(Checkout::new(Arc::clone(&self.slab))),
            occupants: Arc::clone(&self.occupants),
            mailbox: Arc::clone(&self.mailbox),
            timers: Timers::of_worker(
                u16::try_from(index).unwrap_or(u16::MAX),
                Arc::clone(&self.cancel_boxes),
            ),
            clock_origin: self.clock_origin,
        }
    }
}

/// A started pool: its one handle, its worker threads.
pub(crate) struct Workers<S> {
    pub(crate) handle: LoopHandle<S>,
    pub(crate) threads: Vec<LoopThread>,
}

/// Starts `threads` one-shot workers serving `listeners`.
pub(crate) fn spawn_workers<H, F>(
    listeners: Vec<Arc<TcpListener>>,
    threads: usize,
    config: &Config,
    make_handler: Arc<F>,
    health: &Arc<Health>,
) -> Result<Workers<H::State>, Error>
where
    H: Handler + 'static,
    H::State: Send + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    // Timer ids name their worker in 16 bits.
    let threads = threads.min(MAX_WHEELS);
    let pool = Arc::new(Pool::<H::State>::new(listeners, config, threads)?);
    // One event per wait: a worker takes one ready connection, serves it and
    // hands it back before it takes another, so a slow handler holds up its
    // own connection only and the other workers take the rest.
    let config = &Config {
        events_capacity: 1,
        ..config.clone()
    };
    let mut workers = Vec::with_capacity(threads);
    let mut handle = None;
    for index in 0..threads {
        let pool = Arc::clone(&pool);
        let make_handler = Arc::clone(&make_handler);
        let config = config.clone();
        let build = move || {
            let mut worker = EventLoop::with_parts(config, make_handler(index), pool.parts(index));
            for listener in &pool.listeners {
                worker.add_listener_with(Arc::clone(listener), READABLE | ONESHOT)?;
            }
            Ok((worker, None))
        };
        let name = format!("netloop-oneshot-{index}");
        let (thread, ready) = spawn_loop(name, Arc::clone(health), build)?;
        let (worker_handle, _) = ready?;
        handle.get_or_insert(worker_handle);
        workers.push(thread);
    }
    let handle = handle.ok_or_else(|| Error::Io(std::io::Error::other("no one-shot worker")))?;
    Ok(Workers {
        handle,
        threads: workers,
    })
}
