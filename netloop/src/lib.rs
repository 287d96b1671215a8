//! netloop: an epoll event core for Linux network servers, in the line of
//! nginx's event module, Redis' `ae` and muduo.
//!
//! Its defining property: a **stale event is harmless by construction**. Every
//! registration carries a [`ConnId`] — a pool slot index plus the slot's
//! generation, bumped on every free — and every event is checked against the
//! slot's current generation before each direction is dispatched. An event
//! for a connection that closed earlier in the same batch, even if its fd
//! number and its slot were already reused, reaches nobody; it is counted in
//! [`Stats::stale_events`] and dropped.
//!
//! A server is a [`Handler`] run by an [`EventLoop`]:
//!
//! ```no_run
//! use netloop::{Config, Conn, EventLoop, Handler};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type State = ();
//!     fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
//!         let parts = conn.parts();
//!         let mut output = parts.output;
//!         output.write(parts.input.as_slice());
//!         parts.input.consume(usize::MAX);
//!     }
//! }
//!
//! let mut event_loop = EventLoop::new(Config::default(), Echo)?;
//! let addr = event_loop.listen("127.0.0.1:0".parse().unwrap())?;
//! println!("listening on {addr}");
//! event_loop.run()?;
//! # Ok::<(), netloop::Error>(())
//! ```
//!
//! Connections can be paired, as a proxy pairs a client with its upstream:
//! [`Ctx::connect`] starts one with its own state, [`Conn::forward_input`]
//! moves one side's input to the other's output without a copy,
//! [`ConnRef::pause_reading`] and [`Handler::on_drained`] carry
//! backpressure across, and [`AfterEof::KeepWriting`] keeps a half-closed
//! connection sending. `examples/proxy.rs` shows all of it.
//!
//! Several loops on several threads, or one-shot workers for handlers
//! that block, are in [`server`].

#![warn(missing_docs)]

// The module graph runs one way, from the system layer up to the loop and
// the servers built of loops.
mod sys;

mod buffer;
mod clock;
mod close_reason;
mod config;
mod error;
mod occupants;
mod pool;
mod stats;
mod timer;
mod token;

mod connection;
mod listeners;
mod registration;
mod shared;
mod slots;
mod turn_list;
mod waker;

mod core;
mod ctx;

mod conn;
mod handle;
mod handler;

mod accept;
mod callback;
mod close;
mod commands;
mod event_loop;
mod io;
mod linger;
mod timeouts;

mod acceptor;
mod loop_thread;
mod oneshot;
pub mod server;

pub mod activation;
pub mod notify;

pub mod echo;

pub use buffer::Buffer;
pub use close_reason::CloseReason;
pub use config::{Config, PoolFullPolicy, StopStyle, Trigger};
pub use conn::{Conn, ConnParts, Output};
pub use connection::{AfterEof, rdhup_supported};
pub use ctx::{ConnRef, Ctx};
pub use error::Error;
pub use event_loop::EventLoop;
pub use handle::{LoopHandle, Task};
pub use handler::Handler;
pub use stats::Stats;
pub use sys::socket::ListenOptions;
pub use timer::TimerId;
pub use token::ConnId;

/// What tests need to build `epoll_wait` batches by hand and feed them to
/// [`EventLoop::dispatch_batch`]. Enabled by the `testing` feature; not
/// part of the stable API.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::sys::epoll::{
        EDGE, ERROR, Epoll, Event, Events, HUP, READ_HUP, READABLE, WRITABLE,
    };
}
