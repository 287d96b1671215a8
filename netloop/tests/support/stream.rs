//! Checked byte streams for relay tests: a position-dependent pattern, so a
//! lost, repeated or reordered chunk shows as a wrong byte, and a way to
//! run a relay until a flow stalls while watching its memory.

use std::time::{Duration, Instant};

use netloop::{Config, EventLoop, Handler};

/// How long no progress at all counts as stalled.
pub const STALL: Duration = Duration::from_millis(300);

/// How long a flow may take to stall before the test fails.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Byte `offset` of stream `seed`.
pub fn pattern_byte(seed: u64, offset: usize) -> u8 {
    let word = (offset / 8) as u64 ^ seed.rotate_left(32);
    let x = word.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x ^ (x >> 29)).to_le_bytes()[offset % 8]
}

/// Fills `buf` with stream `seed` from `offset` on.
pub fn fill(seed: u64, offset: usize, buf: &mut [u8]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = pattern_byte(seed, offset + i);
    }
}

/// The first `len` bytes of stream `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fill(seed, 0, &mut bytes);
    bytes
}

/// The offset of the first byte of `got` that is not stream `seed`'s byte there.
pub fn first_wrong(seed: u64, offset: usize, got: &[u8]) -> Option<usize> {
    (0..got.len())
        .find(|&i| got[i] != pattern_byte(seed, offset + i))
        .map(|i| offset + i)
}

/// The most buffer memory a relay may hold with `config`: one full output
/// (a `Vec` grows by doubling, so up to twice the high-water mark) and a few
/// buffers for input in flight and spares, each up to a bulk buffer (four
/// standard ones: a stream's reads take those).
pub fn memory_bound(config: &Config) -> usize {
    2 * config.high_water + 4 * 4 * config.buffer_size
}

/// Runs turns, calling `step` before each (it returns the progress so far),
/// until the progress stays put for [`STALL`]; returns it. Records the
/// relay's peak buffer memory in `peak`.
pub fn turn_until_stalled<H: Handler>(
    event_loop: &mut EventLoop<H>,
    peak: &mut usize,
    mut step: impl FnMut() -> usize,
) -> usize {
    let deadline = Instant::now() + STALL_LIMIT;
    let (mut last, mut since) = (usize::MAX, Instant::now());
    loop {
        let progress = step();
        if progress != last {
            (last, since) = (progress, Instant::now());
        } else if progress > 0 && since.elapsed() >= STALL {
            return progress;
        }
        assert!(Instant::now() < deadline, "never stalled: {progress} bytes");
        event_loop
            .turn(Some(Duration::from_millis(1)))
            .expect("turn");
        *peak = (*peak).max(event_loop.buffer_bytes());
    }
}
