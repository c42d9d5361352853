//! Reminders in cluster mode: each shard's owner fires that shard's
//! reminders, with writes at the shard's epoch.
//!
//! A reminder is stored with a partition, the shard of its id. While this
//! node serves a shard, a [`Service`] of every served kind runs on that
//! shard's registry at the shard's epoch; it stops when the shard leaves
//! the node (a move, a fence, `leave`). Setting or cancelling a reminder
//! from any node reads the shard's current epoch from etcd and writes with
//! it, so a late write of an owner that was replaced is refused by the store.

use crate::{Cluster, ClusterError, ClusterWorker};
use gen_registry::GenRegistry;
use gen_registry::state::{
    Counts, Reminded, Reminders, Scheduled, Service, StateError, Store, When,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a reminder operation of [`ClusterReminders`] failed.
///
/// ```
/// use gen_registry_cluster::{ClusterError, ReminderError};
/// use std::time::Duration;
///
/// let e = ReminderError::from(ClusterError::NotDelivered(Duration::from_secs(5)));
/// assert!(matches!(e, ReminderError::Cluster(ClusterError::NotDelivered(_))));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReminderError {
    /// The cluster could not tell the shard's epoch: etcd could not be
    /// reached, or no node held the id's shard within the call timeout
    /// ([`ClusterError::NotDelivered`]: nothing was written).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The store refused or failed the write, or a message no longer
    /// decodes ([`StateError::Fenced`] only if the shard kept moving for
    /// the whole call timeout).
    #[error(transparent)]
    State(#[from] StateError),
}

/// The reminders of kind `kind` of the workers of a cluster, with messages
/// of type `M`, kept in a [`Store`] every node shares (PostgreSQL, with
/// `gen_registry_postgres`). Made by [`Cluster::reminders`]; cheap to clone.
///
/// - [`serve`](Self::serve), on every node, makes the node fire the
///   reminders of each shard it serves, as calls by id on that shard's
///   registry, at-least-once (the rules of
///   [`Reminders`](gen_registry::state::Reminders) hold as they are).
/// - [`set`](Self::set), [`cancel`](Self::cancel) and [`list`](Self::list)
///   work from any node, for any id: a reminder is stored in its id's shard,
///   and written with that shard's current epoch.
///
/// ```no_run
/// use gen_registry::state::{Reminded, Store, When};
/// use gen_registry::{Context, Options, Worker};
/// use gen_registry_cluster::{Cluster, Config};
/// use std::time::Duration;
///
/// /// A trial account that expires when its reminder fires.
/// struct Trial { expired: bool }
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Ask { IsExpired, Expire(String) }
/// impl From<Reminded<String>> for Ask {
///     fn from(reminded: Reminded<String>) -> Ask { Ask::Expire(reminded.message) }
/// }
///
/// impl Worker for Trial {
///     type Id = u64; type Args = (); type Request = Ask; type Reply = bool;
///     type Message = (); type Error = std::convert::Infallible;
///     async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Trial { expired: false })
///     }
///     async fn handle_call(&mut self, ask: Ask, _: &mut Context<Self>) -> bool {
///         if let Ask::Expire(_) = ask { self.expired = true; }
///         self.expired
///     }
/// }
///
/// # async fn shared_store() -> Store { Store::memory() }
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = shared_store().await; // the same database on every node
/// let config = Config::new("node-a", ["http://127.0.0.1:2379"], "a long shared cluster secret");
/// let cluster = Cluster::<Trial>::join(config, Options::default()).await?;
/// let reminders = cluster.reminders::<String>(&store, "trial");
/// // This node fires the reminders of the shards it serves.
/// reminders.serve(|_id| (), Duration::from_secs(1))?;
/// // From any node, for any id: stored in the id's shard.
/// reminders.set(&42, "expire", When::After(Duration::from_secs(30 * 86_400)), &"trial over".into()).await?;
/// assert_eq!(reminders.list(&42).await?.len(), 1);
/// # cluster.leave().await;
/// # Ok(()) }
/// ```
pub struct ClusterReminders<W: ClusterWorker, M> {
    cluster: Cluster<W>,
    reminders: Reminders<W, M>,
    kind: &'static str,
}

impl<W: ClusterWorker, M> Clone for ClusterReminders<W, M> {
    fn clone(&self) -> Self {
        ClusterReminders {
            cluster: self.cluster.clone(),
            reminders: self.reminders.clone(),
            kind: self.kind,
        }
    }
}

impl<W: ClusterWorker, M> fmt::Debug for ClusterReminders<W, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterReminders")
            .field("node", &self.cluster.name())
            .field("kind", &self.kind)
            .finish()
    }
}

impl<W: ClusterWorker> Cluster<W> {
    /// The reminders of kind `kind` (like a table name) of this cluster's
    /// workers, kept in `store`, which every node must share. See
    /// [`ClusterReminders`].
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// use gen_registry::state::Store;
    /// # run(|cluster| async move {
    /// let reminders = cluster.reminders::<String>(&Store::memory(), "adder");
    /// # let _ = reminders;
    /// # });
    /// ```
    pub fn reminders<M>(&self, store: &Store, kind: &'static str) -> ClusterReminders<W, M>
    where
        M: serde::Serialize + serde::de::DeserializeOwned,
    {
        ClusterReminders {
            cluster: self.clone(),
            reminders: Reminders::new(store, kind),
            kind,
        }
    }
}

impl<W, M> ClusterReminders<W, M>
where
    W: ClusterWorker,
    M: serde::Serialize + serde::de::DeserializeOwned,
{
    /// Fires, from now on, the reminders of every shard this node serves:
    /// each served shard runs a [`Reminders::serve`] service on its
    /// registry, scanning every `scan` period, with writes at the shard's
    /// epoch; a worker it starts gets `args(&id)`. A shard's service stops
    /// when the shard leaves this node, and every one when the node leaves.
    /// Call it once per kind on every node. [`ClusterError::Config`] if this
    /// node already fires this kind.
    ///
    /// ```no_run
    /// use gen_registry::state::{Reminded, Store};
    /// use gen_registry::{Context, Options, Worker};
    /// use gen_registry_cluster::{Cluster, Config};
    /// use std::time::Duration;
    ///
    /// /// Counts the reminders it was sent, from a start given in its args.
    /// struct Ticks(u64);
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Tick;
    /// impl From<Reminded<()>> for Tick {
    ///     fn from(_: Reminded<()>) -> Tick { Tick }
    /// }
    ///
    /// impl Worker for Ticks {
    ///     type Id = u64; type Args = u64; type Request = Tick; type Reply = u64;
    ///     type Message = (); type Error = std::convert::Infallible;
    ///     async fn init(_: &u64, start: u64, _: &Context<Self>) -> Result<Self, Self::Error> {
    ///         Ok(Ticks(start))
    ///     }
    ///     async fn handle_call(&mut self, _: Tick, _: &mut Context<Self>) -> u64 {
    ///         self.0 += 1;
    ///         self.0
    ///     }
    /// }
    ///
    /// # #[tokio::main] async fn main() {
    /// # let store = Store::memory();
    /// let config = Config::new("node-a", ["http://127.0.0.1:2379"], "a long shared cluster secret");
    /// let cluster = Cluster::<Ticks>::join(config, Options::default()).await.unwrap();
    /// let reminders = cluster.reminders::<()>(&store, "ticks");
    /// // A worker started to deliver a reminder starts from 0.
    /// reminders.serve(|_id| 0, Duration::from_millis(500)).unwrap();
    /// assert!(reminders.serve(|_id| 0, Duration::from_millis(500)).is_err()); // once per kind
    /// # cluster.leave().await;
    /// # }
    /// ```
    pub fn serve(
        &self,
        args: impl Fn(&W::Id) -> W::Args + Send + Sync + 'static,
        scan: Duration,
    ) -> Result<(), ClusterError>
    where
        W::Request: From<Reminded<M>>,
        M: Send + 'static,
    {
        let args = Arc::new(args);
        let reminders = self.reminders.clone();
        let start: Hook<W> = Arc::new(move |shard, epoch, registry| {
            let args = args.clone();
            reminders.clone().in_partition(shard, epoch as u64).serve(
                registry,
                move |id| args(id),
                scan,
            )
        });
        self.cluster.node().serve_reminders(self.kind, start)
    }

    /// Sets the reminder `name` of `id` (replacing one of that name), in
    /// `id`'s shard at the shard's current epoch; returns once it is in the
    /// store. While the shard has no owner (it is moving), waits for one,
    /// within the call timeout.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// use gen_registry::state::{Store, When};
    /// use std::time::Duration;
    /// # run(|cluster| async move {
    /// let reminders = cluster.reminders::<u64>(&Store::memory(), "adder");
    /// reminders.set(&7, "tick", When::Every(Duration::from_secs(60)), &1).await.unwrap();
    /// # });
    /// ```
    pub async fn set(
        &self,
        id: &W::Id,
        name: &str,
        when: When,
        message: &M,
    ) -> Result<(), ReminderError> {
        self.at_epoch(id, |r| async move { r.set(id, name, when, message).await })
            .await
    }

    /// Cancels the reminder `name` of `id`, at its shard's current epoch;
    /// whether there was one.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// use gen_registry::state::Store;
    /// # run(|cluster| async move {
    /// let reminders = cluster.reminders::<u64>(&Store::memory(), "adder");
    /// assert!(!reminders.cancel(&7, "never set").await.unwrap());
    /// # });
    /// ```
    pub async fn cancel(&self, id: &W::Id, name: &str) -> Result<bool, ReminderError> {
        self.at_epoch(id, |r| async move { r.cancel(id, name).await })
            .await
    }

    /// What this node's services of this kind did so far, over every shard
    /// it served since [`serve`](Self::serve) (a service that stopped counts
    /// once it finished its delivery in flight). A mark of a delivery that
    /// the store refused, because the shard had moved on to a later epoch
    /// while this node was paused, counts in
    /// [`store_errors`](Counts::store_errors).
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// use gen_registry::state::Store;
    /// # run(|cluster| async move {
    /// let reminders = cluster.reminders::<u64>(&Store::memory(), "adder");
    /// println!("{} reminders fired here", reminders.counts().fired);
    /// # });
    /// ```
    pub fn counts(&self) -> Counts {
        self.cluster.node().reminders.counts(self.kind)
    }

    /// The reminders of `id`, by name.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// use gen_registry::state::{Store, When};
    /// use std::time::Duration;
    /// # run(|cluster| async move {
    /// let reminders = cluster.reminders::<u64>(&Store::memory(), "adder");
    /// reminders.set(&7, "later", When::After(Duration::from_secs(600)), &5).await.unwrap();
    /// assert_eq!(reminders.list(&7).await.unwrap()[0].message, 5);
    /// # });
    /// ```
    pub async fn list(&self, id: &W::Id) -> Result<Vec<Scheduled<M>>, ReminderError> {
        Ok(self.reminders.list(id).await?)
    }

    /// Runs `write` with the handle of `id`'s shard at its current epoch;
    /// again with a fresh epoch if the store refused the one read (the
    /// shard moved meanwhile), or once the shard has an owner, until the
    /// call timeout.
    async fn at_epoch<T, F, Fut>(&self, id: &W::Id, mut write: F) -> Result<T, ReminderError>
    where
        F: FnMut(Reminders<W, M>) -> Fut,
        Fut: Future<Output = Result<T, StateError>>,
    {
        let within = self.cluster.node().config.call_timeout;
        let deadline = Instant::now() + within;
        let shard = self.cluster.shard_of(id)?;
        let mut pause = Duration::from_millis(5);
        loop {
            let outcome = match self.cluster.owner(id).await? {
                Some(owner) => {
                    let handle = self
                        .reminders
                        .clone()
                        .in_partition(shard, owner.epoch as u64);
                    match write(handle).await {
                        Err(StateError::Fenced { .. }) if Instant::now() < deadline => None,
                        done => Some(done?),
                    }
                }
                None => None,
            };
            if let Some(done) = outcome {
                return Ok(done);
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotDelivered(within).into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// Starts one kind's service on a shard's registry at the shard's epoch.
pub(crate) type Hook<W> = Arc<dyn Fn(u32, i64, &GenRegistry<W>) -> Service + Send + Sync>;

/// The reminder services of a node: the kinds it fires, and the services
/// running on the shards it serves, with the epoch they run at.
pub(crate) struct Services<W: ClusterWorker> {
    inner: Mutex<Running<W>>,
    /// What the services that ended did, by kind.
    ended: Arc<Mutex<HashMap<&'static str, Counts>>>,
}

/// The services of one shard: its epoch, and one service per kind.
type OnShard = (i64, Vec<(&'static str, Service)>);

struct Running<W: ClusterWorker> {
    kinds: Vec<(&'static str, Hook<W>)>,
    shards: HashMap<u32, OnShard>,
}

impl<W: ClusterWorker> Default for Services<W> {
    fn default() -> Self {
        Services {
            inner: Mutex::new(Running {
                kinds: Vec::new(),
                shards: HashMap::new(),
            }),
            ended: Arc::default(),
        }
    }
}

/// Adds `more` to `total`.
fn add(total: &mut Counts, more: Counts) {
    total.scans += more.scans;
    total.fired += more.fired;
    total.retried += more.retried;
    total.store_errors += more.store_errors;
}

impl<W: ClusterWorker> Services<W> {
    /// Adds a kind and starts it on the shards served now (`served`, read
    /// under the lock that guards them).
    pub(crate) fn add<'a>(
        &self,
        kind: &'static str,
        start: Hook<W>,
        served: impl Iterator<Item = (u32, i64, &'a GenRegistry<W>)>,
    ) -> Result<(), ClusterError> {
        let mut inner = self.inner.lock();
        if inner.kinds.iter().any(|(k, _)| *k == kind) {
            return Err(ClusterError::Config(format!(
                "this node already fires the reminders of kind {kind:?}"
            )));
        }
        for (shard, epoch, registry) in served {
            let entry = inner.shards.entry(shard).or_insert((epoch, Vec::new()));
            entry.1.push((kind, start(shard, epoch, registry)));
        }
        inner.kinds.push((kind, start));
        Ok(())
    }

    /// `shard` is served here from now on at `epoch`: starts every kind on
    /// it (and stops any left from another epoch).
    pub(crate) fn started(&self, shard: u32, epoch: i64, registry: &GenRegistry<W>) {
        let mut inner = self.inner.lock();
        let services = inner
            .kinds
            .iter()
            .map(|(kind, start)| (*kind, start(shard, epoch, registry)))
            .collect();
        if let Some(old) = inner.shards.insert(shard, (epoch, services)) {
            self.stop(old);
        }
    }

    /// `shard` at `epoch` is no longer served here: its services stop
    /// (each after the delivery in flight, if any).
    pub(crate) fn stopped(&self, shard: u32, epoch: i64) {
        let mut inner = self.inner.lock();
        if inner.shards.get(&shard).is_some_and(|(e, _)| *e == epoch) {
            if let Some(old) = inner.shards.remove(&shard) {
                self.stop(old);
            }
        }
    }

    /// Nothing is served here any more.
    pub(crate) fn stopped_all(&self) {
        for (_, old) in self.inner.lock().shards.drain() {
            self.stop(old);
        }
    }

    /// Stops a shard's services, and adds what they did to the counts of
    /// those that ended once they have (after their delivery in flight).
    fn stop(&self, (_, services): OnShard) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // dropped: they stop all the same
        };
        for (kind, service) in services {
            let ended = self.ended.clone();
            runtime.spawn(async move {
                let counts = service.stop().await;
                add(ended.lock().entry(kind).or_default(), counts);
            });
        }
    }

    /// What the services of `kind` did, ended or running.
    pub(crate) fn counts(&self, kind: &'static str) -> Counts {
        let mut total = self.ended.lock().get(kind).copied().unwrap_or_default();
        for (_, services) in self.inner.lock().shards.values() {
            for (k, service) in services {
                if *k == kind {
                    add(&mut total, service.counts());
                }
            }
        }
        total
    }
}
