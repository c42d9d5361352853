//! SplitMix64, a small seeded generator: reproducible runs without a
//! dependency. One source for the tests (`common::Rng`) and for the
//! side-by-side benchmark crate (peers/, which includes this file by path);
//! examples/many_ids.rs keeps a copy of its own, as an example stands alone.

/// SplitMix64 (Steele, Lea and Flood, 2014): the same stream for the same
/// seed, on every run and platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`, uniform without bias (Lemire's method, "Fast
    /// random integer generation in an interval", 2019): the high word of a
    /// draw times `n`, drawn again in the rare case — probability below
    /// `n / 2^64` — that the low word falls where some results would be
    /// over-represented. Panics if `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0): the range 0..0 is empty");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            // 2^64 mod n: the low words below it are the biased ones.
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Shuffles `items` in place (Fisher–Yates), every order equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
