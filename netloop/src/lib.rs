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

#![warn(missing_docs)]

pub mod buffer;
mod close_reason;
mod conn;
pub mod echo;
mod error;
mod event_loop;
pub mod oneshot;
mod pool;
pub mod server;
mod stats;
pub mod sys;
mod timer;
mod token;
mod waker;

pub use buffer::Buffer;
pub use close_reason::CloseReason;
pub use conn::{Conn, ConnParts, Output};
pub use error::Error;
pub use event_loop::{Config, Ctx, EventLoop, Handler, PoolFullPolicy, Trigger, rdhup_supported};
pub use stats::Stats;
pub use sys::epoll::Event;
pub use timer::TimerId;
pub use token::ConnId;
pub use waker::{LoopHandle, Task};
