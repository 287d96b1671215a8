//! `netloop load stream`: one-way bulk streams, as fast as the server
//! takes them.
//!
//! Each connection keeps its output queue above the low-water mark, so the
//! socket never waits for the client. Against a discard sink
//! (`netloop echo --discard`) that measures a server's receive path; with
//! `--read-back` against an echo server the connection also reads
//! everything that comes back (and drops it), which is the heavy flow of
//! the fairness benchmark: one connection moving bytes as fast as it can
//! beside many light request/response clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler};

use crate::serve::ServeError;

/// Options of `netloop load stream`.
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// The server to stream to (only this address is contacted).
    #[arg(long)]
    pub target: SocketAddr,
    /// Connections, each streaming on its own.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Bytes queued per write.
    #[arg(long, default_value_t = 64 * 1024)]
    pub chunk: usize,
    /// Also read (and drop) what the server sends back.
    #[arg(long)]
    pub read_back: bool,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// Output queued per connection before it counts as full: enough that the
/// kernel always has the next bytes at hand.
const HIGH_WATER: usize = 1024 * 1024;
/// Refilled when the queue drains to this.
const LOW_WATER: usize = 256 * 1024;

/// Runs `netloop load stream`; fails when a connection ends early.
pub fn run(args: &StreamArgs) -> Result<(), ServeError> {
    if args.conns == 0 || args.chunk == 0 {
        return Err(ServeError::Usage(
            "--conns and --chunk must be positive".into(),
        ));
    }
    let config = Config {
        max_connections: args.conns + 1,
        // A read-back stream must keep reading while its own output is
        // full: the echoed bytes are what the server waits to send.
        pause_when_full: false,
        high_water: HIGH_WATER,
        low_water: LOW_WATER,
        ..Config::default()
    };
    // A recognisable pattern rather than zeros, so that nothing along the
    // way can treat the stream as sparse.
    let chunk = (0..args.chunk).map(|i| (i % 251) as u8).collect();
    let mut event_loop = EventLoop::new(config, Streamer::new(chunk))?;
    for _ in 0..args.conns {
        event_loop.connect(args.target, ())?;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration.max(0.0));
    while Instant::now() < end && event_loop.connection_count() > 0 {
        event_loop.turn(Some(Duration::from_millis(50)))?;
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    event_loop.handler_mut().running = false;
    let sent = event_loop.stats().bytes_written;
    let received = event_loop.handler().received;
    let errors = event_loop.handler().errors;
    if args.json {
        println!(
            "{{\"workload\":\"stream\",\"target\":\"{}\",\"conns\":{},\"chunk\":{},\"read_back\":{},\
             \"elapsed_s\":{elapsed:.3},\"bytes_sent\":{sent},\"bytes_received\":{received},\
             \"sent_per_s\":{:.1},\"received_per_s\":{:.1},\"errors\":{errors}}}",
            args.target,
            args.conns,
            args.chunk,
            args.read_back,
            sent as f64 / elapsed,
            received as f64 / elapsed,
        );
    } else {
        println!(
            "stream to {}: {} conn(s), {:.1} s: sent {:.1} MB/s, received {:.1} MB/s, {errors} error(s)",
            args.target,
            args.conns,
            elapsed,
            sent as f64 / elapsed / 1e6,
            received as f64 / elapsed / 1e6,
        );
    }
    if errors > 0 {
        return Err(ServeError::Verification(errors));
    }
    Ok(())
}

/// Keeps every connection's output topped up; counts what comes back.
struct Streamer {
    chunk: Vec<u8>,
    running: bool,
    received: u64,
    errors: u64,
}

impl Streamer {
    fn new(chunk: Vec<u8>) -> Self {
        Self {
            chunk,
            running: true,
            received: 0,
            errors: 0,
        }
    }

    /// Queues chunks until the output passes the high-water mark.
    fn fill(&self, conn: &mut Conn<'_, ()>) {
        while self.running && !conn.is_full() {
            conn.write(&self.chunk);
        }
    }
}

impl Handler for Streamer {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        self.fill(conn);
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        self.received += conn.input().len() as u64;
        conn.consume(usize::MAX);
    }

    fn on_drained(&mut self, conn: &mut Conn<'_, ()>) {
        self.fill(conn);
    }

    fn on_close(&mut self, _: &mut Ctx<'_, ()>, id: ConnId, _: (), reason: CloseReason) {
        if self.running {
            tracing::error!(%id, %reason, "stream ended during the run");
            self.errors += 1;
        }
    }
}
