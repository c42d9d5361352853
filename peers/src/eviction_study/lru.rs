//! Exact LRU: one list, a hit moves the key to the head, a miss evicts the
//! tail.

use super::Policy;
use super::lists::Lists;

pub struct Lru {
    list: Lists<1>,
    capacity: usize,
}

impl Lru {
    pub fn new(capacity: usize, universe: usize) -> Lru {
        Lru {
            list: Lists::new(universe),
            capacity,
        }
    }
}

impl Policy for Lru {
    fn hit(&mut self, key: u32) -> bool {
        if self.list.list_of(key).is_none() {
            return false;
        }
        self.list.push_head(0, key);
        true
    }

    fn insert(&mut self, key: u32) -> Option<u32> {
        let victim = if self.list.len(0) >= self.capacity {
            let victim = self.list.tail(0)?;
            self.list.remove(victim);
            Some(victim)
        } else {
            None
        };
        self.list.push_head(0, key);
        victim
    }
}
