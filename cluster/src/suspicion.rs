//! Peers that cannot reach a node: the asymmetric partition, where a node
//! still renews its lease with etcd but its peers cannot reach it.
//!
//! Every node asks each peer for an answer once a tick (a third of
//! `TTL − margin`). A peer that has not answered for one lease TTL (the
//! suspicion period) is reported in etcd, under the reporter's lease:
//! `<prefix>/suspects/<peer>/<reporter>`, with the address tried. Once
//! it answers again, the report is deleted. A report lives only as long as
//! its reporter's lease: a reporter that dies or fences withdraws it.
//!
//! A node that a majority of the live members report at its current
//! address (itself counted in the electorate:
//! [`View::voted_out`](crate::view::View::voted_out)) is voted out; reports
//! of the address of an earlier process of its name do not count, and
//! their reporters withdraw them once the name is registered elsewhere. It learns this from etcd, which it still reaches, in its
//! reconciler, and fences itself exactly as when it loses etcd: it stops
//! serving, stops its workers, then revokes its lease so that its shards
//! move at once. It does not join again while the vote stands; its peers
//! go on probing the address in their reports, and withdraw them once it
//! answers. One node that cannot reach one peer is never voted out: each
//! side has one report against it, short of a majority of three or more,
//! and in a cluster of two neither side is ever a majority.

use crate::ClusterWorker;
use crate::node::Node;
use crate::wire::{Request, Response};
use etcd_client::PutOptions;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::time::timeout;

/// Probes the peers every tick; reports those silent for one lease TTL
/// and withdraws the reports of those that answer again.
pub(crate) async fn probe_peers<W: ClusterWorker>(node: Arc<Node<W>>) {
    let tick = (node.config.lease_ttl - node.config.fence_margin) / 3;
    let suspicion = node.config.lease_ttl;
    let me = node.config.name.clone();
    // By peer: when it last answered (or was first seen).
    let mut answered: BTreeMap<String, Instant> = BTreeMap::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    while !node.left.load(Ordering::Acquire) {
        tokio::time::sleep(tick).await;
        // The members, and the peers this node reports (voted out, they
        // are no longer members, but must be heard from again). A report of
        // an address its target no longer has (it restarted elsewhere) is
        // stale: withdrawn.
        let mut stale = Vec::new();
        let targets: BTreeMap<String, String> = {
            let view = node.view.lock();
            let mut targets: BTreeMap<String, String> = view
                .members
                .iter()
                .filter(|(name, _)| **name != me)
                .map(|(n, a)| (n.clone(), a.clone()))
                .collect();
            reported.clear();
            for (target, reports) in &view.suspects {
                let Some(address) = reports.get(&me) else {
                    continue;
                };
                match view.members.get(target) {
                    Some(now) if now != address => stale.push(target.clone()),
                    _ => {
                        targets.entry(target.clone()).or_insert(address.clone());
                        reported.insert(target.clone());
                    }
                }
            }
            targets
        };
        let mut etcd = node.etcd.clone();
        for target in stale {
            let _ = timeout(tick, etcd.delete(node.keys.suspect(&target, &me), None)).await;
        }
        answered.retain(|peer, _| targets.contains_key(peer));
        let mut probes = tokio::task::JoinSet::new();
        for (peer, address) in &targets {
            let (node, peer, address) = (node.clone(), peer.clone(), address.clone());
            probes.spawn(async move {
                let answer = node.peers.rpc(&address, &Request::Count, tick).await;
                (peer, address, matches!(answer, Ok(Response::Count(_))))
            });
        }
        let now = Instant::now();
        while let Some(Ok((peer, address, ok))) = probes.join_next().await {
            let key = node.keys.suspect(&peer, &me);
            if ok {
                answered.insert(peer.clone(), Instant::now());
                if reported.contains(&peer)
                    && let Ok(Ok(_)) = timeout(tick, etcd.delete(key, None)).await
                {
                    tracing::info!(node = %me, peer = %peer, "a peer answers again: report withdrawn");
                    reported.remove(&peer);
                    node.wake.notify_one();
                }
                continue;
            }
            let since = *answered.entry(peer.clone()).or_insert(now);
            if reported.contains(&peer) || since.elapsed() < suspicion || !node.live.valid() {
                continue;
            }
            let lease = node.lease.load(Ordering::Acquire);
            let put = etcd.put(key, address, Some(PutOptions::new().with_lease(lease)));
            if let Ok(Ok(_)) = timeout(tick, put).await {
                tracing::warn!(node = %me, peer = %peer, "a peer has not answered for one lease TTL: reported in etcd");
                reported.insert(peer);
            }
        }
    }
}

impl<W: ClusterWorker> Node<W> {
    /// Whether the live members have voted this node out, as last read.
    pub(crate) fn voted_out(&self) -> bool {
        self.view.lock().voted_out(&self.config.name, &self.address)
    }

    /// Fences this node because its peers voted it out: stops serving and
    /// stops its workers, as when it loses etcd, then revokes its lease so
    /// that its shards and membership go at once. The lease keeper takes a
    /// new lease once the vote is withdrawn.
    pub(crate) async fn fence_voted_out(&self) {
        tracing::warn!(node = %self.config.name, "a majority of the live members cannot reach this node: it stops serving until they can");
        self.fence_local().await;
        let lease = self.lease.load(Ordering::Acquire);
        let mut etcd = self.etcd.clone();
        let _ = timeout(self.config.lease_ttl, etcd.lease_revoke(lease)).await;
    }
}
