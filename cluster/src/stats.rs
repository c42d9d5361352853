//! A node's health snapshot: the workers of every shard it serves, summed
//! as [`GenRegistry::stats`](gen_registry::GenRegistry::stats) reports
//! them, each shard with its epoch, and how long the node may go on serving
//! without another lease renewal.

use crate::{Cluster, ClusterWorker};
use gen_registry::Stats;
use std::time::{Duration, Instant};

/// One shard this node serves: its number, its epoch (the fencing token),
/// and its registry's snapshot.
///
/// ```no_run
/// # use gen_registry_cluster::doc_support::*;
/// # run(|cluster| async move {
/// for shard in cluster.stats().shards {
///     println!("shard {} at epoch {}: {} workers", shard.shard, shard.epoch, shard.workers.running);
/// }
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// The shard's number, below [`Cluster::shards`].
    pub shard: u32,
    /// The shard's epoch on this node.
    pub epoch: i64,
    /// The snapshot of the shard's registry.
    pub workers: Stats,
}

/// A node's health snapshot, from [`Cluster::stats`].
///
/// ```no_run
/// # use gen_registry_cluster::doc_support::*;
/// # run(|cluster| async move {
/// let stats = cluster.stats();
/// println!(
///     "{}: {} shards, {} workers, {} messages queued, lease good for {:?}",
///     stats.node,
///     stats.shards.len(),
///     stats.workers.running,
///     stats.workers.queued,
///     stats.lease_left,
/// );
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// This node's name.
    pub node: String,
    /// The snapshots of the shards' registries, summed: counts add up,
    /// [`oldest_wait`](Stats::oldest_wait) is the longest of any shard,
    /// and [`resident`](Stats::resident) is the sum of those that have a
    /// capacity limit (`None` if none has).
    pub workers: Stats,
    /// The shards served here, by number.
    pub shards: Vec<ShardStats>,
    /// How long this node may still serve without another lease renewal:
    /// the time to its fence deadline. `None` while fenced (it serves
    /// nothing until it has a new lease). A healthy node keeps this above
    /// two thirds of `lease_ttl − fence_margin`, since it renews every third
    /// of that.
    pub lease_left: Option<Duration>,
}

/// `into` plus `one`, by the rules of [`NodeStats::workers`].
fn add(into: &mut Stats, one: &Stats) {
    into.starting += one.starting;
    into.running += one.running;
    into.in_back_off += one.in_back_off;
    into.stopping += one.stopping;
    into.queued += one.queued;
    into.oldest_wait = into.oldest_wait.max(one.oldest_wait);
    into.resident = match (into.resident, one.resident) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
}

impl<W: ClusterWorker> Cluster<W> {
    /// This node's health snapshot: each shard served here with its epoch
    /// and its registry's [`Stats`], their sum, and the time left on the
    /// node's lease. Reads this node only (no network); each shard's
    /// snapshot is taken as its registry's `stats()` takes it, so it costs
    /// a walk over the node's workers.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// cluster.call(7, 100, 1).await.unwrap();
    /// let stats = cluster.stats();
    /// assert_eq!(stats.node, cluster.name());
    /// assert!(stats.shards.iter().all(|s| cluster.serves(s.shard)));
    /// assert!(stats.lease_left.is_some()); // not fenced
    /// # });
    /// ```
    pub fn stats(&self) -> NodeStats {
        let node = &self.node;
        let served: Vec<_> = node
            .local
            .lock()
            .iter()
            .map(|(shard, (epoch, registry, _))| (*shard, *epoch, registry.clone()))
            .collect();
        let mut workers = Stats::default();
        let mut shards: Vec<ShardStats> = served
            .into_iter()
            .map(|(shard, epoch, registry)| {
                let stats = registry.stats();
                add(&mut workers, &stats);
                ShardStats {
                    shard,
                    epoch,
                    workers: stats,
                }
            })
            .collect();
        shards.sort_by_key(|s| s.shard);
        let lease_left = match node.live.deadline() {
            Some(deadline) if node.live.valid() => {
                Some(deadline.saturating_duration_since(Instant::now()))
            }
            _ => None,
        };
        NodeStats {
            node: node.config.name.clone(),
            workers,
            shards,
            lease_left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(running: usize, oldest_ms: u64, resident: Option<usize>) -> Stats {
        let mut s = Stats::default();
        s.running = running;
        s.queued = running * 2;
        s.oldest_wait = Duration::from_millis(oldest_ms);
        s.resident = resident;
        s
    }

    #[test]
    fn shard_snapshots_sum_counts_and_keep_the_longest_wait() {
        let mut sum = Stats::default();
        add(&mut sum, &stats(3, 5, None));
        add(&mut sum, &stats(4, 9, None));
        add(&mut sum, &stats(1, 2, None));
        assert_eq!(sum.running, 8);
        assert_eq!(sum.queued, 16);
        assert_eq!(sum.oldest_wait, Duration::from_millis(9));
        assert_eq!(sum.resident, None);
    }

    #[test]
    fn resident_sums_the_shards_with_a_limit() {
        let mut sum = Stats::default();
        add(&mut sum, &stats(3, 0, Some(3)));
        add(&mut sum, &stats(4, 0, None));
        add(&mut sum, &stats(2, 0, Some(2)));
        assert_eq!(sum.resident, Some(5));
    }
}
