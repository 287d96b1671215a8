//! `tokio-echo`: the canonical tokio echo server, a comparison peer for
//! `netloop echo`.
//!
//! Every connection is a task with a 16 KiB buffer that reads and then
//! `write_all`s the same bytes back.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};
use tokio::signal::unix::{SignalKind, signal};

/// Bytes read from a connection at a time.
const BUFFER_SIZE: usize = 16 * 1024;

/// An echo server on tokio: every byte received is sent back.
#[derive(Parser, Debug)]
#[command(name = "tokio-echo", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Worker threads: 1 runs a current-thread runtime, more a multi-thread one.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    threads: usize,
    /// Read and drop everything instead of echoing it (the sink of a
    /// one-way stream).
    #[arg(long)]
    discard: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match runtime(args.threads).and_then(|rt| rt.block_on(serve(args.addr, args.discard))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A current-thread runtime for one thread, a multi-thread one for more.
fn runtime(threads: usize) -> io::Result<Runtime> {
    let mut builder = if threads == 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

/// Accepts connections on `addr` until SIGINT or SIGTERM.
async fn serve(addr: SocketAddr, discard: bool) -> io::Result<()> {
    // Installed before announcing, so a signal sent right after the
    // announcement is never missed.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let listener = TcpListener::bind(addr).await?;
    announce(listener.local_addr()?)?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        // A reset or a broken pipe ends only this connection.
                        let _ = echo(stream, discard).await;
                    });
                }
                // E.g. EMFILE or ECONNABORTED: the listener itself is fine.
                Err(e) => eprintln!("tokio-echo: accept: {e}"),
            },
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
}

/// Echoes everything `stream` sends until it closes (or drops it, with `discard`).
async fn echo(mut stream: TcpStream, discard: bool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0; BUFFER_SIZE];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if !discard {
            stream.write_all(&buf[..n]).await?;
        }
    }
}

/// Prints the bound address as the only line of stdout, for scripts.
fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()
}
