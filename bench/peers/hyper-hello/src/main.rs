//! `hyper-hello`: a hyper HTTP/1.1 server answering every request with
//! `Hello, World!`, a comparison peer for netloop's HTTP server.
//!
//! Connections are kept alive, and pipelined requests are answered in
//! batches (`pipeline_flush`).

use std::convert::Infallible;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use clap::builder::RangedU64ValueParser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};
use tokio::signal::unix::{SignalKind, signal};

/// The body of every response.
const BODY: &[u8] = b"Hello, World!";

/// An HTTP/1.1 hello-world server on hyper.
#[derive(Parser, Debug)]
#[command(name = "hyper-hello", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Worker threads: 1 runs a current-thread runtime, more a multi-thread one.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match runtime(args.threads).and_then(|rt| rt.block_on(serve(args.addr))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper-hello: {e}");
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
async fn serve(addr: SocketAddr) -> io::Result<()> {
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
                    tokio::spawn(connection(stream));
                }
                // E.g. EMFILE or ECONNABORTED: the listener itself is fine.
                Err(e) => eprintln!("hyper-hello: accept: {e}"),
            },
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
}

/// Serves HTTP/1.1 on `stream` until the client closes it.
async fn connection(stream: TcpStream) {
    // Without NODELAY a lone response can wait on the peer's delayed ACK.
    let _ = stream.set_nodelay(true);
    let served = http1::Builder::new()
        .keep_alive(true)
        .pipeline_flush(true)
        .serve_connection(TokioIo::new(stream), service_fn(hello))
        .await;
    // A malformed request or a reset ends only this connection.
    let _ = served;
}

/// Answers any request with `200 OK`, `text/plain`, `Hello, World!`.
async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// Prints the bound address as the only line of stdout, for scripts.
fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()
}
