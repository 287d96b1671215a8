//! The echo protocol: every byte received is sent back.

use crate::{Conn, Handler};

/// Echoes input back to its sender.
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
        let parts = conn.parts();
        let mut output = parts.output;
        output.write(parts.input.as_slice());
        parts.input.consume(usize::MAX);
    }
}
