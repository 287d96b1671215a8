//! Everything a loop holds except its handler, so that the handler can be
//! called with a borrow of the rest; and the operations on one connection
//! by id that every path (the handler's own connection, another connection,
//! a command from another thread) goes through.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buffer::BufferPool;
use crate::clock::Clock;
use crate::close_reason::CloseReason;
use crate::config::Config;
use crate::connection::{
    Connection, Hold, IoContext, Origin, OutputLevel, Phase, WaterMarks, WriteSide,
};
use crate::error::Error;
use crate::listeners::Listeners;
use crate::occupants::Occupants;
use crate::registration::Registration;
use crate::slots::{Acquire, Slots};
use crate::stats::Stats;
use crate::sys::epoll::Epoll;
use crate::sys::socket;
use crate::timer::{TimerId, TimerKind, Timers};
use crate::token::ConnId;
use crate::turn_list::TurnList;

/// How soon a requested close happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseMode {
    /// After the queued output has been written (or the close deadline).
    AfterOutput,
    /// At once, dropping queued output.
    Now,
}

pub(crate) struct CloseRequest {
    pub(crate) id: ConnId,
    pub(crate) reason: CloseReason,
    pub(crate) mode: CloseMode,
}

pub(crate) struct Core<S> {
    pub(crate) config: Config,
    pub(crate) registration: Registration,
    pub(crate) epoll: Arc<Epoll>,
    pub(crate) conns: Slots<S>,
    pub(crate) buffers: BufferPool,
    pub(crate) timers: Timers,
    pub(crate) stats: Stats,
    pub(crate) flush_list: TurnList,
    pub(crate) posted: TurnList,
    /// Connections whose output fell back to the low-water mark, each
    /// once: their handler hears `on_drained` at the end of this turn (or
    /// of the next, for a drain during the delivery of this turn's).
    pub(crate) drained: Vec<ConnId>,
    pub(crate) close_requests: Vec<CloseRequest>,
    pub(crate) listeners: Listeners,
    pub(crate) rdhup: bool,
    pub(crate) clock: Clock,
    pub(crate) occupants: Arc<Occupants>,
    pub(crate) stopping: bool,
    /// The stop under way hands the listeners to another process.
    pub(crate) handing_over: bool,
}

impl<S> Core<S> {
    pub(crate) fn new(
        config: Config,
        registration: Registration,
        epoll: Arc<Epoll>,
        conns: Slots<S>,
        occupants: Arc<Occupants>,
        timers: Timers,
        parts_origin: Instant,
    ) -> Self {
        Self {
            buffers: BufferPool::new(config.buffer_size, config.spare_buffers),
            registration,
            epoll,
            conns,
            timers,
            stats: Stats::default(),
            flush_list: TurnList::default(),
            posted: TurnList::default(),
            drained: Vec::new(),
            close_requests: Vec::new(),
            listeners: Listeners::default(),
            rdhup: crate::connection::rdhup_supported(),
            clock: Clock::starting_at(parts_origin),
            occupants,
            stopping: false,
            handing_over: false,
            config,
        }
    }

    pub(crate) fn io_context(&mut self) -> (&mut Slots<S>, IoContext<'_>) {
        let io = IoContext {
            buffers: &mut self.buffers,
            stats: &mut self.stats,
            now_ns: self.clock.now_ns(),
            rereported: self.registration.rereports(),
            rdhup: self.rdhup,
        };
        (&mut self.conns, io)
    }

    /// How long the next `epoll_wait` may block.
    pub(crate) fn wait_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        if !self.posted.is_empty() || !self.flush_list.is_empty() || !self.drained.is_empty() {
            return Some(Duration::ZERO);
        }
        // The clock is read only when a timer is armed: a loop without
        // timers makes no clock read here, one per turn in all.
        let timer = self
            .timers
            .next_deadline()
            .map(|deadline| Duration::from_nanos(deadline.saturating_sub(self.clock.elapsed_ns())));
        match (timer, max_wait) {
            (Some(t), Some(m)) => Some(t.min(m)),
            (t, m) => t.or(m),
        }
    }

    /// The interest a connection registers with now.
    pub(crate) fn interest_of(&self, conn: &Connection<S>) -> u32 {
        self.registration.interest_of(conn)
    }

    /// Level-triggered mode: registers exactly the interest the connection
    /// needs now. Edge-triggered registrations never change; one-shot ones
    /// are re-armed when the worker hands the connection back.
    pub(crate) fn update_interest(&mut self, id: ConnId) {
        if self.registration != Registration::Level {
            return;
        }
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        let wanted = self.interest_of(conn);
        if wanted == conn.interest {
            return;
        }
        let (fd, token, registered) = (conn.fd.as_raw_fd(), id.to_u64(), conn.interest != 0);
        if let Some(conn) = self.conns.get_mut(id) {
            conn.interest = wanted;
        }
        // Waiting for nothing, the socket leaves epoll altogether: HUP and
        // ERR are reported whatever the interest, and a level-triggered
        // report of either would wake the loop on every wait while reading
        // is held with nothing to write.
        let changed = match (registered, wanted != 0) {
            (true, true) => self.epoll.modify(fd, token, wanted),
            (true, false) => self.epoll.delete(fd),
            (false, true) => self.epoll.add(fd, token, wanted),
            (false, false) => Ok(()),
        };
        if let Err(e) = changed {
            tracing::warn!(%id, error = %e, "epoll_ctl failed");
            self.request_close(id, CloseReason::Reset, CloseMode::Now);
        }
    }

    pub(crate) fn schedule_flush(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id)
            && !conn.listed.flush
        {
            conn.listed.flush = true;
            self.flush_list.push(id);
        }
    }

    /// Reads `id` in the posted stage: edge-triggered epoll gives no second
    /// notice for data that is already waiting.
    pub(crate) fn post_read(&mut self, id: ConnId) {
        if self.registration.rereports() {
            return;
        }
        if let Some(conn) = self.conns.get_mut(id)
            && !conn.listed.posted
        {
            conn.listed.posted = true;
            self.posted.push(id);
        }
    }

    pub(crate) fn request_close(&mut self, id: ConnId, reason: CloseReason, mode: CloseMode) {
        if self.conns.contains(id) {
            self.close_requests.push(CloseRequest { id, reason, mode });
        }
    }

    /// Makes connection `id` reachable by this loop (a one-shot worker
    /// checks it out), or says why it is not.
    pub(crate) fn reach(&mut self, id: ConnId) -> Result<(), Error> {
        match self.conns.acquire(id) {
            Acquire::Held => Ok(()),
            Acquire::Stale => Err(Error::StaleConn(id)),
            Acquire::Busy => Err(Error::Busy(id)),
        }
    }

    /// One-shot: an event found its connection held by another worker.
    /// During a stop, whose sweep holds every connection for a moment, that
    /// is expected and not counted.
    pub(crate) fn count_contention(&mut self) {
        if !self
            .conns
            .shared_slab()
            .is_some_and(|slab| slab.is_stopping())
        {
            self.stats.oneshot_contention += 1;
        }
    }

    /// Queues `bytes` on `id`'s output.
    pub(crate) fn write(&mut self, id: ConnId, bytes: &[u8]) -> Result<(), Error> {
        let conn = self.conns.get_mut(id).ok_or(Error::StaleConn(id))?;
        conn.output.extend_from_slice(bytes, &mut self.buffers);
        self.output_grew(id);
        Ok(())
    }

    /// After output was queued on `id`: flush it this turn, and mark the
    /// connection full once it passes the high-water mark (holding its own
    /// reading, unless the config says otherwise).
    pub(crate) fn output_grew(&mut self, id: ConnId) {
        self.schedule_flush(id);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.output_level == OutputLevel::Normal && conn.output.len() > conn.water.high() {
            conn.output_level = OutputLevel::Full;
            if self.config.pause_when_full {
                self.hold_reading(id, Hold::OutputFull);
            }
        }
    }

    /// After a flush left `id` with at most the low-water mark queued: no
    /// longer full; its handler hears `on_drained` at the end of this turn,
    /// or of the next one when it drained while the notices of this turn
    /// were being delivered.
    pub(crate) fn output_drained(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.output_level == OutputLevel::Full && conn.output.len() <= conn.water.low() {
            conn.output_level = OutputLevel::Normal;
            if !conn.listed.drained {
                conn.listed.drained = true;
                self.drained.push(id);
            }
            self.release_reading(id, Hold::OutputFull);
        }
    }

    /// Hands back the drained list a turn took, emptied, so its allocation
    /// serves the next turn; connections that drained meanwhile stay listed.
    pub(crate) fn give_back_drained(&mut self, mut taken: Vec<ConnId>) {
        if self.drained.is_empty() {
            taken.clear();
            self.drained = taken;
        }
    }

    /// The config's water marks, which every connection starts with.
    pub(crate) fn default_water_marks(&self) -> WaterMarks {
        WaterMarks::new(self.config.high_water, self.config.low_water)
    }

    /// Gives `id` its own water marks, and re-checks its level against them.
    pub(crate) fn set_water_marks(&mut self, id: ConnId, high: usize, low: usize) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.water = WaterMarks::new(high, low);
        let len = conn.output.len();
        match conn.output_level {
            OutputLevel::Normal if len > conn.water.high() => self.output_grew(id),
            OutputLevel::Full => self.output_drained(id),
            OutputLevel::Normal => {}
        }
    }

    /// Whether `id`'s output is past the high-water mark and not yet back
    /// down to the low-water mark.
    pub(crate) fn is_full(&self, id: ConnId) -> bool {
        self.conns
            .get(id)
            .is_some_and(|c| c.output_level == OutputLevel::Full)
    }

    pub(crate) fn hold_reading(&mut self, id: ConnId, hold: Hold) {
        if let Some(conn) = self.conns.get_mut(id)
            && conn.holds.add(hold)
        {
            self.update_interest(id);
        }
    }

    pub(crate) fn release_reading(&mut self, id: ConnId, hold: Hold) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.holds.remove(hold) && conn.may_read() {
            // Edge-triggered: what arrived while held raised no new edge,
            // so the read is posted instead of awaited.
            self.post_read(id);
            self.update_interest(id);
        }
    }

    /// Sends FIN on `id` once its output drains.
    pub(crate) fn shutdown(&mut self, id: ConnId) -> Result<(), Error> {
        let conn = self.conns.get_mut(id).ok_or(Error::StaleConn(id))?;
        if conn.write == WriteSide::Open {
            conn.write = WriteSide::FinAfterOutput;
            self.schedule_flush(id);
        }
        Ok(())
    }

    /// Moves `from`'s unconsumed input to the end of `to`'s output; returns
    /// the bytes moved. When `to` has nothing queued the two buffers swap
    /// memory instead of copying.
    pub(crate) fn forward_input(&mut self, from: ConnId, to: ConnId) -> Result<usize, Error> {
        if from == to {
            return Err(Error::SameConn(from));
        }
        for id in [from, to] {
            self.reach(id)?;
        }
        let Some((source, target)) = self.conns.get2_mut(from, to) else {
            return Err(Error::StaleConn(to));
        };
        let moved = source.input.len();
        target
            .output
            .append_from(&mut source.input, &mut self.buffers);
        if moved > 0 {
            self.output_grew(to);
        }
        Ok(moved)
    }

    pub(crate) fn arm_user_timer(&mut self, id: ConnId, delay: Duration, data: u64) -> TimerId {
        let deadline = self.clock.after(delay);
        self.timers
            .insert(deadline, TimerKind::User { conn: id, data })
    }

    pub(crate) fn arm_idle_timer(&mut self, id: ConnId) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        self.timers.insert_idle(self.clock.after(idle), id);
    }

    /// Output is waiting for the kernel: make sure the send timeout watches
    /// `id`. Armed once; the expiry re-arms it while writes make progress.
    pub(crate) fn arm_send_timer(&mut self, id: ConnId) {
        let Some(timeout) = self.config.send_timeout else {
            return;
        };
        let Some(conn) = self.conns.get(id) else {
            return;
        };
        if conn.send_timer.is_some() {
            return;
        }
        let timer = self
            .timers
            .insert(self.clock.after(timeout), TimerKind::Send(id));
        if let Some(conn) = self.conns.get_mut(id) {
            conn.send_timer = Some(timer);
        }
    }

    /// Puts a new connection in the pool and registers it (one-shot slots
    /// register when the worker hands it back).
    pub(crate) fn insert(&mut self, mut conn: Connection<S>) -> Result<ConnId, Error> {
        if self.config.nodelay {
            // Not every socket is TCP (tests adopt Unix sockets); that is fine.
            let _ = socket::set_nodelay(&conn.fd);
        }
        conn.interest = self.interest_of(&conn);
        let (fd, interest) = (conn.fd.as_raw_fd(), conn.interest);
        let id = self.conns.insert(conn).ok_or(Error::PoolFull)?;
        if self.conns.registers_on_insert()
            && let Err(e) = self.epoll.add(fd, id.to_u64(), interest)
        {
            self.conns.remove(id);
            return Err(e.into());
        }
        self.occupants.publish_open(id);
        Ok(id)
    }

    /// Starts an outbound connection with its initial state.
    pub(crate) fn connect(
        &mut self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        state: S,
    ) -> Result<ConnId, Error> {
        if self.stopping {
            // A stop must finish: nothing new may start once it has begun.
            return Err(Error::LoopStopped);
        }
        if self.conns.is_full() {
            return Err(Error::PoolFull);
        }
        let fd = socket::connect(addr, source)?;
        let water = self.default_water_marks();
        let mut conn = Connection::new(
            fd,
            Some(addr),
            Origin::Outbound,
            state,
            water,
            self.clock.now_ns(),
        );
        conn.phase = Phase::Connecting {
            timeout: TimerId::UNARMED,
        };
        let id = self.insert(conn)?;
        let deadline = self.clock.after(self.config.connect_timeout);
        let timeout = self.timers.insert(deadline, TimerKind::ConnectTimeout(id));
        if let Some(conn) = self.conns.get_mut(id) {
            conn.phase = Phase::Connecting { timeout };
        }
        Ok(id)
    }
}
