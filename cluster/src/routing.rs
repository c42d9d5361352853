//! Routing: the way of every operation on an id (call, cast, stop) to the
//! worker of the id, wherever it runs.
//!
//! A node that serves the id's shard delivers to its local registry; any
//! other sends the operation to the shard's owner with the epoch it knows.
//! While nobody owns the shard, or the owner answers "not owner", or could
//! not be reached before the request left, the caller refreshes its view
//! and tries again, backing off, within its timeout. A request that may
//! have reached a worker is never sent again: the caller gets an error
//! instead.

use crate::client::RpcFail;
use crate::node::{Busy, Node};
use crate::wire::Response;
use crate::{ClusterError, ClusterWorker};
use gen_registry::{Error, GenRegistry, Worker};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The longest a caller waits between attempts while no owner answers.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// Where an operation on a shard goes now.
pub(crate) enum Route<W: Worker> {
    /// To this node's registry of the shard, at its epoch.
    Local(i64, GenRegistry<W>, Busy),
    /// To the owner at this address, at this epoch.
    Remote(String, i64),
    /// Nowhere yet: nobody this node knows of owns the shard.
    Nobody,
}

/// What a worker error becomes for the caller.
pub(crate) fn worker_error<W: Worker>(e: Error<W>) -> ClusterError {
    match e {
        Error::NotFound => ClusterError::NotFound,
        other => ClusterError::Worker(other.to_string()),
    }
}

impl<W: ClusterWorker> Node<W> {
    pub(crate) fn route(&self, shard: u32) -> Route<W> {
        if let Some((epoch, registry, busy)) = self.local.lock().get(&shard)
            && self.live.valid()
        {
            return Route::Local(*epoch, registry.clone(), Busy::new(busy));
        }
        match self.view.lock().remote(shard, &self.config.name) {
            Some((address, epoch)) => Route::Remote(address, epoch),
            None => Route::Nobody,
        }
    }
}

/// The retry state of one routed operation.
pub(crate) struct Pending {
    pub(crate) within: Duration,
    deadline: Instant,
    backoff: Duration,
}

impl Pending {
    pub(crate) fn new(within: Duration) -> Self {
        Pending {
            within,
            deadline: Instant::now() + within,
            backoff: Duration::from_millis(2),
        }
    }

    pub(crate) fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// An owner's answer other than success: `Ok` to try again.
    pub(crate) fn answer(&self, response: Response) -> Result<(), ClusterError> {
        match response {
            Response::NotOwner => Ok(()),
            Response::NotFound => Err(ClusterError::NotFound),
            Response::Failed(m) => Err(ClusterError::Worker(m)),
            other => Err(ClusterError::Rpc(format!("unexpected answer {other:?}"))),
        }
    }

    pub(crate) fn fail(&self, fail: RpcFail) -> Result<(), ClusterError> {
        match fail {
            RpcFail::NotSent => Ok(()),
            RpcFail::Sent(e) => Err(ClusterError::Rpc(e)),
            RpcFail::Timeout => Err(ClusterError::Timeout(self.within)),
        }
    }

    /// Asks for a fresh view and waits a little before the next attempt, or
    /// fails once the time is spent.
    pub(crate) async fn wait<W: ClusterWorker>(
        &mut self,
        node: &Node<W>,
    ) -> Result<(), ClusterError> {
        if node.left.load(Ordering::Acquire) {
            return Err(ClusterError::Left);
        }
        let left = self.left();
        if left.is_zero() {
            return Err(ClusterError::Timeout(self.within));
        }
        node.wake.notify_one();
        tokio::time::sleep(self.backoff.min(left)).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}
