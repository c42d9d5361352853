//! What a worker sees of its ownership in a cluster, two nodes in one
//! process on an etcd of the test's own: its shard's epoch and its node's
//! name in its context, and `ExitReason::Moved` when its shard moves away
//! or its node leaves; and requests that no worker read, retried.

mod common;

use common::*;
use gen_registry::{Context, ExitReason, Options, Worker};
use gen_registry_cluster::Cluster;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shard count `common::config` gives.
const SHARDS: u32 = 16;
const IDS: u64 = 24;

/// How each incarnation ended: (id, node, epoch, reason).
static ENDS: Mutex<Vec<(u64, String, u64, ExitReason)>> = Mutex::new(Vec::new());

fn ends() -> Vec<(u64, String, u64, ExitReason)> {
    ENDS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Answers where it runs: its node's name and its shard's epoch.
struct Where;

impl Worker for Where {
    type Id = u64;
    type Args = ();
    type Request = ();
    type Reply = (String, u64);
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Where)
    }

    async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) -> (String, u64) {
        let node = ctx.node().unwrap_or_default().to_string();
        (node, ctx.epoch().unwrap_or_default())
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        let end = (
            *ctx.id(),
            ctx.node().unwrap_or_default().to_string(),
            ctx.epoch().unwrap_or_default(),
            reason.clone(),
        );
        ENDS.lock().unwrap_or_else(|p| p.into_inner()).push(end);
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until both nodes serve shards, and each shard is served by one.
async fn spread<W: gen_registry_cluster::ClusterWorker>(a: &Cluster<W>, b: &Cluster<W>) {
    until("the shards to spread", || {
        (0..SHARDS).any(|s| b.serves(s)) && (0..SHARDS).all(|s| a.serves(s) ^ b.serves(s))
    })
    .await;
}

/// Calls every id from `via`: where each runs, as its worker says.
async fn placement(via: &Cluster<Where>) -> BTreeMap<u64, (String, u64)> {
    let mut placed = BTreeMap::new();
    for id in 0..IDS {
        let at = via.call(id, (), ()).await.expect("a call");
        let owner = via.owner(&id).await.expect("etcd").expect("an owner");
        assert_eq!(
            (at.0.as_str(), at.1),
            (owner.node.as_str(), owner.epoch as u64),
            "id {id}: the worker's context names its owner and epoch"
        );
        placed.insert(id, at);
    }
    placed
}

#[test]
fn workers_read_their_node_and_epoch_and_end_as_moved_when_their_shard_moves() {
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        let a = Cluster::<Where>::join(config(&etcd, "a", 2), Options::default())
            .await
            .expect("a joins");
        until("a to serve every shard", || {
            (0..SHARDS).all(|s| a.serves(s))
        })
        .await;
        let before = placement(&a).await;
        assert!(before.values().all(|(node, _)| node == "a"));

        let b = Cluster::<Where>::join(config(&etcd, "b", 3), Options::default())
            .await
            .expect("b joins");
        spread(&a, &b).await;
        let after = placement(&a).await;
        let moved: Vec<u64> = (0..IDS).filter(|id| after[id].0 == "b").collect();
        assert!(!moved.is_empty(), "no id moved to b: {after:?}");
        for id in &moved {
            assert!(
                after[id].1 > before[id].1,
                "id {id}: a new owner, a larger epoch"
            );
        }
        // Each moved id's worker on a ended as moved, at a's epoch, before
        // its shard was claimed by b.
        let ended = ends();
        for id in &moved {
            let end = (*id, "a".to_string(), before[id].1, ExitReason::Moved);
            assert!(ended.contains(&end), "id {id}: no {end:?} in {ended:?}");
        }
        assert_eq!(ended.len(), moved.len(), "only moved ids ended: {ended:?}");

        // Leaving ends every worker of the leaving node as moved too.
        b.leave().await;
        let ended = ends();
        for id in &moved {
            let end = (*id, "b".to_string(), after[id].1, ExitReason::Moved);
            assert!(ended.contains(&end), "id {id}: no {end:?} in {ended:?}");
        }
        a.leave().await;
        let ended = ends();
        assert_eq!(ended.len(), IDS as usize + moved.len(), "{ended:?}");
        assert!(
            ended
                .iter()
                .all(|(.., reason)| *reason == ExitReason::Moved),
            "{ended:?}"
        );
    });
}

/// Requests handled, by token.
static HANDLED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Handles one request, then stops: requests queued behind it come back
/// unread.
struct OneShot;

impl Worker for OneShot {
    type Id = u64;
    type Args = ();
    type Request = u64;
    type Reply = u64;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(OneShot)
    }

    async fn handle_call(&mut self, token: u64, ctx: &mut Context<Self>) -> u64 {
        HANDLED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(token);
        ctx.stop();
        token
    }
}

#[test]
fn requests_no_worker_read_are_retried_until_one_is_handled_once() {
    const TASKS: u64 = 8;
    const CALLS: u64 = 40;
    let _turn = one_at_a_time();
    let etcd = Etcd::start();
    runtime().block_on(async {
        let a = Cluster::<OneShot>::join(config(&etcd, "a", 2), Options::default())
            .await
            .expect("a joins");
        let b = Cluster::<OneShot>::join(config(&etcd, "b", 3), Options::default())
            .await
            .expect("b joins");
        spread(&a, &b).await;
        // Many callers on both nodes, two ids: most requests queue behind
        // one that ends its worker, and come back unread.
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..2 * TASKS {
            let via = if task % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                let mut failed = Vec::new();
                for n in 0..CALLS {
                    let token = task * CALLS + n;
                    match via.call(n % 2, (), token).await {
                        Ok(reply) => assert_eq!(reply, token),
                        Err(e) => failed.push((token, e.to_string())),
                    }
                }
                failed
            });
        }
        let mut failed = Vec::new();
        while let Some(done) = tasks.join_next().await {
            failed.extend(done.expect("a caller panicked"));
        }
        assert!(
            failed.is_empty(),
            "{} calls failed: {failed:?}",
            failed.len()
        );
        let mut handled = HANDLED.lock().unwrap_or_else(|p| p.into_inner()).clone();
        handled.sort_unstable();
        let expected: Vec<u64> = (0..2 * TASKS * CALLS).collect();
        assert_eq!(handled, expected, "each request handled exactly once");
        a.leave().await;
        b.leave().await;
    });
}
