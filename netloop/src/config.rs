//! A loop's settings.

use std::time::Duration;

/// How connections are registered with epoll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Trigger {
    /// Edge-triggered: registered once for read and write, never modified.
    #[default]
    Edge,
    /// Level-triggered: write interest is armed only while output is queued.
    Level,
}

/// What to do with a new connection when the pool is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PoolFullPolicy {
    /// Accept it and close it at once, counted as
    /// [`CloseReason::PoolFull`](crate::CloseReason::PoolFull) (the client
    /// sees a clean close instead of a hang).
    #[default]
    AcceptAndClose,
    /// Stop accepting until a slot frees; new connections wait in the
    /// kernel's backlog.
    LeaveInBacklog,
}

/// What a graceful stop does to the connections that are open when it begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StopStyle {
    /// Input is no longer handed to the handler (it is read and dropped),
    /// and FIN follows the queued output: right for request/response
    /// servers, whose answers are in the output already.
    #[default]
    FinAfterOutput,
    /// Connections are left as they are, served until they end on their
    /// own; only accepting stops. The stop deadline closes the rest
    /// ([`CloseReason::Shutdown`](crate::CloseReason::Shutdown)). A relay
    /// needs this: dropping one side's input and sending FIN to the other
    /// would pass a truncated stream off as a complete one.
    LetFinish,
}

/// A loop's settings. Start from `Config::default()` and change fields.
///
/// ```
/// use std::time::Duration;
/// let config = netloop::Config {
///     max_connections: 1_000,
///     idle_timeout: Some(Duration::from_secs(30)),
///     ..netloop::Config::default()
/// };
/// assert!(config.low_water < config.high_water);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// The pool size: connections open at once.
    pub max_connections: usize,
    /// Events taken per `epoll_wait`.
    pub events_capacity: usize,
    /// Edge- or level-triggered registration.
    pub trigger: Trigger,
    /// Bytes read from one connection per readiness before others get a
    /// turn; the posted stage at the end of the turn reads up to as much
    /// again, and what is left waits for the next turn.
    /// Default 64 KiB, one bulk read (with the default `buffer_size`,
    /// 16 KiB, a bulk buffer is 64 KiB): a stream beside many small
    /// request/response clients then holds the loop for one read and its
    /// echo or relay per turn, which kept the small clients' p99 within
    /// 1.2× of their p99 alone (256 KiB let it reach 2.5×) at no
    /// measurable cost to the stream (`bench/fairness.sh`,
    /// `bench/compare.sh` bulk rows).
    pub read_budget: usize,
    /// The standard buffer size, and the smallest read.
    pub buffer_size: usize,
    /// Unconsumed input above this closes the connection
    /// ([`CloseReason::InputLimit`](crate::CloseReason::InputLimit)).
    pub max_input: usize,
    /// Queued output above this makes a connection *full*
    /// ([`ConnRef::is_full`](crate::ConnRef::is_full)) until it is back down
    /// to `low_water`; then [`Handler::on_drained`](crate::Handler::on_drained)
    /// is called. A connection can have its own marks instead
    /// ([`ConnRef::set_water_marks`](crate::ConnRef::set_water_marks)).
    /// At most 4 GiB - 1 counts (a connection keeps its marks in 32 bits).
    pub high_water: usize,
    /// See `high_water`.
    pub low_water: usize,
    /// Stop reading a connection while its own output is full. Right for
    /// request/response protocols, where reading one connection makes output
    /// for that same connection; a relay turns it off and pauses the *other*
    /// side instead ([`ConnRef::pause_reading`](crate::ConnRef::pause_reading)),
    /// so that each direction flows on its own.
    pub pause_when_full: bool,
    /// Close connections silent for this long
    /// ([`CloseReason::IdleTimeout`](crate::CloseReason::IdleTimeout)).
    pub idle_timeout: Option<Duration>,
    /// What to do with connections beyond `max_connections`.
    pub pool_full: PoolFullPolicy,
    /// How long to stop accepting after EMFILE/ENFILE.
    pub accept_backoff: Duration,
    /// Connections accepted per listener readiness.
    pub accepts_per_event: usize,
    /// How long a graceful stop lets connections drain.
    pub stop_timeout: Duration,
    /// What a graceful stop does to open connections.
    pub stop_style: StopStyle,
    /// How long an outbound connect may take
    /// ([`CloseReason::ConnectTimeout`](crate::CloseReason::ConnectTimeout)).
    pub connect_timeout: Duration,
    /// How long a connection closed with output still queued may take to
    /// deliver it before it is closed anyway (nginx's `send_timeout`).
    pub close_timeout: Duration,
    /// Close a connection whose queued output made no progress for this
    /// long: the kernel refused every write in that time because the peer
    /// does not read (nginx's `send_timeout`), closed as
    /// [`CloseReason::SendTimeout`](crate::CloseReason::SendTimeout). A slow
    /// reader cannot hold a slot forever. `None` waits for ever.
    pub send_timeout: Option<Duration>,
    /// After a close asked for while the peer may still send (a
    /// [`ConnRef::close`](crate::ConnRef::close) after a last response), send
    /// FIN once the output is delivered, then read and discard the peer's
    /// input for at most this long before closing the socket (nginx's
    /// `lingering_close`/`lingering_time`). Closing with unread input makes
    /// the kernel send RST, which can destroy the response before the peer
    /// reads it. `None` closes as soon as the output is delivered.
    pub linger_timeout: Option<Duration>,
    /// Discarded input after which a lingering connection is closed anyway.
    pub linger_bytes: usize,
    /// Set `TCP_NODELAY` on accepted and outbound connections.
    pub nodelay: bool,
    /// Spare buffers kept for reuse.
    pub spare_buffers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            events_capacity: 1024,
            trigger: Trigger::Edge,
            read_budget: 64 * 1024,
            buffer_size: 16 * 1024,
            max_input: 16 * 1024 * 1024,
            high_water: 1024 * 1024,
            low_water: 256 * 1024,
            pause_when_full: true,
            idle_timeout: None,
            pool_full: PoolFullPolicy::AcceptAndClose,
            accept_backoff: Duration::from_millis(200),
            accepts_per_event: 64,
            stop_timeout: Duration::from_secs(5),
            stop_style: StopStyle::FinAfterOutput,
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(30),
            send_timeout: Some(Duration::from_secs(60)),
            linger_timeout: Some(Duration::from_secs(5)),
            linger_bytes: 256 * 1024,
            nodelay: true,
            spare_buffers: 1024,
        }
    }
}
