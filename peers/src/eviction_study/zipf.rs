//! A seeded Zipf generator over `n` ids: rank `r` (0-based) is drawn with
//! probability ∝ 1 / (r + 1)^s, and ranks map to ids through a fixed
//! shuffle, so popularity says nothing about an id's value or position.

use crate::common::{Rng, shuffled};

/// Draws ids `0..n` with Zipf(s) popularity, reproducibly from a seed.
pub struct Zipf {
    /// cdf[r] = P(rank ≤ r).
    cdf: Vec<f64>,
    /// The id of each rank.
    ids: Vec<u32>,
}

impl Zipf {
    /// The distribution over `n` ids with exponent `s`; `shuffle_seed`
    /// fixes which id gets which rank.
    pub fn new(n: usize, s: f64, shuffle_seed: u64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for r in 0..n {
            total += 1.0 / ((r + 1) as f64).powf(s);
            cdf.push(total);
        }
        cdf.iter_mut().for_each(|c| *c /= total);
        let ids = shuffled(n, shuffle_seed)
            .into_iter()
            .map(|id| id as u32)
            .collect();
        Zipf { cdf, ids }
    }

    /// `len` draws from a generator seeded with `seed`.
    pub fn trace(&self, len: usize, seed: u64) -> Vec<u32> {
        let mut rng = Rng::new(seed);
        (0..len)
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let rank = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
                self.ids[rank]
            })
            .collect()
    }

    /// The id of popularity rank `rank` (0 = most popular).
    #[cfg(test)]
    pub fn id_of_rank(&self, rank: usize) -> u32 {
        self.ids[rank]
    }

    /// The hit ratio of an oracle that keeps the `capacity` most popular
    /// ids resident: the best any policy can do on an independent trace.
    pub fn best_hit_ratio(&self, capacity: usize) -> f64 {
        self.cdf[capacity.min(self.cdf.len()) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::Zipf;

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let zipf = Zipf::new(1_000, 1.0, 1);
        assert_eq!(zipf.trace(1_000, 7), zipf.trace(1_000, 7));
        assert_ne!(zipf.trace(1_000, 7), zipf.trace(1_000, 8));
    }

    #[test]
    fn the_most_popular_id_is_drawn_at_its_probability() {
        let zipf = Zipf::new(1_000, 1.0, 1);
        let top = zipf.id_of_rank(0);
        let trace = zipf.trace(200_000, 3);
        let share = trace.iter().filter(|&&id| id == top).count() as f64 / trace.len() as f64;
        let expected = zipf.best_hit_ratio(1);
        assert!(
            (share - expected).abs() < 0.01,
            "share {share}, expected {expected}"
        );
    }
}
