//! The ghost queue: the hashes of the last `capacity` keys evicted from the
//! small queue, oldest forgotten first. O(1) insert and membership test.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;

use fxhash::FxHashMap;

pub(super) struct Ghost {
    /// Oldest at the front.
    order: VecDeque<u64>,
    /// How many times each hash is in `order` (a key can be evicted again
    /// before its earlier ghost is forgotten).
    counts: FxHashMap<u64, u32>,
    capacity: usize,
}

impl Ghost {
    pub(super) fn new(capacity: usize) -> Ghost {
        Ghost {
            order: VecDeque::new(),
            counts: FxHashMap::default(),
            capacity,
        }
    }

    pub(super) fn contains(&self, hash: u64) -> bool {
        self.counts.contains_key(&hash)
    }

    pub(super) fn insert(&mut self, hash: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.order.len() == self.capacity {
            self.forget_oldest();
        }
        self.order.push_back(hash);
        *self.counts.entry(hash).or_insert(0) += 1;
    }

    fn forget_oldest(&mut self) {
        let Some(old) = self.order.pop_front() else {
            return;
        };
        if let Entry::Occupied(mut count) = self.counts.entry(old) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Ghost;

    #[test]
    fn ghost_forgets_the_oldest_hash_beyond_its_capacity() {
        let mut ghost = Ghost::new(2);
        ghost.insert(1);
        ghost.insert(2);
        ghost.insert(3);
        assert!(!ghost.contains(1));
        assert!(ghost.contains(2) && ghost.contains(3));
        assert_eq!(ghost.len(), 2);
    }

    #[test]
    fn ghost_keeps_a_hash_inserted_twice_until_both_copies_are_forgotten() {
        let mut ghost = Ghost::new(2);
        ghost.insert(1);
        ghost.insert(1);
        ghost.insert(2);
        assert!(ghost.contains(1), "the second copy of 1 is still there");
        ghost.insert(3);
        assert!(!ghost.contains(1));
    }
}
