//! The ghost queue: which keys were among the last `capacity` evicted from
//! the small queue. Only a hint (a key it forgets just enters small again),
//! so it is kept approximately, in one cache line per operation: a table
//! of 8-way buckets of (fingerprint, insertion number) pairs, twice as many
//! pairs as `capacity`. A hash is a member while its pair is in its bucket
//! and at most `capacity` insertions old; an insertion into a full bucket
//! overwrites the bucket's oldest pair. So it never reports a key that was
//! not evicted recently (up to 32-bit fingerprint collisions), and forgets
//! one early only when more than 8 of the last `capacity` hashes share a
//! bucket.
//!
//! The table is allocated at the first insertion, that is at the first
//! eviction: an evictor that never fills up never pays for it.

/// Pairs per bucket: 8 × 8 bytes, one cache line.
const WAYS: usize = 8;
/// Slots per bucket array element, to align buckets on cache lines.
const LINE: usize = 64;

pub(super) struct Ghost {
    /// Bucket `b` is `pairs[base + b * WAYS..][..WAYS]`; each pair is
    /// fingerprint << 32 | insertion number, 0 when empty.
    pairs: Vec<u64>,
    base: usize,
    buckets_mask: usize,
    /// Insertions so far (wrapping).
    now: u32,
    capacity: u32,
}

/// Never 0, so an empty pair matches no hash.
fn fingerprint(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

impl Ghost {
    pub(super) fn new(capacity: usize) -> Ghost {
        Ghost {
            pairs: Vec::new(),
            base: 0,
            buckets_mask: 0,
            now: 0,
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
        }
    }

    fn bucket(&self, hash: u64) -> usize {
        self.base + (hash as usize & self.buckets_mask) * WAYS
    }

    pub(super) fn contains(&self, hash: u64) -> bool {
        if self.pairs.is_empty() {
            return false;
        }
        let at = self.bucket(hash);
        let fp = fingerprint(hash);
        self.pairs[at..at + WAYS].iter().any(|&pair| {
            (pair >> 32) as u32 == fp && self.now.wrapping_sub(pair as u32) < self.capacity
        })
    }

    pub(super) fn insert(&mut self, hash: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.pairs.is_empty() {
            self.allocate();
        }
        self.now = self.now.wrapping_add(1);
        let at = self.bucket(hash);
        let fp = fingerprint(hash);
        let now = self.now;
        let bucket = &mut self.pairs[at..at + WAYS];
        // The same key's pair if it is there, else the oldest (an empty
        // pair is oldest of all).
        let way = bucket
            .iter()
            .position(|&pair| (pair >> 32) as u32 == fp)
            .unwrap_or_else(|| {
                (0..WAYS)
                    .max_by_key(|&w| match bucket[w] {
                        0 => u64::MAX,
                        pair => u64::from(now.wrapping_sub(pair as u32)),
                    })
                    .unwrap_or(0)
            });
        bucket[way] = (u64::from(fp) << 32) | u64::from(now);
    }

    fn allocate(&mut self) {
        let buckets = (self.capacity as usize * 2)
            .div_ceil(WAYS)
            .next_power_of_two();
        self.pairs = vec![0; buckets * WAYS + LINE / 8];
        self.base = self.pairs.as_ptr().align_offset(LINE);
        self.buckets_mask = buckets - 1;
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

#[cfg(test)]
mod tests {
    use super::{Ghost, WAYS};
    use proptest::prelude::*;

    /// Hashes that land in consecutive buckets, with distinct fingerprints.
    fn spread(i: u64) -> u64 {
        (i << 33) | i
    }

    #[test]
    fn ghost_forgets_a_hash_after_capacity_newer_insertions() {
        let mut ghost = Ghost::new(2);
        ghost.insert(spread(1));
        ghost.insert(spread(2));
        assert!(ghost.contains(spread(1)) && ghost.contains(spread(2)));
        ghost.insert(spread(3));
        assert!(!ghost.contains(spread(1)));
        assert!(ghost.contains(spread(2)) && ghost.contains(spread(3)));
    }

    #[test]
    fn ghost_remembers_every_recent_hash_that_fits_its_bucket() {
        let mut ghost = Ghost::new(1_000);
        (0..1_000).for_each(|i| ghost.insert(spread(i)));
        assert!((0..1_000).all(|i| ghost.contains(spread(i))));
    }

    #[test]
    fn ghost_inserting_a_hash_again_makes_it_recent_again() {
        let mut ghost = Ghost::new(2);
        ghost.insert(spread(1));
        ghost.insert(spread(2));
        ghost.insert(spread(1));
        ghost.insert(spread(3));
        assert!(ghost.contains(spread(1)), "1 is one insertion old");
        assert!(!ghost.contains(spread(2)));
    }

    #[test]
    fn a_full_bucket_overwrites_its_oldest_pair() {
        let mut ghost = Ghost::new(1_000);
        // Same bucket (low bits 0), distinct fingerprints.
        let same_bucket = |i: u64| (i + 1) << 33;
        (0..WAYS as u64 + 1).for_each(|i| ghost.insert(same_bucket(i)));
        assert!(!ghost.contains(same_bucket(0)));
        assert!((1..WAYS as u64 + 1).all(|i| ghost.contains(same_bucket(i))));
    }

    #[test]
    fn an_empty_ghost_allocates_nothing_and_contains_nothing() {
        let ghost = Ghost::new(1 << 31);
        assert!(ghost.pairs.is_empty());
        assert!(!ghost.contains(0) && !ghost.contains(u64::MAX));
    }

    proptest! {
        #[test]
        fn ghost_reports_only_hashes_among_the_last_capacity_inserted(
            capacity in 1usize..40,
            hashes in proptest::collection::vec(0u64..64, 1..200),
        ) {
            let mut ghost = Ghost::new(capacity);
            let mut inserted = Vec::new();
            for h in hashes {
                let hash = spread(h);
                ghost.insert(hash);
                inserted.push(hash);
                let recent = &inserted[inserted.len().saturating_sub(capacity)..];
                for probe in 0..64u64 {
                    let probe = spread(probe);
                    if ghost.contains(probe) {
                        prop_assert!(recent.contains(&probe), "{probe:#x} is not recent");
                    }
                }
            }
        }
    }
}
