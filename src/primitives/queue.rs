//! A first-in first-out queue one pointer wide: a worker's mailbox.
//!
//! Every worker's cell holds a mailbox, and most workers sit idle with it
//! empty, so its size is paid per idle worker. `VecDeque` keeps its pointer,
//! capacity, head and length inline (32 bytes); [`Queue`] keeps only a
//! pointer, to one block that holds the capacity, head and length before the
//! ring of slots, and a queue that never held anything has no block at all.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The smallest number of slots a block is made with.
const MIN_SLOTS: usize = 4;

/// A ring-buffer queue; see the module's doc.
pub(crate) struct Queue<T> {
    /// `None` until the first push; then a [`Header`] followed by its ring
    /// of `cap` slots, of which `len` from `head` on (wrapping) are filled.
    block: Option<NonNull<Header>>,
    _owns: PhantomData<T>,
}

struct Header {
    /// A power of two, so that an index wraps with a mask.
    cap: usize,
    head: usize,
    len: usize,
}

// SAFETY: a queue owns its elements, as a `VecDeque<T>` does.
unsafe impl<T: Send> Send for Queue<T> {}
unsafe impl<T: Sync> Sync for Queue<T> {}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue::new()
    }
}

impl<T> Queue<T> {
    pub(crate) const fn new() -> Self {
        Queue {
            block: None,
            _owns: PhantomData,
        }
    }

    /// The block's layout for `cap` slots, and where its slots start.
    fn layout(cap: usize) -> (Layout, usize) {
        Layout::new::<Header>()
            .extend(Layout::array::<T>(cap).expect("a mailbox larger than memory"))
            .expect("a mailbox larger than memory")
    }

    fn header(&self) -> Option<&Header> {
        // SAFETY: a block starts with an initialised header, and the block
        // lives as long as the queue holds it.
        self.block.map(|block| unsafe { &*block.as_ptr() })
    }

    /// The `index`-th slot of `block`.
    ///
    /// # Safety
    ///
    /// `block` is a live block of this queue's type, with more than `index` slots.
    unsafe fn slot(block: NonNull<Header>, index: usize) -> *mut T {
        // Where the slots start, whatever their number (as `layout` puts them).
        let offset = size_of::<Header>().next_multiple_of(align_of::<T>());
        unsafe {
            block
                .as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<T>()
                .add(index)
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.header().map_or(0, |h| h.len)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots allocated; 0 without a block.
    pub(crate) fn capacity(&self) -> usize {
        self.header().map_or(0, |h| h.cap)
    }

    pub(crate) fn push_back(&mut self, value: T) {
        let block = match self.block {
            Some(block) if self.len() < self.capacity() => block,
            _ => self.grow(),
        };
        // SAFETY: `block` is this queue's, with a free slot after the last.
        unsafe {
            let h = &mut *block.as_ptr();
            let index = (h.head + h.len) & (h.cap - 1);
            h.len += 1;
            Self::slot(block, index).write(value);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let block = self.block?;
        // SAFETY: `block` is this queue's; the slot at `head` is filled when
        // `len` is not 0, and is counted empty once read.
        unsafe {
            let h = &mut *block.as_ptr();
            if h.len == 0 {
                return None;
            }
            let index = h.head;
            h.head = (h.head + 1) & (h.cap - 1);
            h.len -= 1;
            Some(Self::slot(block, index).read())
        }
    }

    /// Moves the elements to a block of twice the slots (at least
    /// `MIN_SLOTS`), in order from its first slot; returns it.
    fn grow(&mut self) -> NonNull<Header> {
        let cap = (self.capacity() * 2).max(MIN_SLOTS);
        let (layout, _) = Self::layout(cap);
        // SAFETY: the layout is not zero-sized: it holds a header.
        let raw = unsafe { alloc::alloc(layout) }.cast::<Header>();
        let Some(block) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        let len = self.len();
        // SAFETY: `block` is fresh, with room for a header and `cap` slots;
        // the old block's `len` filled slots are moved into its first ones,
        // then the old block is freed without dropping them again.
        unsafe {
            block.as_ptr().write(Header { cap, head: 0, len });
            if let Some(old) = self.block {
                let h = &*old.as_ptr();
                for i in 0..len {
                    let from = Self::slot(old, (h.head + i) & (h.cap - 1));
                    Self::slot(block, i).write(from.read());
                }
                alloc::dealloc(old.as_ptr().cast(), Self::layout(h.cap).0);
            }
        }
        self.block = Some(block);
        block
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
        if let Some(block) = self.block.take() {
            // SAFETY: the block is this queue's, now empty, and freed once.
            unsafe {
                let cap = (*block.as_ptr()).cap;
                alloc::dealloc(block.as_ptr().cast(), Self::layout(cap).0);
            }
        }
    }
}

impl<T> Iterator for Queue<T> {
    type Item = T;

    /// Takes the queue's elements in order: `for x in std::mem::take(&mut q)`.
    fn next(&mut self) -> Option<T> {
        self.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_queue_is_one_pointer_wide_and_allocates_nothing_until_used() {
        assert_eq!(size_of::<Queue<[u64; 8]>>(), size_of::<usize>());
        let q = Queue::<String>::new();
        assert_eq!((q.len(), q.capacity()), (0, 0));
    }

    #[test]
    fn elements_come_out_in_the_order_they_went_in_across_wraps_and_growth() {
        let mut q = Queue::new();
        let mut expected = std::collections::VecDeque::new();
        let mut next = 0u64;
        // Interleaved pushes and pops: the ring wraps, then grows while wrapped.
        for round in 0..200 {
            for _ in 0..(round % 7) + 1 {
                q.push_back(next.to_string());
                expected.push_back(next.to_string());
                next += 1;
            }
            for _ in 0..(round % 5) {
                assert_eq!(q.pop_front(), expected.pop_front());
            }
            assert_eq!(q.len(), expected.len());
        }
        assert!(q.capacity() >= q.len());
        assert_eq!(q.collect::<Vec<_>>(), Vec::from(expected));
    }

    #[test]
    fn a_dropped_queue_drops_what_it_still_holds() {
        let token = Arc::new(());
        let mut q = Queue::new();
        for _ in 0..10 {
            q.push_back(token.clone());
        }
        drop(q.pop_front());
        assert_eq!(Arc::strong_count(&token), 10);
        drop(q);
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn elements_without_size_are_counted() {
        let mut q = Queue::new();
        for _ in 0..9 {
            q.push_back(());
        }
        assert_eq!(q.len(), 9);
        assert_eq!(q.by_ref().count(), 9);
        assert!(q.is_empty());
    }
}
