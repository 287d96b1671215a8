//! `netloop`: servers built on the netloop event core.

mod bench;
mod chat;
mod echo;
mod http;
mod kv;
mod load;
mod proxy;
mod serve;
mod stream;
mod sys;
mod upgrade;

use clap::{Parser, Subcommand};

/// netloop: an epoll event core for Linux network servers.
#[derive(Parser, Debug)]
#[command(name = "netloop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmark netloop's own servers in-process: no setup, about a minute.
    Bench(bench::BenchArgs),
    /// Run an echo server: every byte received is sent back.
    Echo(echo::EchoArgs),
    /// Run a chat server: length-prefixed frames relayed to every client.
    Chat(chat::ChatArgs),
    /// Run an HTTP/1.1 server answering every request with "Hello, World!".
    Http(http::HttpArgs),
    /// Run an in-memory key-value server speaking the Redis protocol (RESP2).
    Kv(kv::KvArgs),
    /// Run an L4 TCP proxy in front of an upstream group.
    Proxy(proxy::ProxyArgs),
    /// Generate load against a server and report throughput and latency.
    #[command(subcommand)]
    Load(load::LoadCommand),
}

fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Load(command) => load::run(command),
        Command::Http(args) => http::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Kv(args) => kv::run(args),
        Command::Proxy(args) => proxy::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netloop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so stdout
/// carries only what scripts read: the bound address.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
