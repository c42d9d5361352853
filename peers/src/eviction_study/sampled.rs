//! Sampled LRU (Redis's approximation): each slot keeps the time of its
//! last access, stored with a relaxed store; eviction samples `K` random
//! slots and evicts the least recent one the caller accepts. The clock is
//! coarse — it advances once per eviction — so an access writes its slot
//! only the first time in each tick and never writes a shared line.

use super::Shared;
use crate::common::Rng;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct SampledLru {
    last_used: Box<[AtomicU32]>,
    now: AtomicU32,
    samples: usize,
    inner: Mutex<SampledInner>,
}

struct SampledInner {
    keys: Vec<u32>,
    rng: Rng,
}

impl SampledLru {
    pub fn new(capacity: usize, samples: usize) -> SampledLru {
        SampledLru {
            last_used: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            now: AtomicU32::new(0),
            samples,
            inner: Mutex::new(SampledInner {
                keys: Vec::with_capacity(capacity),
                rng: Rng::new(0x5A3),
            }),
        }
    }
}

impl Shared for SampledLru {
    #[inline]
    fn touch(&self, slot: u64) {
        let now = self.now.load(Ordering::Relaxed);
        let last = &self.last_used[slot as usize];
        if last.load(Ordering::Relaxed) != now {
            last.store(now, Ordering::Relaxed);
        }
    }

    fn insert(&self, key: u32, accept: &mut dyn FnMut(u32) -> bool) -> (u64, Option<u32>) {
        let mut inner = self.inner.lock();
        let capacity = self.last_used.len();
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        if inner.keys.len() < capacity {
            inner.keys.push(key);
            let at = inner.keys.len() - 1;
            self.last_used[at].store(now, Ordering::Relaxed);
            return (at as u64, None);
        }
        let mut best: Option<(u32, usize)> = None;
        let mut tries = 0;
        while best.is_none() || tries < self.samples {
            tries += 1;
            assert!(tries < 64 * self.samples, "every sampled resident is busy");
            let at = inner.rng.below(capacity as u64) as usize;
            let last = self.last_used[at].load(Ordering::Relaxed);
            if best.is_none_or(|(b, _)| last < b) && accept(inner.keys[at]) {
                best = Some((last, at));
            }
        }
        let (_, at) = best.expect("the loop ends with a candidate");
        let victim = std::mem::replace(&mut inner.keys[at], key);
        self.last_used[at].store(now, Ordering::Relaxed);
        (at as u64, Some(victim))
    }
}
