//! W-TinyLFU: a window LRU (1 % of the capacity) in front of a segmented
//! LRU main area (probation and protected, protected ≤ 80 % of main), and a
//! frequency sketch of every access. A new key enters the window; the
//! window's overflow joins probation as a candidate, and when the whole is
//! over capacity the candidate and probation's LRU victim are compared by
//! estimated frequency: the less frequent one leaves. A hit in probation
//! promotes to protected; protected's overflow drops back to probation.

use super::Policy;
use super::lists::Lists;
use super::sketch::Sketch;

const WINDOW: usize = 0;
const PROBATION: usize = 1;
const PROTECTED: usize = 2;

pub struct WTinyLfu {
    lists: Lists<3>,
    sketch: Sketch,
    capacity: usize,
    window_capacity: usize,
    protected_capacity: usize,
}

impl WTinyLfu {
    pub fn new(capacity: usize, universe: usize, doorkeeper: bool) -> WTinyLfu {
        let window_capacity = (capacity / 100).max(1);
        let main = capacity.saturating_sub(window_capacity);
        WTinyLfu {
            lists: Lists::new(universe),
            sketch: Sketch::new(capacity, doorkeeper),
            capacity,
            window_capacity,
            protected_capacity: main * 8 / 10,
        }
    }

    fn len(&self) -> usize {
        self.lists.len(WINDOW) + self.lists.len(PROBATION) + self.lists.len(PROTECTED)
    }
}

impl Policy for WTinyLfu {
    fn hit(&mut self, key: u32) -> bool {
        let Some(list) = self.lists.list_of(key) else {
            return false;
        };
        self.sketch.increment(key);
        match list {
            WINDOW | PROTECTED => self.lists.push_head(list, key),
            _ => {
                self.lists.push_head(PROTECTED, key);
                if self.lists.len(PROTECTED) > self.protected_capacity {
                    let demoted = self.lists.tail(PROTECTED).expect("protected is not empty");
                    self.lists.push_head(PROBATION, demoted);
                }
            }
        }
        true
    }

    fn insert(&mut self, key: u32) -> Option<u32> {
        self.sketch.increment(key);
        self.lists.push_head(WINDOW, key);
        if self.lists.len(WINDOW) <= self.window_capacity {
            return self.evict_lru_if_over();
        }
        let candidate = self.lists.tail(WINDOW).expect("the window is not empty");
        self.lists.push_head(PROBATION, candidate);
        if self.len() <= self.capacity {
            return None;
        }
        let victim = self
            .lists
            .tail(PROBATION)
            .filter(|&v| v != candidate)
            .or_else(|| self.lists.tail(PROTECTED));
        let evicted = match victim {
            Some(victim) if self.sketch.estimate(candidate) > self.sketch.estimate(victim) => {
                victim
            }
            _ => candidate,
        };
        self.lists.remove(evicted);
        Some(evicted)
    }
}

impl WTinyLfu {
    /// While main is not full the window may grow past its share (a cache
    /// smaller than 100 has a one-entry window); evicts plain LRU then.
    fn evict_lru_if_over(&mut self) -> Option<u32> {
        if self.len() <= self.capacity {
            return None;
        }
        let victim = [PROBATION, PROTECTED, WINDOW]
            .iter()
            .find_map(|&l| self.lists.tail(l))?;
        self.lists.remove(victim);
        Some(victim)
    }
}
