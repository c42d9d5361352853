//! TinyLFU's frequency sketch: a count-min sketch of 4-bit counters (16 to
//! a `u64`), four rows, halved every `10 × capacity` increments so old
//! popularity fades; optionally a doorkeeper (a Bloom filter that absorbs
//! each key's first occurrence per period, so one-off keys never reach the
//! counters).

use std::sync::atomic::{AtomicU64, Ordering};

const SEEDS: [u64; 4] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0x85EB_CA77_C2B2_AE63,
];
const HALVE_MASK: u64 = 0x7777_7777_7777_7777;

/// Where row `row`'s counter of `key` is: (word, shift).
fn position(key: u32, row: usize, mask: usize) -> (usize, u32) {
    let h = (u64::from(key) ^ SEEDS[row]).wrapping_mul(SEEDS[(row + 1) % 4]);
    let h = h ^ (h >> 29);
    ((h as usize) & mask, ((h >> 58) as u32 & 15) * 4)
}

fn words_for(capacity: usize) -> usize {
    capacity.next_power_of_two().max(16)
}

pub struct Sketch {
    table: Vec<u64>,
    mask: usize,
    additions: usize,
    period: usize,
    doorkeeper: Option<Vec<u64>>,
}

impl Sketch {
    pub fn new(capacity: usize, doorkeeper: bool) -> Sketch {
        let words = words_for(capacity);
        let period = 10 * capacity;
        Sketch {
            table: vec![0; words],
            mask: words - 1,
            additions: 0,
            period,
            doorkeeper: doorkeeper.then(|| vec![0; period.next_power_of_two() / 64 * 2]),
        }
    }

    fn doorkeeper_bits(&self, key: u32) -> [(usize, u64); 2] {
        let bits = self.doorkeeper.as_ref().map_or(64, |d| d.len() * 64) - 1;
        let h = u64::from(key).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let (a, b) = (h as usize & bits, (h >> 32) as usize & bits);
        [(a / 64, 1 << (a % 64)), (b / 64, 1 << (b % 64))]
    }

    pub fn increment(&mut self, key: u32) {
        if self.doorkeeper.is_some() {
            let bits = self.doorkeeper_bits(key);
            let door = self.doorkeeper.as_mut().unwrap();
            if !bits.iter().all(|&(w, b)| door[w] & b != 0) {
                bits.iter().for_each(|&(w, b)| door[w] |= b);
                return self.count_addition();
            }
        }
        for row in 0..4 {
            let (word, shift) = position(key, row, self.mask);
            if (self.table[word] >> shift) & 15 < 15 {
                self.table[word] += 1 << shift;
            }
        }
        self.count_addition();
    }

    fn count_addition(&mut self) {
        self.additions += 1;
        if self.additions >= self.period {
            self.table
                .iter_mut()
                .for_each(|w| *w = (*w >> 1) & HALVE_MASK);
            if let Some(door) = self.doorkeeper.as_mut() {
                door.iter_mut().for_each(|w| *w = 0);
            }
            self.additions /= 2;
        }
    }

    pub fn estimate(&self, key: u32) -> u64 {
        let counted = (0..4)
            .map(|row| {
                let (word, shift) = position(key, row, self.mask);
                (self.table[word] >> shift) & 15
            })
            .min()
            .unwrap_or(0);
        let door = self.doorkeeper.as_ref().map_or(0, |door| {
            u64::from(
                self.doorkeeper_bits(key)
                    .iter()
                    .all(|&(w, b)| door[w] & b != 0),
            )
        });
        counted + door
    }
}

/// The same counters shared between threads, incremented with atomics on
/// every access: what a sketch-based policy pays per access if it records
/// accesses directly rather than through per-thread buffers.
pub struct SharedSketch {
    table: Box<[AtomicU64]>,
    mask: usize,
}

impl SharedSketch {
    pub fn new(capacity: usize) -> SharedSketch {
        let words = words_for(capacity);
        SharedSketch {
            table: (0..words).map(|_| AtomicU64::new(0)).collect(),
            mask: words - 1,
        }
    }

    #[inline]
    pub fn increment(&self, key: u32) {
        for row in 0..4 {
            let (word, shift) = position(key, row, self.mask);
            let word = &self.table[word];
            if (word.load(Ordering::Relaxed) >> shift) & 15 < 15 {
                word.fetch_add(1 << shift, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sketch;

    fn increment(sketch: &mut Sketch, key: u32, times: usize) {
        (0..times).for_each(|_| sketch.increment(key));
    }

    #[test]
    fn estimate_counts_increments_up_to_fifteen() {
        let mut sketch = Sketch::new(1_000, false);
        increment(&mut sketch, 42, 5);
        assert_eq!(sketch.estimate(42), 5);
        increment(&mut sketch, 42, 20);
        assert_eq!(sketch.estimate(42), 15);
    }

    #[test]
    fn counters_halve_after_ten_times_the_capacity_increments() {
        let mut sketch = Sketch::new(16, false);
        increment(&mut sketch, 1, 8);
        // The 160th increment (10 × 16) halves every counter.
        increment(&mut sketch, 2, 152);
        assert_eq!(sketch.estimate(1), 4);
    }

    #[test]
    fn doorkeeper_absorbs_the_first_occurrence() {
        let mut sketch = Sketch::new(1_000, true);
        sketch.increment(7);
        assert_eq!(sketch.estimate(7), 1);
        sketch.increment(7);
        assert_eq!(sketch.estimate(7), 2);
    }
}
