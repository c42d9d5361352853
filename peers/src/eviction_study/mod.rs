//! The study behind the choice of [`crate::eviction`]'s policy:
//! replays Zipf-skewed id traces against LRU, W-TinyLFU, CLOCK (with and
//! without TinyLFU admission), sampled LRU and S3-FIFO, measures their hit ratios on one thread, and their cost per
//! access and per start (an insert that evicts) on two threads.
//!
//! Run it as `cargo bench -p gen_registry_peers --bench eviction -- [--quick] [--runs K] [--part hit|access|start]`;
//! it prints markdown tables (see `BENCHMARKS.md`, "Eviction policy").
//!
//! Every policy here is written for this study. LRU and W-TinyLFU are
//! single-threaded ([`Policy`]) and shared under one lock ([`Locked`]), the
//! way a registry would have to share them without Caffeine-style access
//! buffers; CLOCK, sampled LRU and S3-FIFO are concurrent ([`Shared`]):
//! an access writes only the accessed slot's own word.

mod clock;
mod clock_tinylfu;
mod lists;
pub mod lru;
mod run;
mod sampled;
mod sketch;
mod wtinylfu;
pub mod zipf;

pub use run::main;

use crate::eviction::{Evictor, Slot};
use parking_lot::Mutex;

/// A single-threaded policy over keys `0..universe`.
pub trait Policy {
    /// If `key` is resident, records the access and returns `true`.
    fn hit(&mut self, key: u32) -> bool;
    /// Makes `key` (not resident) resident; returns the key evicted for it.
    fn insert(&mut self, key: u32) -> Option<u32>;

    /// One access of the trace: a hit, or a miss that inserts.
    fn access(&mut self, key: u32) -> bool {
        self.hit(key) || {
            self.insert(key);
            false
        }
    }
}

/// A policy shared between threads: accesses through the slot an insert
/// returned, inserts that evict a victim `accept` approves.
pub trait Shared: Sync {
    /// Records an access to the resident in `slot`.
    fn touch(&self, slot: u64);
    /// Makes `key` resident; returns its slot and the key evicted for it.
    fn insert(&self, key: u32, accept: &mut dyn FnMut(u32) -> bool) -> (u64, Option<u32>);
}

/// A single-threaded policy behind one lock: every access takes it. The
/// slot is the key itself. `accept` is not consulted (LRU and W-TinyLFU as
/// written here cannot skip a victim; the study measures their cost, not
/// that).
pub struct Locked<P>(pub Mutex<P>);

impl<P: Policy + Send> Shared for Locked<P> {
    fn touch(&self, slot: u64) {
        self.0.lock().hit(slot as u32);
    }

    fn insert(&self, key: u32, _accept: &mut dyn FnMut(u32) -> bool) -> (u64, Option<u32>) {
        (u64::from(key), self.0.lock().insert(key))
    }
}

impl Shared for Evictor<u32> {
    #[inline]
    fn touch(&self, slot: u64) {
        Evictor::touch(self, Slot::from_bits(slot));
    }

    fn insert(&self, key: u32, accept: &mut dyn FnMut(u32) -> bool) -> (u64, Option<u32>) {
        let inserted = Evictor::insert(self, key, |k| accept(*k))
            .expect("the study's workers are never all busy");
        (inserted.slot.to_bits(), inserted.evicted)
    }
}

/// A shared policy replayed on one thread, with a plain key → slot map.
pub struct Replay<S> {
    shared: S,
    slot_of: Vec<u64>,
}

const NO_SLOT: u64 = u64::MAX;

impl<S: Shared> Replay<S> {
    pub fn new(shared: S, universe: usize) -> Replay<S> {
        Replay {
            shared,
            slot_of: vec![NO_SLOT; universe],
        }
    }
}

impl<S: Shared> Policy for Replay<S> {
    fn hit(&mut self, key: u32) -> bool {
        match self.slot_of[key as usize] {
            NO_SLOT => false,
            slot => {
                self.shared.touch(slot);
                true
            }
        }
    }

    fn insert(&mut self, key: u32) -> Option<u32> {
        let (slot, victim) = self.shared.insert(key, &mut |_| true);
        if let Some(victim) = victim {
            self.slot_of[victim as usize] = NO_SLOT;
        }
        self.slot_of[key as usize] = slot;
        victim
    }
}

#[cfg(test)]
mod tests {
    use super::clock::Clock;
    use super::clock_tinylfu::ClockTinyLfu;
    use super::lru::Lru;
    use super::sampled::SampledLru;
    use super::wtinylfu::WTinyLfu;
    use super::*;

    /// Replays a trace and checks the policy's residents against its own
    /// answers: a hit only for a resident, never more than `capacity`.
    fn check_residency(policy: &mut dyn Policy, capacity: usize) {
        let zipf = zipf::Zipf::new(2_000, 1.0, 1);
        let mut resident = std::collections::HashSet::new();
        for key in zipf.trace(50_000, 2) {
            let was = resident.contains(&key);
            let hit = policy.hit(key);
            assert_eq!(hit, was, "hit({key})");
            if !hit {
                if let Some(victim) = policy.insert(key) {
                    assert!(resident.remove(&victim), "evicted {victim}, not resident");
                }
                resident.insert(key);
            }
            assert!(resident.len() <= capacity);
        }
        assert_eq!(resident.len(), capacity);
    }

    #[test]
    fn every_policy_hits_exactly_its_residents_and_stays_within_capacity() {
        let (c, u) = (200, 2_000);
        check_residency(&mut Lru::new(c, u), c);
        check_residency(&mut WTinyLfu::new(c, u, false), c);
        check_residency(&mut WTinyLfu::new(c, u, true), c);
        check_residency(&mut Replay::new(Clock::new(c), u), c);
        check_residency(&mut ClockTinyLfu::new(c, u, true), c);
        check_residency(&mut ClockTinyLfu::new(c, u, false), c);
        check_residency(&mut Replay::new(SampledLru::new(c, 5), u), c);
        check_residency(&mut Replay::new(Evictor::<u32>::new(c).unwrap(), u), c);
    }

    #[test]
    fn lru_evicts_the_least_recently_used_key() {
        let mut lru = Lru::new(2, 10);
        lru.insert(1);
        lru.insert(2);
        assert!(lru.hit(1));
        assert_eq!(lru.insert(3), Some(2));
    }

    #[test]
    fn w_tinylfu_keeps_a_frequent_key_over_a_newcomer() {
        let mut policy = WTinyLfu::new(100, 1_000, false);
        for key in 0..100 {
            policy.access(key);
        }
        for _ in 0..5 {
            for key in 0..50 {
                policy.access(key);
            }
        }
        for key in 500..600 {
            policy.access(key);
        }
        let kept = (0..50).filter(|&k| policy.hit(k)).count();
        assert!(kept >= 45, "only {kept} of the 50 frequent keys kept");
    }
}
