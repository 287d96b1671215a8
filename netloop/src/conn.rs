//! The handler's view of the connection a callback is about.

use std::ops::{Deref, DerefMut};

use crate::buffer::{Buffer, BufferPool};
use crate::core::Core;
use crate::ctx::ConnRef;
use crate::error::Error;
use crate::token::ConnId;

/// The connection a callback is about: its input, plus everything
/// [`ConnRef`] offers (output, state, close, pause, timers) and, through
/// it, [`Ctx`](crate::Ctx) (other connections, connect, the clock).
///
/// ```
/// use netloop::{Conn, Handler};
///
/// /// Answers every line with its length.
/// struct LineLengths;
///
/// impl Handler for LineLengths {
///     type State = ();
///     fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
///         while let Some(end) = conn.input().iter().position(|&b| b == b'\n') {
///             let reply = format!("{end}\n");
///             conn.consume(end + 1);
///             conn.write(reply.as_bytes());
///         }
///     }
/// }
/// ```
pub struct Conn<'a, S> {
    this: ConnRef<'a, S>,
}

/// Simultaneous access to a connection's input, output and state, for
/// handlers that decode from one while writing to another.
pub struct ConnParts<'c, S> {
    /// Bytes received and not yet consumed.
    pub input: &'c mut Buffer,
    /// The output queue.
    pub output: Output<'c>,
    /// The per-connection user state.
    pub state: &'c mut S,
}

/// A connection's output queue, open for appending.
pub struct Output<'c> {
    buffer: &'c mut Buffer,
    pool: &'c mut BufferPool,
}

impl Output<'_> {
    /// Queues `bytes`; they are written at the end of the turn (or of its
    /// current batch of events).
    pub fn write(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes, self.pool);
    }

    /// Moves every unconsumed byte of `input` to the end of the queue,
    /// leaving `input` empty. When nothing is queued the two buffers swap
    /// memory instead of copying, so an echo or a relay does no per-byte
    /// work of its own.
    ///
    /// ```
    /// use netloop::{Conn, Handler};
    ///
    /// /// Sends every byte back.
    /// struct Echo;
    ///
    /// impl Handler for Echo {
    ///     type State = ();
    ///     fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
    ///         let mut parts = conn.parts();
    ///         parts.output.append(parts.input);
    ///     }
    /// }
    /// ```
    pub fn append(&mut self, input: &mut Buffer) {
        self.buffer.append_from(input, self.pool);
    }

    /// The queue as a `Vec` to append to, so an encoder can write replies
    /// in place. Append only: the bytes already in it are queued output.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        self.buffer.as_vec(self.pool)
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

impl<'a, S> Conn<'a, S> {
    pub(crate) fn new(core: &'a mut Core<S>, id: ConnId) -> Self {
        Self {
            this: ConnRef::new(core, id),
        }
    }

    /// The bytes received and not yet consumed.
    pub fn input(&self) -> &[u8] {
        self.this.slot().map_or(&[], |conn| conn.input.as_slice())
    }

    /// Marks the first `n` input bytes as handled.
    pub fn consume(&mut self, n: usize) {
        let id = self.id();
        if let Some(conn) = self.this.core().conns.get_mut(id) {
            conn.input.consume(n);
        }
    }

    /// Input, output and state at once.
    pub fn parts(&mut self) -> ConnParts<'_, S> {
        let id = self.id();
        let core = self.this.core();
        match core.conns.get_mut(id) {
            Some(conn) => ConnParts {
                input: &mut conn.input,
                output: Output {
                    buffer: &mut conn.output,
                    pool: &mut core.buffers,
                },
                state: &mut conn.state,
            },
            // A Conn exists only for an open connection, which leaves the
            // pool only between callbacks.
            None => unreachable!("connection {id} left the pool during its own callback"),
        }
    }

    /// Moves all unconsumed input to the output of connection `to`, without
    /// an intermediate copy (when `to` has nothing queued, the buffers swap
    /// memory). Returns the bytes moved; `Err(StaleConn)` if `to` has closed.
    ///
    /// This is a relay's whole data path: see `examples/proxy.rs`.
    pub fn forward_input(&mut self, to: ConnId) -> Result<usize, Error> {
        let id = self.id();
        self.this.core().forward_input(id, to)
    }
}

impl<'a, S> Deref for Conn<'a, S> {
    type Target = ConnRef<'a, S>;

    fn deref(&self) -> &Self::Target {
        &self.this
    }
}

impl<S> DerefMut for Conn<'_, S> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.this
    }
}
