//! One connection as the loop keeps it in its pool slot: the socket, its
//! buffers, the user's state, and where it is in its life.
//!
//! Life is three separate things, each a small state machine:
//! - [`Phase`]: connecting, open, stopping with the loop, closing, or
//!   lingering after the close (reading and discarding until the peer is
//!   done);
//! - [`ReadSide`]: open until the peer's FIN, and what to do after it;
//! - [`WriteSide`]: open, FIN wanted once the output drains, or FIN sent.
//!
//! Reading is further held off by [`ReadHolds`]: the loop's own
//! backpressure and the handler's pause are separate holds, so one's
//! release never undoes the other's.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::buffer::{Buffer, BufferPool};
use crate::close_reason::CloseReason;
use crate::stats::Stats;
use crate::sys::socket;
use crate::timer::TimerId;

/// Whether this kernel reports `EPOLLRDHUP`, probed once per process (as
/// nginx does). When it does, a short read proves the socket empty.
pub fn rdhup_supported() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(socket::probe_rdhup)
}

/// What happens to a connection once its peer has sent FIN; the handler's
/// answer from [`Handler::on_eof`](crate::Handler::on_eof).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AfterEof {
    /// Deliver the queued output, then close
    /// ([`CloseReason::PeerClosed`]).
    #[default]
    Close,
    /// Keep the connection open for writing (half-close, as nginx's
    /// `proxy_half_close`). It closes once our side is shut too:
    /// [`ConnRef::shutdown`](crate::ConnRef::shutdown) sends FIN after the
    /// output drains, and the connection then closes as `PeerClosed`.
    KeepWriting,
}

/// How a connection came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Accepted,
    Outbound,
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// An outbound connect in progress, given up at the timer.
    Connecting { timeout: TimerId },
    /// Serving.
    Open,
    /// The loop is stopping: input is dropped, FIN follows the output.
    Stopping,
    /// Closing once the output drains, or at the deadline.
    Closing {
        reason: CloseReason,
        deadline: TimerId,
    },
    /// Closed by this side, its output delivered and FIN sent, while the
    /// peer may still be sending: its input is read and discarded until its
    /// FIN, `left` more bytes or the deadline, and only then is the socket
    /// closed (nginx's lingering close). Closing a socket with unread input
    /// makes the kernel send RST, which can destroy the response before the
    /// peer has read it.
    Lingering {
        reason: CloseReason,
        deadline: TimerId,
        left: usize,
    },
}

/// The receiving half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadSide {
    Open,
    /// The peer sent FIN; the handler chose what follows.
    Eof(AfterEof),
}

/// The sending half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteSide {
    Open,
    /// Send FIN once the output has drained.
    FinAfterOutput,
    /// FIN has been sent.
    FinSent,
}

/// How much output a connection has queued, against the water marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum OutputLevel {
    /// Below the high-water mark (or back at the low-water mark).
    #[default]
    Normal,
    /// Passed the high-water mark and not yet drained to the low-water mark.
    Full,
}

/// The peer's address as a pool slot keeps it: an IPv4 address inline
/// (also when a dual-stack listener reports it IPv4-mapped), another IPv6
/// one (28 bytes with its flow and scope) out of line, so every slot
/// spends 16 bytes here instead of 32.
#[derive(Debug)]
pub(crate) enum PeerAddr {
    Unknown,
    V4(SocketAddrV4),
    /// `::ffff:a.b.c.d`, no flow label or scope.
    Mapped(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl PeerAddr {
    pub(crate) fn new(addr: Option<SocketAddr>) -> Self {
        match addr {
            None => PeerAddr::Unknown,
            Some(SocketAddr::V4(v4)) => PeerAddr::V4(v4),
            Some(SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(ip) if v6.flowinfo() == 0 && v6.scope_id() == 0 => {
                    PeerAddr::Mapped(SocketAddrV4::new(ip, v6.port()))
                }
                _ => PeerAddr::V6(Box::new(v6)),
            },
        }
    }

    pub(crate) fn get(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Unknown => None,
            PeerAddr::V4(v4) => Some(SocketAddr::V4(*v4)),
            PeerAddr::Mapped(v4) => Some(SocketAddr::V6(SocketAddrV6::new(
                v4.ip().to_ipv6_mapped(),
                v4.port(),
                0,
                0,
            ))),
            PeerAddr::V6(v6) => Some(SocketAddr::V6(**v6)),
        }
    }
}

/// The output levels at which a connection becomes full and drained
/// again: `Config::high_water` and `Config::low_water` unless the handler
/// set its own ([`ConnRef::set_water_marks`](crate::ConnRef::set_water_marks)).
/// 32 bits a mark (at most 4 GiB - 1): every pool slot holds a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaterMarks {
    high: u32,
    low: u32,
}

impl WaterMarks {
    /// Marks at `high` and `low` bytes, `low` at most `high`; larger marks
    /// are capped at 4 GiB - 1.
    pub(crate) fn new(high: usize, low: usize) -> Self {
        let cap = |bytes: usize| u32::try_from(bytes).unwrap_or(u32::MAX);
        Self {
            high: cap(high),
            low: cap(low.min(high)),
        }
    }

    pub(crate) fn high(self) -> usize {
        self.high as usize
    }

    pub(crate) fn low(self) -> usize {
        self.low as usize
    }
}

/// A reason to hold reading off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The connection's own output is full (with `Config::pause_when_full`).
    OutputFull = 1,
    /// The handler paused it ([`ConnRef::pause_reading`](crate::ConnRef::pause_reading)).
    Handler = 2,
}

/// The set of holds on reading; reading runs only when it is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadHolds(u8);

impl ReadHolds {
    pub(crate) fn add(&mut self, hold: Hold) -> bool {
        let added = !self.has(hold);
        self.0 |= hold as u8;
        added
    }

    pub(crate) fn remove(&mut self, hold: Hold) -> bool {
        let removed = self.has(hold);
        self.0 &= !(hold as u8);
        removed
    }

    pub(crate) fn has(self, hold: Hold) -> bool {
        self.0 & hold as u8 != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Which of the loop's per-turn lists a connection is already on, so it is
/// put on each at most once.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Listed {
    pub(crate) flush: bool,
    pub(crate) posted: bool,
    /// In the loop's drained list: its handler hears `on_drained` once,
    /// however often it drained before the notice.
    pub(crate) drained: bool,
}

/// A connection in its pool slot.
pub(crate) struct Connection<S> {
    pub(crate) fd: OwnedFd,
    pub(crate) input: Buffer,
    pub(crate) output: Buffer,
    pub(crate) state: S,
    pub(crate) peer: PeerAddr,
    pub(crate) origin: Origin,
    pub(crate) phase: Phase,
    pub(crate) read: ReadSide,
    pub(crate) write: WriteSide,
    pub(crate) holds: ReadHolds,
    pub(crate) output_level: OutputLevel,
    pub(crate) water: WaterMarks,
    /// An event reported a hang-up or error. Sticky: a read deferred by a
    /// hold or the budget must not trust a short read afterwards, since the
    /// event that announced the FIN has already been consumed.
    pub(crate) hangup_seen: bool,
    /// The last read brought at least a standard buffer's worth: the next
    /// read, in this turn or a later one, starts with a bulk buffer. A
    /// stream, or a peer sending large messages, then moves in one bulk
    /// read per arrival instead of a standard read followed by a bulk one
    /// (64 KiB echo: 66 syscalls per MB against mio's 53 before this).
    pub(crate) streaming: bool,
    pub(crate) listed: Listed,
    pub(crate) last_active_ns: u64,
    /// The send timeout, armed once a write is refused (re-armed lazily).
    pub(crate) send_timer: Option<TimerId>,
    /// When a write last made progress.
    pub(crate) last_sent_ns: u64,
    /// The interest registered with epoll now.
    pub(crate) interest: u32,
}

/// What one read brought.
pub(crate) enum ReadOutcome {
    /// Bytes arrived; `drained` when the socket is known to be empty.
    Data { bytes: usize, drained: bool },
    /// The peer sent FIN.
    Eof,
    /// Nothing to read now (EAGAIN).
    Nothing,
    /// The read failed; close for this reason.
    Failed(CloseReason),
}

/// What one flush did.
pub(crate) enum WriteOutcome {
    /// Everything queued went out.
    Drained,
    /// The kernel took less than everything; EPOLLOUT says when to go on.
    Blocked,
    /// The write failed; close for this reason.
    Failed(CloseReason),
}

impl<S> Connection<S> {
    pub(crate) fn new(
        fd: OwnedFd,
        peer: Option<SocketAddr>,
        origin: Origin,
        state: S,
        water: WaterMarks,
        now_ns: u64,
    ) -> Self {
        Self {
            fd,
            input: Buffer::new(),
            output: Buffer::new(),
            state,
            peer: PeerAddr::new(peer),
            origin,
            phase: Phase::Open,
            read: ReadSide::Open,
            write: WriteSide::Open,
            holds: ReadHolds::default(),
            output_level: OutputLevel::Normal,
            water,
            hangup_seen: false,
            streaming: false,
            listed: Listed::default(),
            last_active_ns: now_ns,
            send_timer: None,
            last_sent_ns: now_ns,
            interest: 0,
        }
    }

    pub(crate) fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. })
    }

    /// The reason it is closing with, once a close waits for the output
    /// or lingers after it.
    pub(crate) fn closing_reason(&self) -> Option<CloseReason> {
        match self.phase {
            Phase::Closing { reason, .. } | Phase::Lingering { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether the socket may be read now. A lingering connection is read
    /// whatever held it before: its input only goes to the bin.
    pub(crate) fn may_read(&self) -> bool {
        self.read == ReadSide::Open
            && match self.phase {
                Phase::Open | Phase::Stopping => self.holds.is_empty(),
                Phase::Lingering { .. } => true,
                Phase::Connecting { .. } | Phase::Closing { .. } => false,
            }
    }

    /// Whether input is handed to the handler (a stopping loop drops it).
    pub(crate) fn delivers_input(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Both halves are done: the peer's FIN is in, the handler chose to
    /// keep writing, and our FIN is out.
    pub(crate) fn both_halves_done(&self) -> bool {
        self.read == ReadSide::Eof(AfterEof::KeepWriting) && self.write == WriteSide::FinSent
    }

    /// Reads once into the input buffer. While [`Self::streaming`] an
    /// empty input takes a bulk buffer, so the stream moves in fewer,
    /// larger reads (and writes, when the buffer is relayed whole).
    pub(crate) fn read_once(&mut self, io: &mut IoContext<'_>) -> ReadOutcome {
        io.stats.read_calls += 1;
        let min_room = if self.streaming && self.input.is_empty() {
            io.buffers.bulk()
        } else {
            io.buffers.chunk() / 4
        };
        let read = self
            .input
            .read_from(self.fd.as_raw_fd(), min_room, io.buffers);
        if let Ok((n, _)) = read
            && n > 0
        {
            self.streaming = n >= io.buffers.chunk();
        }
        match read {
            Ok((0, _)) => {
                self.input.release_if_empty(io.buffers);
                ReadOutcome::Eof
            }
            Ok((n, room)) => {
                self.last_active_ns = io.now_ns;
                io.stats.bytes_read += n as u64;
                // A short read drained the socket. Without a hang-up bit
                // seen, a FIN behind the data would raise EPOLLRDHUP later,
                // so the EAGAIN read can be skipped (nginx's rdhup trick).
                // Level and one-shot registrations re-report what is left.
                let drained = n < room && (io.rereported || (io.rdhup && !self.hangup_seen));
                ReadOutcome::Data { bytes: n, drained }
            }
            Err(e) => {
                self.input.release_if_empty(io.buffers);
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => ReadOutcome::Nothing,
                    _ => ReadOutcome::Failed(CloseReason::Reset),
                }
            }
        }
    }

    /// Writes as much queued output as the kernel takes.
    pub(crate) fn write_out(&mut self, io: &mut IoContext<'_>) -> WriteOutcome {
        while !self.output.is_empty() {
            io.stats.write_calls += 1;
            let pending = self.output.as_slice();
            match socket::write(self.fd.as_raw_fd(), pending) {
                Ok(n) => {
                    let partial = n < pending.len();
                    self.output.consume(n);
                    self.last_active_ns = io.now_ns;
                    self.last_sent_ns = io.now_ns;
                    io.stats.bytes_written += n as u64;
                    if partial {
                        return WriteOutcome::Blocked;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return WriteOutcome::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return WriteOutcome::Failed(CloseReason::Reset),
            }
        }
        self.output.release_if_empty(io.buffers);
        WriteOutcome::Drained
    }

    /// Sends FIN if it is wanted and the output has drained; `Err` if the
    /// socket refused.
    pub(crate) fn send_fin_if_due(&mut self) -> Result<(), CloseReason> {
        if self.write != WriteSide::FinAfterOutput || !self.output.is_empty() {
            return Ok(());
        }
        self.write = WriteSide::FinSent;
        socket::shutdown(&self.fd, std::net::Shutdown::Write).map_err(|_| CloseReason::Reset)
    }

    /// Gives both buffers' memory back.
    pub(crate) fn release_buffers(&mut self, buffers: &mut BufferPool) {
        self.input.consume(usize::MAX);
        self.output.consume(usize::MAX);
        self.input.release_if_empty(buffers);
        self.output.release_if_empty(buffers);
    }
}

/// What a read or write needs from the loop besides the connection.
pub(crate) struct IoContext<'a> {
    pub(crate) buffers: &'a mut BufferPool,
    pub(crate) stats: &'a mut Stats,
    pub(crate) now_ns: u64,
    /// The registration reports readiness again after a partial read
    /// (level-triggered, or one-shot re-armed), so a short read may end
    /// reading.
    pub(crate) rereported: bool,
    /// The kernel reports `EPOLLRDHUP`.
    pub(crate) rdhup: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection a loop may hold costs a slot, whether it is open or
    /// not: an idle connection's user-space cost is mostly this.
    #[test]
    fn a_pool_slot_stays_small() {
        let size = std::mem::size_of::<Connection<()>>();
        assert!(size <= 192, "Connection<()> is {size} bytes");
    }

    #[test]
    fn peer_addresses_come_back_as_they_went_in() {
        for addr in [
            "127.0.0.1:80",
            "[fe80::1%2]:443",
            "[::1]:7000",
            "[::ffff:127.0.0.1]:80",
        ] {
            let addr: SocketAddr = addr.parse().expect("address");
            assert_eq!(PeerAddr::new(Some(addr)).get(), Some(addr));
        }
        assert_eq!(PeerAddr::new(None).get(), None);
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:9".parse().expect("address");
        assert!(
            matches!(PeerAddr::new(Some(mapped)), PeerAddr::Mapped(_)),
            "a dual-stack listener's IPv4 peers are kept inline"
        );
        assert_eq!(std::mem::size_of::<PeerAddr>(), 16);
    }

    #[test]
    fn water_marks_keep_low_under_high_and_cap_at_32_bits() {
        let marks = WaterMarks::new(1024, 4096);
        assert_eq!((marks.high(), marks.low()), (1024, 1024));
        let huge = WaterMarks::new(usize::MAX, 1 << 40);
        assert_eq!(
            (huge.high(), huge.low()),
            (u32::MAX as usize, u32::MAX as usize)
        );
    }
}
