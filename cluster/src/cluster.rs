//! A node's public face: [`Cluster`], which joins a cluster, routes every
//! operation by id, and leaves.
//!
//! Joining connects to etcd, checks the shard count, registers the node
//! under a lease of its own, and starts the node's tasks: the RPC server,
//! the lease keeper and the fence timer, the watcher and the reconciler.

use crate::fence::Liveness;
use crate::hash::shard_of;
use crate::node::Node;
use crate::routing::{MAX_BACKOFF, done, encode_once, take_or_decode};
use crate::view::Keys;
use crate::wire::{Request, Response, decode, encode};
use crate::{ClusterError, ClusterWorker, Config};
use crate::{membership, ownership, server, suspicion, trace};
use etcd_client::Client;
use gen_registry::{Executor, Options};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::timeout;

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

/// The answer of [`Cluster::count`]: the workers of the nodes that
/// answered, and the nodes that did not.
///
/// ```
/// use gen_registry_cluster::Count;
///
/// let count = Count { workers: 10, answered: vec!["a".into()], unanswered: vec!["b".into()] };
/// assert!(!count.is_complete()); // b's workers are missing from the 10
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    /// The workers running on the nodes that answered.
    pub workers: usize,
    /// The members that answered (this node among them), by name.
    pub answered: Vec<String>,
    /// The members that did not answer within the call timeout, or could
    /// not be reached, by name: their workers are not in `workers`.
    pub unanswered: Vec<String>,
}

impl Count {
    /// Whether every live member answered: `workers` is then the total.
    ///
    /// ```
    /// use gen_registry_cluster::Count;
    /// let count = Count { workers: 3, answered: vec!["a".into()], unanswered: vec![] };
    /// assert!(count.is_complete());
    /// ```
    pub fn is_complete(&self) -> bool {
        self.unanswered.is_empty()
    }
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
    pub(crate) node: Arc<Node<W>>,
}

impl<W: ClusterWorker> Clone for Cluster<W> {
    fn clone(&self) -> Self {
        Cluster {
            node: self.node.clone(),
        }
    }
}

impl<W: ClusterWorker> Cluster<W> {
    /// Joins (or creates) the cluster: connects to etcd, checks the shard
    /// count, takes a lease, registers this node, starts serving, and claims
    /// the shards rendezvous hashing gives it. Must run inside a tokio
    /// runtime; workers run on it unless `options` name another tokio
    /// executor. Each shard served here gets a registry of its own, made
    /// from `options` with the shard's epoch, a check that this node still
    /// serves it, and this node's name set
    /// ([`Options::epoch`](gen_registry::Options::epoch),
    /// [`epoch_check`](gen_registry::Options::epoch_check),
    /// [`node`](gen_registry::Options::node)): whatever `options` held for
    /// those is replaced.
    ///
    /// **Restarting under the same name.** A process killed without
    /// leaving (a crash, `kill -9`) leaves its lease in etcd until the lease's
    /// TTL runs out. A node joining under that name waits it out: it polls
    /// until the old member key is gone, logging the time left through
    /// `tracing` about once a second, and joins then, so a restart right
    /// after a crash takes up to one TTL. It never takes the old lease over:
    /// whether the old process is gone cannot be proved from here, and a
    /// process that is merely paused has fenced itself before etcd lets its
    /// lease go, exactly as for any node that stops renewing. If the key is
    /// still there after that lease's whole TTL and a second more, a live
    /// process renews it, and `join` fails with [`ClusterError::NameTaken`].
    ///
    /// **Options apply per shard.** Each shard this node serves gets a
    /// `GenRegistry` of its own built from `options` (64 shards by default,
    /// spread over the nodes), so per-registry limits hold per shard, not
    /// per node: with [`max_workers`](Options::max_workers)`(n)`, a node
    /// serving `k` shards may run up to `k × n` workers, and
    /// [`idle_timeout`](Options::idle_timeout) and the shutdown options act
    /// on each shard's registry (the idle timeout and the shutdown timeout
    /// are per worker, so they mean the same either way). To bound the
    /// workers of the whole node, set [`Config::max_workers`].
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
        let keys = Keys::new(&config.prefix);
        let shards = ownership::shard_count(&mut etcd, &keys, config.shards, safe).await?;
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
        let lease = membership::register(&mut etcd, &config, &keys, &address, &live).await?;
        let node = Arc::new(Node::new(
            config, options, etcd, shards, address, live, lease,
        ));
        let tasks = vec![
            tokio::spawn(server::serve(node.clone(), listener)),
            tokio::spawn(membership::keep_lease(node.clone())),
            tokio::spawn(membership::fence_timer(node.clone())),
            tokio::spawn(ownership::watch(node.clone())),
            tokio::spawn(ownership::reconcile_loop(node.clone())),
            tokio::spawn(suspicion::probe_peers(node.clone())),
        ];
        *node.tasks.lock() = tasks;
        let _ = ownership::reconcile(&node).await;
        Ok(Cluster { node })
    }

    /// The node this handle is a face of.
    pub(crate) fn node(&self) -> &Arc<Node<W>> {
        &self.node
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
        &self.node.config.name
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
        &self.node.address
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
        self.node.shards
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
        Ok(shard_of(&encode(id)?, self.node.shards))
    }

    /// Calls the worker of `id` wherever it runs, starting it with `args` if
    /// none runs, within the configured call timeout (retries included). A
    /// request is never delivered twice: it is retried only when it reached
    /// no worker (the owner had moved, could not be reached, or every worker
    /// of the id ended before reading it), and fails with
    /// [`ClusterError::NotDelivered`] if none took it in time. Any other
    /// error may follow a request that was handled.
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
        args: W::Args,
        request: W::Request,
    ) -> Result<W::Reply, ClusterError> {
        self.call_timeout(id, args, request, self.node.config.call_timeout)
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
        args: W::Args,
        request: W::Request,
        within: Duration,
    ) -> Result<W::Reply, ClusterError> {
        let (shard, id_bytes) = self.node.address(&id)?;
        let request_bytes = encode(&request)?;
        let mut request = Some(request);
        let mut args_bytes = None;
        self.node
            .routed(
                shard,
                &id,
                within,
                |registry| {
                    let slot = self.node.admit(&registry, &id)?;
                    let request = take_or_decode(&mut request, &request_bytes)?;
                    let (id, args) = (id.clone(), args.clone());
                    Ok(async move {
                        let _slot = slot;
                        registry.call(id, args, request).await
                    })
                },
                |epoch, left| {
                    Ok(Request::Call {
                        shard,
                        epoch,
                        id: id_bytes.clone(),
                        args: encode_once(&mut args_bytes, &args)?,
                        request: request_bytes.clone(),
                        timeout_ms: left.as_millis() as u64,
                        trace: trace::outgoing(),
                    })
                },
                |response| match response {
                    Response::Reply(bytes) => Ok(decode(&bytes)),
                    other => Err(other),
                },
            )
            .await
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
        args: W::Args,
        message: W::Message,
    ) -> Result<(), ClusterError> {
        let (shard, id_bytes) = self.node.address(&id)?;
        let message_bytes = encode(&message)?;
        let mut message = Some(message);
        let mut args_bytes = None;
        self.node
            .routed(
                shard,
                &id,
                self.node.config.call_timeout,
                |registry| {
                    let slot = self.node.admit(&registry, &id)?;
                    let message = take_or_decode(&mut message, &message_bytes)?;
                    let (id, args) = (id.clone(), args.clone());
                    Ok(async move {
                        let _slot = slot;
                        registry.cast(id, args, message).await
                    })
                },
                |epoch, _| {
                    Ok(Request::Cast {
                        shard,
                        epoch,
                        id: id_bytes.clone(),
                        args: encode_once(&mut args_bytes, &args)?,
                        message: message_bytes.clone(),
                        trace: trace::outgoing(),
                    })
                },
                done,
            )
            .await
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
        let (shard, id_bytes) = self.node.address(id)?;
        self.node
            .routed(
                shard,
                id,
                self.node.config.call_timeout,
                |registry| Ok(async move { registry.stop(id).await }),
                |epoch, _| {
                    Ok(Request::Stop {
                        shard,
                        epoch,
                        id: id_bytes.clone(),
                        trace: trace::outgoing(),
                    })
                },
                done,
            )
            .await
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
        self.node.refresh_view().await?;
        let view = self.node.view.lock();
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
        self.node.local.lock().contains_key(&shard) && self.node.live.valid()
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
        self.node.local_count()
    }

    /// The workers running on every live node, asked of all of them at
    /// once, each within the call timeout. A node that does not answer in
    /// time (or cannot be reached) is named in [`Count::unanswered`]
    /// rather than failing the whole count: the total is then a lower
    /// bound.
    ///
    /// ```no_run
    /// # use gen_registry_cluster::doc_support::*;
    /// # run(|cluster| async move {
    /// cluster.call(1, 0, 0).await.unwrap();
    /// let count = cluster.count().await.unwrap();
    /// assert!(count.workers >= 1);
    /// if !count.is_complete() {
    ///     println!("no answer from {:?}", count.unanswered);
    /// }
    /// # });
    /// ```
    pub async fn count(&self) -> Result<Count, ClusterError> {
        self.node.not_left()?;
        self.node.refresh_view().await?;
        let members: Vec<(String, String)> = self
            .node
            .view
            .lock()
            .members
            .iter()
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        let within = self.node.config.call_timeout;
        let mut asks = tokio::task::JoinSet::new();
        let mut count = Count {
            workers: 0,
            answered: Vec::new(),
            unanswered: Vec::new(),
        };
        for (name, address) in members {
            if name == self.node.config.name {
                count.workers += self.node.local_count();
                count.answered.push(name);
                continue;
            }
            let node = self.node.clone();
            asks.spawn(async move {
                let answer = node.peers.rpc(&address, &Request::Count, within).await;
                (name, answer)
            });
        }
        while let Some(asked) = asks.join_next().await {
            match asked {
                Ok((name, Ok(Response::Count(n)))) => {
                    count.workers += n as usize;
                    count.answered.push(name);
                }
                Ok((name, _)) => count.unanswered.push(name),
                // A panicked ask names nobody; it cannot happen short of a
                // bug, and the count stays a lower bound.
                Err(_) => {}
            }
        }
        count.answered.sort();
        count.unanswered.sort();
        Ok(count)
    }

    /// Sends the `init` errors of this node's workers to their remote
    /// callers as values, not only as text: a caller on any node reads
    /// them with [`WorkerFailure::init_error`](crate::WorkerFailure::init_error).
    /// Call it on every node, right after [`join`](Cluster::join).
    ///
    /// ```no_run
    /// use gen_registry::{Context, Options, Worker};
    /// use gen_registry_cluster::{Cluster, ClusterError, Config, Failure};
    ///
    /// #[derive(Debug, serde::Serialize, serde::Deserialize)]
    /// enum OpenError { NoSuchAccount(u64) }
    /// # impl std::fmt::Display for OpenError {
    /// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
    /// # }
    ///
    /// struct Account;
    ///
    /// impl Worker for Account {
    ///     type Id = u64;
    ///     type Args = ();
    ///     type Request = ();
    ///     type Reply = ();
    ///     type Message = ();
    ///     type Error = OpenError;
    ///     async fn init(id: &u64, _: (), _: &Context<Self>) -> Result<Self, OpenError> {
    ///         Err(OpenError::NoSuchAccount(*id))
    ///     }
    ///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
    /// }
    ///
    /// # #[tokio::main] async fn main() {
    /// let config = Config::new("node-a", ["http://127.0.0.1:2379"], "a long shared cluster secret");
    /// let cluster = Cluster::<Account>::join(config, Options::default()).await.unwrap().send_init_errors();
    /// match cluster.call(7, (), ()).await {
    ///     Err(ClusterError::Worker(failure)) => {
    ///         assert!(matches!(failure.failure, Failure::Init { .. }));
    ///         assert!(matches!(failure.init_error::<OpenError>(), Some(OpenError::NoSuchAccount(7))));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # cluster.leave().await;
    /// # }
    /// ```
    pub fn send_init_errors(self) -> Self
    where
        W::Error: Serialize,
    {
        fn encode<E: Serialize>(e: &E) -> Option<Vec<u8>> {
            postcard::to_stdvec(e).ok()
        }
        let _ = self.node.init_codec.set(encode::<W::Error>);
        self
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
        let node = &self.node;
        if node.left.swap(true, Ordering::AcqRel) {
            return;
        }
        node.fence_local().await;
        let lease = node.lease.load(Ordering::Acquire);
        let mut etcd = node.etcd.clone();
        let _ = timeout(node.config.lease_ttl, etcd.lease_revoke(lease)).await;
        // Go on answering "not owner" until every peer has seen the keys go
        // (a watch event, or at worst one reconciler tick): a request that
        // reaches a closed connection instead cannot be retried, since the
        // caller cannot tell that it was never handled.
        let tick = (node.config.lease_ttl - node.config.fence_margin) / 3;
        tokio::time::sleep(tick + MAX_BACKOFF).await;
        for task in node.tasks.lock().drain(..) {
            task.abort();
        }
        node.peers.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: T) {}

    /// Callers spawn these on tokio: their futures must be `Send` for every
    /// cluster worker. Built, never run.
    #[allow(dead_code)]
    fn every_operation_is_a_send_future<W: ClusterWorker>(
        cluster: Cluster<W>,
        id: W::Id,
        args: W::Args,
        request: W::Request,
        message: W::Message,
    ) {
        send(cluster.stop(&id));
        send(cluster.owner(&id));
        send(cluster.count());
        send(cluster.leave());
        send(cluster.cast(id.clone(), args.clone(), message));
        send(cluster.call(id, args, request));
    }
}
