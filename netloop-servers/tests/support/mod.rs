//! Shared test helpers: a loop running a server on its own thread.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use netloop::{Config, EventLoop, Handler, LoopHandle, Stats};

/// A loop running `handler` on its own thread.
pub struct Running<S: Send + 'static> {
    pub addr: SocketAddr,
    handle: LoopHandle<S>,
    thread: thread::JoinHandle<Stats>,
}

impl<S: Send + 'static> Running<S> {
    pub fn start<H: Handler<State = S> + Send + 'static>(config: Config, handler: H) -> Self {
        // Tests finish with clients still connected; do not wait long for them.
        let config = Config {
            stop_timeout: Duration::from_millis(200),
            ..config
        };
        let mut event_loop = EventLoop::new(config, handler).expect("loop");
        let addr = event_loop
            .listen("127.0.0.1:0".parse().expect("addr"))
            .expect("listen");
        let handle = event_loop.handle();
        let thread = thread::spawn(move || {
            event_loop.run().expect("run");
            event_loop.stats().clone()
        });
        Self {
            addr,
            handle,
            thread,
        }
    }

    pub fn stats(&self) -> Stats {
        let (tx, rx) = mpsc::channel();
        self.handle
            .post(move |ctx| tx.send(ctx.stats().clone()).expect("send"))
            .expect("post");
        rx.recv_timeout(Duration::from_secs(10)).expect("stats")
    }

    pub fn finish(self) -> Stats {
        self.handle.stop().expect("stop");
        self.thread.join().expect("loop thread")
    }
}
