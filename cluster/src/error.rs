use std::time::Duration;

/// Why a cluster operation failed.
///
/// A worker's own errors (its `init` failed, it panicked, it ended) arrive as
/// [`ClusterError::Worker`] with the local registry's message, the same
/// whichever node ran it.
///
/// ```
/// use gen_registry_cluster::ClusterError;
/// use std::time::Duration;
///
/// let e = ClusterError::Timeout(Duration::from_secs(5));
/// assert!(e.to_string().contains("5s"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// etcd could not be reached or refused an operation.
    #[error("etcd: {0}")]
    Etcd(String),
    /// The cluster was created with another shard count; the count never
    /// changes, since every id would move to another shard.
    #[error(
        "the cluster was created with {stored} shards, this node is configured with {configured}; use {stored}"
    )]
    ShardCountMismatch {
        /// The count stored in etcd at creation.
        stored: u32,
        /// The count this node was given.
        configured: u32,
    },
    /// A live node is registered under this node's name.
    #[error("a live node is already registered under the name {0:?}; give each node its own name")]
    NameTaken(String),
    /// Bad configuration (an empty name, a margin not below the lease TTL…).
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// No worker runs under the id.
    #[error("no running worker is registered under this id")]
    NotFound,
    /// No answer within the timeout from the owner the request was sent
    /// to, or from the worker that took it: it may still be handled later.
    #[error(
        "no answer within {0:?} from the owner or the worker the request was sent to; it may still be handled"
    )]
    Timeout(Duration),
    /// No worker took the request within the timeout: no owner of the id's
    /// shard could be reached, or each one reached no longer held the shard,
    /// or every worker of the id ended before reading it. It was not
    /// handled: safe to send again.
    #[error(
        "no worker took the request within {0:?} (no reachable owner of the id's shard); it was not handled, so it is safe to send again"
    )]
    NotDelivered(Duration),
    /// The worker's error: its `init` failed or panicked, it panicked
    /// handling the request, it ended, or its mailbox is full.
    #[error("worker: {0}")]
    Worker(String),
    /// The connection to the owner failed after the request was sent: it may
    /// or may not have been handled, so it is not sent again.
    #[error(
        "the connection to the owner failed after the request was sent (it may have been handled): {0}"
    )]
    Rpc(String),
    /// A peer refused this node's connection, or this node the peer's, before
    /// any request was sent: a TLS certificate that does not chain to this
    /// node's CA, has expired or does not name the peer's address, or
    /// another cluster secret. Retrying does not help; the message says
    /// which peer and why.
    #[error(
        "the connection with a peer was refused (check the nodes' certificates, CA and cluster secret): {0}"
    )]
    PeerRefused(String),
    /// An id, argument, request or reply could not be (de)serialized.
    #[error("could not encode or decode a value: {0}")]
    Codec(String),
    /// This node has left the cluster ([`Cluster::leave`](crate::Cluster::leave)).
    #[error("this node has left the cluster")]
    Left,
}

impl From<etcd_client::Error> for ClusterError {
    fn from(e: etcd_client::Error) -> Self {
        ClusterError::Etcd(e.to_string())
    }
}
