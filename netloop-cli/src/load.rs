//! `netloop load`: a load generator built on netloop's own client side.
//!
//! Closed loop (`--depth D`): each connection keeps D messages in flight and
//! sends the next one as each echo completes. Open loop (`--rate R`): each
//! message has an intended send time on a fixed schedule, and its latency is
//! measured from that time, so a stalled server is charged for the requests
//! it delayed (no coordinated omission). Every echoed byte is checked.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler, TimerId};

use crate::serve::ServeError;

/// `netloop load` subcommands.
#[derive(Subcommand, Debug)]
pub enum LoadCommand {
    /// Drive an echo server, verifying every byte.
    Echo(EchoLoadArgs),
}

/// Options of `netloop load echo`.
#[derive(Args, Debug, Clone)]
pub struct EchoLoadArgs {
    /// The server to drive (only this address is contacted).
    #[arg(long)]
    pub target: SocketAddr,
    /// Connections, spread over the threads.
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Client threads, each with its own event loop.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Open loop: total messages per second on a fixed schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Messages echoed and verified.
    pub messages: u64,
    /// Bytes echoed and verified.
    pub bytes: u64,
    /// Wrong bytes, unexpected closes and failed connects.
    pub errors: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// Latency in nanoseconds.
    pub latency: Histogram<u64>,
}

impl LoadReport {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in microseconds.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Runs `netloop load …`; fails (non-zero exit) on any verification error.
pub fn run(command: LoadCommand) -> Result<(), ServeError> {
    match command {
        LoadCommand::Echo(args) => {
            let report = run_echo(&args)?;
            if args.json {
                println!("{}", report_json(&args, &report));
            } else {
                print_table(&args, &report);
            }
            if report.errors > 0 {
                return Err(ServeError::Verification(report.errors));
            }
            Ok(())
        }
    }
}

/// Drives an echo server as `args` says and returns what it measured.
pub fn run_echo(args: &EchoLoadArgs) -> Result<LoadReport, ServeError> {
    if args.size == 0 || args.conns == 0 || args.depth == 0 {
        return Err(ServeError::Usage(
            "--size, --conns and --depth must be positive".into(),
        ));
    }
    let threads = args.threads.clamp(1, args.conns);
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let conns = args.conns / threads + usize::from(t < args.conns % threads);
            let plan = Plan {
                target: args.target,
                conns,
                first_conn: t * args.conns / threads,
                size: args.size,
                depth: args.depth,
                interval: args
                    .rate
                    .map(|r| Duration::from_secs_f64(args.conns as f64 / r.max(1e-9))),
                end: start + duration,
            };
            let progress = Arc::clone(&progress);
            thread::Builder::new()
                .name(format!("netloop-load-{t}"))
                .spawn(move || drive(plan, &progress))
        })
        .collect::<Result<_, _>>()?;
    let bar = progress_bar(duration, &progress, &done);
    let mut report = LoadReport {
        messages: 0,
        bytes: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: new_histogram(),
    };
    for worker in workers {
        let part = worker.join().map_err(|_| ServeError::Panicked)??;
        report.messages += part.messages;
        report.bytes += part.bytes;
        report.errors += part.errors;
        report
            .latency
            .add(&part.latency)
            .map_err(|e| ServeError::Usage(e.to_string()))?;
        report.elapsed = report.elapsed.max(part.elapsed);
    }
    done.store(true, Ordering::Release);
    if let Some(bar) = bar {
        let _ = bar.join();
    }
    Ok(report)
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits; these bounds are valid constants.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// A progress bar on a terminal; nothing when stderr is piped.
fn progress_bar(
    duration: Duration,
    progress: &Arc<AtomicU64>,
    done: &Arc<AtomicBool>,
) -> Option<thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let progress = Arc::clone(progress);
    let done = Arc::clone(done);
    let millis = duration.as_millis() as u64;
    thread::Builder::new()
        .name("netloop-progress".into())
        .spawn(move || {
            let bar = indicatif::ProgressBar::new(millis);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let start = Instant::now();
            while !done.load(Ordering::Acquire) {
                let elapsed = start.elapsed();
                bar.set_position((elapsed.as_millis() as u64).min(millis));
                let messages = progress.load(Ordering::Relaxed);
                bar.set_message(format!(
                    "{:.0} msg/s",
                    messages as f64 / elapsed.as_secs_f64().max(1e-3)
                ));
                thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        })
        .ok()
}

struct Plan {
    target: SocketAddr,
    conns: usize,
    first_conn: usize,
    size: usize,
    depth: usize,
    interval: Option<Duration>,
    end: Instant,
}

/// One client thread: its own loop and connections.
fn drive(plan: Plan, progress: &AtomicU64) -> Result<LoadReport, ServeError> {
    let config = Config {
        max_connections: plan.conns + 1,
        ..Config::default()
    };
    let end = plan.end;
    let started = Instant::now();
    let mut event_loop = EventLoop::new(config, EchoLoad::new(&plan))?;
    for _ in 0..plan.conns {
        event_loop.connect(plan.target)?;
    }
    let mut reported = 0;
    while Instant::now() < end && event_loop.connection_count() > 0 {
        event_loop.turn(Some(Duration::from_millis(50)))?;
        let messages = event_loop.handler().report.messages;
        progress.fetch_add(messages - reported, Ordering::Relaxed);
        reported = messages;
    }
    let elapsed = started.elapsed();
    // Stop sending; give what is in flight a moment to come back.
    event_loop.handler_mut().sending = false;
    let grace = Instant::now() + Duration::from_secs(2);
    while Instant::now() < grace && event_loop.handler().in_flight > 0 {
        event_loop.turn(Some(Duration::from_millis(10)))?;
    }
    let handler = event_loop.handler_mut();
    handler.report.elapsed = elapsed;
    Ok(handler.report.clone())
}

/// Per-connection state of the load handler.
#[derive(Default)]
pub struct LoadConn {
    number: usize,
    /// Messages sent so far (the next message's sequence number).
    sent: u64,
    /// Bytes of echo verified so far.
    verified: u64,
    /// Send time (or intended send time) of each message in flight.
    in_flight: VecDeque<Instant>,
    /// Open loop: the intended time of the next message.
    next_due: Option<Instant>,
}

struct EchoLoad {
    size: usize,
    depth: usize,
    interval: Option<Duration>,
    next_number: usize,
    sending: bool,
    in_flight: u64,
    report: LoadReport,
    message: Vec<u8>,
}

impl EchoLoad {
    fn new(plan: &Plan) -> Self {
        Self {
            size: plan.size,
            depth: plan.depth,
            interval: plan.interval,
            next_number: plan.first_conn,
            sending: true,
            in_flight: 0,
            report: LoadReport {
                messages: 0,
                bytes: 0,
                errors: 0,
                elapsed: Duration::ZERO,
                latency: new_histogram(),
            },
            message: Vec::with_capacity(plan.size),
        }
    }

    /// Sends one message stamped `at`.
    fn send(&mut self, conn: &mut Conn<'_, LoadConn>, at: Instant) {
        let state = conn.state();
        let (number, sequence) = (state.number, state.sent);
        state.sent += 1;
        state.in_flight.push_back(at);
        self.in_flight += 1;
        self.message.clear();
        self.message
            .extend((0..self.size).map(|i| pattern_byte(number, sequence, i)));
        conn.write(&self.message);
    }

    /// Open loop: sends every message whose intended time has come.
    fn send_due(&mut self, conn: &mut Conn<'_, LoadConn>, interval: Duration) {
        let now = conn.now();
        while self.sending {
            let due = conn.state().next_due.unwrap_or(now);
            if due > now {
                conn.set_timer(due - now, 0);
                return;
            }
            self.send(conn, due);
            conn.state().next_due = Some(due + interval);
        }
    }
}

impl EchoLoad {
    /// Checks and consumes the echoed input, recording the latency of each
    /// completed message; `None` on a wrong byte.
    fn verify(&mut self, conn: &mut Conn<'_, LoadConn>, now: Instant) -> Option<(u64, u64)> {
        let size = self.size as u64;
        let parts = conn.parts();
        let (input, state) = (parts.input, parts.state);
        let bytes = input.as_slice();
        let mut completed = 0;
        for (offset, &byte) in bytes.iter().enumerate() {
            let position = state.verified + offset as u64;
            let expected = pattern_byte(state.number, position / size, (position % size) as usize);
            if byte != expected {
                tracing::error!(conn = state.number, position, "echo verification failed");
                return None;
            }
            if (position + 1).is_multiple_of(size) {
                if let Some(sent_at) = state.in_flight.pop_front() {
                    let nanos = now.saturating_duration_since(sent_at).as_nanos() as u64;
                    let _ = self.report.latency.record(nanos.max(1));
                }
                completed += 1;
            }
        }
        let received = bytes.len();
        state.verified += received as u64;
        input.consume(received);
        Some((completed, received as u64))
    }
}

/// Byte `i` of message `sequence` on connection `number`: every message
/// differs, so a byte delivered to the wrong connection or out of order shows.
fn pattern_byte(number: usize, sequence: u64, i: usize) -> u8 {
    let mixed = (sequence.wrapping_mul(0x9E37_79B9) ^ (number as u64).wrapping_mul(0x85EB_CA6B))
        .wrapping_add(i as u64 * 131);
    (mixed ^ (mixed >> 8)) as u8
}

impl Handler for EchoLoad {
    type State = LoadConn;

    fn on_open(&mut self, conn: &mut Conn<'_, LoadConn>) {
        conn.state().number = self.next_number;
        self.next_number += 1;
        match self.interval {
            Some(interval) => self.send_due(conn, interval),
            None => {
                let now = conn.now();
                for _ in 0..self.depth {
                    self.send(conn, now);
                }
            }
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_, LoadConn>) {
        let now = conn.now();
        let Some((completed, received)) = self.verify(conn, now) else {
            self.report.errors += 1;
            conn.abort(CloseReason::ProtocolError);
            return;
        };
        self.report.messages += completed;
        self.report.bytes += received;
        self.in_flight -= completed;
        if self.sending && self.interval.is_none() {
            for _ in 0..completed {
                self.send(conn, now);
            }
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, LoadConn>, _: TimerId, _: u64) {
        if let Some(interval) = self.interval {
            self.send_due(conn, interval);
        }
    }

    fn on_close(
        &mut self,
        _: &mut Ctx<'_, LoadConn>,
        id: ConnId,
        state: LoadConn,
        reason: CloseReason,
    ) {
        if self.sending {
            tracing::error!(%id, %reason, "connection ended during the run");
            self.report.errors += 1;
        }
        self.in_flight -= state.in_flight.len() as u64;
    }
}

fn print_table(args: &EchoLoadArgs, report: &LoadReport) {
    let mode = match args.rate {
        Some(rate) => format!("open loop, {rate:.0} msg/s"),
        None => format!("closed loop, depth {}", args.depth),
    };
    println!(
        "echo {} B x {} conns, {} thread(s), {mode}, {:.1} s",
        args.size,
        args.conns,
        args.threads,
        report.elapsed.as_secs_f64()
    );
    println!("  messages   {:>14}", report.messages);
    println!("  msg/s      {:>14.0}", report.rate());
    println!(
        "  MiB/s      {:>14.1}",
        report.bytes as f64 / report.elapsed.as_secs_f64().max(1e-9) / (1 << 20) as f64
    );
    println!("  errors     {:>14}", report.errors);
    println!(
        "  latency µs     p50 {:>9.1}  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>9.1}",
        report.latency_us(0.5),
        report.latency_us(0.9),
        report.latency_us(0.99),
        report.latency_us(0.999),
        report.latency.max() as f64 / 1000.0,
    );
}

fn report_json(args: &EchoLoadArgs, report: &LoadReport) -> String {
    let rate = args.rate.map_or("null".to_string(), |r| format!("{r}"));
    format!(
        concat!(
            "{{\"workload\":\"echo\",\"target\":\"{}\",\"conns\":{},\"size\":{},\"depth\":{},",
            "\"threads\":{},\"rate\":{},\"elapsed_s\":{:.3},\"messages\":{},\"msgs_per_s\":{:.1},",
            "\"bytes_per_s\":{:.1},\"errors\":{},\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},",
            "\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}}}}"
        ),
        args.target,
        args.conns,
        args.size,
        args.depth,
        args.threads,
        rate,
        report.elapsed.as_secs_f64(),
        report.messages,
        report.rate(),
        report.bytes as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.errors,
        report.latency_us(0.5),
        report.latency_us(0.9),
        report.latency_us(0.99),
        report.latency_us(0.999),
        report.latency.max() as f64 / 1000.0,
        report.latency.mean() / 1000.0,
    )
}
