//! This node's membership: its etcd lease, and its member key under it.
//!
//! The lease keeper renews the lease; each acknowledged renewal moves the
//! fence deadline to `renewal sent + TTL − margin`. The fence timer stops
//! the workers once that deadline passes without one, even while the
//! keeper is stuck in a call to etcd. After a fence the keeper gives up the
//! old lease, takes a new one and registers again.

use crate::fence::Liveness;
use crate::node::Node;
use crate::view::Keys;
use crate::{ClusterError, ClusterWorker, Config};
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::timeout;

/// Takes a lease and registers this node under it, unless a live node has
/// its name; arms `live` until `TTL − margin` after the lease was asked for.
/// The lease's id.
pub(crate) async fn register(
    etcd: &mut Client,
    config: &Config,
    keys: &Keys,
    address: &str,
    live: &Liveness,
) -> Result<i64, ClusterError> {
    let safe = config.lease_ttl - config.fence_margin;
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
                    address,
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
    Ok(lease)
}

/// Renews the lease; after a fence, takes a new one and registers again.
pub(crate) async fn keep_lease<W: ClusterWorker>(node: Arc<Node<W>>) {
    let ttl = node.config.lease_ttl;
    let safe = ttl - node.config.fence_margin;
    let interval = safe / 3;
    let mut keeper = None;
    while !node.left.load(Ordering::Acquire) {
        if !node.live.valid() {
            node.fence_local().await;
            keeper = None;
            rejoin(&node, safe, interval).await;
            continue;
        }
        if keeper.is_none() {
            let mut lease = node.etcd.lease_client();
            let id = node.lease.load(Ordering::Acquire);
            keeper = timeout(interval, lease.keep_alive(id))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some((k, stream)) = keeper.as_mut() {
            let sent = node.live.now();
            let renewed = timeout(interval, async {
                k.keep_alive().await?;
                stream.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    node.metrics.renewals.increment(1);
                    let granted = Duration::from_secs(response.ttl() as u64).min(ttl);
                    node.live
                        .extend(sent, granted.saturating_sub(node.config.fence_margin));
                }
                Ok(Ok(Some(_))) => {
                    // etcd says the lease has expired: fence now.
                    node.metrics.renewal_failures.increment(1);
                    node.live.fence();
                    continue;
                }
                _ => {
                    node.metrics.renewal_failures.increment(1);
                    keeper = None;
                }
            }
        } else {
            // No keep-alive stream to renew on: etcd is unreachable.
            node.metrics.renewal_failures.increment(1);
        }
        tokio::time::sleep(interval).await;
    }
}

/// After a fence: gives up the old lease (its keys go at once if etcd is
/// reachable), takes a new one and registers again, retrying until it works
/// or the node leaves.
async fn rejoin<W: ClusterWorker>(node: &Node<W>, safe: Duration, interval: Duration) {
    let mut etcd = node.etcd.clone();
    while !node.left.load(Ordering::Acquire) {
        let old = node.lease.load(Ordering::Acquire);
        let _ = timeout(interval, etcd.lease_revoke(old)).await;
        let sent = node.live.now();
        let granted = timeout(
            interval,
            etcd.lease_grant(node.config.lease_ttl.as_secs() as i64, None),
        )
        .await;
        if let Ok(Ok(grant)) = granted {
            let lease = grant.id();
            let member = node.keys.member(&node.config.name);
            let put = timeout(
                interval,
                etcd.put(
                    member,
                    node.address.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await;
            if let Ok(Ok(_)) = put {
                node.lease.store(lease, Ordering::Release);
                node.live.arm(sent, safe);
                node.wake.notify_one();
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Stops the workers once the deadline passes without a renewal, even if
/// the lease keeper is stuck in a call to etcd.
pub(crate) async fn fence_timer<W: ClusterWorker>(node: Arc<Node<W>>) {
    let idle = Duration::from_millis(50);
    while !node.left.load(Ordering::Acquire) {
        match node.live.deadline() {
            Some(deadline) => {
                tokio::time::sleep_until(deadline.into()).await;
                if !node.live.valid() && !node.local.lock().is_empty() {
                    node.fence_local().await;
                }
            }
            None => tokio::time::sleep(idle).await,
        }
    }
}
