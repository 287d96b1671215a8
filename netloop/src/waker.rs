//! Waking a loop from another thread: an eventfd, an "already woken" flag
//! so that a burst of wakes costs one `write`, and a mailbox of messages.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::Error;
use crate::sys::eventfd::EventFd;

/// Messages for a loop, and the eventfd that tells it they are there.
pub(crate) struct Mailbox<M> {
    eventfd: EventFd,
    woken: AtomicBool,
    closed: AtomicBool,
    messages: Mutex<Vec<M>>,
}

impl<M> Mailbox<M> {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            eventfd: EventFd::new()?,
            woken: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            messages: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    fn messages(&self) -> MutexGuard<'_, Vec<M>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leaves `message` for the loop and wakes it.
    pub(crate) fn send(&self, message: M) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::LoopStopped);
        }
        self.messages().push(message);
        // Only the first wake of a burst writes the eventfd; the loop clears
        // the flag before it empties the mailbox, so nothing is left unseen.
        if !self.woken.swap(true, Ordering::SeqCst) {
            self.eventfd.notify()?;
        }
        Ok(())
    }

    /// Called by the loop when the eventfd fires: takes every message.
    ///
    /// The order matters. The counter is drained *before* the flag is
    /// cleared: a sender that finds the flag clear writes the eventfd after
    /// this drain, so its wake-up survives. Clearing first would let a
    /// sender set the flag, have its write swallowed by the drain, and leave
    /// the flag set with nobody to clear it: every later sender would skip
    /// its write, and the loop would sleep on a non-empty mailbox.
    pub(crate) fn take(&self, into: &mut Vec<M>) {
        self.drain_wakeups();
        self.clear_woken();
        self.take_messages(into);
    }

    fn drain_wakeups(&self) {
        // An error here would mean a closed fd, which the loop never does.
        let _ = self.eventfd.drain();
    }

    fn clear_woken(&self) {
        self.woken.store(false, Ordering::SeqCst);
    }

    fn take_messages(&self, into: &mut Vec<M>) {
        into.append(&mut self.messages());
    }

    /// Marks the loop as gone, so later sends fail instead of piling up.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.messages().clear();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Step<'a> = &'a dyn Fn(&mut Vec<u8>);

    /// The loop's three steps, in order, with a sender's `send` possibly
    /// landing before, between or after them.
    fn receive_with_send_at(point: usize) -> (usize, u64) {
        let mailbox = Mailbox::<u8>::new().expect("mailbox");
        let mut taken = Vec::new();
        mailbox.send(0).expect("first wake");
        let steps: [Step<'_>; 3] = [
            &|_| mailbox.drain_wakeups(),
            &|_| mailbox.clear_woken(),
            &|into| mailbox.take_messages(into),
        ];
        for (i, step) in steps.iter().enumerate() {
            if i == point {
                mailbox.send(1).expect("send");
            }
            step(&mut taken);
        }
        if point == steps.len() {
            mailbox.send(1).expect("send");
        }
        // The loop goes back to sleep; one more message arrives.
        mailbox.send(2).expect("send");
        let waiting = mailbox.messages().len();
        let counter = mailbox.eventfd.drain().expect("drain");
        (waiting, counter)
    }

    #[test]
    fn no_message_is_left_behind_a_swallowed_wakeup() {
        for point in 0..=3 {
            let (waiting, counter) = receive_with_send_at(point);
            assert!(waiting > 0);
            assert!(
                counter > 0,
                "send at point {point}: {waiting} messages wait but the eventfd is silent"
            );
        }
    }
}
