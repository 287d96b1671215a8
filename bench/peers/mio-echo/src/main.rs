//! `mio-echo`: an edge-triggered echo server on mio, a comparison peer for
//! `netloop echo`.
//!
//! Each connection is registered once for READABLE | WRITABLE and never
//! reregistered. On any readiness it is read until WouldBlock and written
//! back as far as the socket takes; what does not fit stays queued until the
//! next WRITABLE edge. With `--threads N` there are N independent loops, each
//! with its own `Poll` and its own SO_REUSEPORT listener on the same port.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::{self, ExitCode};
use std::thread;

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

/// The listener's token; connections use their slab keys.
const LISTENER: Token = Token(usize::MAX);
/// Bytes read from a socket at a time.
const READ_SIZE: usize = 64 * 1024;
/// Queued output above which a connection is not read until it drains, so a
/// client that sends without reading cannot grow it without bound.
const HIGH_WATER: usize = 1024 * 1024;

/// An edge-triggered echo server on mio: every byte received is sent back.
#[derive(Parser, Debug)]
#[command(name = "mio-echo", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Independent event loops, each with its own SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    threads: usize,
    /// Read and drop everything instead of echoing it (the sink of a
    /// one-way stream).
    #[arg(long)]
    discard: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mio-echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every listener, starts the loops, and exits 0 on SIGINT or SIGTERM.
fn run(args: &Args) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let first = bind(args.addr)?;
    // With port 0 the others must share the port the first one got.
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..args.threads {
        listeners.push(bind(addr)?);
    }
    let discard = args.discard;
    for (i, listener) in listeners.into_iter().enumerate() {
        thread::Builder::new()
            .name(format!("mio-echo-{i}"))
            .spawn(move || {
                if let Err(e) = event_loop(listener, discard) {
                    eprintln!("mio-echo: loop {i}: {e}");
                    process::exit(1);
                }
            })?;
    }
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    // Blocks until a signal arrives; the loops hold no state worth draining.
    signals.forever().next();
    process::exit(0)
}

/// A nonblocking SO_REUSEADDR | SO_REUSEPORT listener on `addr`.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// One connection: its socket and the output it still owes.
struct Conn {
    stream: TcpStream,
    /// Received bytes; those before `sent` have been written back.
    queued: Vec<u8>,
    sent: usize,
    /// The peer has closed its side: close once `queued` drains.
    eof: bool,
}

impl Conn {
    /// Reads and echoes until the socket would block either way. Returns
    /// whether the connection stays open.
    fn drive(&mut self, scratch: &mut [u8], discard: bool) -> io::Result<bool> {
        loop {
            while self.sent < self.queued.len() {
                match self.stream.write(&self.queued[self.sent..]) {
                    Ok(0) => return Ok(false),
                    Ok(n) => self.sent += n,
                    // The WRITABLE edge that follows resumes this loop.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if self.sent == self.queued.len() {
                self.queued.clear();
                self.sent = 0;
            }
            if self.eof {
                return Ok(!self.queued.is_empty());
            }
            if self.queued.len() - self.sent >= HIGH_WATER {
                return Ok(true);
            }
            match self.stream.read(scratch) {
                Ok(0) => self.eof = true,
                Ok(_) if discard => {}
                Ok(n) => self.queued.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Runs one event loop on `listener` forever.
fn event_loop(mut listener: TcpListener, discard: bool) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut scratch = vec![0; READ_SIZE];
    loop {
        // A signal handler running on this thread interrupts the wait.
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(e);
        }
        for event in &events {
            let Token(key) = event.token();
            if event.token() != LISTENER {
                // Closing the socket also removes it from epoll: no deregister.
                if let Some(conn) = conns.get_mut(key)
                    && !matches!(conn.drive(&mut scratch, discard), Ok(true))
                {
                    conns.remove(key);
                }
                continue;
            }
            loop {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                    // E.g. EMFILE: retried on the next connection's edge.
                    Err(e) => {
                        eprintln!("mio-echo: accept: {e}");
                        break;
                    }
                };
                // A connection already reset may refuse NODELAY; it still works.
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                match poll
                    .registry()
                    .register(&mut stream, Token(entry.key()), interest)
                {
                    Ok(()) => {
                        let (queued, sent, eof) = (Vec::new(), 0, false);
                        entry.insert(Conn {
                            stream,
                            queued,
                            sent,
                            eof,
                        });
                    }
                    Err(e) => eprintln!("mio-echo: register: {e}"),
                }
            }
        }
    }
}
