//! Byte buffers for connection input and output, after muduo's `Buffer`:
//! `| consumed | readable | writable |` over one contiguous allocation.
//!
//! A buffer owns no memory until first use and gives it back as soon as it
//! is empty, so an idle connection costs only its slot. The memory comes
//! from, and returns to, a per-loop [`BufferPool`], so a busy connection does
//! not call the allocator once per message.

/// A growable byte queue: bytes are appended at the back and consumed from
/// the front.
#[derive(Default)]
pub struct Buffer {
    storage: Vec<u8>,
    head: usize,
    tail: usize,
}

impl Buffer {
    /// An empty buffer that holds no memory.
    pub const fn new() -> Self {
        Self {
            storage: Vec::new(),
            head: 0,
            tail: 0,
        }
    }

    /// The bytes not yet consumed.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.head..self.tail]
    }

    /// The number of bytes not yet consumed.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// Whether no bytes are waiting.
    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// The bytes of memory this buffer holds (0 when released).
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// Drops the first `n` readable bytes (all of them if `n` is larger).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len());
        self.head += n;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    /// Appends `bytes`, growing the storage from `pool` as needed.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8], pool: &mut BufferPool) {
        self.spare(bytes.len(), pool)[..bytes.len()].copy_from_slice(bytes);
        self.tail += bytes.len();
    }

    /// Room for at least `min` more bytes at the back; call [`commit`](Self::commit)
    /// with how many were filled.
    pub(crate) fn spare(&mut self, min: usize, pool: &mut BufferPool) -> &mut [u8] {
        if self.storage.is_empty() {
            self.storage = pool.take(min);
        }
        if self.storage.len() - self.tail < min {
            self.make_room(min);
        }
        &mut self.storage[self.tail..]
    }

    /// Marks `n` bytes of the spare room as readable.
    pub(crate) fn commit(&mut self, n: usize) {
        debug_assert!(self.tail + n <= self.storage.len());
        self.tail += n;
    }

    fn make_room(&mut self, min: usize) {
        let readable = self.len();
        if self.storage.len() - readable >= min && self.head > 0 {
            // Enough room in total: slide the readable bytes to the front
            // instead of growing (muduo's makeSpace).
            self.storage.copy_within(self.head..self.tail, 0);
        } else {
            let wanted = (readable + min).max(self.storage.len() * 2);
            let mut grown = vec![0u8; wanted];
            grown[..readable].copy_from_slice(self.as_slice());
            self.storage = grown;
        }
        self.head = 0;
        self.tail = readable;
    }

    /// Gives the memory back to `pool` if nothing is waiting.
    pub(crate) fn release_if_empty(&mut self, pool: &mut BufferPool) {
        if self.is_empty() && !self.storage.is_empty() {
            pool.give(std::mem::take(&mut self.storage));
            self.head = 0;
            self.tail = 0;
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

/// A per-loop free list of buffer memory in one standard size.
///
/// Buffers that grew past twice the standard size are freed rather than
/// kept, so one burst does not pin its peak memory forever.
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
    chunk: usize,
    max_free: usize,
}

impl BufferPool {
    /// A pool of `chunk`-byte buffers keeping at most `max_free` spares.
    pub(crate) fn new(chunk: usize, max_free: usize) -> Self {
        Self {
            free: Vec::new(),
            chunk: chunk.max(64),
            max_free,
        }
    }

    /// The standard buffer size.
    pub(crate) fn chunk(&self) -> usize {
        self.chunk
    }

    fn take(&mut self, min: usize) -> Vec<u8> {
        if min <= self.chunk
            && let Some(storage) = self.free.pop()
        {
            return storage;
        }
        vec![0u8; min.max(self.chunk)]
    }

    fn give(&mut self, storage: Vec<u8>) {
        if self.free.len() < self.max_free
            && storage.len() >= self.chunk
            && storage.len() <= 2 * self.chunk
        {
            self.free.push(storage);
        }
    }

    /// Bytes held by spare buffers.
    pub(crate) fn spare_bytes(&self) -> usize {
        self.free.iter().map(Vec::len).sum()
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
