//! [`WorkerRef`]: the handle to a worker (the counterpart of a pid).

use crate::cell::{CallFailure, Cell, Envelope, STOPPING};
use crate::current;
use crate::error::Error;
use crate::table::Entry;
use crate::timer::{Elapsed, timeout};
use crate::worker::{ShownId, Worker};
use futures::channel::oneshot;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// A handle to one worker: the "child ref" (pid) a registry hands out.
///
/// Cloning it is one reference-count increment. It stays valid for the
/// worker's whole life; once the worker has ended, every call on it returns an
/// error at once ([`Error::WorkerEnded`]) — it never hangs, and no handle ever
/// reaches a newer worker of the same id.
///
#[doc = include_str!("doc_support/pinger.md")]
///
/// A handle, from the start of its worker to its end:
///
/// ```
/// # use gen_registry::doc_support::Pinger;
/// use gen_registry::{Error, GenRegistry, Options};
/// # futures::executor::block_on(async {
/// let registry = GenRegistry::<Pinger>::new(Options::default())?;
/// let worker = registry.lookup_or_start(1, 10).await?;
/// assert_eq!(worker.call(1).await?, 11);
/// worker.cast(5)?;
/// assert_eq!(worker.call(1).await?, 16);
/// assert_eq!(*worker.id(), 1);
/// assert!(worker.is_alive());
/// registry.stop(&1).await?;
/// assert!(matches!(worker.call(1).await, Err(Error::WorkerEnded)));
/// # Ok::<(), Error<Pinger>>(())
/// # }).unwrap();
/// ```
#[repr(transparent)]
pub struct WorkerRef<W: Worker> {
    pub(crate) cell: Arc<Cell<W>>,
}

impl<W: Worker> WorkerRef<W> {
    pub(crate) fn new(cell: Arc<Cell<W>>) -> Self {
        WorkerRef { cell }
    }

    /// Views a table value as a handle without touching its reference count.
    pub(crate) fn from_cell(cell: &Arc<Cell<W>>) -> &Self {
        // SAFETY: WorkerRef is repr(transparent) over Arc<Cell<W>>.
        unsafe { &*(cell as *const Arc<Cell<W>> as *const WorkerRef<W>) }
    }

    /// The id the worker is registered under.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.lookup_or_start(3, 0).await.unwrap();
    /// assert_eq!(*worker.id(), 3);
    /// # });
    /// ```
    pub fn id(&self) -> &W::Id {
        self.cell.id()
    }

    /// Whether the worker is still alive: started and not yet stopping. A
    /// `false` is final.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.lookup_or_start(1, 0).await.unwrap();
    /// assert!(worker.is_alive());
    /// registry.stop(&1).await.unwrap();
    /// assert!(!worker.is_alive());
    /// # });
    /// ```
    pub fn is_alive(&self) -> bool {
        self.cell.state() < STOPPING
    }

    /// Sends a request and waits for the reply up to the registry's
    /// [call timeout](crate::Options::call_timeout) (5 s by default, as
    /// GenServer's). Errors as in [`call_timeout`](Self::call_timeout).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// // A pinger answers `x` with `x + state`.
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.lookup_or_start(1, 100).await.unwrap();
    /// assert_eq!(worker.call(5).await.unwrap(), 105);
    /// # });
    /// ```
    pub async fn call(&self, request: W::Request) -> Result<W::Reply, Error<W>> {
        self.call_with(request, None).await
    }

    /// Sends a request and waits up to `timeout` for the reply.
    ///
    /// Errors: [`Error::CallTimeout`] when no reply came in time (the request
    /// may still be handled later), [`Error::HandlerPanicked`] when the handler
    /// panicked on this request, [`Error::WorkerEnded`] when the worker had
    /// ended or ended before replying, [`Error::CalledSelf`] at once when a
    /// worker calls its own handle (a call through another worker back to
    /// the caller, A → B → A, is not detected: it times out).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # use std::time::Duration;
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.lookup_or_start(1, 1).await.unwrap();
    /// let reply = worker.call_timeout(41, Duration::from_millis(100)).await;
    /// assert_eq!(reply.unwrap(), 42);
    /// # });
    /// ```
    pub async fn call_timeout(
        &self,
        request: W::Request,
        timeout: Duration,
    ) -> Result<W::Reply, Error<W>> {
        self.call_with(request, Some(timeout)).await
    }

    /// A call waiting `timeout`, or the registry's call timeout.
    async fn call_with(
        &self,
        request: W::Request,
        timeout: Option<Duration>,
    ) -> Result<W::Reply, Error<W>> {
        if current::is(self.cell.address()) {
            return Err(Error::CalledSelf);
        }
        let (reply_to, reply) = oneshot::channel();
        let envelope = Envelope::Call(request, reply_to);
        let delivered = match timeout {
            Some(timeout) => self.cell.push(envelope).map(|()| timeout),
            None => self.cell.push_call(envelope),
        };
        let Ok(timeout) = delivered else {
            return Err(Error::WorkerEnded);
        };
        match self::timeout(timeout, reply).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(CallFailure::Panicked(message)))) => Err(Error::HandlerPanicked(message)),
            Ok(Err(oneshot::Canceled)) => Err(Error::WorkerEnded),
            Err(Elapsed) => Err(Error::CallTimeout(timeout)),
        }
    }

    /// Queues a fire-and-forget message. Returns at once; the mailbox is
    /// unbounded. Fails with [`Error::WorkerEnded`] if the worker is stopping or
    /// has ended (a message accepted just before the worker ends is dropped
    /// with it).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// // A pinger adds a cast to its state.
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.lookup_or_start(1, 0).await.unwrap();
    /// worker.cast(10).unwrap();
    /// assert_eq!(worker.call(0).await.unwrap(), 10);
    /// # });
    /// ```
    pub fn cast(&self, message: W::Message) -> Result<(), Error<W>> {
        self.cell
            .push(Envelope::Cast(message))
            .map_err(|_| Error::WorkerEnded)
    }

    /// Aborts the worker at once, without running its `terminate` (Erlang's
    /// `exit(Pid, kill)`). When `kill` returns, the worker takes no new
    /// mail, its queued and pending callers get [`Error::WorkerEnded`],
    /// `is_alive` is false and no lookup returns it. Its future is dropped at
    /// its next turn on the executor (a handler running at this instant may
    /// still finish its current step); then its id is free. A killed worker
    /// is never restarted. Prefer [`GenRegistry::stop`](crate::GenRegistry::stop).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.lookup_or_start(1, 0).await.unwrap();
    /// worker.kill();
    /// assert!(!worker.is_alive());
    /// assert!(registry.lookup(&1).is_err());
    /// assert_eq!(registry.count(), 0);
    /// # });
    /// ```
    pub fn kill(&self) {
        self.cell.kill();
    }
}

impl<W: Worker> Clone for WorkerRef<W> {
    fn clone(&self) -> Self {
        WorkerRef {
            cell: self.cell.clone(),
        }
    }
}

/// Two handles are equal when they refer to the same worker (not merely the
/// same id).
impl<W: Worker> PartialEq for WorkerRef<W> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.cell, &other.cell)
    }
}

impl<W: Worker> Eq for WorkerRef<W> {}

impl<W: Worker> Hash for WorkerRef<W> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.cell).hash(state)
    }
}

/// The id (cut after 64 characters, see [`Worker::Id`]) and whether the
/// worker is alive.
impl<W: Worker> fmt::Debug for WorkerRef<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerRef")
            .field("id", &ShownId(self.id()))
            .field("alive", &self.is_alive())
            .finish()
    }
}
