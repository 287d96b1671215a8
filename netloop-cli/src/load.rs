//! `netloop load`: a load generator built on netloop's own client side
//! (outbound non-blocking connects on an event loop).
//!
//! Closed loop (`--depth D`): each connection keeps D requests in flight and
//! sends the next one as each response completes; with HTTP or RESP that is
//! pipelining D deep. Open loop (`--rate R`): each request has an intended
//! send time on a fixed schedule and its latency is measured from that time,
//! so a stalled server is charged for the requests it delayed (no
//! coordinated omission). Every response is checked against its request.
//!
//! Every connection is opened before the measurement starts (at most
//! [`MAX_CONNECTING`] connects in flight, so a large `--conns` or
//! `--idle-conns` does not overflow the server's accept queue), from the
//! `--sources` addresses in turn when given. The open-loop schedule runs on
//! the loop's timers, which wait with `epoll_pwait2` to the nanosecond and a
//! 1 ns timer slack; the report gives the client's own lateness (actual
//! against intended send time), so a reader can see it is well below the
//! latencies reported.

mod sources;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use netloop::{CloseReason, Config, Conn, ConnId, Ctx, EventLoop, Handler, TimerId};
use netloop_servers::codec::push_u64;

use crate::serve::ServeError;
use crate::sys::timer_slack::set_minimal_timer_slack;
pub use sources::{Sources, parse_sources};

/// Connects in flight at once while opening.
const MAX_CONNECTING: usize = 256;
/// How long opening every connection may take.
const OPEN_LIMIT: Duration = Duration::from_secs(120);
/// Timer data: send what is due (open loop).
const SEND_DUE: u64 = 0;
/// Timer data: an active connection waiting for the others to open.
const START: u64 = 1;
/// How often a waiting active connection looks whether the run started.
const START_POLL: Duration = Duration::from_millis(5);

/// `netloop load` subcommands.
#[derive(Subcommand, Debug)]
pub enum LoadCommand {
    /// Drive an echo server, checking every byte.
    Echo(EchoLoadArgs),
    /// Drive an HTTP server with `GET /`, checking each `200` response.
    Http(LoadArgs),
    /// Drive a Redis-protocol server with SET/GET pairs, checking each reply.
    Resp(LoadArgs),
    /// Drive the framed chat server: each frame must come back, in order, to
    /// every client.
    Chat(EchoLoadArgs),
    /// Stream bytes one way as fast as the server takes them (to a discard
    /// sink, or with `--read-back` through an echo server).
    Stream(crate::stream::StreamArgs),
}

/// Options every workload takes.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// The server to drive (only this address is contacted).
    #[arg(long)]
    pub target: SocketAddr,
    /// Connections, spread over the threads.
    #[arg(long, default_value_t = 50)]
    pub conns: usize,
    /// Requests in flight per connection (closed loop; pipelining for HTTP/RESP).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Client threads, each with its own event loop.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Open loop: total requests per second on a fixed schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Connections opened besides `--conns` that make one exchange when
    /// they open and then stay silent, held open for the whole run (a crowd
    /// of idle clients).
    #[arg(long, default_value_t = 0)]
    pub idle_conns: usize,
    /// Local addresses to connect from, in turn: `127.0.0.2-127.0.0.9`, or a
    /// comma-separated list (127.0.0.0/8 only). Each gives about 28,000
    /// ports towards one server port.
    #[arg(long, value_parser = parse_sources)]
    pub sources: Option<Sources>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `netloop load echo` and `netloop load chat`.
#[derive(Args, Debug, Clone)]
pub struct EchoLoadArgs {
    #[command(flatten)]
    pub common: LoadArgs,
    /// Message size in bytes (for chat: the payload).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The workload's name.
    pub workload: &'static str,
    /// Requests answered and checked.
    pub messages: u64,
    /// Response bytes received.
    pub bytes: u64,
    /// Wrong responses, unexpected closes and failed connects.
    pub errors: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// Latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Open loop: how late the client itself sent each request (actual
    /// against intended send time), in nanoseconds.
    pub lateness: Histogram<u64>,
    /// Open loop: time between consecutive sends on one connection, in
    /// nanoseconds (bunched sends show as near-zero gaps).
    pub send_gap: Histogram<u64>,
    /// Connections opened (active and idle).
    pub opened: u64,
    /// Time to open every connection, before the measurement began.
    pub open_time: Duration,
}

impl LoadReport {
    fn empty() -> Self {
        Self {
            workload: "",
            messages: 0,
            bytes: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency: new_histogram(),
            lateness: new_histogram(),
            send_gap: new_histogram(),
            opened: 0,
            open_time: Duration::ZERO,
        }
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in microseconds.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// A request/response protocol the generator can drive and check.
pub trait Workload: Send + 'static {
    /// A short name for reports.
    fn name(&self) -> &'static str;

    /// Appends request `sequence` of connection `number` to `out`.
    fn request(&mut self, number: usize, sequence: u64, out: &mut Vec<u8>);

    /// Checks the complete responses at the front of `input`, the first of
    /// which answers request `next`; returns how many completed and how
    /// many bytes they took, or what was wrong.
    fn responses(&mut self, number: usize, next: u64, input: &[u8])
    -> Result<(u64, usize), String>;
}

/// Runs `netloop load …`; fails (non-zero exit) on any verification error.
pub fn run(command: LoadCommand) -> Result<(), ServeError> {
    let (args, report) = match command {
        LoadCommand::Echo(args) => (
            args.common.clone(),
            run_load(&args.common, Echo::new(args.size))?,
        ),
        LoadCommand::Http(args) => (args.clone(), run_load(&args, HttpGet)?),
        LoadCommand::Resp(args) => (args.clone(), run_load(&args, RespSetGet::default())?),
        LoadCommand::Chat(args) => (
            args.common.clone(),
            run_load(&args.common, ChatFrames::new(args.size, args.common.conns))?,
        ),
        LoadCommand::Stream(args) => return crate::stream::run(&args),
    };
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

/// Drives `args.target` with workload `W` and returns what it measured.
pub fn run_load<W: Workload + Clone>(
    args: &LoadArgs,
    workload: W,
) -> Result<LoadReport, ServeError> {
    if args.conns == 0 || args.depth == 0 {
        return Err(ServeError::Usage(
            "--conns and --depth must be positive".into(),
        ));
    }
    let threads = args.threads.clamp(1, args.conns);
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let plan = Plan {
                target: args.target,
                conns: args.conns / threads + usize::from(t < args.conns % threads),
                idle_conns: args.idle_conns / threads + usize::from(t < args.idle_conns % threads),
                first_conn: t * args.conns / threads,
                sources: args.sources.clone().unwrap_or_default().0,
                depth: args.depth,
                interval: args
                    .rate
                    .map(|r| Duration::from_secs_f64(args.conns as f64 / r.max(1e-9))),
                duration,
            };
            let progress = Arc::clone(&progress);
            let workload = workload.clone();
            thread::Builder::new()
                .name(format!("netloop-load-{t}"))
                .spawn(move || drive(plan, workload, &progress))
        })
        .collect::<Result<_, _>>()?;
    let bar = progress_bar(duration, &progress, &done);
    let mut report = LoadReport::empty();
    report.workload = workload.name();
    let mut outcome = Ok(());
    for worker in workers {
        match worker
            .join()
            .map_err(|_| ServeError::Panicked)
            .and_then(|r| r)
        {
            Ok(part) => {
                report.messages += part.messages;
                report.bytes += part.bytes;
                report.errors += part.errors;
                for (sum, add) in [
                    (&mut report.latency, &part.latency),
                    (&mut report.lateness, &part.lateness),
                    (&mut report.send_gap, &part.send_gap),
                ] {
                    sum.add(add).map_err(|e| ServeError::Usage(e.to_string()))?;
                }
                report.elapsed = report.elapsed.max(part.elapsed);
                report.opened += part.opened;
                report.open_time = report.open_time.max(part.open_time);
            }
            Err(e) => outcome = Err(e),
        }
    }
    done.store(true, Ordering::Release);
    if let Some(bar) = bar {
        let _ = bar.join();
    }
    outcome.map(|()| report)
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
                    "{:.0} req/s",
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
    idle_conns: usize,
    first_conn: usize,
    sources: Vec<IpAddr>,
    depth: usize,
    interval: Option<Duration>,
    duration: Duration,
}

/// One client thread: its own loop and connections.
fn drive<W: Workload>(
    plan: Plan,
    workload: W,
    progress: &AtomicU64,
) -> Result<LoadReport, ServeError> {
    if let Err(e) = set_minimal_timer_slack() {
        tracing::warn!(error = %e, "timer slack left at the default: sends may run late");
    }
    let config = Config {
        max_connections: plan.conns + plan.idle_conns + 1,
        ..Config::default()
    };
    let opening = Instant::now();
    let mut event_loop = EventLoop::new(config, Client::new(&plan, workload))?;
    dial_from_loop(&mut event_loop);
    let open_by = opening + OPEN_LIMIT;
    while Instant::now() < open_by && !event_loop.handler().dialer.finished() {
        event_loop.turn(Some(Duration::from_millis(50)))?;
    }
    let open_time = opening.elapsed();
    let started = Instant::now();
    let end = started + plan.duration;
    event_loop.handler_mut().phase = Phase::Running;
    let mut reported = 0;
    while Instant::now() < end && event_loop.connection_count() > 0 {
        event_loop.turn(Some(Duration::from_millis(50)))?;
        let messages = event_loop.handler().report.messages;
        progress.fetch_add(messages - reported, Ordering::Relaxed);
        reported = messages;
    }
    let elapsed = started.elapsed();
    // Stop sending; give what is in flight a moment to come back.
    event_loop.handler_mut().phase = Phase::Draining;
    let grace = Instant::now() + Duration::from_secs(2);
    while Instant::now() < grace && event_loop.handler().in_flight > 0 {
        event_loop.turn(Some(Duration::from_millis(10)))?;
    }
    let handler = event_loop.handler_mut();
    if handler.in_flight > 0 {
        // A server that takes requests and never answers fails the run as
        // surely as one that answers wrongly.
        tracing::error!(
            unanswered = handler.in_flight,
            "requests still unanswered 2 s after the run"
        );
        handler.report.errors += handler.in_flight;
    }
    handler.report.elapsed = elapsed;
    handler.report.open_time = open_time;
    handler.report.opened = handler.dialer.opened;
    Ok(handler.report.clone())
}

/// Starts connects from outside the handler, up to the in-flight limit.
fn dial_from_loop<W: Workload>(event_loop: &mut EventLoop<Client<W>>) {
    while let Some((addr, source, state)) = event_loop.handler_mut().dialer.next() {
        let started = match source {
            Some(ip) => event_loop.connect_from(addr, ip, state),
            None => event_loop.connect(addr, state),
        };
        if let Err(e) = started {
            event_loop.handler_mut().connect_failed(&e);
        }
    }
}

/// Starts connects from a callback, up to the in-flight limit.
fn dial_from_ctx<W: Workload>(client: &mut Client<W>, ctx: &mut Ctx<'_, ClientConn>) {
    while let Some((addr, source, state)) = client.dialer.next() {
        let started = match source {
            Some(ip) => ctx.connect_from(addr, ip, state),
            None => ctx.connect(addr, state),
        };
        if let Err(e) = started {
            client.connect_failed(&e);
        }
    }
}

/// Opens the thread's connections, a bounded number at a time, from the
/// source addresses in turn.
struct Dialer {
    target: SocketAddr,
    sources: Vec<IpAddr>,
    /// Connections to open in all, active ones first.
    total: usize,
    active: usize,
    first_conn: usize,
    started: usize,
    connecting: usize,
    opened: u64,
    failed: u64,
}

impl Dialer {
    /// The next connect to start, if any may start now.
    fn next(&mut self) -> Option<(SocketAddr, Option<IpAddr>, ClientConn)> {
        if self.started >= self.total || self.connecting >= MAX_CONNECTING {
            return None;
        }
        let index = self.started;
        self.started += 1;
        self.connecting += 1;
        let source = (!self.sources.is_empty())
            .then(|| self.sources[(self.first_conn + index) % self.sources.len()]);
        let state = ClientConn {
            number: self.first_conn + index,
            idle: index >= self.active,
            ..ClientConn::default()
        };
        Some((self.target, source, state))
    }

    /// Whether every connection has opened or failed.
    fn finished(&self) -> bool {
        self.started >= self.total && self.connecting == 0
    }
}

/// Where a client thread is in its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connections are opening; nothing is sent yet.
    Opening,
    /// The measurement: active connections send.
    Running,
    /// Time is up: what is in flight may come back, nothing more is sent.
    Draining,
}

/// Per-connection state of the load client.
#[derive(Default)]
pub struct ClientConn {
    number: usize,
    /// One of the `--idle-conns`: sends one request at open, then nothing.
    idle: bool,
    /// Still connecting (counted in the dialer's in-flight connects).
    connected: bool,
    /// Requests sent so far (the next request's sequence number).
    sent: u64,
    /// Responses checked so far.
    answered: u64,
    /// Send time (or intended send time) of each request in flight.
    in_flight: VecDeque<Instant>,
    /// Open loop: the intended time of the next request.
    next_due: Option<Instant>,
    /// Open loop: when the last request actually went out.
    last_sent: Option<Instant>,
}

struct Client<W> {
    workload: W,
    depth: usize,
    interval: Option<Duration>,
    dialer: Dialer,
    phase: Phase,
    in_flight: u64,
    report: LoadReport,
    request: Vec<u8>,
}

impl<W: Workload> Client<W> {
    fn new(plan: &Plan, workload: W) -> Self {
        Self {
            workload,
            depth: plan.depth,
            interval: plan.interval,
            dialer: Dialer {
                target: plan.target,
                sources: plan.sources.clone(),
                total: plan.conns + plan.idle_conns,
                active: plan.conns,
                first_conn: plan.first_conn,
                started: 0,
                connecting: 0,
                opened: 0,
                failed: 0,
            },
            phase: Phase::Opening,
            in_flight: 0,
            report: LoadReport::empty(),
            request: Vec::new(),
        }
    }

    fn connect_failed(&mut self, error: &netloop::Error) {
        tracing::error!(%error, "connect failed");
        self.dialer.connecting -= 1;
        self.dialer.failed += 1;
        self.report.errors += 1;
    }

    /// The run has begun: an active connection starts sending.
    fn start(&mut self, conn: &mut Conn<'_, ClientConn>) {
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

    /// Sends one request stamped `at`.
    fn send(&mut self, conn: &mut Conn<'_, ClientConn>, at: Instant) {
        let state = conn.state();
        let (number, sequence) = (state.number, state.sent);
        state.sent += 1;
        state.in_flight.push_back(at);
        self.in_flight += 1;
        self.request.clear();
        self.workload.request(number, sequence, &mut self.request);
        conn.write(&self.request);
    }

    /// Open loop: sends every request whose intended time has come.
    fn send_due(&mut self, conn: &mut Conn<'_, ClientConn>, interval: Duration) {
        let now = conn.now();
        while self.phase == Phase::Running {
            let due = conn.state().next_due.unwrap_or(now);
            if due > now {
                conn.set_timer(due - now, SEND_DUE);
                return;
            }
            self.send(conn, due);
            self.record_send_time(conn.state(), due);
            conn.state().next_due = Some(due + interval);
        }
    }

    /// Open loop: how late this send is, and how long since the last one.
    fn record_send_time(&mut self, state: &mut ClientConn, due: Instant) {
        let actual = Instant::now();
        let late = actual.saturating_duration_since(due).as_nanos() as u64;
        let _ = self.report.lateness.record(late.max(1));
        if let Some(last) = state.last_sent.replace(actual) {
            let gap = actual.saturating_duration_since(last).as_nanos() as u64;
            let _ = self.report.send_gap.record(gap.max(1));
        }
    }

    /// Checks and consumes the responses in the input, recording the
    /// latency of each; `None` on a wrong response.
    fn check(&mut self, conn: &mut Conn<'_, ClientConn>, now: Instant) -> Option<u64> {
        let parts = conn.parts();
        let (input, state) = (parts.input, parts.state);
        let (completed, used) = match self.workload.responses(
            state.number,
            state.answered,
            input.as_slice(),
        ) {
            Ok(done) => done,
            Err(problem) => {
                tracing::error!(conn = state.number, response = state.answered, %problem, "wrong response");
                return None;
            }
        };
        input.consume(used);
        self.report.bytes += used as u64;
        state.answered += completed;
        for _ in 0..completed {
            if let Some(sent_at) = state.in_flight.pop_front() {
                let nanos = now.saturating_duration_since(sent_at).as_nanos() as u64;
                let _ = self.report.latency.record(nanos.max(1));
            }
        }
        Some(completed)
    }
}

impl<W: Workload> Handler for Client<W> {
    type State = ClientConn;

    fn on_open(&mut self, conn: &mut Conn<'_, ClientConn>) {
        conn.state().connected = true;
        self.dialer.connecting -= 1;
        self.dialer.opened += 1;
        dial_from_ctx(self, conn);
        if conn.state().idle {
            // One exchange, as a client that said hello and went quiet: the
            // server has touched its buffers for this connection once.
            let number = conn.state().number;
            self.request.clear();
            self.workload.request(number, 0, &mut self.request);
            conn.write(&self.request);
            return;
        }
        match self.phase {
            Phase::Opening => {
                conn.set_timer(START_POLL, START);
            }
            Phase::Running => self.start(conn),
            Phase::Draining => {}
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ClientConn>) {
        if conn.state().idle {
            // The answer to its one request (unchecked), or nothing asked for.
            let len = conn.input().len();
            conn.consume(len);
            return;
        }
        let now = conn.now();
        let Some(completed) = self.check(conn, now) else {
            self.report.errors += 1;
            conn.abort(CloseReason::Protocol("bad_response"));
            return;
        };
        self.report.messages += completed;
        self.in_flight -= completed;
        if self.phase == Phase::Running && self.interval.is_none() {
            for _ in 0..completed {
                self.send(conn, now);
            }
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, ClientConn>, _: TimerId, data: u64) {
        match (data, self.phase) {
            (START, Phase::Opening) => {
                conn.set_timer(START_POLL, START);
            }
            (START, Phase::Running) => self.start(conn),
            (_, Phase::Running) => {
                if let Some(interval) = self.interval {
                    self.send_due(conn, interval);
                }
            }
            _ => {}
        }
    }

    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, ClientConn>,
        id: ConnId,
        state: ClientConn,
        reason: CloseReason,
    ) {
        if !state.connected {
            self.dialer.connecting -= 1;
            self.dialer.failed += 1;
            dial_from_ctx(self, ctx);
        }
        if self.phase != Phase::Draining {
            tracing::error!(%id, %reason, "connection ended during the run");
            self.report.errors += 1;
        }
        self.in_flight -= state.in_flight.len() as u64;
    }
}

// ------------------------------------------------------------- workloads

/// Byte `i` of message `sequence` on connection `number`: every message
/// differs, so a byte delivered to the wrong connection or out of order shows.
fn pattern_byte(number: usize, sequence: u64, i: usize) -> u8 {
    let mixed = (sequence.wrapping_mul(0x9E37_79B9) ^ (number as u64).wrapping_mul(0x85EB_CA6B))
        .wrapping_add(i as u64 * 131);
    (mixed ^ (mixed >> 8)) as u8
}

/// Echo: messages of a fixed size, each distinct, must come back verbatim.
///
/// A message is its sequence number and connection number (8 bytes each,
/// little-endian; cut short in messages under 16 bytes) followed by a
/// filler that varies along the message, the same in every message. So a
/// byte delivered to the wrong connection, out of order or shifted shows,
/// and checking a message is a comparison, not per-byte arithmetic: the
/// client keeps up with servers moving megabytes per message.
#[derive(Clone)]
pub struct Echo {
    /// A whole message without its header: `template[HEADER..]` is the filler.
    template: Arc<[u8]>,
}

/// Sequence and connection number at the front of every echo message.
const HEADER: usize = 16;

impl Echo {
    /// Messages of `size` bytes (at least 1).
    pub fn new(size: usize) -> Self {
        let template = (0..size.max(1)).map(|i| pattern_byte(0, 0, i)).collect();
        Self { template }
    }

    /// The header of message `sequence` of connection `number`.
    fn header(number: usize, sequence: u64) -> [u8; HEADER] {
        let mut header = [0; HEADER];
        header[..8].copy_from_slice(&sequence.to_le_bytes());
        header[8..].copy_from_slice(&(number as u64).to_le_bytes());
        header
    }
}

impl Workload for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn request(&mut self, number: usize, sequence: u64, out: &mut Vec<u8>) {
        let size = self.template.len();
        let header = Self::header(number, sequence);
        let cut = size.min(HEADER);
        out.extend_from_slice(&header[..cut]);
        out.extend_from_slice(&self.template[cut..]);
    }

    fn responses(
        &mut self,
        number: usize,
        next: u64,
        input: &[u8],
    ) -> Result<(u64, usize), String> {
        let size = self.template.len();
        let cut = size.min(HEADER);
        let mut completed = 0;
        for message in input.chunks_exact(size) {
            let sequence = next + completed;
            let (head, filler) = message.split_at(cut);
            if head != &Self::header(number, sequence)[..cut] {
                return Err(format!("message {sequence}: wrong header {head:?}"));
            }
            if filler != &self.template[cut..] {
                return Err(format!("message {sequence}: the filler differs"));
            }
            completed += 1;
        }
        Ok((completed, completed as usize * size))
    }
}

/// HTTP: `GET /` with keep-alive; each answer must be a complete `200`.
#[derive(Clone, Copy)]
pub struct HttpGet;

const HTTP_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: netloop-load\r\n\r\n";

impl Workload for HttpGet {
    fn name(&self) -> &'static str {
        "http"
    }

    fn request(&mut self, _: usize, _: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(HTTP_REQUEST);
    }

    fn responses(&mut self, _: usize, _: u64, input: &[u8]) -> Result<(u64, usize), String> {
        let mut completed = 0;
        let mut used = 0;
        while let Some(length) = http_response_len(&input[used..])? {
            used += length;
            completed += 1;
        }
        Ok((completed, used))
    }
}

/// The length of the complete `200` response at the front of `input`.
fn http_response_len(input: &[u8]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(input) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response: {e}")),
    };
    if response.code != Some(200) {
        return Err(format!("status {:?}", response.code));
    }
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or("no Content-Length")?;
    Ok((input.len() >= head + length).then_some(head + length))
}

/// RESP: `SET key value` then `GET key`, alternately, on a key of the
/// connection's own; each GET must return what the SET before it stored.
#[derive(Clone, Default)]
pub struct RespSetGet {
    key: Vec<u8>,
    value: Vec<u8>,
    expected: Vec<u8>,
}

impl RespSetGet {
    /// Fills `self.key` and `self.value` for request `sequence` of `number`.
    fn key_and_value(&mut self, number: usize, sequence: u64) {
        self.key.clear();
        self.key.extend_from_slice(b"netloop-load:");
        push_u64(&mut self.key, number as u64);
        self.value.clear();
        self.value.extend_from_slice(b"value-");
        push_u64(&mut self.value, number as u64);
        self.value.push(b'-');
        push_u64(&mut self.value, sequence / 2);
    }
}

fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_u64(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

impl Workload for RespSetGet {
    fn name(&self) -> &'static str {
        "resp"
    }

    fn request(&mut self, number: usize, sequence: u64, out: &mut Vec<u8>) {
        self.key_and_value(number, sequence);
        if sequence.is_multiple_of(2) {
            out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
            push_bulk(out, &self.key);
            push_bulk(out, &self.value);
        } else {
            out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
            push_bulk(out, &self.key);
        }
    }

    fn responses(
        &mut self,
        number: usize,
        next: u64,
        input: &[u8],
    ) -> Result<(u64, usize), String> {
        let mut completed = 0;
        let mut used = 0;
        loop {
            let rest = &input[used..];
            let sequence = next + completed;
            self.expected.clear();
            if sequence.is_multiple_of(2) {
                self.expected.extend_from_slice(b"+OK\r\n");
            } else {
                self.key_and_value(number, sequence);
                let value = std::mem::take(&mut self.value);
                push_bulk(&mut self.expected, &value);
                self.value = value;
            }
            let expected = &self.expected[..];
            if rest.len() < expected.len() {
                if !expected.starts_with(rest) {
                    return Err(format!("reply {:?}", String::from_utf8_lossy(rest)));
                }
                return Ok((completed, used));
            }
            if !rest.starts_with(expected) {
                return Err(format!(
                    "expected {:?}, got {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&rest[..expected.len()])
                ));
            }
            used += expected.len();
            completed += 1;
        }
    }
}

/// Chat: frames of `size` bytes; each connection's frames come back to
/// every connection, in order. A response is one of this connection's own
/// frames coming back; frames from others are checked for order and skipped.
#[derive(Clone)]
pub struct ChatFrames {
    size: usize,
    /// The next sequence expected from each sender, per receiver (indexed
    /// `receiver * conns + sender`, receivers being this thread's).
    seen: Vec<u64>,
    conns: usize,
}

const CHAT_MAGIC: &[u8; 4] = b"NLOP";

/// No frame seen yet from this sender: a receiver that joined late starts
/// wherever the sender is.
const NOT_YET: u64 = u64::MAX;

impl ChatFrames {
    /// Frames with `size`-byte payloads (at least 12) among `conns` clients.
    pub fn new(size: usize, conns: usize) -> Self {
        Self {
            size: size.max(12),
            seen: vec![NOT_YET; conns * conns],
            conns,
        }
    }
}

impl Workload for ChatFrames {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn request(&mut self, number: usize, sequence: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(CHAT_MAGIC);
        out.extend_from_slice(&(self.size as u32).to_be_bytes());
        out.extend_from_slice(&(number as u32).to_be_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend((12..self.size).map(|i| pattern_byte(number, sequence, i)));
    }

    fn responses(&mut self, number: usize, _: u64, input: &[u8]) -> Result<(u64, usize), String> {
        let frame_len = 8 + self.size;
        let mut own = 0;
        let mut used = 0;
        while input.len() - used >= frame_len {
            let frame = &input[used..used + frame_len];
            if &frame[..4] != CHAT_MAGIC || frame[4..8] != (self.size as u32).to_be_bytes() {
                return Err("bad frame header".into());
            }
            let sender = u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]) as usize;
            let mut sequence_bytes = [0u8; 8];
            sequence_bytes.copy_from_slice(&frame[12..20]);
            let sequence = u64::from_be_bytes(sequence_bytes);
            let slot = number * self.conns + sender;
            let expected = self.seen.get(slot).copied().ok_or("unknown sender")?;
            if expected != NOT_YET && sequence != expected {
                return Err(format!(
                    "from {sender}: frame {sequence}, expected {expected}"
                ));
            }
            if (20..frame_len).any(|i| frame[i] != pattern_byte(sender, sequence, i - 8)) {
                return Err(format!("payload of frame {sequence} from {sender} differs"));
            }
            self.seen[slot] = sequence + 1;
            if sender == number {
                own += 1;
            }
            used += frame_len;
        }
        Ok((own, used))
    }
}

// --------------------------------------------------------------- output

fn print_table(args: &LoadArgs, report: &LoadReport) {
    let mode = match args.rate {
        Some(rate) => format!("open loop, {rate:.0} req/s"),
        None => format!("closed loop, depth {}", args.depth),
    };
    println!(
        "{} against {}: {} conns, {} thread(s), {mode}, {:.1} s",
        report.workload,
        args.target,
        args.conns,
        args.threads,
        report.elapsed.as_secs_f64()
    );
    println!("  requests   {:>14}", report.messages);
    println!("  req/s      {:>14.0}", report.rate());
    println!(
        "  MiB/s in   {:>14.1}",
        report.bytes as f64 / report.elapsed.as_secs_f64().max(1e-9) / (1 << 20) as f64
    );
    println!("  errors     {:>14}", report.errors);
    println!(
        "  latency µs  p50 {:>9.1}  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>9.1}",
        report.latency_us(0.5),
        report.latency_us(0.9),
        report.latency_us(0.99),
        report.latency_us(0.999),
        report.latency.max() as f64 / 1000.0,
    );
    if args.rate.is_some() {
        println!(
            "  own lateness µs  p50 {:>5.1}  p99 {:>9.1}  max {:>9.1}  (client's send time against the schedule)",
            quantile_us(&report.lateness, 0.5),
            quantile_us(&report.lateness, 0.99),
            report.lateness.max() as f64 / 1000.0,
        );
    }
    if args.idle_conns > 0 || args.conns >= 1000 {
        println!(
            "  opened     {:>14}  in {:.2} s",
            report.opened,
            report.open_time.as_secs_f64()
        );
    }
}

fn quantile_us(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn report_json(args: &LoadArgs, report: &LoadReport) -> String {
    let rate = args.rate.map_or("null".to_string(), |r| format!("{r}"));
    format!(
        concat!(
            "{{\"workload\":\"{}\",\"target\":\"{}\",\"conns\":{},\"depth\":{},",
            "\"threads\":{},\"rate\":{},\"elapsed_s\":{:.3},\"messages\":{},\"msgs_per_s\":{:.1},",
            "\"bytes_per_s\":{:.1},\"errors\":{},\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},",
            "\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},",
            "\"lateness_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"max\":{:.1}}},",
            "\"send_gap_us\":{{\"p10\":{:.1},\"p50\":{:.1}}},",
            "\"idle_conns\":{},\"opened\":{},\"open_s\":{:.3}}}"
        ),
        report.workload,
        args.target,
        args.conns,
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
        quantile_us(&report.lateness, 0.5),
        quantile_us(&report.lateness, 0.99),
        report.lateness.max() as f64 / 1000.0,
        quantile_us(&report.send_gap, 0.1),
        quantile_us(&report.send_gap, 0.5),
        args.idle_conns,
        report.opened,
        report.open_time.as_secs_f64(),
    )
}
