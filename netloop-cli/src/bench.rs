//! `netloop bench`: starts netloop's own servers in this process on
//! ephemeral 127.0.0.1 ports, drives each with `netloop load` for a few
//! seconds, and prints what it cost: requests per second, latency, server
//! CPU time and syscalls per request, and stale events dropped. It needs no
//! setup and no other program.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use netloop::echo::Echo as EchoHandler;
use netloop::{Handler, Stats};
use netloop_servers::chat::{Chat, Rooms};
use netloop_servers::codec::frame::FrameConfig;
use netloop_servers::codec::http::HttpLimits;
use netloop_servers::codec::resp::RespLimits;
use netloop_servers::http::Hello;
use netloop_servers::kv::{Kv, Store};

use crate::load::{self, ChatFrames, Echo, HttpGet, LoadArgs, LoadReport, RespSetGet, Workload};
use crate::serve::{self, ModeArg, PoolFull, ServeError, ServerArgs, TriggerArg};

/// Options of `netloop bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Server threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// How the server threads share the work.
    #[arg(long, value_enum, default_value_t = ModeArg::Reuseport)]
    mode: ModeArg,
    /// Workloads to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Kind::Echo, Kind::Http, Kind::Resp])]
    workloads: Vec<Kind>,
    /// Requests in flight per connection (pipelining depth), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    depths: Vec<usize>,
    /// Client connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Echo and chat message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

/// The workloads `netloop bench` knows.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `netloop echo` with 64-byte messages.
    Echo,
    /// `netloop http` with `GET /`.
    Http,
    /// `netloop kv` with SET/GET pairs.
    Resp,
    /// `netloop chat` with every frame relayed to every client.
    Chat,
}

/// One measured row.
struct Row {
    label: String,
    depth: usize,
    report: LoadReport,
    cpu_seconds: f64,
    stats: Stats,
}

/// Runs the benchmark and prints its table; fails on any verification error.
pub fn run(args: BenchArgs) -> Result<(), ServeError> {
    if args.mode == ModeArg::Oneshot && args.workloads.contains(&Kind::Chat) {
        return Err(ServeError::Usage(
            "the chat workload relays to every client, which --mode oneshot cannot do; leave chat out of --workloads".into(),
        ));
    }
    let _ = crate::sys::rlimit::raise_nofile_limit();
    println!(
        "netloop bench: {} server thread(s), mode {:?}, {} connections from {} client thread(s), {} s per run",
        args.threads, args.mode, args.conns, args.client_threads, args.duration
    );
    print_header();
    let mut errors = 0;
    for &kind in &args.workloads {
        for &depth in &args.depths {
            let row = run_one(&args, kind, depth)?;
            errors += row.report.errors;
            print_row(&row);
        }
    }
    println!(
        "CPU µs/req is the server threads' user+system time per request; syscalls/req counts the server's\n\
         epoll_wait, read, write and re-arm calls. Client and server share this machine's cores."
    );
    if errors > 0 {
        return Err(ServeError::Verification(errors));
    }
    Ok(())
}

fn run_one(args: &BenchArgs, kind: Kind, depth: usize) -> Result<Row, ServeError> {
    let load = LoadArgs {
        target: "127.0.0.1:0"
            .parse()
            .map_err(|_| ServeError::Usage("address".into()))?,
        conns: args.conns,
        depth,
        duration: args.duration,
        threads: args.client_threads,
        rate: None,
        idle_conns: 0,
        sources: None,
        json: false,
    };
    let http_limits = HttpLimits::default();
    let timeout = Duration::from_secs(10);
    let store = Arc::new(Store::new());
    let resp_limits = RespLimits::default();
    match kind {
        Kind::Echo => measure(
            args,
            format!("echo {} B", args.size),
            load,
            Echo::new(args.size),
            |_| EchoHandler,
        ),
        Kind::Http => measure(args, "http hello".into(), load, HttpGet, move |_| {
            Hello::new(http_limits, timeout)
        }),
        Kind::Resp => measure(
            args,
            "resp set/get".into(),
            load,
            RespSetGet::default(),
            move |_| Kv::new(Arc::clone(&store), resp_limits),
        ),
        Kind::Chat => {
            let rooms = Rooms::default();
            let frames = FrameConfig::default();
            measure(
                args,
                format!("chat {} B", args.size),
                load,
                ChatFrames::new(args.size, args.conns),
                move |_| Chat::new(frames.clone(), 64 << 20, rooms.clone()),
            )
        }
    }
}

/// The server options `netloop bench` runs each server with.
fn server_args(args: &BenchArgs) -> ServerArgs {
    ServerArgs {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        idle_timeout: None,
        max_connections: 16_384,
        pool_full: PoolFull::Close,
        trigger: TriggerArg::Edge,
        stop_timeout: 0.5,
        upgrade_timeout: 10.0,
        send_timeout: 60.0,
        linger_timeout: 5.0,
        threads: Some(args.threads),
        mode: args.mode,
        exclusive: false,
        max_input: None,
        high_water: 1024 * 1024,
    }
}

fn measure<H, F, L>(
    args: &BenchArgs,
    label: String,
    mut load: LoadArgs,
    workload: L,
    make_handler: F,
) -> Result<Row, ServeError>
where
    H: Handler + 'static,
    H::State: Send + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
    L: Workload + Clone,
{
    let depth = load.depth;
    let server = serve::start(&server_args(args), make_handler)?;
    load.target = server.addr;
    let before = server_cpu_ticks();
    let report = load::run_load(&load, workload)?;
    let cpu_ticks = server_cpu_ticks().saturating_sub(before);
    (server.stop)();
    let per_loop = (server.join)()?;
    let mut stats = Stats::default();
    per_loop.iter().for_each(|s| stats.merge(s));
    Ok(Row {
        label,
        depth,
        report,
        cpu_seconds: cpu_ticks as f64 / clock_ticks_per_second(),
        stats,
    })
}

/// User plus system time, in clock ticks, of this process's server threads
/// (named `netloop-<n>`, `netloop-acceptor`, `netloop-oneshot-<n>`; not the
/// load generator's `netloop-load-<n>`).
fn server_cpu_ticks() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let name = &stat[open + 1..close];
            let server = name.starts_with("netloop-")
                && !name.starts_with("netloop-load")
                && !name.starts_with("netloop-progres");
            if !server {
                return None;
            }
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    crate::sys::clock_ticks_per_second() as f64
}

fn print_header() {
    println!(
        "{:<16} {:>5} {:>12} {:>9} {:>9} {:>9} {:>11} {:>13} {:>6} {:>6}",
        "workload",
        "depth",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "CPU µs/req",
        "syscalls/req",
        "stale",
        "errors"
    );
}

fn print_row(row: &Row) {
    let requests = row.report.messages.max(1) as f64;
    let syscalls =
        row.stats.wait_calls + row.stats.read_calls + row.stats.write_calls + row.stats.rearms;
    println!(
        "{:<16} {:>5} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>11.2} {:>13.3} {:>6} {:>6}",
        row.label,
        row.depth,
        row.report.rate(),
        row.report.latency_us(0.5),
        row.report.latency_us(0.99),
        row.report.latency_us(0.999),
        row.cpu_seconds * 1e6 / requests,
        syscalls as f64 / requests,
        row.stats.stale_events,
        row.report.errors,
    );
}
