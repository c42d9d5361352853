//! The node: its lease, its view of members and shard owners, the shards it
//! serves in local registries, routing by id, and the RPC server its peers
//! call.
//!
//! Tasks of a node: the lease keeper (renews, and after a fence takes a new
//! lease), the fence timer (stops the workers when the deadline passes), the
//! watcher (wakes the reconciler on any change under the prefix), the
//! reconciler (reads members and owners from etcd, releases the shards this
//! node should no longer own and claims those it should), and the RPC server.
//! The watch only hastens the reconciler: it also runs on a tick, and always
//! reads the whole state, so a missed event costs latency, not correctness.

use crate::fence::{Fence, Liveness};
use crate::hash::{rendezvous, shard_of};
use crate::wire::{self, FrameError, Request, Response};
use crate::{ArgsOf, ClusterArgs, ClusterError, ClusterWorker, Config};
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use gen_registry::{Error, Executor, GenRegistry, Options, Worker};
use parking_lot::Mutex;
use serde::{Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long a handshake may take before the connection is dropped.
const HANDSHAKE: Duration = Duration::from_secs(2);
/// Idle connections kept per peer.
const POOL: usize = 64;
/// The longest a caller waits between attempts while no owner answers.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// Where a shard is served: the owner's node name, its address, and the
/// shard's epoch (the fencing token).
///
/// ```no_run
/// # use gen_registry_cluster::doc_support::*;
/// # run(|cluster| async move {
/// let owner = cluster.owner(&7).await.unwrap().expect("someone owns every shard");
/// println!("id 7 lives on {} at {} (epoch {})", owner.node, owner.address, owner.epoch);
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The owner's node name.
    pub node: String,
    /// The address its peers dial.
    pub address: String,
    /// The shard's epoch.
    pub epoch: i64,
}

/// One shard key as read from etcd.
#[derive(Clone, Debug)]
struct Claim {
    node: String,
    epoch: i64,
    lease: i64,
}

#[derive(Default)]
struct View {
    members: BTreeMap<String, String>,
    claims: HashMap<u32, Claim>,
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn shard_count(&self) -> String {
        format!("{}/config/shards", self.prefix)
    }
    fn member(&self, name: &str) -> String {
        format!("{}/members/{name}", self.prefix)
    }
    fn shard(&self, shard: u32) -> String {
        format!("{}/shards/{shard:010}", self.prefix)
    }
    fn all(&self) -> String {
        format!("{}/", self.prefix)
    }
}

/// A shard served here: its epoch, its registry, and the requests being
/// delivered to it.
type Served<W> = (i64, GenRegistry<W>, Arc<AtomicUsize>);

struct Inner<W: ClusterWorker> {
    config: Config,
    options: Options<W>,
    etcd: Client,
    shards: u32,
    keys: Keys,
    address: String,
    live: Arc<Liveness>,
    /// The shards served here, with their epochs and registries. Claims and
    /// fences change it under this lock, so a claim that raced a fence is
    /// never served.
    local: Mutex<HashMap<u32, Served<W>>>,
    lease: AtomicI64,
    view: Mutex<View>,
    wake: Notify,
    pool: Mutex<HashMap<String, Vec<TcpStream>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    left: AtomicBool,
}

/// A node of a cluster of `W` workers.
///
/// Every operation names an id; the node routes it to the id's shard owner,
/// which may be itself. Clone it freely (an `Arc`). Call
/// [`leave`](Cluster::leave) to leave gracefully: dropping every handle
/// leaves the node running.
///
/// ```no_run
/// # use gen_registry_cluster::doc_support::*;
/// # run(|cluster| async move {
/// // Workers answer `x` with `x + state`; started with state 100.
/// assert_eq!(cluster.call(7, 100, 1).await.unwrap(), 101);
/// # });
/// ```
pub struct Cluster<W: ClusterWorker> {
    inner: Arc<Inner<W>>,
}

impl<W: ClusterWorker> Clone for Cluster<W> {
    fn clone(&self) -> Self {
        Cluster {
            inner: self.inner.clone(),
        }
    }
}

enum Route<W: Worker> {
    Local(i64, GenRegistry<W>, Busy),
    Remote(String, i64),
    Nobody,
}

/// A request being delivered to a local shard's registry: a graceful
/// release waits for these to finish before it stops the shard's workers,
/// so that a request routed just before the release is not cut off.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why an RPC failed.
enum RpcFail {
    /// The request never left: safe to send again.
    NotSent,
    /// It was sent; it may have been handled.
    Sent(String),
    Timeout,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ClusterError> {
    postcard::to_stdvec(value).map_err(|e| ClusterError::Codec(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClusterError> {
    postcard::from_bytes(bytes).map_err(|e| ClusterError::Codec(e.to_string()))
}

/// What a worker error becomes for the caller.
fn worker_error<W: Worker>(e: Error<W>) -> ClusterError {
    match e {
        Error::NotFound => ClusterError::NotFound,
        other => ClusterError::Worker(other.to_string()),
    }
}

impl<W: ClusterWorker> Cluster<W> {
    /// Joins (or creates) the cluster: connects to etcd, checks the shard
    /// count, takes a lease, registers this node, starts serving, and claims
    /// the shards rendezvous hashing gives it. Must run inside a tokio
    /// runtime; workers run on it unless `options` name another tokio
    /// executor.
    ///
    /// Fails with [`ClusterError::Config`] for a bad configuration or a named
    /// registry (each shard has its own), [`ClusterError::Etcd`] if etcd
    /// cannot be reached, [`ClusterError::ShardCountMismatch`], or
    /// [`ClusterError::NameTaken`].
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::Adder;
    /// use gen_registry::Options;
    /// use gen_registry_cluster::{Cluster, Config};
    /// # #[tokio::main] async fn main() {
    /// let config = Config::new("node-a", ["http://127.0.0.1:2379"], "a long shared cluster secret");
    /// let cluster = Cluster::<Adder>::join(config, Options::default()).await.unwrap();
    /// # cluster.leave().await;
    /// # }
    /// ```
    pub async fn join(config: Config, options: Options<W>) -> Result<Self, ClusterError> {
        config.validate()?;
        if options.get_name() != Options::<W>::default().get_name() {
            return Err(ClusterError::Config(
                "the options must not name the registry: each shard has a registry of its own"
                    .into(),
            ));
        }
        let options = match options.get_executor() {
            Executor::Bastion => {
                options.executor(Executor::Tokio(tokio::runtime::Handle::current()))
            }
            _ => options,
        };
        let safe = config.lease_ttl - config.fence_margin;
        let mut etcd = timeout(
            safe,
            Client::connect(&config.etcd, config.etcd_options.clone()),
        )
        .await
        .map_err(|_| ClusterError::Etcd("connecting timed out".into()))??;
        let keys = Keys {
            prefix: config.prefix.clone(),
        };
        let shards = shard_count(&mut etcd, &keys, config.shards, safe).await?;
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            ClusterError::Config(format!("cannot listen on {}: {e}", config.listen))
        })?;
        let address = match &config.advertise {
            Some(a) => a.clone(),
            None => listener
                .local_addr()
                .map_err(|e| ClusterError::Config(e.to_string()))?
                .to_string(),
        };
        let live = Liveness::new();
        let sent = live.now();
        let lease = timeout(
            safe,
            etcd.lease_grant(config.lease_ttl.as_secs() as i64, None),
        )
        .await
        .map_err(|_| ClusterError::Etcd("granting a lease timed out".into()))??
        .id();
        let member = keys.member(&config.name);
        let registered = timeout(
            safe,
            etcd.txn(
                Txn::new()
                    .when([Compare::create_revision(
                        member.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then([TxnOp::put(
                        member,
                        address.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]),
            ),
        )
        .await
        .map_err(|_| ClusterError::Etcd("registering timed out".into()))??;
        if !registered.succeeded() {
            let _ = etcd.lease_revoke(lease).await;
            return Err(ClusterError::NameTaken(config.name.clone()));
        }
        live.arm(sent, safe);
        let inner = Arc::new(Inner {
            config,
            options,
            etcd,
            shards,
            keys,
            address,
            live,
            local: Mutex::new(HashMap::new()),
            lease: AtomicI64::new(lease),
            view: Mutex::new(View::default()),
            wake: Notify::new(),
            pool: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            left: AtomicBool::new(false),
        });
        let tasks = vec![
            tokio::spawn(serve(inner.clone(), listener)),
            tokio::spawn(keep_lease(inner.clone())),
            tokio::spawn(fence_timer(inner.clone())),
            tokio::spawn(watch(inner.clone())),
            tokio::spawn(reconcile_loop(inner.clone())),
        ];
        *inner.tasks.lock() = tasks;
        let _ = reconcile(&inner).await;
        Ok(Cluster { inner })
    }

    /// This node's name.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// println!("I am {}", cluster.name());
    /// # });
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The address this node's peers dial.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// println!("peers reach me at {}", cluster.address());
    /// # });
    /// ```
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The cluster's shard count (fixed at creation).
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// assert!(cluster.shards() > 0);
    /// # });
    /// ```
    pub fn shards(&self) -> u32 {
        self.inner.shards
    }

    /// The shard `id` is in, the same on every node.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// assert!(cluster.shard_of(&7).unwrap() < cluster.shards());
    /// # });
    /// ```
    pub fn shard_of(&self, id: &W::Id) -> Result<u32, ClusterError> {
        Ok(shard_of(&encode(id)?, self.inner.shards))
    }

    /// Calls the worker of `id` wherever it runs, starting it with `args` if
    /// none runs, within the configured call timeout (retries included). A
    /// request is never delivered twice: it is retried only when it reached
    /// no worker (the owner had moved, or could not be reached).
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// assert_eq!(cluster.call(7, 100, 1).await.unwrap(), 101); // started with 100
    /// assert_eq!(cluster.call(7, 999, 1).await.unwrap(), 102); // found: 999 unused
    /// # });
    /// ```
    pub async fn call(
        &self,
        id: W::Id,
        args: ArgsOf<W>,
        request: W::Request,
    ) -> Result<W::Reply, ClusterError> {
        self.call_timeout(id, args, request, self.inner.config.call_timeout)
            .await
    }

    /// [`call`](Cluster::call) with its own timeout.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// use std::time::Duration;
    /// # run(|cluster| async move {
    /// let reply = cluster.call_timeout(7, 0, 1, Duration::from_millis(500)).await.unwrap();
    /// # let _ = reply;
    /// # });
    /// ```
    pub async fn call_timeout(
        &self,
        id: W::Id,
        args: ArgsOf<W>,
        request: W::Request,
        within: Duration,
    ) -> Result<W::Reply, ClusterError> {
        self.inner.not_left()?;
        let id_bytes = encode(&id)?;
        let request_bytes = encode(&request)?;
        let shard = shard_of(&id_bytes, self.inner.shards);
        let mut args_bytes = None;
        let mut request = Some(request);
        let mut pending = Pending::new(within);
        loop {
            match self.inner.route(shard) {
                Route::Local(epoch, registry, _busy) => {
                    let fenced = W::Args::fenced(
                        args.clone(),
                        Fence::new(shard, epoch, self.inner.live.clone()),
                    );
                    let request = match request.take() {
                        Some(r) => r,
                        None => decode(&request_bytes)?,
                    };
                    match timeout(pending.left(), registry.call(id.clone(), fenced, request)).await
                    {
                        Ok(Ok(reply)) => return Ok(reply),
                        Ok(Err(Error::RegistryStopped)) => {}
                        Ok(Err(e)) => return Err(worker_error(e)),
                        Err(_) => return Err(ClusterError::Timeout(within)),
                    }
                }
                Route::Remote(address, epoch) => {
                    let args = match &args_bytes {
                        Some(a) => a,
                        None => args_bytes.insert(encode(&args)?),
                    };
                    let call = Request::Call {
                        shard,
                        epoch,
                        id: id_bytes.clone(),
                        args: args.clone(),
                        request: request_bytes.clone(),
                        timeout_ms: pending.left().as_millis() as u64,
                    };
                    match self.inner.rpc(&address, &call, pending.left()).await {
                        Ok(Response::Reply(bytes)) => return decode(&bytes),
                        Ok(response) => pending.answer(response)?,
                        Err(fail) => pending.fail(fail)?,
                    }
                }
                Route::Nobody => {}
            }
            pending.wait(&self.inner).await?;
        }
    }

    /// Casts `message` to the worker of `id` wherever it runs, starting it
    /// with `args` if none runs. Returns once the owner queued it.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// cluster.cast(3, 10, 5).await.unwrap(); // a cast adds to the state
    /// assert_eq!(cluster.call(3, 0, 0).await.unwrap(), 15);
    /// # });
    /// ```
    pub async fn cast(
        &self,
        id: W::Id,
        args: ArgsOf<W>,
        message: W::Message,
    ) -> Result<(), ClusterError> {
        self.inner.not_left()?;
        let id_bytes = encode(&id)?;
        let message_bytes = encode(&message)?;
        let shard = shard_of(&id_bytes, self.inner.shards);
        let mut message = Some(message);
        let within = self.inner.config.call_timeout;
        let mut pending = Pending::new(within);
        loop {
            match self.inner.route(shard) {
                Route::Local(epoch, registry, _busy) => {
                    let fenced = W::Args::fenced(
                        args.clone(),
                        Fence::new(shard, epoch, self.inner.live.clone()),
                    );
                    let message = match message.take() {
                        Some(m) => m,
                        None => decode(&message_bytes)?,
                    };
                    match timeout(pending.left(), registry.cast(id.clone(), fenced, message)).await
                    {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(Error::RegistryStopped)) => {}
                        Ok(Err(e)) => return Err(worker_error(e)),
                        Err(_) => return Err(ClusterError::Timeout(within)),
                    }
                }
                Route::Remote(address, epoch) => {
                    let cast = Request::Cast {
                        shard,
                        epoch,
                        id: id_bytes.clone(),
                        args: encode(&args)?,
                        message: message_bytes.clone(),
                    };
                    match self.inner.rpc(&address, &cast, pending.left()).await {
                        Ok(Response::Done) => return Ok(()),
                        Ok(response) => pending.answer(response)?,
                        Err(fail) => pending.fail(fail)?,
                    }
                }
                Route::Nobody => {}
            }
            pending.wait(&self.inner).await?;
        }
    }

    /// Stops the worker of `id` wherever it runs; returns once its
    /// `terminate` has run. [`ClusterError::NotFound`] if none runs.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// use gen_registry_cluster::ClusterError;
    /// # run(|cluster| async move {
    /// cluster.call(1, 0, 0).await.unwrap();
    /// cluster.stop(&1).await.unwrap();
    /// assert!(matches!(cluster.stop(&1).await, Err(ClusterError::NotFound)));
    /// # });
    /// ```
    pub async fn stop(&self, id: &W::Id) -> Result<(), ClusterError> {
        self.inner.not_left()?;
        let id_bytes = encode(id)?;
        let shard = shard_of(&id_bytes, self.inner.shards);
        let mut pending = Pending::new(self.inner.config.call_timeout);
        loop {
            match self.inner.route(shard) {
                Route::Local(_, registry, _busy) => {
                    match timeout(pending.left(), registry.stop(id)).await {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(Error::RegistryStopped)) => {}
                        Ok(Err(e)) => return Err(worker_error(e)),
                        Err(_) => return Err(ClusterError::Timeout(pending.within)),
                    }
                }
                Route::Remote(address, epoch) => {
                    let stop = Request::Stop {
                        shard,
                        epoch,
                        id: id_bytes.clone(),
                    };
                    match self.inner.rpc(&address, &stop, pending.left()).await {
                        Ok(Response::Done) => return Ok(()),
                        Ok(response) => pending.answer(response)?,
                        Err(fail) => pending.fail(fail)?,
                    }
                }
                Route::Nobody => {}
            }
            pending.wait(&self.inner).await?;
        }
    }

    /// The owner of `id`'s shard, read from etcd now; `None` while nobody
    /// holds it (between an owner's release or death and the next claim).
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// if let Some(owner) = cluster.owner(&7).await.unwrap() {
    ///     println!("id 7 is served by {}", owner.node);
    /// }
    /// # });
    /// ```
    pub async fn owner(&self, id: &W::Id) -> Result<Option<Owner>, ClusterError> {
        let shard = self.shard_of(id)?;
        refresh_view(&self.inner).await?;
        let view = self.inner.view.lock();
        Ok(view.claims.get(&shard).map(|c| Owner {
            node: c.node.clone(),
            address: view.members.get(&c.node).cloned().unwrap_or_default(),
            epoch: c.epoch,
        }))
    }

    /// Whether this node serves `shard` now.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// let here = (0..cluster.shards()).filter(|s| cluster.serves(*s)).count();
    /// println!("{here} shards served here");
    /// # });
    /// ```
    pub fn serves(&self, shard: u32) -> bool {
        self.inner.local.lock().contains_key(&shard) && self.inner.live.valid()
    }

    /// The workers running on this node.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// println!("{} workers here", cluster.local_count());
    /// # });
    /// ```
    pub fn local_count(&self) -> usize {
        self.inner.local_count()
    }

    /// The workers running on every live node, asked of each.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// cluster.call(1, 0, 0).await.unwrap();
    /// assert!(cluster.count().await.unwrap() >= 1);
    /// # });
    /// ```
    pub async fn count(&self) -> Result<usize, ClusterError> {
        self.inner.not_left()?;
        refresh_view(&self.inner).await?;
        let members: Vec<(String, String)> = self
            .inner
            .view
            .lock()
            .members
            .iter()
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        let mut total = 0;
        for (name, address) in members {
            if name == self.inner.config.name {
                total += self.inner.local_count();
                continue;
            }
            match self
                .inner
                .rpc(&address, &Request::Count, self.inner.config.call_timeout)
                .await
            {
                Ok(Response::Count(n)) => total += n as usize,
                Ok(other) => {
                    return Err(ClusterError::Rpc(format!(
                        "{name} answered {other:?} to a count"
                    )));
                }
                Err(RpcFail::Timeout) => {
                    return Err(ClusterError::Timeout(self.inner.config.call_timeout));
                }
                Err(RpcFail::NotSent) => {
                    return Err(ClusterError::Rpc(format!("{name} could not be reached")));
                }
                Err(RpcFail::Sent(e)) => return Err(ClusterError::Rpc(e)),
            }
        }
        Ok(total)
    }

    /// Leaves the cluster gracefully: stops serving, stops every local worker
    /// (their `terminate` runs), then revokes the lease, which releases this
    /// node's shards and membership at once; the other nodes claim the shards.
    /// It then answers its peers "not owner" for a moment (a third of
    /// `TTL − margin`, plus 200 ms) so that their calls in flight are retried
    /// elsewhere, and closes. Afterwards every operation fails with
    /// [`ClusterError::Left`].
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// cluster.leave().await;
    /// assert_eq!(cluster.local_count(), 0);
    /// # });
    /// ```
    pub async fn leave(&self) {
        let inner = &self.inner;
        if inner.left.swap(true, Ordering::AcqRel) {
            return;
        }
        inner.fence_local().await;
        let lease = inner.lease.load(Ordering::Acquire);
        let mut etcd = inner.etcd.clone();
        let _ = timeout(inner.config.lease_ttl, etcd.lease_revoke(lease)).await;
        // Go on answering "not owner" until every peer has seen the keys go
        // (a watch event, or at worst one reconciler tick): a request that
        // reaches a closed connection instead cannot be retried, since the
        // caller cannot tell that it was never handled.
        let tick = (inner.config.lease_ttl - inner.config.fence_margin) / 3;
        tokio::time::sleep(tick + MAX_BACKOFF).await;
        for task in inner.tasks.lock().drain(..) {
            task.abort();
        }
        inner.pool.lock().clear();
    }
}

/// The retry state of one routed operation.
struct Pending {
    within: Duration,
    deadline: Instant,
    backoff: Duration,
}

impl Pending {
    fn new(within: Duration) -> Self {
        Pending {
            within,
            deadline: Instant::now() + within,
            backoff: Duration::from_millis(2),
        }
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// An owner's answer other than success: `Ok` to try again.
    fn answer(&self, response: Response) -> Result<(), ClusterError> {
        match response {
            Response::NotOwner => Ok(()),
            Response::NotFound => Err(ClusterError::NotFound),
            Response::Failed(m) => Err(ClusterError::Worker(m)),
            other => Err(ClusterError::Rpc(format!("unexpected answer {other:?}"))),
        }
    }

    fn fail(&self, fail: RpcFail) -> Result<(), ClusterError> {
        match fail {
            RpcFail::NotSent => Ok(()),
            RpcFail::Sent(e) => Err(ClusterError::Rpc(e)),
            RpcFail::Timeout => Err(ClusterError::Timeout(self.within)),
        }
    }

    /// Asks for a fresh view and waits a little before the next attempt, or
    /// fails once the time is spent.
    async fn wait<W: ClusterWorker>(&mut self, inner: &Inner<W>) -> Result<(), ClusterError> {
        if inner.left.load(Ordering::Acquire) {
            return Err(ClusterError::Left);
        }
        let left = self.left();
        if left.is_zero() {
            return Err(ClusterError::Timeout(self.within));
        }
        inner.wake.notify_one();
        tokio::time::sleep(self.backoff.min(left)).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

impl<W: ClusterWorker> Inner<W> {
    fn not_left(&self) -> Result<(), ClusterError> {
        match self.left.load(Ordering::Acquire) {
            true => Err(ClusterError::Left),
            false => Ok(()),
        }
    }

    fn route(&self, shard: u32) -> Route<W> {
        if let Some((epoch, registry, busy)) = self.local.lock().get(&shard)
            && self.live.valid()
        {
            return Route::Local(*epoch, registry.clone(), Busy::new(busy));
        }
        let view = self.view.lock();
        match view.claims.get(&shard) {
            Some(c) if c.node != self.config.name => match view.members.get(&c.node) {
                Some(address) => Route::Remote(address.clone(), c.epoch),
                None => Route::Nobody,
            },
            _ => Route::Nobody,
        }
    }

    /// The registry of `shard` if this node serves it at `epoch` now.
    fn serving(&self, shard: u32, epoch: i64) -> Option<(GenRegistry<W>, Busy)> {
        let local = self.local.lock();
        match local.get(&shard) {
            Some((e, registry, busy)) if *e == epoch && self.live.valid() => {
                Some((registry.clone(), Busy::new(busy)))
            }
            _ => None,
        }
    }

    fn local_count(&self) -> usize {
        self.local.lock().values().map(|(_, r, _)| r.count()).sum()
    }

    /// Stops serving every shard and stops their workers (`terminate` runs).
    async fn fence_local(&self) {
        let drained: Vec<GenRegistry<W>> = {
            let mut local = self.local.lock();
            self.live.fence();
            local.drain().map(|(_, (_, r, _))| r).collect()
        };
        let mut stops = tokio::task::JoinSet::new();
        for registry in drained {
            stops.spawn(async move { registry.shutdown().await });
        }
        while stops.join_next().await.is_some() {}
    }

    /// Sends one request to the node at `address` and reads its answer.
    async fn rpc(
        &self,
        address: &str,
        request: &Request,
        within: Duration,
    ) -> Result<Response, RpcFail> {
        let run = async {
            let mut stream = match self.checkout(address) {
                Some(s) => s,
                None => {
                    let mut s = self.dial(address).await.map_err(|_| RpcFail::NotSent)?;
                    let _ = s.set_nodelay(true);
                    wire::connect(&mut s, &self.config.secret, HANDSHAKE)
                        .await
                        .map_err(|_| RpcFail::NotSent)?;
                    s
                }
            };
            wire::write_frame(&mut stream, request)
                .await
                .map_err(|e| RpcFail::Sent(e.to_string()))?;
            let response = wire::read_frame::<Response>(&mut stream, self.config.max_frame)
                .await
                .map_err(|e| RpcFail::Sent(e.to_string()))?;
            let mut pool = self.pool.lock();
            let idle = pool.entry(address.to_string()).or_default();
            if idle.len() < POOL {
                idle.push(stream);
            }
            Ok(response)
        };
        timeout(within, run).await.unwrap_or(Err(RpcFail::Timeout))
    }

    /// A connection to `address` from this node's own listening address (if
    /// it listens on one address), so that its peers, and firewall rules,
    /// see it come from the node it is.
    async fn dial(&self, address: &str) -> std::io::Result<TcpStream> {
        let to = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
        let socket = if to.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        let own = self.config.listen.ip();
        if !own.is_unspecified() && own.is_ipv4() == to.is_ipv4() {
            socket.bind(std::net::SocketAddr::new(own, 0))?;
        }
        socket.connect(to).await
    }

    /// An idle connection to `address` that the peer has not closed.
    fn checkout(&self, address: &str) -> Option<TcpStream> {
        let mut pool = self.pool.lock();
        let idle = pool.get_mut(address)?;
        while let Some(stream) = idle.pop() {
            // Nothing is due on an idle connection: readable means closed
            // (or broken), and it would fail a request sent on it after
            // the request had left.
            match stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(stream),
                _ => continue,
            }
        }
        None
    }

    /// Answers one request from a peer.
    async fn answer(&self, request: Request) -> Response {
        match request {
            Request::Call {
                shard,
                epoch,
                id,
                args,
                request,
                timeout_ms,
            } => {
                let Some((registry, _busy)) = self.serving(shard, epoch) else {
                    return Response::NotOwner;
                };
                let (id, fenced, request) =
                    match self.decode_addressed::<W::Request>(shard, epoch, &id, &args, &request) {
                        Ok(d) => d,
                        Err(e) => return Response::Failed(e.to_string()),
                    };
                let within = Duration::from_millis(timeout_ms).min(self.config.call_timeout);
                match timeout(within, registry.call(id, fenced, request)).await {
                    Ok(Ok(reply)) => match encode(&reply) {
                        Ok(bytes) => Response::Reply(bytes),
                        Err(e) => Response::Failed(e.to_string()),
                    },
                    Ok(Err(Error::RegistryStopped)) => Response::NotOwner,
                    Ok(Err(e)) => Response::Failed(e.to_string()),
                    Err(_) => Response::Failed(ClusterError::Timeout(within).to_string()),
                }
            }
            Request::Cast {
                shard,
                epoch,
                id,
                args,
                message,
            } => {
                let Some((registry, _busy)) = self.serving(shard, epoch) else {
                    return Response::NotOwner;
                };
                let (id, fenced, message) =
                    match self.decode_addressed::<W::Message>(shard, epoch, &id, &args, &message) {
                        Ok(d) => d,
                        Err(e) => return Response::Failed(e.to_string()),
                    };
                match timeout(self.config.call_timeout, registry.cast(id, fenced, message)).await {
                    Ok(Ok(())) => Response::Done,
                    Ok(Err(Error::RegistryStopped)) => Response::NotOwner,
                    Ok(Err(e)) => Response::Failed(e.to_string()),
                    Err(_) => Response::Failed(
                        ClusterError::Timeout(self.config.call_timeout).to_string(),
                    ),
                }
            }
            Request::Stop { shard, epoch, id } => {
                let Some((registry, _busy)) = self.serving(shard, epoch) else {
                    return Response::NotOwner;
                };
                let id = match self.decode_id(shard, &id) {
                    Ok(id) => id,
                    Err(e) => return Response::Failed(e.to_string()),
                };
                match timeout(self.config.call_timeout, registry.stop(&id)).await {
                    Ok(Ok(())) => Response::Done,
                    Ok(Err(Error::NotFound)) => Response::NotFound,
                    Ok(Err(Error::RegistryStopped)) => Response::NotOwner,
                    Ok(Err(e)) => Response::Failed(e.to_string()),
                    Err(_) => Response::Failed(
                        ClusterError::Timeout(self.config.call_timeout).to_string(),
                    ),
                }
            }
            Request::Count => Response::Count(self.local_count() as u64),
        }
    }

    /// The id, the args fenced with `shard`'s `epoch`, and the payload (a
    /// request or a message) of an operation a peer sent for one id.
    fn decode_addressed<P: DeserializeOwned>(
        &self,
        shard: u32,
        epoch: i64,
        id: &[u8],
        args: &[u8],
        payload: &[u8],
    ) -> Result<(W::Id, W::Args, P), ClusterError> {
        let id = self.decode_id(shard, id)?;
        let args: ArgsOf<W> = decode(args)?;
        let payload: P = decode(payload)?;
        let fence = Fence::new(shard, epoch, self.live.clone());
        Ok((id, W::Args::fenced(args, fence), payload))
    }

    /// Decodes an id sent for `shard`, refusing one from another shard: a
    /// peer must not start a worker in a shard its id does not hash to.
    fn decode_id(&self, shard: u32, bytes: &[u8]) -> Result<W::Id, ClusterError> {
        if shard_of(bytes, self.shards) != shard {
            return Err(ClusterError::Codec(format!(
                "the id does not hash to shard {shard}"
            )));
        }
        decode(bytes)
    }
}

/// Reads the shard count, storing `configured` if the cluster is new.
async fn shard_count(
    etcd: &mut Client,
    keys: &Keys,
    configured: u32,
    within: Duration,
) -> Result<u32, ClusterError> {
    let key = keys.shard_count();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), configured.to_string(), None)])
        .or_else([TxnOp::get(key, None)]);
    let response = timeout(within, etcd.txn(txn))
        .await
        .map_err(|_| ClusterError::Etcd("reading the shard count timed out".into()))??;
    if response.succeeded() {
        return Ok(configured);
    }
    let stored = response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        })
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| ClusterError::Etcd("the stored shard count is unreadable".into()))?;
    if stored != configured {
        return Err(ClusterError::ShardCountMismatch { stored, configured });
    }
    Ok(stored)
}

/// Reads members and shard claims from etcd into the view.
async fn refresh_view<W: ClusterWorker>(inner: &Inner<W>) -> Result<(), ClusterError> {
    let mut etcd = inner.etcd.clone();
    let response = timeout(
        inner.config.call_timeout,
        etcd.get(inner.keys.all(), Some(GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| ClusterError::Etcd("reading the cluster's state timed out".into()))??;
    let members_prefix = inner.keys.member("");
    let shards_prefix = format!("{}/shards/", inner.keys.prefix);
    let mut view = View::default();
    for kv in response.kvs() {
        let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else {
            continue;
        };
        if let Some(name) = key.strip_prefix(&members_prefix) {
            view.members.insert(name.to_string(), value.to_string());
        } else if let Some(shard) = key
            .strip_prefix(&shards_prefix)
            .and_then(|s| s.parse::<u32>().ok())
        {
            view.claims.insert(
                shard,
                Claim {
                    node: value.to_string(),
                    epoch: kv.create_revision(),
                    lease: kv.lease(),
                },
            );
        }
    }
    *inner.view.lock() = view;
    Ok(())
}

/// Brings this node's shards in line with the view: releases the shards it
/// should no longer own, claims the free ones it should, and drops stale
/// claims of its own from before a fence.
async fn reconcile<W: ClusterWorker>(inner: &Arc<Inner<W>>) -> Result<(), ClusterError> {
    refresh_view(inner).await?;
    if inner.left.load(Ordering::Acquire) || !inner.live.valid() {
        return Ok(());
    }
    let me = inner.config.name.as_str();
    let lease = inner.lease.load(Ordering::Acquire);
    let mut release = Vec::new();
    let mut claim = Vec::new();
    let mut stale = Vec::new();
    let mut adopt = Vec::new();
    {
        let view = inner.view.lock();
        let local = inner.local.lock();
        for shard in 0..inner.shards {
            let desired = rendezvous(shard, view.members.keys().map(String::as_str));
            match view.claims.get(&shard) {
                Some(c) if c.node == me && c.lease == lease => {
                    match local.get(&shard).map(|(e, _, _)| *e) {
                        _ if desired != Some(me) => release.push((shard, c.epoch)),
                        // Claimed, but the answer was lost (a timeout):
                        // the key is ours, under our current lease.
                        None => adopt.push((shard, c.epoch)),
                        // Served at another epoch than the key's: stop
                        // those workers before anything else.
                        Some(e) if e != c.epoch => release.push((shard, 0)),
                        Some(_) => {}
                    }
                }
                Some(c) if c.node == me => stale.push((shard, c.epoch)),
                Some(_) => {
                    if local.contains_key(&shard) {
                        release.push((shard, 0));
                    }
                }
                None if desired == Some(me) => claim.push(shard),
                None => {
                    if local.contains_key(&shard) {
                        release.push((shard, 0));
                    }
                }
            }
        }
    }
    let mut work = tokio::task::JoinSet::new();
    for (shard, epoch) in release {
        let inner = inner.clone();
        work.spawn(async move { release_shard(&inner, shard, epoch).await });
    }
    for (shard, epoch) in stale {
        let inner = inner.clone();
        work.spawn(async move { delete_claim(&inner, shard, epoch).await });
    }
    for (shard, epoch) in adopt {
        inner.start_serving(shard, epoch, lease)?;
    }
    for shard in claim {
        let inner = inner.clone();
        work.spawn(async move { claim_shard(&inner, shard, lease).await });
    }
    while work.join_next().await.is_some() {}
    Ok(())
}

impl<W: ClusterWorker> Inner<W> {
    /// Serves `shard` at `epoch`, if the lease it was claimed under is still
    /// this node's and still safe (checked under the lock a fence takes).
    fn start_serving(&self, shard: u32, epoch: i64, lease: i64) -> Result<(), ClusterError> {
        let registry = GenRegistry::new(self.options.clone())
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        let mut local = self.local.lock();
        if self.live.valid()
            && self.lease.load(Ordering::Acquire) == lease
            && !self.left.load(Ordering::Acquire)
        {
            local.insert(shard, (epoch, registry, Arc::new(AtomicUsize::new(0))));
            self.live.serve(shard, epoch);
        }
        Ok(())
    }
}

async fn claim_shard<W: ClusterWorker>(
    inner: &Inner<W>,
    shard: u32,
    lease: i64,
) -> Result<(), ClusterError> {
    let key = inner.keys.shard(shard);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            inner.config.name.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let mut etcd = inner.etcd.clone();
    let response = timeout(inner.config.call_timeout, etcd.txn(txn))
        .await
        .map_err(|_| ClusterError::Etcd("claiming a shard timed out".into()))??;
    if response.succeeded() {
        let epoch = response.header().map(|h| h.revision()).unwrap_or_default();
        inner.start_serving(shard, epoch, lease)?;
    }
    Ok(())
}

/// Stops serving `shard`, stops its workers, then deletes its key if it is
/// still the claim of `epoch` (0: this node's key is already gone).
async fn release_shard<W: ClusterWorker>(
    inner: &Inner<W>,
    shard: u32,
    epoch: i64,
) -> Result<(), ClusterError> {
    let Some((_, registry, busy)) = inner.local.lock().remove(&shard) else {
        inner.live.unserve(shard);
        if epoch != 0 {
            delete_claim(inner, shard, epoch).await?;
        }
        return Ok(());
    };
    if epoch == 0 {
        // Someone else's key: stop at once.
        inner.live.unserve(shard);
        registry.shutdown().await;
        return Ok(());
    }
    // No request is routed here any more; while the key is still ours (so
    // nobody else can start these ids), let those already delivered finish,
    // within the call timeout, and stop the workers with their fence still
    // valid for their `terminate`.
    let drained = Instant::now() + inner.config.call_timeout;
    while busy.load(Ordering::Acquire) > 0 && Instant::now() < drained && inner.live.valid() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    registry.shutdown().await;
    inner.live.unserve(shard);
    delete_claim(inner, shard, epoch).await
}

async fn delete_claim<W: ClusterWorker>(
    inner: &Inner<W>,
    shard: u32,
    epoch: i64,
) -> Result<(), ClusterError> {
    let key = inner.keys.shard(shard);
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            epoch,
        )])
        .and_then([TxnOp::delete(key, None)]);
    let mut etcd = inner.etcd.clone();
    timeout(inner.config.call_timeout, etcd.txn(txn))
        .await
        .map_err(|_| ClusterError::Etcd("releasing a shard timed out".into()))??;
    Ok(())
}

async fn reconcile_loop<W: ClusterWorker>(inner: Arc<Inner<W>>) {
    let tick = (inner.config.lease_ttl - inner.config.fence_margin) / 3;
    loop {
        let _ = timeout(tick, inner.wake.notified()).await;
        if inner.left.load(Ordering::Acquire) {
            return;
        }
        let _ = reconcile(&inner).await;
    }
}

/// Wakes the reconciler on every change under the cluster's prefix.
async fn watch<W: ClusterWorker>(inner: Arc<Inner<W>>) {
    let retry = Duration::from_millis(500);
    while !inner.left.load(Ordering::Acquire) {
        let mut etcd = inner.etcd.clone();
        if let Ok((_watcher, mut stream)) = etcd
            .watch(inner.keys.all(), Some(WatchOptions::new().with_prefix()))
            .await
        {
            while let Ok(Some(_)) = stream.message().await {
                inner.wake.notify_one();
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// Renews the lease; after a fence, takes a new one and registers again.
async fn keep_lease<W: ClusterWorker>(inner: Arc<Inner<W>>) {
    let ttl = inner.config.lease_ttl;
    let safe = ttl - inner.config.fence_margin;
    let interval = safe / 3;
    let mut keeper = None;
    while !inner.left.load(Ordering::Acquire) {
        if !inner.live.valid() {
            inner.fence_local().await;
            keeper = None;
            rejoin(&inner, safe, interval).await;
            continue;
        }
        if keeper.is_none() {
            let mut lease = inner.etcd.lease_client();
            let id = inner.lease.load(Ordering::Acquire);
            keeper = timeout(interval, lease.keep_alive(id))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some((k, stream)) = keeper.as_mut() {
            let sent = inner.live.now();
            let renewed = timeout(interval, async {
                k.keep_alive().await?;
                stream.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    let granted = Duration::from_secs(response.ttl() as u64).min(ttl);
                    inner
                        .live
                        .extend(sent, granted.saturating_sub(inner.config.fence_margin));
                }
                Ok(Ok(Some(_))) => {
                    // etcd says the lease has expired: fence now.
                    inner.live.fence();
                    continue;
                }
                _ => keeper = None,
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// After a fence: gives up the old lease (its keys go at once if etcd is
/// reachable), takes a new one and registers again, retrying until it works
/// or the node leaves.
async fn rejoin<W: ClusterWorker>(inner: &Inner<W>, safe: Duration, interval: Duration) {
    let mut etcd = inner.etcd.clone();
    while !inner.left.load(Ordering::Acquire) {
        let old = inner.lease.load(Ordering::Acquire);
        let _ = timeout(interval, etcd.lease_revoke(old)).await;
        let sent = inner.live.now();
        let granted = timeout(
            interval,
            etcd.lease_grant(inner.config.lease_ttl.as_secs() as i64, None),
        )
        .await;
        if let Ok(Ok(grant)) = granted {
            let lease = grant.id();
            let member = inner.keys.member(&inner.config.name);
            let put = timeout(
                interval,
                etcd.put(
                    member,
                    inner.address.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await;
            if let Ok(Ok(_)) = put {
                inner.lease.store(lease, Ordering::Release);
                inner.live.arm(sent, safe);
                inner.wake.notify_one();
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Stops the workers once the deadline passes without a renewal, even if
/// the lease keeper is stuck in a call to etcd.
async fn fence_timer<W: ClusterWorker>(inner: Arc<Inner<W>>) {
    let idle = Duration::from_millis(50);
    while !inner.left.load(Ordering::Acquire) {
        match inner.live.deadline() {
            Some(deadline) => {
                tokio::time::sleep_until(deadline.into()).await;
                if !inner.live.valid() && !inner.local.lock().is_empty() {
                    inner.fence_local().await;
                }
            }
            None => tokio::time::sleep(idle).await,
        }
    }
}

/// Accepts peers' connections: each one proves the cluster secret, then
/// sends requests one at a time.
async fn serve<W: ClusterWorker>(inner: Arc<Inner<W>>, listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if wire::accept(&mut stream, &inner.config.secret, HANDSHAKE)
                .await
                .is_err()
            {
                return;
            }
            loop {
                let response =
                    match wire::read_frame::<Request>(&mut stream, inner.config.max_frame).await {
                        Ok(request) => inner.answer(request).await,
                        Err(FrameError::Io(_)) => return,
                        Err(e) => {
                            let _ =
                                wire::write_frame(&mut stream, &Response::Failed(e.to_string()))
                                    .await;
                            return;
                        }
                    };
                if wire::write_frame(&mut stream, &response).await.is_err() {
                    return;
                }
            }
        });
    }
}
