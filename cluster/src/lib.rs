//! # gen_registry_cluster
//!
//! Cluster mode for [`gen_registry`]: the ids of one worker type spread over
//! several nodes, with at most one live worker per id cluster-wide, on etcd.
//!
//! - Ids hash to a fixed number of shards (stored in etcd when the cluster is
//!   created, never changed).
//! - Each node holds an etcd lease and registers under it. A shard is owned
//!   through one etcd key bound to its owner's lease, claimed by a
//!   create-if-absent transaction; the key's revision is the shard's epoch,
//!   the fencing token. Owners are chosen by rendezvous hashing over the live
//!   members, and run their shards' workers in ordinary local
//!   [`GenRegistry`](gen_registry::GenRegistry)s on tokio.
//! - A call for a local shard goes straight to the local registry; any other
//!   goes to the owner over the connection this node keeps to it, which
//!   carries many requests at once: TLS 1.3 with both nodes' certificates
//!   checked ([`Config::tls`], for production), or plain TCP with the
//!   cluster secret's challenge (for a development cluster). An owner that
//!   no longer holds the shard at that epoch answers "not owner", and the
//!   caller refreshes its view and retries within its timeout.
//! - A node that cannot renew its lease fences itself: it stops serving, and
//!   stops its workers, before its lease could have expired at etcd
//!   ([`Config::fence_margin`]).
//! - A node that etcd sees but a majority of its peers cannot reach for a
//!   lease TTL is voted out (its peers report it in etcd): it fences itself
//!   the same way and gives up its lease, so its shards move; one peer alone
//!   never votes a node out.
//! - A worker's failure reaches the caller typed, naming the node and the id
//!   ([`WorkerFailure`]); [`Cluster::count`] names the nodes that did not
//!   answer rather than failing.
//!
//! **The guarantee.** At most one live worker per id at any time, provided
//! that no process pause or clock-rate drift exceeds the fence margin.
//! Failover takes about one lease TTL. A node cut off from etcd stops
//! serving: availability is traded for safety. On each node, the local
//! registry's guarantees hold as they are.
//!
//! A worker type runs in a cluster as it is: its id, args, requests,
//! replies and messages only need to be serde types (they cross the
//! network). Each shard's registry is given the shard's epoch (the fencing
//! token) and the node's name, which every worker reads from its
//! [`Context`](gen_registry::Context): [`epoch`](gen_registry::Context::epoch),
//! [`holds_epoch`](gen_registry::Context::holds_epoch),
//! [`node`](gen_registry::Context::node). When a shard leaves a node (it
//! moves to another, the node leaves, or its lease is lost), its workers end
//! with [`ExitReason::Moved`](gen_registry::ExitReason::Moved), running
//! `terminate`. State kept with
//! [`Stored::load_for`](gen_registry::state::Stored::load_for) carries the
//! epoch on every write, so a store shared by the nodes hands it over, and
//! refuses the writes of an owner that was replaced.
//!
//! ```no_run
//! use gen_registry::{Context, Options, Worker};
//! use gen_registry_cluster::{Cluster, Config};
//!
//! struct Counter(u64);
//!
//! impl Worker for Counter {
//!     type Id = String;
//!     type Args = u64;
//!     type Request = u64;
//!     type Reply = u64;
//!     type Message = ();
//!     type Error = std::convert::Infallible;
//!
//!     async fn init(_: &String, start: u64, _: &Context<Self>) -> Result<Self, Self::Error> {
//!         Ok(Counter(start))
//!     }
//!
//!     async fn handle_call(&mut self, add: u64, _: &mut Context<Self>) -> u64 {
//!         self.0 += add;
//!         self.0
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::new("node-a", ["http://127.0.0.1:2379"], "a long shared cluster secret");
//! let cluster = Cluster::<Counter>::join(config, Options::default()).await?;
//! assert_eq!(cluster.call("alice".into(), 0, 5).await?, 5);
//! cluster.leave().await;
//! # Ok(()) }
//! ```

//! A worker whose state outlives moves keeps it in a store all nodes share
//! (PostgreSQL, with `gen_registry_postgres`), loaded at its shard's epoch
//! and flushed in `terminate`; the guide's cluster chapter has the whole
//! program:
//!
//! ```no_run
//! use gen_registry::state::{StateError, Store, Stored};
//! use gen_registry::{Context, ExitReason, Worker};
//! use std::sync::OnceLock;
//!
//! /// Set once, before the node joins (a `Store` is no serde value: it
//! /// cannot travel as args).
//! static STORE: OnceLock<Store> = OnceLock::new();
//!
//! /// Page views per page, kept across moves.
//! struct Views(Stored<u64>);
//!
//! impl Worker for Views {
//!     type Id = String;
//!     type Args = ();
//!     type Request = ();
//!     type Reply = u64;
//!     type Message = ();
//!     type Error = StateError;
//!
//!     async fn init(_: &String, _: (), ctx: &Context<Self>) -> Result<Self, StateError> {
//!         let store = STORE.get().expect("set before joining");
//!         Ok(Views(Stored::load_for(store, "views", ctx).await?))
//!     }
//!
//!     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u64 {
//!         *self.0 += 1;
//!         *self.0
//!     }
//!
//!     async fn terminate(&mut self, reason: &ExitReason, _: &mut Context<Self>) {
//!         // `ExitReason::Moved`: the next owner loads what this writes; a
//!         // node that lost its shard while paused is refused here.
//!         if !reason.is_abnormal() {
//!             let _ = self.0.flush().await;
//!         }
//!     }
//! }
//! ```

#![deny(missing_docs)]

/// The guide's chapter on cluster mode, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../guide/src/cluster.md")]
struct GuideChapter;

mod client;
mod cluster;
mod config;
mod error;
mod fence;
mod hash;
mod membership;
mod node;
mod ownership;
mod reminders;
mod routing;
mod server;
mod stats;
mod suspicion;
mod telemetry;
mod tls;
mod trace;
mod view;
mod wire;

pub use cluster::{Cluster, Count, Owner};
pub use config::Config;
pub use error::{ClusterError, Failure, WorkerFailure};
pub use etcd_client;
pub use reminders::{ClusterReminders, ReminderError};
pub use stats::{NodeStats, ShardStats};
pub use tls::Tls;

use gen_registry::Worker;
use serde::{Serialize, de::DeserializeOwned};

/// A [`Worker`] that can run in a cluster: its id, args, requests, replies
/// and messages are serde types (they cross the network), and its args can
/// be cloned (a call that is retried on another node takes them along).
/// Implemented for every such worker.
///
/// ```
/// use gen_registry::{Context, Worker};
/// use gen_registry_cluster::ClusterWorker;
///
/// struct Session;
///
/// impl Worker for Session {
///     type Id = u64;
///     type Args = ();
///     type Request = String;
///     type Reply = usize;
///     type Message = ();
///     type Error = std::convert::Infallible;
///     async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Session)
///     }
///     async fn handle_call(&mut self, request: String, _: &mut Context<Self>) -> usize {
///         request.len()
///     }
/// }
///
/// fn runs_in_a_cluster<W: ClusterWorker>() {}
/// runs_in_a_cluster::<Session>();
/// ```
pub trait ClusterWorker:
    Worker<
        Id: Serialize + DeserializeOwned,
        Args: Serialize + DeserializeOwned + Clone + Sync,
        Request: Serialize + DeserializeOwned,
        Reply: Serialize + DeserializeOwned,
        Message: Serialize + DeserializeOwned,
    >
{
}

impl<W> ClusterWorker for W where
    W: Worker<
            Id: Serialize + DeserializeOwned,
            Args: Serialize + DeserializeOwned + Clone + Sync,
            Request: Serialize + DeserializeOwned,
            Reply: Serialize + DeserializeOwned,
            Message: Serialize + DeserializeOwned,
        >
{
}

/// Helpers for the documentation's examples: not part of the API.
#[doc(hidden)]
pub mod doc_support {
    use crate::{Cluster, Config};
    use gen_registry::{Context, Options, Worker};

    /// Answers `x` with `x + state`; a cast adds to the state.
    pub struct Adder(u64);

    impl Worker for Adder {
        type Id = u64;
        type Args = u64;
        type Request = u64;
        type Reply = u64;
        type Message = u64;
        type Error = std::convert::Infallible;

        async fn init(_: &u64, start: u64, _: &Context<Self>) -> Result<Self, Self::Error> {
            Ok(Adder(start))
        }

        async fn handle_call(&mut self, x: u64, _: &mut Context<Self>) -> u64 {
            self.0 += x;
            self.0
        }

        async fn handle_cast(&mut self, x: u64, _: &mut Context<Self>) {
            self.0 += x;
        }
    }

    /// Runs `f` on a one-node cluster on the etcd at 127.0.0.1:2379.
    pub fn run<F, Fut>(f: F)
    where
        F: FnOnce(Cluster<Adder>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        runtime.block_on(async {
            let config = Config::new(
                "doc",
                ["http://127.0.0.1:2379"],
                "a long shared cluster secret",
            );
            let cluster = Cluster::join(config, Options::default())
                .await
                .expect("etcd on 127.0.0.1:2379");
            f(cluster.clone()).await;
            cluster.leave().await;
        });
    }
}
