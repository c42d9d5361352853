//! [`WorkerRef`]: the handle to a worker (the counterpart of a pid).

use crate::primitives::current;
use crate::primitives::table::Entry;
use crate::primitives::timer::{Elapsed, timeout};
use crate::worker::cell::{CallFailure, Cell, Envelope, Refused, State};
use crate::worker::error::Error;
use crate::worker::telemetry::{Sampled, start_clock};
use crate::worker::{ExitReason, ShownId, Worker};
use futures::channel::oneshot;
use std::fmt;
use std::future::Future;
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
#[doc = include_str!("../doc_support/pinger.md")]
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
        self.cell.state() < State::Stopping
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
        self.deliver(request, None)
            .await
            .map_err(Attempt::into_error)
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
        self.deliver(request, Some(timeout))
            .await
            .map_err(Attempt::into_error)
    }

    /// A call waiting `timeout`, or the registry's call timeout, that tells a
    /// request no handler saw (the worker had ended, or ended with it
    /// queued) from one that may have been handled.
    pub(crate) async fn deliver(
        &self,
        request: W::Request,
        timeout: Option<Duration>,
    ) -> Result<W::Reply, Attempt<W, W::Request>> {
        if current::is(self.cell.address()) {
            return Err(Attempt::Failed(Error::CalledSelf));
        }
        let (reply_to, reply) = oneshot::channel();
        let envelope = Envelope::Call(request, reply_to);
        let clock = start_clock(Sampled::Call);
        let delivered = match timeout {
            Some(timeout) => self.cell.push(envelope).map(|_| timeout),
            None => self.cell.push(envelope),
        };
        let timeout = match delivered {
            Ok(timeout) => timeout,
            Err(Refused::Closed(Envelope::Call(request, _))) => {
                return Err(Attempt::Undelivered(request));
            }
            Err(Refused::Closed(_)) => return Err(Attempt::Failed(Error::WorkerEnded)),
            Err(Refused::Full(_)) => return Err(Attempt::Failed(Error::MailboxFull)),
        };
        match self::timeout(timeout, reply).await {
            Ok(Ok(Ok(reply))) => {
                if let Some(at) = clock {
                    let took = at.elapsed().as_secs_f64();
                    self.cell
                        .with_registry(|r| r.metrics.call_seconds.record(took));
                }
                Ok(reply)
            }
            Ok(Ok(Err(CallFailure::Panicked(message)))) => {
                Err(Attempt::Failed(Error::HandlerPanicked(message)))
            }
            Ok(Ok(Err(CallFailure::Dropped))) => Err(Attempt::Failed(Error::ReplyDropped)),
            Ok(Ok(Err(CallFailure::Undelivered(request)))) => Err(Attempt::Undelivered(request)),
            Ok(Err(oneshot::Canceled)) => Err(Attempt::Failed(Error::WorkerEnded)),
            Err(Elapsed) => {
                self.cell
                    .with_registry(|r| r.metrics.call_timeouts.increment(1));
                Err(Attempt::Failed(Error::CallTimeout(timeout)))
            }
        }
    }

    /// A cast that gives the message back if the worker had ended.
    pub(crate) fn offer(&self, message: W::Message) -> Result<(), Attempt<W, W::Message>> {
        match self.cell.push(Envelope::Cast(message)) {
            Ok(_) => Ok(()),
            Err(Refused::Closed(Envelope::Cast(message))) => Err(Attempt::Undelivered(message)),
            Err(Refused::Closed(_)) => Err(Attempt::Failed(Error::WorkerEnded)),
            Err(Refused::Full(_)) => Err(Attempt::Failed(Error::MailboxFull)),
        }
    }

    /// Queues a fire-and-forget message. Returns at once. Fails with
    /// [`Error::WorkerEnded`] if the worker is stopping or has ended (a
    /// message accepted just before the worker ends is dropped with it), or
    /// [`Error::MailboxFull`] if the registry bounds mailboxes
    /// ([`Options::mailbox_capacity`](crate::Options::mailbox_capacity)) and
    /// this one is full. Mailboxes are unbounded by default.
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
        self.offer(message).map_err(Attempt::into_error)
    }

    /// Resolves with the worker's exit reason once it has ended: the end of
    /// the worker, after its last incarnation (a restart does not resolve
    /// it), once its `terminate` has run and its id is free. No polling, no
    /// registry-wide observer: the future waits on the worker itself.
    /// Resolves at once for a worker that has already ended. Erlang's
    /// `monitor`, awaited.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// use gen_registry::{ExitReason, GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.lookup_or_start(1, 0).await.unwrap();
    /// let down = worker.monitor();
    /// registry.stop(&1).await.unwrap();
    /// assert_eq!(down.await, ExitReason::Stopped);
    /// # });
    /// ```
    pub fn monitor(&self) -> impl Future<Output = ExitReason> + Send + 'static {
        let cell = self.cell.clone();
        async move {
            cell.ended().await;
            // Every end records its reason before Ended; a cell never run
            // (refused at its start) is never handed out.
            cell.exit_reason().unwrap_or(ExitReason::Killed)
        }
    }

    /// Aborts the worker at once, without running its `terminate` (Erlang's
    /// `exit(Pid, kill)`). When `kill` returns, the worker takes no new
    /// mail, its queued and pending callers get [`Error::WorkerEnded`],
    /// `is_alive` is false and no lookup returns it. Its future is dropped at
    /// its next turn on the executor; a handler running at this instant may
    /// still finish its current step, even return, but its reply is dropped:
    /// the caller gets `WorkerEnded`, never the reply of a killed worker
    /// (nor a [`Deferred`](crate::Deferred) reply sent after the kill).
    /// Then its id is free. A killed worker
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
        let _ = self.cell.kill();
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

/// The outcome of a delivery that did not get a reply.
pub(crate) enum Attempt<W: Worker, T> {
    /// No handler saw it: here it is back, safe to send again.
    Undelivered(T),
    /// It failed, and may have been handled.
    Failed(Error<W>),
}

impl<W: Worker, T> Attempt<W, T> {
    /// The error a caller who will not send again sees.
    pub(crate) fn into_error(self) -> Error<W> {
        match self {
            Attempt::Undelivered(_) => Error::WorkerEnded,
            Attempt::Failed(e) => e,
        }
    }
}
