//! An L4 TCP proxy (`netloop proxy`): every client gets its own connection
//! to an upstream picked from a group, and bytes are relayed both ways.
//! nginx's stream `proxy_pass` to an upstream group is the reference:
//!
//! - **Balancing** ([`Balance`]): round-robin (default), least-conn, or a
//!   hash of the client's IP.
//! - **Retries**: a connect that is refused, fails or times out is retried
//!   on the next upstream; the client never notices, and is closed
//!   ([`CloseReason::ConnectFailed`]) only once every upstream has failed or
//!   is down.
//! - **Passive health** ([`HealthPolicy`]): `max_fails` failures within
//!   `fail_timeout` skip an upstream for `fail_timeout`.
//! - **Shared state**: health, active-session counts and the round-robin
//!   position live in one [`ProxyShared`] that every loop's [`Proxy`]
//!   holds, so several threads balance as one.
//! - **Relay**: input moves to the partner's output without a copy
//!   ([`Conn::forward_input`]); a side whose output is full pauses its
//!   partner until it drains, so memory stays near the water marks in both
//!   directions. The client is not read before its upstream is up.
//! - **Half-close**: a FIN is passed on after everything before it; the
//!   other direction flows on; the session ends when both are done.
//! - **Errors**: a reset on one side resets the other (SO_LINGER 0) in the
//!   same turn; any other error closes it in the same turn.
//! - **Idle timeout** per session, reset by traffic in either direction; a
//!   client that never sends is closed too.
//! - **PROXY protocol** ([`crate::codec::proxy_protocol`]):
//!   sent first on the upstream connection, before any client byte, with
//!   the client's address and the proxy's listening address; or read
//!   strictly from the client, whose session starts only after a valid
//!   header (a missing or malformed one closes it with
//!   `CloseReason::Protocol("proxy_protocol")`).
//!
//! Every close carries its reason into the loop's [`Stats`](netloop::Stats).
//! The proxy reaches one connection from another's callbacks, so it runs on
//! a loop mode, not [`Mode::OneShot`](netloop::server::Mode::OneShot).
//!
//! ```no_run
//! use std::sync::Arc;
//! use netloop::{Config, EventLoop};
//! use netloop_servers::proxy::{Proxy, ProxyConfig, ProxyShared};
//!
//! let config = ProxyConfig::new(vec!["127.0.0.1:7000".parse().unwrap()]);
//! let loop_config = config.loop_config(Config::default());
//! let shared = Arc::new(ProxyShared::new(config));
//! let mut event_loop = EventLoop::new(loop_config, Proxy::new(shared))?;
//! event_loop.listen("127.0.0.1:7100".parse().unwrap())?;
//! event_loop.run()?;
//! # Ok::<(), netloop::Error>(())
//! ```

mod balancer;
mod health;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netloop::{
    AfterEof, CloseReason, Config, Conn, ConnId, ConnRef, Ctx, Handler, StopStyle, TimerId,
};

use crate::codec::proxy_protocol::{self, ProxyDecoder, ProxyHeader, Version};

pub use balancer::{Attempt, Balance, UpstreamStats, Upstreams};
pub use health::HealthPolicy;

/// Connections a loop's pool holds beyond two per session: room for a
/// retry's new connect while the failed one is still being closed, and for
/// clients refused over the session limit while they are closed.
const POOL_SLACK: usize = 64;

/// What a proxy does; the defaults are nginx's.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The upstream group (at least one).
    pub upstreams: Vec<SocketAddr>,
    /// How a session's upstream is chosen.
    pub balance: Balance,
    /// When an upstream is skipped.
    pub health: HealthPolicy,
    /// How long one connect may take before the next upstream is tried
    /// (nginx `proxy_connect_timeout`, 60 s).
    pub connect_timeout: Duration,
    /// A session that moved no byte either way for this long is closed
    /// (nginx `proxy_timeout`, 600 s); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Client sessions open at once, for the whole proxy; clients beyond
    /// are closed at once ([`CloseReason::PoolFull`]).
    pub max_sessions: usize,
    /// Send a PROXY protocol header of this version first on every
    /// upstream connection.
    pub send_proxy: Option<Version>,
    /// Read a PROXY protocol header from every client before anything
    /// else; a missing or malformed one closes the client.
    pub accept_proxy: bool,
}

/// Why a client that failed the PROXY protocol was closed.
pub const PROXY_PROTOCOL_ERROR: CloseReason = CloseReason::Protocol("proxy_protocol");

/// The most a relay side queues for its peer before the other side pauses.
const RELAY_HIGH_WATER: usize = 16 * 1024;

impl ProxyConfig {
    /// nginx's defaults, for `upstreams`.
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            balance: Balance::default(),
            health: HealthPolicy::default(),
            connect_timeout: Duration::from_secs(60),
            idle_timeout: Some(Duration::from_secs(600)),
            max_sessions: 16_384,
            send_proxy: None,
            accept_proxy: false,
        }
    }

    /// The loop settings a proxy needs, from `base`:
    /// - a pool with room for every session's two connections;
    /// - a full side does not stop its own reading (the relay pauses the
    ///   *partner*), so each direction flows on its own;
    /// - the idle timeout is the session's (kept by the proxy), not each
    ///   connection's, which would close a one-way stream's quiet side;
    /// - a graceful stop lets open sessions finish
    ///   ([`StopStyle::LetFinish`]);
    /// - this config's connect timeout;
    /// - a side is full once about one standard buffer (16 KiB) waits for
    ///   its peer, as nginx's `proxy_buffer_size`: the other side is paused
    ///   then, so each direction's buffers stay at the pool's standard size
    ///   and are reused, never grown and given back to the system (at 1 MiB
    ///   a bulk relay spent over 40 % of its CPU faulting pages in again).
    ///   `base` can lower the mark, not raise it.
    pub fn loop_config(&self, base: Config) -> Config {
        Config {
            high_water: base.high_water.min(RELAY_HIGH_WATER),
            low_water: base.low_water.min(RELAY_HIGH_WATER / 4),
            max_connections: self
                .max_sessions
                .saturating_mul(2)
                .saturating_add(POOL_SLACK),
            pause_when_full: false,
            idle_timeout: None,
            stop_style: StopStyle::LetFinish,
            connect_timeout: self.connect_timeout,
            ..base
        }
    }
}

/// Counters of the whole proxy, shared by its loops.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Client sessions open now.
    pub sessions: AtomicUsize,
    /// Client sessions begun.
    pub sessions_total: AtomicU64,
    /// Clients closed at once because `max_sessions` were open.
    pub refused: AtomicU64,
    /// Connects retried on another upstream.
    pub retries: AtomicU64,
    /// Clients closed because every upstream failed or was down.
    pub no_upstream: AtomicU64,
}

/// The state every loop of one proxy shares (nginx's `zone`): the upstream
/// group with its health, counts and round-robin position, and the counters.
#[derive(Debug)]
pub struct ProxyShared {
    config: ProxyConfig,
    upstreams: Upstreams,
    counters: ProxyCounters,
}

impl ProxyShared {
    /// The shared state for `config`.
    pub fn new(config: ProxyConfig) -> Self {
        let upstreams = Upstreams::new(&config.upstreams, config.balance, config.health);
        Self {
            config,
            upstreams,
            counters: ProxyCounters::default(),
        }
    }

    /// The upstream group.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The proxy's counters.
    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }

    /// Counts a new session, unless `max_sessions` are open.
    fn begin_session(&self) -> bool {
        let max = self.config.max_sessions;
        let admitted = self
            .counters
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        let counter = if admitted {
            &self.counters.sessions_total
        } else {
            &self.counters.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        admitted
    }

    fn end_session(&self) {
        let _ = self
            .counters
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// A proxy connection's state: which end of a session it is.
#[derive(Debug, Default)]
pub enum Side {
    /// Accepted, not yet a session: until its `on_open`, or for good if it
    /// was refused.
    #[default]
    Unpaired,
    /// A client.
    Client(Client),
    /// The connection made for a client.
    Upstream(UpstreamEnd),
}

/// A client's end of a session.
#[derive(Debug)]
pub struct Client {
    stage: Stage,
    /// The client's address: the hash key, and the PROXY header's source.
    source: SocketAddr,
    /// When the client last sent a byte.
    last_active: Instant,
    /// Input arrived behind the PROXY header it sent: relayed once the
    /// upstream is up, without waiting for more.
    buffered: bool,
}

/// Where a client's session is.
#[derive(Debug)]
enum Stage {
    /// Reading the client's PROXY header; no upstream yet.
    Header(ProxyDecoder),
    /// Waiting for upstream `upstream` (try `attempt`) to connect; the
    /// client is not read meanwhile.
    Connecting { upstream: ConnId, attempt: Attempt },
    /// Relaying to and from `upstream`.
    Relaying { upstream: ConnId },
}

/// An upstream's end of a session.
#[derive(Debug)]
pub struct UpstreamEnd {
    client: ConnId,
    /// Its index in the group.
    index: usize,
    link: Link,
    /// When the upstream last sent a byte.
    last_active: Instant,
}

/// Whether an upstream connection is up yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Connecting,
    Up,
}

impl Side {
    /// The other end of the session, once there is one to relay to.
    fn partner(&self) -> Option<ConnId> {
        match self {
            Side::Client(Client {
                stage: Stage::Relaying { upstream },
                ..
            }) => Some(*upstream),
            Side::Upstream(end) if end.link == Link::Up => Some(end.client),
            _ => None,
        }
    }

    fn touch(&mut self, now: Instant) {
        match self {
            Side::Client(client) => client.last_active = now,
            Side::Upstream(end) => end.last_active = now,
            Side::Unpaired => {}
        }
    }
}

/// `on_timer` data: the client's idle check.
const IDLE_CHECK: u64 = 0;
/// `on_timer` data: relay what the client sent behind its PROXY header.
const RELAY_BUFFERED: u64 = 1;

/// The proxy handler; one per loop, all holding the same [`ProxyShared`].
pub struct Proxy {
    shared: Arc<ProxyShared>,
}

impl Proxy {
    /// A loop's handler for the proxy whose shared state is `shared`.
    pub fn new(shared: Arc<ProxyShared>) -> Self {
        Self { shared }
    }

    /// The state shared by the proxy's loops.
    pub fn shared(&self) -> &Arc<ProxyShared> {
        &self.shared
    }

    /// A client arrived: a session begins, or it is refused.
    fn open_client(&mut self, conn: &mut Conn<'_, Side>) {
        if !self.shared.begin_session() {
            conn.abort(CloseReason::PoolFull);
            return;
        }
        let source = conn
            .peer_addr()
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        if let Some(idle) = self.shared.config.idle_timeout {
            conn.set_timer(idle, IDLE_CHECK);
        }
        if self.shared.config.accept_proxy {
            *conn.state() = Side::Client(Client {
                stage: Stage::Header(ProxyDecoder::default()),
                source,
                last_active: conn.now(),
                buffered: false,
            });
            return;
        }
        // Not read until its upstream is up: what it sends meanwhile waits
        // in the kernel, and its FIN cannot overtake the connect.
        conn.pause_reading();
        let id = conn.id();
        if let Err(reason) = self.dial(conn, id, source, None) {
            // Still `Unpaired`: its `on_close` will not end the session.
            self.shared.end_session();
            conn.abort(reason);
        }
    }

    /// Starts the connect for `client` to the first upstream (`after` is
    /// `None`) or the next one after `after`, going on past upstreams that
    /// refuse at once. Records the try in the client's state.
    fn dial(
        &self,
        ctx: &mut Ctx<'_, Side>,
        client: ConnId,
        source: SocketAddr,
        after: Option<Attempt>,
    ) -> Result<(), CloseReason> {
        let upstreams = &self.shared.upstreams;
        let now = ctx.now();
        let mut attempt = match after {
            None => upstreams.pick(source.ip(), now),
            Some(failed) => self.retry(failed, now),
        };
        while let Some(current) = attempt {
            let index = current.index();
            let Some(addr) = upstreams.addr(index) else {
                break;
            };
            let end = UpstreamEnd {
                client,
                index,
                link: Link::Connecting,
                last_active: now,
            };
            match ctx.connect(addr, Side::Upstream(end)) {
                Ok(upstream) => {
                    upstreams.started(index);
                    let stage = Stage::Connecting {
                        upstream,
                        attempt: current,
                    };
                    let mut client_conn = ctx.conn(client).map_err(|_| CloseReason::Closed)?;
                    let new_client = Client {
                        stage,
                        source,
                        last_active: now,
                        buffered: false,
                    };
                    match client_conn.state() {
                        Side::Client(c) => c.stage = new_client.stage,
                        state => *state = Side::Client(new_client),
                    }
                    return Ok(());
                }
                // Refused at once (loopback refuses inside `connect`).
                Err(netloop::Error::Io(_)) => {
                    upstreams.failed(index, now);
                    attempt = self.retry(current, now);
                }
                // Pool full, or the loop is stopping: not the upstream's fault.
                Err(_) => return Err(CloseReason::ConnectFailed),
            }
        }
        self.shared
            .counters
            .no_upstream
            .fetch_add(1, Ordering::Relaxed);
        Err(CloseReason::ConnectFailed)
    }

    fn retry(&self, failed: Attempt, now: Instant) -> Option<Attempt> {
        let next = self.shared.upstreams.retry(failed, now);
        if next.is_some() {
            self.shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        next
    }

    /// An upstream connected: its health is good, and its client's session
    /// starts relaying.
    fn upstream_up(&mut self, conn: &mut Conn<'_, Side>) {
        let upstream = conn.id();
        let now = conn.now();
        let Side::Upstream(end) = conn.state() else {
            return;
        };
        end.link = Link::Up;
        let (client, index) = (end.client, end.index);
        self.shared.upstreams.connected(index, now);
        let Ok(mut client_conn) = conn.conn(client) else {
            conn.abort(CloseReason::Closed);
            return;
        };
        let Side::Client(c) = client_conn.state() else {
            return;
        };
        c.stage = Stage::Relaying { upstream };
        let (source, buffered) = (c.source, c.buffered);
        let header = self
            .shared
            .config
            .send_proxy
            .map(|version| proxy_header(version, source, &client_conn));
        if buffered {
            // Read already, so no readiness will announce it.
            client_conn.set_timer(Duration::ZERO, RELAY_BUFFERED);
        }
        client_conn.resume_reading();
        // First on the connection: no client byte has been relayed yet,
        // since the client was not read before this.
        if let Some(header) = header {
            conn.write(&header);
        }
    }

    /// The client sent (part of) its PROXY header: once it is complete, the
    /// session starts with the address it names.
    fn read_header(&self, conn: &mut Conn<'_, Side>, mut decoder: ProxyDecoder) {
        let decoded = decoder.decode(conn.input());
        let source = match decoded {
            Ok(None) => {
                if let Side::Client(c) = conn.state() {
                    c.stage = Stage::Header(decoder);
                }
                return;
            }
            Err(_) => return conn.abort(PROXY_PROTOCOL_ERROR),
            Ok(Some(decoded)) => {
                conn.consume(decoded.len);
                match decoded.header {
                    ProxyHeader::Proxied { source, .. } => Some(source),
                    ProxyHeader::Local => None,
                }
            }
        };
        let buffered = !conn.input().is_empty();
        let id = conn.id();
        let Side::Client(c) = conn.state() else {
            return;
        };
        c.buffered = buffered;
        let source = source.unwrap_or(c.source);
        c.source = source;
        conn.pause_reading();
        if let Err(reason) = self.dial(conn, id, source, None) {
            conn.abort(reason);
        }
    }

    /// The client's idle check: closes the session if neither side sent a
    /// byte for the idle timeout, or checks again when that could be.
    fn idle_check(&self, conn: &mut Conn<'_, Side>) {
        let Some(idle) = self.shared.config.idle_timeout else {
            return;
        };
        let now = conn.now();
        let (client_last, upstream) = match conn.state() {
            Side::Client(c) => (c.last_active, c.stage.upstream()),
            _ => return,
        };
        let upstream_last = upstream
            .and_then(|upstream| conn.conn(upstream).ok())
            .and_then(|mut u| match u.state() {
                Side::Upstream(end) => Some(end.last_active),
                _ => None,
            });
        let last = upstream_last.map_or(client_last, |u| u.max(client_last));
        let quiet = now.saturating_duration_since(last);
        if quiet >= idle {
            conn.abort(CloseReason::IdleTimeout);
        } else {
            conn.set_timer(idle.saturating_sub(quiet), IDLE_CHECK);
        }
    }

    /// An upstream connection closed before it connected: counted against
    /// its health, and the client tries the next upstream.
    fn connect_failed(&self, ctx: &mut Ctx<'_, Side>, upstream: ConnId, end: &UpstreamEnd) {
        let now = ctx.now();
        self.shared.upstreams.failed(end.index, now);
        let Ok(mut client) = ctx.conn(end.client) else {
            return;
        };
        let (attempt, source) = match client.state() {
            Side::Client(Client {
                stage:
                    Stage::Connecting {
                        upstream: u,
                        attempt,
                    },
                source,
                ..
            }) if *u == upstream => (*attempt, *source),
            _ => return,
        };
        if let Err(reason) = self.dial(ctx, end.client, source, Some(attempt))
            && let Ok(mut client) = ctx.conn(end.client)
        {
            client.abort(reason);
        }
    }
}

impl Stage {
    fn upstream(&self) -> Option<ConnId> {
        match self {
            Stage::Header(_) => None,
            Stage::Connecting { upstream, .. } | Stage::Relaying { upstream } => Some(*upstream),
        }
    }
}

/// The PROXY header for a session of `client`, from `source`: its
/// destination is the address the client connected to, the proxy's
/// listening address.
fn proxy_header(version: Version, source: SocketAddr, client: &ConnRef<'_, Side>) -> Vec<u8> {
    let destination = client
        .try_clone_fd()
        .ok()
        .and_then(|fd| socket2::SockRef::from(&fd).local_addr().ok())
        .and_then(|addr| addr.as_socket())
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let mut header = Vec::with_capacity(64);
    proxy_protocol::encode(version, source, destination, &mut header);
    header
}

impl Handler for Proxy {
    type State = Side;

    fn on_open(&mut self, conn: &mut Conn<'_, Side>) {
        match conn.state() {
            Side::Unpaired => self.open_client(conn),
            Side::Upstream(_) => self.upstream_up(conn),
            Side::Client(_) => {}
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_, Side>) {
        let now = conn.now();
        let state = conn.state();
        state.touch(now);
        if let Side::Client(Client {
            stage: Stage::Header(decoder),
            ..
        }) = state
        {
            let decoder = *decoder;
            return self.read_header(conn, decoder);
        }
        relay(conn);
    }

    /// Half-close, as nginx's `proxy_half_close`: the FIN goes on to the
    /// partner after every byte before it, and the other direction flows
    /// on; each side closes once both of its halves are done.
    fn on_eof(&mut self, conn: &mut Conn<'_, Side>) -> AfterEof {
        if let Side::Client(Client {
            stage: Stage::Header(_),
            ..
        }) = conn.state()
        {
            // The stream ended before its header did.
            conn.abort(PROXY_PROTOCOL_ERROR);
            return AfterEof::Close;
        }
        relay(conn);
        if let Some(Ok(mut partner)) = conn.state().partner().map(|id| conn.conn(id)) {
            partner.shutdown();
        }
        AfterEof::KeepWriting
    }

    /// This side's output drained to the low-water mark: its partner, paused
    /// for it, may be read again.
    fn on_drained(&mut self, conn: &mut Conn<'_, Side>) {
        if let Some(Ok(mut partner)) = conn.state().partner().map(|id| conn.conn(id)) {
            partner.resume_reading();
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, Side>, _: TimerId, data: u64) {
        match data {
            IDLE_CHECK => self.idle_check(conn),
            RELAY_BUFFERED => relay(conn),
            _ => {}
        }
    }

    /// A session lives and dies together: after a clean end the partner
    /// delivers what it holds and closes; after an error it is closed at
    /// once, in the same turn. A connect that failed is retried instead.
    fn on_close(&mut self, ctx: &mut Ctx<'_, Side>, id: ConnId, side: Side, reason: CloseReason) {
        match side {
            Side::Unpaired => {}
            Side::Client(client) => {
                self.shared.end_session();
                if let Some(upstream) = client.stage.upstream() {
                    close_partner(ctx, upstream, reason);
                }
            }
            Side::Upstream(end) => {
                self.shared.upstreams.ended(end.index);
                let failed_connect = matches!(
                    reason,
                    CloseReason::ConnectFailed | CloseReason::ConnectTimeout
                );
                if end.link == Link::Connecting && failed_connect {
                    self.connect_failed(ctx, id, &end);
                } else {
                    close_partner(ctx, end.client, reason);
                }
            }
        }
    }
}

/// Moves the input to the partner's output; once that output is full, this
/// side stops being read until the partner drains (`on_drained`).
fn relay(conn: &mut Conn<'_, Side>) {
    let Some(to) = conn.state().partner() else {
        return;
    };
    match conn.forward_input(to) {
        Ok(_) if conn.conn(to).is_ok_and(|target| target.is_full()) => conn.pause_reading(),
        Ok(_) => {}
        // The partner is gone; there is no one to relay to.
        Err(_) => conn.abort(CloseReason::Closed),
    }
}

/// Ends `partner` because its side of the session ended for `reason`.
fn close_partner(ctx: &mut Ctx<'_, Side>, partner: ConnId, reason: CloseReason) {
    let Ok(mut partner) = ctx.conn(partner) else {
        return;
    };
    match reason {
        // Both directions finished: deliver what is left, then close.
        CloseReason::PeerClosed => partner.close(),
        // The peer reset: so is the partner, as nginx and HAProxy do.
        CloseReason::Reset => {
            set_reset_on_close(&partner);
            partner.abort(CloseReason::Closed);
        }
        // The session's own reasons, for the partner too.
        CloseReason::IdleTimeout | CloseReason::Shutdown => partner.abort(reason),
        _ => partner.abort(CloseReason::Closed),
    }
}

/// Makes closing `conn` send RST instead of FIN (`SO_LINGER` 0). A
/// duplicate descriptor reaches the same socket, whose options it shares.
fn set_reset_on_close(conn: &ConnRef<'_, Side>) {
    if let Ok(fd) = conn.try_clone_fd() {
        let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
    }
}
