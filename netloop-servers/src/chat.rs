//! A chat server (`netloop chat`): length-prefixed frames relayed to every
//! client.
//!
//! A frame is a 4-byte magic, a big-endian length and the payload. Frames
//! are decoded however they arrive, merged or split (粘包拆包); each is
//! relayed, in order, to every connected client, the sender included. A bad
//! magic or an oversized length closes that client with a reason naming it
//! (`CloseReason::Protocol("bad_magic")`, `Protocol("frame_too_large")`);
//! a client that stops reading is cut off once its queued output passes
//! `--max-output`, so it cannot stall the others or grow memory.
//!
//! With several loops, each keeps its own members; a frame is written to
//! the local ones at once and handed to every other loop as one posted task.

use std::sync::{Arc, Mutex, MutexGuard};

use netloop::{CloseReason, Conn, ConnId, Ctx, Handler, LoopHandle};

use crate::codec::frame::{FrameConfig, FrameDecoder, FrameError};

/// The members of one loop.
type Members = Arc<Mutex<Vec<ConnId>>>;

/// One loop as the others see it: a handle to post to, and its members.
type Room = (LoopHandle<()>, Members);

/// Every loop's members and handle, shared by the loops of one server.
#[derive(Clone, Default)]
pub struct Rooms {
    loops: Arc<Mutex<Vec<Room>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Lists of ids stay consistent even if a holder panicked.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The chat handler of one loop.
pub struct Chat {
    decoder: FrameDecoder,
    max_output: usize,
    rooms: Rooms,
    members: Members,
    frame: Vec<u8>,
}

impl Chat {
    /// A handler relaying frames of `frames`, cutting off readers that fall
    /// `max_output` bytes behind.
    pub fn new(frames: FrameConfig, max_output: usize, rooms: Rooms) -> Self {
        Self {
            decoder: FrameDecoder::new(frames),
            max_output,
            rooms,
            members: Members::default(),
            frame: Vec::new(),
        }
    }

    /// Sends the frame in `self.frame` to every member of every loop.
    fn relay(&self, ctx: &mut Ctx<'_, ()>) {
        deliver(ctx, &self.members, &self.frame, self.max_output);
        let others: Vec<Room> = lock(&self.rooms.loops)
            .iter()
            .filter(|(_, members)| !Arc::ptr_eq(members, &self.members))
            .cloned()
            .collect();
        if others.is_empty() {
            return;
        }
        let frame: Arc<[u8]> = Arc::from(&self.frame[..]);
        let max_output = self.max_output;
        for (handle, members) in others {
            let frame = Arc::clone(&frame);
            // A loop that has stopped has no members left to reach.
            let _ = handle.post(move |ctx| deliver(ctx, &members, &frame, max_output));
        }
    }
}

/// Writes `frame` to every member of one loop, cutting off slow readers.
fn deliver(ctx: &mut Ctx<'_, ()>, members: &Members, frame: &[u8], max_output: usize) {
    for &member in lock(members).iter() {
        let Ok(mut member) = ctx.conn(member) else {
            continue;
        };
        member.write(frame);
        if member.output_len() > max_output {
            // Its output would never drain: close now, dropping it.
            member.abort(CloseReason::OutputLimit);
        }
    }
}

impl Handler for Chat {
    type State = ();

    /// Joins this loop to the server's rooms.
    fn on_start(&mut self, handle: LoopHandle<()>) {
        lock(&self.rooms.loops).push((handle, Arc::clone(&self.members)));
    }

    fn on_open(&mut self, conn: &mut Conn<'_, ()>) {
        lock(&self.members).push(conn.id());
    }

    fn on_data(&mut self, conn: &mut Conn<'_, ()>) {
        loop {
            let (consumed, error) = match self.decoder.decode(conn.input()) {
                Ok(None) => return,
                Ok(Some(frame)) => {
                    // The frame's own bytes are relayed as they arrived;
                    // copied once because writing to others borrows the loop.
                    self.frame.clear();
                    self.frame
                        .extend_from_slice(&conn.input()[..frame.consumed()]);
                    (frame.consumed(), None)
                }
                Err(FrameError::BadMagic { .. }) => (0, Some(CloseReason::Protocol("bad_magic"))),
                Err(FrameError::TooLarge { .. }) => {
                    (0, Some(CloseReason::Protocol("frame_too_large")))
                }
            };
            if let Some(reason) = error {
                tracing::debug!(id = %conn.id(), %reason, "bad frame");
                conn.abort(reason);
                return;
            }
            conn.consume(consumed);
            self.relay(conn);
        }
    }

    fn on_close(&mut self, _: &mut Ctx<'_, ()>, id: ConnId, _: (), _: CloseReason) {
        let mut members = lock(&self.members);
        if let Some(position) = members.iter().position(|m| *m == id) {
            members.swap_remove(position);
        }
    }
}
