//! CLOCK as a concurrent structure: a referenced bit per slot, set by an
//! access with a relaxed store (only when it is clear, so a hot slot is
//! read, not written); under a lock, the hand sweeps the slots, clearing
//! set bits and evicting the first clear one the caller accepts.

use super::Shared;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Clock {
    referenced: Box<[AtomicBool]>,
    inner: Mutex<ClockInner>,
}

struct ClockInner {
    keys: Vec<u32>,
    hand: usize,
}

impl Clock {
    pub fn new(capacity: usize) -> Clock {
        Clock {
            referenced: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
            inner: Mutex::new(ClockInner {
                keys: Vec::with_capacity(capacity),
                hand: 0,
            }),
        }
    }
}

impl Shared for Clock {
    #[inline]
    fn touch(&self, slot: u64) {
        let bit = &self.referenced[slot as usize];
        if !bit.load(Ordering::Relaxed) {
            bit.store(true, Ordering::Relaxed);
        }
    }

    fn insert(&self, key: u32, accept: &mut dyn FnMut(u32) -> bool) -> (u64, Option<u32>) {
        let mut inner = self.inner.lock();
        let capacity = self.referenced.len();
        if inner.keys.len() < capacity {
            inner.keys.push(key);
            return ((inner.keys.len() - 1) as u64, None);
        }
        // Two sweeps clear every bit; past that, take any accepted slot.
        let mut steps = 0;
        loop {
            let at = inner.hand;
            inner.hand = (at + 1) % capacity;
            steps += 1;
            if steps <= 2 * capacity && self.referenced[at].swap(false, Ordering::Relaxed) {
                continue;
            }
            if !accept(inner.keys[at]) {
                assert!(steps < 4 * capacity, "every resident is busy");
                continue;
            }
            let victim = std::mem::replace(&mut inner.keys[at], key);
            return (at as u64, Some(victim));
        }
    }
}
