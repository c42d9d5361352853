//! Which shards this node serves, and until when: the node's side of the
//! lease. Every path to a local worker checks it, and workers read it
//! through their context ([`Context::holds_epoch`](gen_registry::Context::holds_epoch))
//! before a side effect no store fences.

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
