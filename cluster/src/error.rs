use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::fmt;
use std::time::Duration;

/// Why a cluster operation failed.
///
/// A worker's own errors (its `init` failed, it panicked, it ended) arrive as
/// [`ClusterError::Worker`], a [`WorkerFailure`] naming the node that ran
/// the worker, the id and what failed, the same whichever node ran it.
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
    /// A live node is registered under this node's name: its lease was
    /// still renewed after `join` had waited out its TTL (a lease a killed
    /// process left behind is waited out, not reported).
    #[error(
        "another live process is registered under the name {0:?}: it kept renewing its lease while this node waited one lease TTL for it to expire; stop that process, or give each node its own name"
    )]
    NameTaken(String),
    /// Bad configuration (an empty name, a secret under 16 bytes, a fence
    /// margin above 3/4 of the lease TTL…).
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
    /// handling the request, it ended, or its mailbox is full; with the
    /// node that ran it and the id.
    #[error("{0}")]
    Worker(WorkerFailure),
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
    /// An id, argument, request or reply could not be (de)serialized (here,
    /// or by the owner, whose name the message then starts with).
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

/// A worker's failure, wherever it ran: the node, the id (as its `Debug`
/// text) and what failed.
///
/// An `init` error of the worker's own type arrives as its message; if the
/// serving nodes were told to send it
/// ([`Cluster::send_init_errors`](crate::Cluster::send_init_errors)), also
/// as the value itself, which [`init_error`](WorkerFailure::init_error)
/// decodes.
///
/// ```
/// use gen_registry_cluster::{ClusterError, Failure, WorkerFailure};
///
/// let e = ClusterError::Worker(WorkerFailure {
///     node: "node-b".into(),
///     id: "42".into(),
///     failure: Failure::HandlerPanicked("index out of bounds".into()),
/// });
/// assert_eq!(
///     e.to_string(),
///     "the worker of id 42 on node node-b panicked handling the request: index out of bounds"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFailure {
    /// The node the worker ran on (or was being started on).
    pub node: String,
    /// The worker's id, as its `Debug` text.
    pub id: String,
    /// What failed.
    pub failure: Failure,
}

impl WorkerFailure {
    /// The worker's own `init` error, if this is one and the serving node
    /// sent it as a value
    /// ([`Cluster::send_init_errors`](crate::Cluster::send_init_errors));
    /// `None` otherwise, or if it does not decode as an `E`.
    ///
    /// ```
    /// use gen_registry_cluster::{Failure, WorkerFailure};
    ///
    /// let failure = WorkerFailure {
    ///     node: "node-b".into(),
    ///     id: "42".into(),
    ///     failure: Failure::Init { message: "no such account".into(), error: None },
    /// };
    /// assert_eq!(failure.init_error::<String>(), None); // sent as text only
    /// ```
    pub fn init_error<E: DeserializeOwned>(&self) -> Option<E> {
        match &self.failure {
            Failure::Init {
                error: Some(bytes), ..
            } => postcard::from_bytes(bytes).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, node) = (&self.id, &self.node);
        write!(f, "the worker of id {id} on node {node} ")?;
        match &self.failure {
            Failure::Init { message, .. } => write!(f, "failed its init: {message}"),
            Failure::InitPanicked(m) => write!(f, "panicked in its init: {m}"),
            Failure::StartTimeout(d) => write!(f, "did not finish its init within {d:?}"),
            Failure::HandlerPanicked(m) => write!(f, "panicked handling the request: {m}"),
            Failure::Ended => f.write_str(
                "ended after it took the request, before replying (it may have been handled)",
            ),
            Failure::ReplyDropped => {
                f.write_str("dropped its deferred reply (the request was handled, or begun)")
            }
            Failure::MailboxFull => f.write_str("has a full mailbox; the message was not queued"),
            Failure::AtCapacity(n) => write!(
                f,
                "could not start: the registry holds its maximum of {n} workers"
            ),
            Failure::Other(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for WorkerFailure {}

/// What failed in a [`WorkerFailure`].
///
/// ```
/// use gen_registry_cluster::Failure;
/// assert_ne!(Failure::Ended, Failure::MailboxFull);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Failure {
    /// `init` returned the worker's own error: its message, and the value
    /// itself (postcard) if the node was told to send it.
    Init {
        /// The error's `Display` text.
        message: String,
        /// The error, encoded, when sent as a value.
        error: Option<Vec<u8>>,
    },
    /// `init` panicked, with the panic's message.
    InitPanicked(String),
    /// `init` did not finish within the registry's start timeout.
    StartTimeout(Duration),
    /// The worker panicked handling the request, with the panic's message.
    HandlerPanicked(String),
    /// The worker took the request and ended before replying: it may have
    /// been handled.
    Ended,
    /// The worker deferred its reply and dropped the reply handle.
    ReplyDropped,
    /// The worker's mailbox was full.
    MailboxFull,
    /// The registry of the id's shard holds its `max_workers` (this many).
    AtCapacity(usize),
    /// Any other failure the local registry reported, as its message.
    Other(String),
}
