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
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Takes a lease and registers this node under it; arms `live` until
/// `TTL − margin` after the lease was asked for. The lease's id.
///
/// If the name is registered under another lease, that may be what a
/// process of this name left behind when it was killed: a lease nobody
/// renews any more, which etcd expires within its TTL. So the node waits,
/// reporting progress in `tracing`, until the key goes, up to that lease's
/// granted TTL and a second more (to the first registration after it); a
/// lease still there by then is being renewed by a live process, and the
/// answer is [`ClusterError::NameTaken`]. Nothing is taken over early: the
/// old process, if it still runs, has fenced itself before etcd lets the
/// lease go, as for any node that stopped renewing.
pub(crate) async fn register(
    etcd: &mut Client,
    config: &Config,
    keys: &Keys,
    address: &str,
    live: &Liveness,
) -> Result<i64, ClusterError> {
    let safe = config.lease_ttl - config.fence_margin;
    let member = keys.member(&config.name);
    let mut waiting: Option<(i64, Instant)> = None;
    loop {
        let sent = live.now();
        let lease = timeout(
            safe,
            etcd.lease_grant(config.lease_ttl.as_secs() as i64, None),
        )
        .await
        .map_err(|_| ClusterError::Etcd("granting a lease timed out".into()))??
        .id();
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
                        member.clone(),
                        address,
                        Some(PutOptions::new().with_lease(lease)),
                    )]),
            ),
        )
        .await
        .map_err(|_| ClusterError::Etcd("registering timed out".into()))??;
        if registered.succeeded() {
            live.arm(sent, safe);
            if waiting.is_some() {
                tracing::info!(node = %config.name, "joined once the previous lease of its name expired");
            }
            return Ok(lease);
        }
        let _ = timeout(safe, etcd.lease_revoke(lease)).await;
        let until = match waiting {
            Some((_, until)) => until,
            None => {
                let (holder, left) = holder(etcd, &member, safe).await?;
                let until = Instant::now() + left + Duration::from_secs(1);
                tracing::info!(
                    node = %config.name,
                    lease = holder,
                    left_ms = left.as_millis() as u64,
                    "the name is registered under another lease: waiting for it to expire \
                     (the lease of a process of this name that ended without leaving)"
                );
                waiting = Some((holder, until));
                until
            }
        };
        wait_for_release(etcd, &member, until, &config.name).await?;
        if Instant::now() >= until {
            return Err(ClusterError::NameTaken(config.name.clone()));
        }
    }
}

/// The lease `member` is registered under, and the longest it can live
/// unrenewed: its granted TTL (0 if the key is already gone).
async fn holder(
    etcd: &mut Client,
    member: &str,
    within: Duration,
) -> Result<(i64, Duration), ClusterError> {
    let found = timeout(within, etcd.get(member, None))
        .await
        .map_err(|_| ClusterError::Etcd("reading a member timed out".into()))??;
    let Some(lease) = found.kvs().first().map(|kv| kv.lease()) else {
        return Ok((0, Duration::ZERO));
    };
    let ttl = timeout(within, etcd.lease_time_to_live(lease, None))
        .await
        .map_err(|_| ClusterError::Etcd("reading a lease timed out".into()))??;
    Ok((lease, Duration::from_secs(ttl.granted_ttl().max(0) as u64)))
}

/// Polls until `member` is gone or `until` has passed, reporting the time
/// left about once a second.
async fn wait_for_release(
    etcd: &mut Client,
    member: &str,
    until: Instant,
    name: &str,
) -> Result<(), ClusterError> {
    let poll = Duration::from_millis(100);
    let mut reported = Instant::now();
    while Instant::now() < until {
        let found = timeout(until - Instant::now() + poll, etcd.get(member, None))
            .await
            .map_err(|_| ClusterError::Etcd("reading a member timed out".into()))??;
        if found.kvs().is_empty() {
            return Ok(());
        }
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            let left = until.saturating_duration_since(reported);
            tracing::info!(node = %name, left_ms = left.as_millis() as u64, "still waiting for the previous lease of this name");
        }
        tokio::time::sleep(poll).await;
    }
    Ok(())
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
        // Voted out by its peers: not back until they can reach it again.
        if node.refresh_view().await.is_err() || node.voted_out() {
            tokio::time::sleep(interval).await;
            continue;
        }
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
