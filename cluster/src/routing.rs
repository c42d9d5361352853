//! Routing: the way of every operation on an id (call, cast, stop) to the
//! worker of the id, wherever it runs.
//!
//! A node that serves the id's shard delivers to its local registry; any
//! other sends the operation to the shard's owner with the epoch it knows.
//! While nobody owns the shard, or the owner answers "not owner", or could
//! not be reached before the request left, or every worker of the id ended
//! before reading the request, the caller refreshes its view and tries
//! again, backing off, within its timeout
//! ([`ClusterError::NotDelivered`] once it is spent). A request that may
//! have reached a worker is never sent again: the caller gets an error
//! instead.

use crate::client::RpcFail;
use crate::error::{Failure, WorkerFailure};
use crate::hash::shard_of;
use crate::node::{Busy, Node};
use crate::wire::{Request, Response, decode, encode};
use crate::{ClusterError, ClusterWorker};
use gen_registry::{Error, GenRegistry, Worker};
use serde::{Serialize, de::DeserializeOwned};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// The longest a caller waits between attempts while no owner answers.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// Where an operation on a shard goes now.
enum Route<W: Worker> {
    /// To this node's registry of the shard.
    Local(GenRegistry<W>, Busy),
    /// To the owner at this address, at this epoch.
    Remote(String, i64),
    /// Nowhere yet: nobody this node knows of owns the shard.
    Nobody,
}

/// Reads an owner's answer to a cast or a stop: `Done` is success.
pub(crate) fn done(response: Response) -> Result<Result<(), ClusterError>, Response> {
    match response {
        Response::Done => Ok(Ok(())),
        other => Err(other),
    }
}

/// `value`'s bytes, encoded the first time they are needed and kept for
/// retries: an operation delivered locally never encodes them.
pub(crate) fn encode_once<T: Serialize>(
    bytes: &mut Option<Vec<u8>>,
    value: &T,
) -> Result<Vec<u8>, ClusterError> {
    match bytes {
        Some(b) => Ok(b.clone()),
        None => Ok(bytes.insert(encode(value)?).clone()),
    }
}

/// The value itself on the first attempt; on a later one, a copy decoded
/// from its bytes, since the first attempt gave the value to a registry
/// that stopped before its worker took it.
pub(crate) fn take_or_decode<T: DeserializeOwned>(
    value: &mut Option<T>,
    bytes: &[u8],
) -> Result<T, ClusterError> {
    match value.take() {
        Some(v) => Ok(v),
        None => decode(bytes),
    }
}

impl<W: ClusterWorker> Node<W> {
    /// What the local registry's error for `id` becomes for the caller: a
    /// [`WorkerFailure`] naming this node and the id, but for the errors
    /// the cluster has a variant of its own for. (A request that reached
    /// no worker never gets here: it is retried.)
    pub(crate) fn worker_error(&self, id: &W::Id, e: Error<W>) -> ClusterError {
        let failure = match e {
            Error::NotFound => return ClusterError::NotFound,
            Error::CallTimeout(d) => return ClusterError::Timeout(d),
            Error::Init(e) => Failure::Init {
                message: e.to_string(),
                error: self.init_codec.get().and_then(|encode| encode(&e)),
            },
            Error::InitPanicked(m) => Failure::InitPanicked(m),
            Error::StartTimeout(d) => Failure::StartTimeout(d),
            Error::HandlerPanicked(m) => Failure::HandlerPanicked(m),
            Error::WorkerEnded => Failure::Ended,
            Error::ReplyDropped => Failure::ReplyDropped,
            Error::MailboxFull => Failure::MailboxFull,
            Error::AtCapacity(n) => Failure::AtCapacity(n),
            other => Failure::Other(other.to_string()),
        };
        ClusterError::Worker(WorkerFailure {
            node: self.config.name.clone(),
            id: format!("{id:?}"),
            failure,
        })
    }

    fn route(&self, shard: u32) -> Route<W> {
        if let Some((_, registry, busy)) = self.local.lock().get(&shard)
            && self.live.valid()
        {
            return Route::Local(registry.clone(), Busy::new(busy));
        }
        match self.view.lock().remote(shard, &self.config.name) {
            Some((address, epoch)) => Route::Remote(address, epoch),
            None => Route::Nobody,
        }
    }

    /// The shard of `id`, and the bytes `id` travels in, for an operation
    /// on it; [`ClusterError::Left`] once this node has left.
    pub(crate) fn address(&self, id: &W::Id) -> Result<(u32, Vec<u8>), ClusterError> {
        self.not_left()?;
        let bytes = encode(id)?;
        Ok((shard_of(&bytes, self.shards), bytes))
    }

    /// Delivers one operation on `id`, of `shard`, to the id's worker,
    /// wherever it runs, within `within` (retries included), by the rules of
    /// this module.
    ///
    /// The operation comes in its two forms. `local` makes its delivery to
    /// this node's registry of the shard (whose workers read the shard's
    /// epoch from their context); its
    /// future ends once the registry has handled it. A registry stopped
    /// meanwhile (the shard moved) handled nothing, so `local` may be asked
    /// again, on another attempt. `remote` makes the request for the owner
    /// at an epoch, given the time left. `done` reads an owner's answer: the
    /// operation's outcome if it is the success answer, else the answer
    /// back, for the retry rules.
    pub(crate) async fn routed<T, L, F>(
        &self,
        shard: u32,
        id: &W::Id,
        within: Duration,
        mut local: L,
        mut remote: impl FnMut(i64, Duration) -> Result<Request, ClusterError>,
        done: impl Fn(Response) -> Result<Result<T, ClusterError>, Response>,
    ) -> Result<T, ClusterError>
    where
        L: FnMut(GenRegistry<W>) -> Result<F, ClusterError>,
        F: Future<Output = Result<T, Error<W>>>,
    {
        let mut pending = Pending::new(within);
        loop {
            match self.route(shard) {
                Route::Local(registry, _busy) => {
                    let delivery = local(registry)?;
                    match timeout(pending.left(), delivery).await {
                        Ok(Ok(outcome)) => return Ok(outcome),
                        // Nothing reached a worker: the shard moved, or
                        // every worker of the id ended before reading it.
                        Ok(Err(Error::RegistryStopped | Error::NotDelivered)) => {}
                        Ok(Err(e)) => return Err(self.worker_error(id, e)),
                        Err(_) => return Err(ClusterError::Timeout(within)),
                    }
                }
                Route::Remote(address, epoch) => {
                    self.metrics.forwarded.increment(1);
                    let request = remote(epoch, pending.left())?;
                    match self.peers.rpc(&address, &request, pending.left()).await {
                        Ok(response) => match done(response) {
                            Ok(outcome) => return outcome,
                            Err(other) => pending.answer(other)?,
                        },
                        Err(fail) => pending.fail(fail)?,
                    }
                }
                Route::Nobody => {}
            }
            pending.wait(self).await?;
        }
    }
}

/// The retry state of one routed operation.
struct Pending {
    within: Duration,
    deadline: Instant,
    backoff: Duration,
}

impl Pending {
    fn new(within: Duration) -> Self {
        Pending {
            within,
            deadline: Instant::now() + within,
            backoff: Duration::from_millis(2),
        }
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// An owner's answer other than success: `Ok` to try again.
    fn answer(&self, response: Response) -> Result<(), ClusterError> {
        match response {
            Response::NotOwner | Response::NotDelivered => Ok(()),
            Response::NotFound => Err(ClusterError::NotFound),
            Response::Worker(failure) => Err(ClusterError::Worker(failure)),
            Response::Timeout(ms) => Err(ClusterError::Timeout(Duration::from_millis(ms))),
            Response::Failed(m) => Err(ClusterError::Codec(m)),
            other => Err(ClusterError::Rpc(format!("unexpected answer {other:?}"))),
        }
    }

    fn fail(&self, fail: RpcFail) -> Result<(), ClusterError> {
        match fail {
            RpcFail::NotSent => Ok(()),
            RpcFail::Refused(e) => Err(ClusterError::PeerRefused(e)),
            RpcFail::Invalid(e) => Err(ClusterError::Codec(e)),
            RpcFail::Sent(e) => Err(ClusterError::Rpc(e)),
            RpcFail::Timeout => Err(ClusterError::Timeout(self.within)),
        }
    }

    /// Asks for a fresh view and waits a little before the next attempt, or
    /// fails once the time is spent.
    async fn wait<W: ClusterWorker>(&mut self, node: &Node<W>) -> Result<(), ClusterError> {
        if node.left.load(Ordering::Acquire) {
            return Err(ClusterError::Left);
        }
        let left = self.left();
        if left.is_zero() {
            // Every attempt so far reached no worker (one that might have
            // returned at once).
            node.metrics.not_delivered.increment(1);
            return Err(ClusterError::NotDelivered(self.within));
        }
        node.metrics.retried.increment(1);
        node.wake.notify_one();
        tokio::time::sleep(self.backoff.min(left)).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}
