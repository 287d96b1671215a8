//! Protocol codecs and ready-made servers on the [`netloop`] event core: the
//! handlers behind `netloop chat`, `netloop http` and `netloop kv`, usable
//! from any program.
//!
//! - [`codec`]: pure, I/O-free decoders and encoders for length-prefixed
//!   frames ([`codec::frame`]), RESP2 ([`codec::resp`]) and HTTP/1.1
//!   ([`codec::http`]), each with a `fuzz_decode` entry point for the fuzz
//!   targets.
//! - [`chat`]: frames relayed in order to every client, across loops.
//! - [`http`]: an HTTP/1.1 server answering `200 Hello, World!`.
//! - [`kv`]: an in-memory key-value store speaking RESP2, for `redis-cli`
//!   and `redis-benchmark`.
//! - [`proxy`]: an L4 TCP proxy with upstream groups (round-robin,
//!   least-conn, hash), retries, passive health and the PROXY protocol.
//!
//! Each server is a [`netloop::Handler`], so it runs on an
//! [`EventLoop`](netloop::EventLoop) or a [`Server`](netloop::server::Server)
//! in any of its modes (`chat` needs to reach every client, so not in
//! [`Mode::OneShot`](netloop::server::Mode::OneShot)):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use netloop::{Config, EventLoop};
//! use netloop_servers::codec::http::HttpLimits;
//! use netloop_servers::http::Hello;
//!
//! let hello = Hello::new(HttpLimits::default(), Duration::from_secs(10));
//! let mut event_loop = EventLoop::new(Config::default(), hello)?;
//! event_loop.listen("127.0.0.1:8080".parse().unwrap())?;
//! event_loop.run()?;
//! # Ok::<(), netloop::Error>(())
//! ```
//!
//! A server that closes a connection for bad input says why with
//! [`CloseReason::Protocol`](netloop::CloseReason::Protocol) and a name:
//! `bad_magic` and `frame_too_large` (chat), `http_bad_request` (http),
//! `resp_protocol_error` (kv).

#![warn(missing_docs)]

pub mod chat;
pub mod codec;
pub mod http;
pub mod kv;
pub mod proxy;
