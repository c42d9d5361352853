//! The state a node's tasks share, and the shards it serves here.
//!
//! Tasks of a node: the lease keeper (renews, and after a fence takes a new
//! lease) and the fence timer (stops the workers when the deadline passes),
//! in `membership`; the watcher (wakes the reconciler on any change under
//! the prefix) and the reconciler (releases the shards this node should no
//! longer own and claims those it should), in `ownership`; and the RPC
//! server, in `server`. Callers reach workers through `routing`.

use crate::client::Peers;
use crate::fence::Liveness;
use crate::reminders::{Hook, Services};
use crate::telemetry::NodeMetrics;
use crate::view::{Keys, View};
use crate::{ClusterError, ClusterWorker, Config};
use etcd_client::Client;
use gen_registry::{GenRegistry, Options};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A shard served here: its epoch, its registry, and the requests being
/// delivered to it.
pub(crate) type Served<W> = (i64, GenRegistry<W>, Arc<AtomicUsize>);

/// One node, shared by its handles (`Cluster`) and its tasks.
pub(crate) struct Node<W: ClusterWorker> {
    pub(crate) config: Config,
    pub(crate) options: Options<W>,
    pub(crate) etcd: Client,
    pub(crate) shards: u32,
    pub(crate) keys: Keys,
    pub(crate) address: String,
    pub(crate) live: Arc<Liveness>,
    /// The shards served here, with their epochs and registries. Claims and
    /// fences change it under this lock, so a claim that raced a fence is
    /// never served.
    pub(crate) local: Mutex<HashMap<u32, Served<W>>>,
    /// The lease this node holds now: a new one after each fence.
    pub(crate) lease: AtomicI64,
    pub(crate) view: Mutex<View>,
    /// Wakes the reconciler.
    pub(crate) wake: Notify,
    /// Held through each reconcile, so that two (the one a join runs and
    /// the loop's) never decide from the same view: the second would adopt
    /// a shard the first has just claimed and start a second registry for
    /// it, and an id could then run twice at one epoch.
    pub(crate) reconciling: tokio::sync::Mutex<()>,
    pub(crate) peers: Peers,
    /// The node's tasks, aborted when it leaves.
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set once by `leave`: from then on every operation fails with `Left`.
    pub(crate) left: AtomicBool,
    /// The node's own metrics (requests served, forwarded, retried; shards).
    pub(crate) metrics: NodeMetrics,
    /// Encodes a worker's `init` error for its caller, once the node was
    /// told to send them as values (`Cluster::send_init_errors`).
    pub(crate) init_codec: OnceLock<InitCodec<W>>,
    /// Starts admitted under the node's worker limit and not yet done.
    pub(crate) starting: Arc<AtomicUsize>,
    /// The reminder services of the shards served here.
    pub(crate) reminders: Services<W>,
}

/// Encodes a worker's own `init` error (postcard), or `None` if it fails.
pub(crate) type InitCodec<W> = fn(&<W as gen_registry::Worker>::Error) -> Option<Vec<u8>>;

/// A request being delivered to a local shard's registry: a graceful
/// release waits for these to finish before it stops the shard's workers,
/// so that a request routed just before the release is not cut off.
pub(crate) struct Busy(Arc<AtomicUsize>);

impl Busy {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A start admitted under the node's worker limit, counted until dropped.
pub(crate) struct Slot(Option<Arc<AtomicUsize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(starting) = &self.0 {
            starting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<W: ClusterWorker> Node<W> {
    /// A node that has registered under `lease` and serves nothing yet.
    pub(crate) fn new(
        config: Config,
        options: Options<W>,
        etcd: Client,
        shards: u32,
        address: String,
        live: Arc<Liveness>,
        lease: i64,
    ) -> Self {
        Node {
            keys: Keys::new(&config.prefix),
            peers: Peers::new(&config),
            metrics: NodeMetrics::new(&config.name),
            config,
            options,
            etcd,
            shards,
            address,
            live,
            local: Mutex::new(HashMap::new()),
            lease: AtomicI64::new(lease),
            view: Mutex::new(View::default()),
            wake: Notify::new(),
            reconciling: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
            left: AtomicBool::new(false),
            init_codec: OnceLock::new(),
            starting: Arc::new(AtomicUsize::new(0)),
            reminders: Services::default(),
        }
    }

    pub(crate) fn not_left(&self) -> Result<(), ClusterError> {
        match self.left.load(Ordering::Acquire) {
            true => Err(ClusterError::Left),
            false => Ok(()),
        }
    }

    /// Reads members and shard claims from etcd into the view.
    pub(crate) async fn refresh_view(&self) -> Result<(), ClusterError> {
        let view = View::read(&self.etcd, &self.keys, self.config.call_timeout).await?;
        *self.view.lock() = view;
        Ok(())
    }

    /// Serves `shard` at `epoch`, if the lease it was claimed under is still
    /// this node's and still safe (checked under the lock a fence takes).
    pub(crate) fn start_serving(
        &self,
        shard: u32,
        epoch: i64,
        lease: i64,
    ) -> Result<(), ClusterError> {
        // Every worker of the shard reads its epoch, whether this node still
        // holds it, and the node's name from its context.
        let live = self.live.clone();
        let options = self
            .options
            .clone()
            .epoch(epoch as u64)
            .epoch_check(move || live.holds(shard, epoch))
            .node(self.config.name.clone());
        let registry =
            GenRegistry::new(options).map_err(|e| ClusterError::Config(e.to_string()))?;
        let mut local = self.local.lock();
        // A shard already served keeps its registry: replacing it would
        // leave its workers running, unreachable, beside new ones.
        if self.live.valid()
            && self.lease.load(Ordering::Acquire) == lease
            && !self.left.load(Ordering::Acquire)
            && !local.contains_key(&shard)
        {
            self.reminders.started(shard, epoch, &registry);
            local.insert(shard, (epoch, registry, Arc::new(AtomicUsize::new(0))));
            self.metrics.shards.set(local.len() as f64);
            self.live.serve(shard, epoch);
        }
        Ok(())
    }

    /// The registry of `shard` if this node serves it at `epoch` now.
    pub(crate) fn serving(&self, shard: u32, epoch: i64) -> Option<(GenRegistry<W>, Busy)> {
        let local = self.local.lock();
        match local.get(&shard) {
            Some((e, registry, busy)) if *e == epoch && self.live.valid() => {
                Some((registry.clone(), Busy::new(busy)))
            }
            _ => None,
        }
    }

    /// Admits an operation on `id` under the node's worker limit
    /// (`Config::max_workers`): at once if no limit is set or the id's
    /// worker runs; else only if the workers running here plus the starts
    /// admitted and not yet done stay within it. Each admitted start counts
    /// until its slot drops, so concurrent starts cannot overshoot the limit
    /// between them (a worker that started is briefly counted twice, which
    /// errs on the side of refusing).
    pub(crate) fn admit(
        &self,
        registry: &GenRegistry<W>,
        id: &W::Id,
    ) -> Result<Slot, ClusterError> {
        let Some(limit) = self.config.max_workers else {
            return Ok(Slot(None));
        };
        if registry.lookup(id).is_ok() {
            return Ok(Slot(None));
        }
        self.starting.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Some(self.starting.clone()));
        if self.local_count() + self.starting.load(Ordering::Acquire) > limit {
            return Err(self.worker_error(id, gen_registry::Error::AtCapacity(limit)));
        }
        Ok(slot)
    }

    /// Fires the reminders of `kind` on every shard served here, now and
    /// from now on.
    pub(crate) fn serve_reminders(
        &self,
        kind: &'static str,
        start: Hook<W>,
    ) -> Result<(), ClusterError> {
        self.not_left()?;
        let local = self.local.lock();
        let served = local
            .iter()
            .map(|(shard, (epoch, r, _))| (*shard, *epoch, r));
        self.reminders.add(kind, start, served)
    }

    pub(crate) fn local_count(&self) -> usize {
        self.local.lock().values().map(|(_, r, _)| r.count()).sum()
    }

    /// Stops serving every shard and stops their workers (`terminate` runs,
    /// with `ExitReason::Moved`: their shards go to other nodes).
    pub(crate) async fn fence_local(&self) {
        let drained: Vec<GenRegistry<W>> = {
            let mut local = self.local.lock();
            self.live.fence();
            self.metrics.shards.set(0.0);
            self.reminders.stopped_all();
            local.drain().map(|(_, (_, r, _))| r).collect()
        };
        let mut stops = tokio::task::JoinSet::new();
        for registry in drained {
            stops.spawn(async move { registry.hand_over().await });
        }
        while stops.join_next().await.is_some() {}
    }
}
