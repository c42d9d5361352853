//! CLOCK with TinyLFU admission, single-threaded: newcomers wait in a FIFO
//! window (1 % of the capacity); the window's oldest then competes with the
//! CLOCK hand's victim by estimated frequency, and the less frequent one
//! leaves. Accesses set a referenced bit; the sketch is fed either by every
//! access (TinyLFU proper: a shared write per access in a concurrent form)
//! or only by starts (misses), which a registry could do under its start
//! lock, with nothing shared written on a hit.

use super::Policy;
use super::sketch::Sketch;
use std::collections::VecDeque;

const NOWHERE: u32 = u32::MAX;
const IN_WINDOW: u32 = u32::MAX - 1;

pub struct ClockTinyLfu {
    window: VecDeque<u32>,
    window_capacity: usize,
    main: Vec<u32>,
    main_capacity: usize,
    hand: usize,
    /// Per key: its index in `main`, IN_WINDOW or NOWHERE.
    place: Vec<u32>,
    referenced: Vec<bool>,
    sketch: Sketch,
    sketch_on_hits: bool,
}

impl ClockTinyLfu {
    pub fn new(capacity: usize, universe: usize, sketch_on_hits: bool) -> ClockTinyLfu {
        let window_capacity = (capacity / 100).max(1);
        ClockTinyLfu {
            window: VecDeque::new(),
            window_capacity,
            main: Vec::new(),
            main_capacity: capacity - window_capacity,
            hand: 0,
            place: vec![NOWHERE; universe],
            referenced: vec![false; universe],
            sketch: Sketch::new(capacity, false),
            sketch_on_hits,
        }
    }

    /// Sweeps to the first unreferenced main entry.
    fn clock_victim(&mut self) -> usize {
        loop {
            let at = self.hand;
            self.hand = (at + 1) % self.main.len();
            let key = self.main[at] as usize;
            if !std::mem::take(&mut self.referenced[key]) {
                return at;
            }
        }
    }
}

impl Policy for ClockTinyLfu {
    fn hit(&mut self, key: u32) -> bool {
        if self.place[key as usize] == NOWHERE {
            return false;
        }
        self.referenced[key as usize] = true;
        if self.sketch_on_hits {
            self.sketch.increment(key);
        }
        true
    }

    fn insert(&mut self, key: u32) -> Option<u32> {
        self.sketch.increment(key);
        self.place[key as usize] = IN_WINDOW;
        self.referenced[key as usize] = false;
        self.window.push_back(key);
        if self.window.len() <= self.window_capacity {
            return None;
        }
        let candidate = self
            .window
            .pop_front()
            .expect("the window is over its share");
        if self.main.len() < self.main_capacity {
            self.place[candidate as usize] = self.main.len() as u32;
            self.main.push(candidate);
            return None;
        }
        let at = self.clock_victim();
        let victim = self.main[at];
        let evicted = if self.sketch.estimate(candidate) > self.sketch.estimate(victim) {
            self.main[at] = candidate;
            self.place[candidate as usize] = at as u32;
            victim
        } else {
            candidate
        };
        self.place[evicted as usize] = NOWHERE;
        Some(evicted)
    }
}
