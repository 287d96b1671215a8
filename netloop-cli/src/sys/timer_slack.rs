//! The calling thread's timer slack.

use std::io;

use super::cvt;

/// Sets the calling thread's timer slack to 1 ns (`PR_SET_TIMERSLACK`).
///
/// The kernel may fire a sleeping thread's timer up to its slack late (50 µs
/// by default) so that wake-ups batch; a load generator sending every few
/// microseconds on schedule cannot afford that.
pub fn set_minimal_timer_slack() -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and no pointers;
    // the trailing arguments are ignored and passed as zero.
    cvt(unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}
