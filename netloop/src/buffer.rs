//! Byte buffers for connection input and output, after muduo's `Buffer`:
//! `| consumed | readable | writable |` over one contiguous allocation.
//!
//! A buffer owns no memory until first use and gives it back as soon as it
//! is empty, so an idle connection costs only its slot. The memory comes
//! from, and returns to, a per-loop [`BufferPool`], so a busy connection does
//! not call the allocator once per message.

use std::io;
use std::os::fd::RawFd;

use crate::sys::socket;

/// A growable byte queue: bytes are appended at the back and consumed from
/// the front.
#[derive(Default)]
pub struct Buffer {
    /// `storage[head..]` is readable; spare capacity is the writable room.
    storage: Vec<u8>,
    head: usize,
}

impl Buffer {
    /// An empty buffer that holds no memory.
    pub const fn new() -> Self {
        Self {
            storage: Vec::new(),
            head: 0,
        }
    }

    /// The bytes not yet consumed.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.head..]
    }

    /// The number of bytes not yet consumed.
    pub fn len(&self) -> usize {
        self.storage.len() - self.head
    }

    /// Whether no bytes are waiting.
    pub fn is_empty(&self) -> bool {
        self.head == self.storage.len()
    }

    /// The bytes of memory this buffer holds (0 when released).
    pub fn capacity(&self) -> usize {
        self.storage.capacity()
    }

    /// Drops the first `n` readable bytes (all of them if `n` is larger).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len());
        self.head += n;
        if self.head == self.storage.len() {
            self.head = 0;
            self.storage.clear();
        }
    }

    /// Appends `bytes`, growing the storage from `pool` as needed.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8], pool: &mut BufferPool) {
        self.reserve(bytes.len(), pool);
        self.storage.extend_from_slice(bytes);
    }

    /// Moves every readable byte of `source` to the end of this buffer,
    /// leaving `source` empty. When this buffer is empty the two swap
    /// memory instead of copying (a relay moves buffers, it does not copy).
    pub(crate) fn append_from(&mut self, source: &mut Buffer, pool: &mut BufferPool) {
        if source.is_empty() {
            return;
        }
        if self.is_empty() {
            self.release_if_empty(pool);
            std::mem::swap(self, source);
            return;
        }
        self.extend_from_slice(source.as_slice(), pool);
        source.consume(usize::MAX);
        source.release_if_empty(pool);
    }

    /// The readable bytes as a `Vec` to append to (codec encoders write
    /// straight into it); the consumed prefix is dropped first.
    pub(crate) fn as_vec(&mut self, pool: &mut BufferPool) -> &mut Vec<u8> {
        self.reserve(0, pool);
        if self.head > 0 {
            self.storage.drain(..self.head);
            self.head = 0;
        }
        &mut self.storage
    }

    /// Reads from `fd` into room for at least `min_room` bytes; returns the
    /// bytes read (0 at end of stream) and the room offered, so the caller
    /// can tell a short read.
    pub(crate) fn read_from(
        &mut self,
        fd: RawFd,
        min_room: usize,
        pool: &mut BufferPool,
    ) -> io::Result<(usize, usize)> {
        self.reserve(min_room, pool);
        let room = self.storage.capacity() - self.storage.len();
        let n = socket::read_append(fd, &mut self.storage)?;
        Ok((n, room))
    }

    /// Makes room for `min` more bytes: memory from the pool on first use,
    /// then sliding the readable bytes to the front when that is enough
    /// (muduo's `makeSpace`), and growing only when it is not.
    fn reserve(&mut self, min: usize, pool: &mut BufferPool) {
        if self.storage.capacity() == 0 {
            self.storage = pool.take(min);
        }
        let spare = self.storage.capacity() - self.storage.len();
        if spare >= min {
            return;
        }
        if self.head > 0 && spare + self.head >= min {
            self.storage.drain(..self.head);
            self.head = 0;
            return;
        }
        let wanted = (self.len() + min).max(self.storage.capacity() * 2);
        self.storage.reserve(wanted - self.storage.len());
    }

    /// Gives the memory back to `pool` if nothing is waiting.
    pub(crate) fn release_if_empty(&mut self, pool: &mut BufferPool) {
        if self.is_empty() && self.storage.capacity() > 0 {
            pool.give(std::mem::take(&mut self.storage));
            self.head = 0;
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A per-loop free list of buffer memory in two sizes: the standard one,
/// and a bulk one ([`BULK_CHUNKS`] standard sizes) for reads on a
/// connection that has more waiting than a standard buffer holds.
///
/// Buffers that grew past twice their size are freed rather than kept, so
/// one burst does not pin its peak memory forever.
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
    free_bulk: Vec<Vec<u8>>,
    chunk: usize,
    max_free: usize,
}

/// A bulk buffer is this many standard ones: 64 KiB by default, the size
/// at which loopback and most NICs hand over a whole segment batch per
/// read, so a stream costs a quarter of the system calls.
const BULK_CHUNKS: usize = 4;

/// Spare bulk buffers kept, at most: enough for the few streams a loop
/// reads in one turn. A bulk buffer is four standard ones, so a larger
/// store would pin a burst's peak (64 of them are 4 MiB) long after it.
const BULK_SPARES: usize = 2;

impl BufferPool {
    /// A pool of `chunk`-byte buffers keeping at most `max_free` spares.
    pub(crate) fn new(chunk: usize, max_free: usize) -> Self {
        Self {
            free: Vec::new(),
            free_bulk: Vec::new(),
            chunk: chunk.max(64),
            max_free,
        }
    }

    /// The standard buffer size.
    pub(crate) fn chunk(&self) -> usize {
        self.chunk
    }

    /// The bulk buffer size.
    pub(crate) fn bulk(&self) -> usize {
        self.chunk * BULK_CHUNKS
    }

    fn take(&mut self, min: usize) -> Vec<u8> {
        let bulk = self.bulk();
        let (list, size) = if min <= self.chunk {
            (&mut self.free, self.chunk)
        } else if min <= bulk {
            (&mut self.free_bulk, bulk)
        } else {
            return Vec::with_capacity(min);
        };
        list.pop().unwrap_or_else(|| Vec::with_capacity(size))
    }

    fn give(&mut self, mut storage: Vec<u8>) {
        let capacity = storage.capacity();
        let bulk = self.bulk();
        let (list, limit) = if (self.chunk..=2 * self.chunk).contains(&capacity) {
            (&mut self.free, self.max_free)
        } else if (bulk..=2 * bulk).contains(&capacity) {
            (&mut self.free_bulk, self.max_free.min(BULK_SPARES))
        } else {
            return;
        };
        if list.len() < limit {
            storage.clear();
            list.push(storage);
        }
    }

    /// Bytes held by spare buffers.
    pub(crate) fn spare_bytes(&self) -> usize {
        self.free
            .iter()
            .chain(&self.free_bulk)
            .map(Vec::capacity)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_buffer_holds_no_memory_and_returns_it() {
        let mut pool = BufferPool::new(1024, 4);
        let mut buf = Buffer::new();
        assert_eq!(buf.capacity(), 0);
        buf.extend_from_slice(b"hello", &mut pool);
        assert_eq!(buf.as_slice(), b"hello");
        buf.release_if_empty(&mut pool);
        assert_eq!(buf.capacity(), 1024, "not released while bytes wait");
        buf.consume(5);
        buf.release_if_empty(&mut pool);
        assert_eq!(buf.capacity(), 0);
        assert_eq!(pool.spare_bytes(), 1024);
        buf.extend_from_slice(b"x", &mut pool);
        assert_eq!(pool.spare_bytes(), 0, "the spare was reused");
    }

    #[test]
    fn append_from_an_empty_target_moves_the_memory() {
        let mut pool = BufferPool::new(1024, 4);
        let mut input = Buffer::new();
        let mut output = Buffer::new();
        input.extend_from_slice(b"relayed", &mut pool);
        let memory = input.as_slice().as_ptr();
        output.append_from(&mut input, &mut pool);
        assert_eq!(output.as_slice(), b"relayed");
        assert_eq!(output.as_slice().as_ptr(), memory, "moved, not copied");
        assert!(input.is_empty());
        assert_eq!(input.capacity(), 0);
        input.extend_from_slice(b" more", &mut pool);
        output.append_from(&mut input, &mut pool);
        assert_eq!(output.as_slice(), b"relayed more");
        assert!(input.is_empty());
    }

    #[test]
    fn bulk_buffers_are_reused_and_only_a_few_kept() {
        let mut pool = BufferPool::new(1024, 64);
        let bulk = pool.bulk();
        let taken: Vec<_> = (0..8).map(|_| pool.take(bulk)).collect();
        assert!(taken.iter().all(|b| b.capacity() >= bulk));
        for storage in taken {
            pool.give(storage);
        }
        // A burst of eight streams leaves two spares, not eight.
        assert_eq!(pool.spare_bytes(), BULK_SPARES * bulk);
        let again = pool.take(bulk);
        assert_eq!(
            pool.spare_bytes(),
            (BULK_SPARES - 1) * bulk,
            "a spare was reused"
        );
        // A standard read does not take a bulk buffer.
        let small = pool.take(100);
        assert_eq!(small.capacity(), 1024);
        assert_eq!(pool.spare_bytes(), (BULK_SPARES - 1) * bulk);
        pool.give(again);
        pool.give(small);
        assert_eq!(pool.spare_bytes(), BULK_SPARES * bulk + 1024);
    }

    proptest! {
        #[test]
        fn behaves_like_a_byte_queue(ops in proptest::collection::vec((any::<bool>(), 0usize..3000), 1..60)) {
            let mut pool = BufferPool::new(256, 2);
            let mut buf = Buffer::new();
            let mut model: std::collections::VecDeque<u8> = Default::default();
            let mut next = 0u8;
            for (append, n) in ops {
                if append {
                    let bytes: Vec<u8> = (0..n).map(|_| { next = next.wrapping_add(1); next }).collect();
                    buf.extend_from_slice(&bytes, &mut pool);
                    model.extend(bytes);
                } else {
                    buf.consume(n);
                    for _ in 0..n.min(model.len()) { model.pop_front(); }
                    buf.release_if_empty(&mut pool);
                }
                let expected: Vec<u8> = model.iter().copied().collect();
                prop_assert_eq!(buf.as_slice(), &expected[..]);
            }
        }
    }
}
