//! The [`Handler`] trait: what a protocol does with connections.

use crate::close_reason::CloseReason;
use crate::conn::Conn;
use crate::connection::AfterEof;
use crate::ctx::Ctx;
use crate::handle::LoopHandle;
use crate::timer::TimerId;
use crate::token::ConnId;

/// What a protocol does with connections. Every callback runs on the loop's
/// thread; none may block (except in the one-shot mode, which is made for
/// handlers that do).
///
/// A callback that panics costs its connection only: the loop catches the
/// panic, aborts that connection with [`CloseReason::HandlerPanic`], counts
/// it in [`Stats::handler_panics`](crate::Stats::handler_panics), logs the
/// message, and goes on serving every other connection.
///
/// ```no_run
/// use netloop::{Conn, EventLoop, Handler};
///
/// struct Echo;
/// impl Handler for Echo {
///     type State = ();
///     fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
///         let parts = conn.parts();
///         let mut output = parts.output;
///         output.write(parts.input.as_slice());
///         parts.input.consume(usize::MAX);
///     }
/// }
///
/// let mut event_loop = EventLoop::new(Default::default(), Echo)?;
/// event_loop.listen("127.0.0.1:7000".parse().unwrap())?;
/// event_loop.run()?;
/// # Ok::<(), netloop::Error>(())
/// ```
pub trait Handler {
    /// Per-connection user state, created with `Default` when a connection
    /// is accepted (an outbound one starts with the state given to
    /// [`Ctx::connect`]).
    type State: Default;

    /// The loop is about to serve; `handle` reaches it from other threads.
    fn on_start(&mut self, handle: LoopHandle<Self::State>) {
        let _ = handle;
    }

    /// A connection opened (an outbound one: its connect completed).
    fn on_open(&mut self, conn: &mut Conn<'_, Self::State>) {
        let _ = conn;
    }

    /// New input arrived: read [`Conn::input`], [`Conn::consume`] what was
    /// handled, and leave the rest for the next call.
    fn on_data(&mut self, conn: &mut Conn<'_, Self::State>);

    /// The peer sent FIN. Output queued now is still delivered. By default
    /// the connection then closes ([`CloseReason::PeerClosed`]); answer
    /// [`AfterEof::KeepWriting`] to keep sending (half-close) until
    /// [`ConnRef::shutdown`](crate::ConnRef::shutdown).
    fn on_eof(&mut self, conn: &mut Conn<'_, Self::State>) -> AfterEof {
        let _ = conn;
        AfterEof::Close
    }

    /// The connection's queued output, once past the high-water mark
    /// ([`ConnRef::is_full`](crate::ConnRef::is_full)), drained to the
    /// low-water mark. A relay resumes reading the other side here.
    fn on_drained(&mut self, conn: &mut Conn<'_, Self::State>) {
        let _ = conn;
    }

    /// A timer set with [`ConnRef::set_timer`](crate::ConnRef::set_timer) expired.
    fn on_timer(&mut self, conn: &mut Conn<'_, Self::State>, timer: TimerId, data: u64) {
        let _ = (conn, timer, data);
    }

    /// A connection closed; its slot is already free and `id` is stale.
    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, Self::State>,
        id: ConnId,
        state: Self::State,
        reason: CloseReason,
    ) {
        let _ = (ctx, id, state, reason);
    }
}
