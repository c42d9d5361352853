//! Which shards this node serves, and until when: the node's side of the
//! lease. Every path to a local worker checks it, and workers read it
//! through their [`Fence`] before writing to an external store.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The node's liveness: the instant (in nanoseconds after `base`, plus one
/// so that 0 can mean "fenced") after which it must not serve, and the
/// shards it serves with their epochs.
pub(crate) struct Liveness {
    base: Instant,
    deadline: AtomicU64,
    serving: Mutex<HashMap<u32, i64>>,
}

impl Liveness {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Liveness {
            base: Instant::now(),
            deadline: AtomicU64::new(0),
            serving: Mutex::new(HashMap::new()),
        })
    }

    /// Now, on the clock the deadline is kept in.
    pub(crate) fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    /// The deadline as an instant, or `None` while fenced.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Acquire) {
            0 => None,
            d => Some(self.base + Duration::from_nanos(d - 1)),
        }
    }

    /// Whether the lease is still safely ours.
    pub(crate) fn valid(&self) -> bool {
        let d = self.deadline.load(Ordering::Acquire);
        d != 0 && self.now() < d
    }

    /// Whether this node serves `shard` at `epoch` now.
    pub(crate) fn holds(&self, shard: u32, epoch: i64) -> bool {
        self.valid() && self.serving.lock().get(&shard) == Some(&epoch)
    }

    /// A renewal sent at `sent` was acknowledged: serve until `sent + safe`,
    /// unless fenced meanwhile (then only a new lease re-arms it).
    pub(crate) fn extend(&self, sent: u64, safe: Duration) {
        let new = sent + safe.as_nanos() as u64;
        let mut cur = self.deadline.load(Ordering::Acquire);
        while cur != 0 && new > cur {
            match self
                .deadline
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// A new lease, granted by a request sent at `sent`.
    pub(crate) fn arm(&self, sent: u64, safe: Duration) {
        self.deadline
            .store(sent + safe.as_nanos() as u64, Ordering::Release);
    }

    /// Stop serving everything, at once.
    pub(crate) fn fence(&self) {
        self.deadline.store(0, Ordering::Release);
        self.serving.lock().clear();
    }

    pub(crate) fn serve(&self, shard: u32, epoch: i64) {
        self.serving.lock().insert(shard, epoch);
    }

    pub(crate) fn unserve(&self, shard: u32) {
        self.serving.lock().remove(&shard);
    }
}

/// A worker's proof of ownership: its shard, the shard's epoch (the fencing
/// token), and whether this node still holds the shard at that epoch.
///
/// Check [`is_valid`](Fence::is_valid) right before a side effect, and pass
/// [`epoch`](Fence::epoch) to stores that can reject writes carrying an older
/// token than one they have seen: that closes the window a process pause
/// between the check and the write would leave open.
///
/// ```
/// use gen_registry_cluster::Fence;
///
/// // Outside a cluster (a unit test of a worker), a fence that always holds.
/// let fence = Fence::local();
/// assert!(fence.is_valid());
/// assert_eq!(fence.epoch(), 0);
/// ```
#[derive(Clone)]
pub struct Fence {
    shard: u32,
    epoch: i64,
    node: Option<Arc<Liveness>>,
}

impl Fence {
    pub(crate) fn new(shard: u32, epoch: i64, node: Arc<Liveness>) -> Self {
        Fence {
            shard,
            epoch,
            node: Some(node),
        }
    }

    /// A fence for a worker run outside a cluster: shard 0, epoch 0, always
    /// valid.
    ///
    /// ```
    /// use gen_registry_cluster::Fence;
    /// assert_eq!(Fence::local().shard(), 0);
    /// ```
    pub fn local() -> Self {
        Fence {
            shard: 0,
            epoch: 0,
            node: None,
        }
    }

    /// The worker's shard.
    ///
    /// ```
    /// use gen_registry_cluster::Fence;
    /// assert_eq!(Fence::local().shard(), 0);
    /// ```
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The shard's epoch: the etcd revision at which this node claimed it.
    /// A later owner of the shard always has a larger epoch.
    ///
    /// ```
    /// use gen_registry_cluster::Fence;
    /// assert_eq!(Fence::local().epoch(), 0);
    /// ```
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Whether this node still serves the shard at this epoch, with its
    /// lease safely unexpired. Once false, it stays false.
    ///
    /// ```
    /// use gen_registry_cluster::Fence;
    /// assert!(Fence::local().is_valid());
    /// ```
    pub fn is_valid(&self) -> bool {
        self.node
            .as_ref()
            .is_none_or(|n| n.holds(self.shard, self.epoch))
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("shard", &self.shard)
            .field("epoch", &self.epoch)
            .finish()
    }
}
