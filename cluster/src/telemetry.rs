//! The cluster's own metrics, through the `metrics` facade (beside the
//! core's metrics of each shard's registry), each labelled with the node's
//! name. What each one means is in the guide's "Seeing inside".

use metrics::{Counter, Gauge, counter, gauge};

/// One node's metric handles, resolved once when it joins: counting costs
/// an atomic add, or nothing when no recorder is installed.
pub(crate) struct NodeMetrics {
    /// Requests from peers this node answered, whatever the answer.
    pub(crate) served: Counter,
    /// Operations this node sent to another node, each attempt counted.
    pub(crate) forwarded: Counter,
    /// Attempts made again after one that reached no worker.
    pub(crate) retried: Counter,
    /// Operations that reached no worker before their time ran out.
    pub(crate) not_delivered: Counter,
    /// The shards this node serves now.
    pub(crate) shards: Gauge,
    /// Lease renewals etcd acknowledged.
    pub(crate) renewals: Counter,
    /// Lease renewals that failed or timed out, and leases etcd said had
    /// expired.
    pub(crate) renewal_failures: Counter,
}

impl NodeMetrics {
    /// The handles of node `node`, from the recorder installed now.
    pub(crate) fn new(node: &str) -> Self {
        let node = node.to_string();
        NodeMetrics {
            served: counter!("gen_registry_cluster_requests_served_total", "node" => node.clone()),
            forwarded: counter!("gen_registry_cluster_requests_forwarded_total", "node" => node.clone()),
            retried: counter!("gen_registry_cluster_retries_total", "node" => node.clone()),
            not_delivered: counter!("gen_registry_cluster_not_delivered_total", "node" => node.clone()),
            shards: gauge!("gen_registry_cluster_shards_served", "node" => node.clone()),
            renewals: counter!("gen_registry_cluster_lease_renewals_total", "node" => node.clone()),
            renewal_failures: counter!("gen_registry_cluster_lease_renewal_failures_total", "node" => node),
        }
    }
}
