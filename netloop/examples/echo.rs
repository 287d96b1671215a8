//! An echo server in a few lines: `cargo run --example echo -- 127.0.0.1:7000`,
//! then `nc 127.0.0.1 7000` and type.

use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler};

struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        // Input and output at once: copy what arrived, then mark it handled.
        let parts = conn.parts();
        let mut output = parts.output;
        output.write(parts.input.as_slice());
        parts.input.consume(usize::MAX);
    }

    fn on_close(&mut self, _: &mut Ctx<'_, ()>, id: ConnId, _: (), reason: CloseReason) {
        eprintln!("{id} closed: {reason}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let mut event_loop = EventLoop::new(Config::default(), Echo)?;
    let bound = event_loop.listen(addr.parse()?)?;
    println!("listening on {bound}");
    event_loop.run()?;
    Ok(())
}
