//! Shard ownership: the shard count, fixed when the cluster is created, and
//! which shards this node claims, serves and releases.
//!
//! The desired owner of a shard is chosen by rendezvous hashing over the live
//! members. The reconciler reads members and claims from etcd, releases the
//! shards this node should no longer own and claims the free ones it should.
//! The watcher only hastens the reconciler: it also runs on a tick, and
//! always reads the whole state, so a missed event costs latency, not
//! correctness.

use crate::hash::rendezvous;
use crate::node::Node;
use crate::view::Keys;
use crate::{ClusterError, ClusterWorker};
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, WatchOptions};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Reads the shard count, storing `configured` if the cluster is new.
pub(crate) async fn shard_count(
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

/// Brings this node's shards in line with the view: releases the shards it
/// should no longer own, claims the free ones it should, and drops stale
/// claims of its own from before a fence.
pub(crate) async fn reconcile<W: ClusterWorker>(node: &Arc<Node<W>>) -> Result<(), ClusterError> {
    let _one_at_a_time = node.reconciling.lock().await;
    node.refresh_view().await?;
    if node.left.load(Ordering::Acquire) || !node.live.valid() {
        return Ok(());
    }
    if node.voted_out() {
        node.fence_voted_out().await;
        return Ok(());
    }
    let me = node.config.name.as_str();
    let lease = node.lease.load(Ordering::Acquire);
    let mut release = Vec::new();
    let mut claim = Vec::new();
    let mut stale = Vec::new();
    let mut adopt = Vec::new();
    {
        let view = node.view.lock();
        let local = node.local.lock();
        for shard in 0..node.shards {
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
        let node = node.clone();
        work.spawn(async move { release_shard(&node, shard, epoch).await });
    }
    for (shard, epoch) in stale {
        let node = node.clone();
        work.spawn(async move { delete_claim(&node, shard, epoch).await });
    }
    for (shard, epoch) in adopt {
        node.start_serving(shard, epoch, lease)?;
    }
    for shard in claim {
        let node = node.clone();
        work.spawn(async move { claim_shard(&node, shard, lease).await });
    }
    while work.join_next().await.is_some() {}
    Ok(())
}

async fn claim_shard<W: ClusterWorker>(
    node: &Node<W>,
    shard: u32,
    lease: i64,
) -> Result<(), ClusterError> {
    let key = node.keys.shard(shard);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            node.config.name.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let mut etcd = node.etcd.clone();
    let response = timeout(node.config.call_timeout, etcd.txn(txn))
        .await
        .map_err(|_| ClusterError::Etcd("claiming a shard timed out".into()))??;
    if response.succeeded() {
        let epoch = response.header().map(|h| h.revision()).unwrap_or_default();
        node.start_serving(shard, epoch, lease)?;
    }
    Ok(())
}

/// Stops serving `shard`, stops its workers, then deletes its key if it is
/// still the claim of `epoch` (0: this node's key is already gone).
async fn release_shard<W: ClusterWorker>(
    node: &Node<W>,
    shard: u32,
    epoch: i64,
) -> Result<(), ClusterError> {
    let removed = {
        let mut local = node.local.lock();
        let removed = local.remove(&shard);
        node.metrics.shards.set(local.len() as f64);
        removed
    };
    let Some((served, registry, busy)) = removed else {
        node.live.unserve(shard);
        if epoch != 0 {
            delete_claim(node, shard, epoch).await?;
        }
        return Ok(());
    };
    node.reminders.stopped(shard, served);
    if epoch == 0 {
        // Someone else's key: stop at once.
        node.live.unserve(shard);
        registry.hand_over().await;
        return Ok(());
    }
    // No request is routed here any more; while the key is still ours (so
    // nobody else can start these ids), let those already delivered finish,
    // within the call timeout, and stop the workers with their fence still
    // valid for their `terminate`.
    let drained = Instant::now() + node.config.call_timeout;
    while busy.load(Ordering::Acquire) > 0 && Instant::now() < drained && node.live.valid() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    registry.hand_over().await;
    node.live.unserve(shard);
    delete_claim(node, shard, epoch).await
}

async fn delete_claim<W: ClusterWorker>(
    node: &Node<W>,
    shard: u32,
    epoch: i64,
) -> Result<(), ClusterError> {
    let key = node.keys.shard(shard);
    let txn = Txn::new()
        .when([Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            epoch,
        )])
        .and_then([TxnOp::delete(key, None)]);
    let mut etcd = node.etcd.clone();
    timeout(node.config.call_timeout, etcd.txn(txn))
        .await
        .map_err(|_| ClusterError::Etcd("releasing a shard timed out".into()))??;
    Ok(())
}

/// Reconciles on every wake-up, and at least every third of `TTL − margin`.
pub(crate) async fn reconcile_loop<W: ClusterWorker>(node: Arc<Node<W>>) {
    let tick = (node.config.lease_ttl - node.config.fence_margin) / 3;
    loop {
        let _ = timeout(tick, node.wake.notified()).await;
        if node.left.load(Ordering::Acquire) {
            return;
        }
        let _ = reconcile(&node).await;
    }
}

/// Wakes the reconciler on every change under the cluster's prefix.
pub(crate) async fn watch<W: ClusterWorker>(node: Arc<Node<W>>) {
    let retry = Duration::from_millis(500);
    while !node.left.load(Ordering::Acquire) {
        let mut etcd = node.etcd.clone();
        if let Ok((_watcher, mut stream)) = etcd
            .watch(node.keys.all(), Some(WatchOptions::new().with_prefix()))
            .await
        {
            while let Ok(Some(_)) = stream.message().await {
                node.wake.notify_one();
            }
        }
        tokio::time::sleep(retry).await;
    }
}
