//! The echo protocol: every byte received is sent back; and its one-way
//! sibling, discard (RFC 863), which reads and drops.

use crate::{Conn, Handler};

/// Echoes input back to its sender.
///
/// The input moves to the output without a copy when nothing else is
/// queued ([`Output::append`](crate::Output::append)).
///
/// ```no_run
/// let mut event_loop = netloop::EventLoop::new(Default::default(), netloop::echo::Echo)?;
/// event_loop.listen("127.0.0.1:7000".parse().unwrap())?;
/// event_loop.run()?;
/// # Ok::<(), netloop::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        let mut parts = conn.parts();
        parts.output.append(parts.input);
    }
}

/// Reads and drops everything (the discard protocol): a sink for one-way
/// streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Handler for Discard {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        conn.consume(usize::MAX);
    }
}
