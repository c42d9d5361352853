//! The crate's one error type.

use crate::worker::handle::WorkerRef;
use crate::worker::{ShownId, Worker};
use std::any::Any;
use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in a registry operation or a call.
///
/// It is generic over the worker so that it can carry the worker's own
/// [`Worker::Error`] from a failed `init`, and the live handle when a start finds
/// the id taken: no downcasting, no boxing.
///
/// ```
/// use gen_registry::{Context, Error, GenRegistry, Options, Worker};
///
/// /// A worker that only exists.
/// struct Echo;
///
/// impl Worker for Echo {
///     type Id = u32; type Args = (); type Request = (); type Reply = ();
///     type Message = (); type Error = std::convert::Infallible;
///     async fn init(_: &u32, _: (), _: &Context<Self>) -> Result<Self, Self::Error> { Ok(Echo) }
///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
/// }
///
/// # futures::executor::block_on(async {
/// let registry = GenRegistry::<Echo>::new(Options::default())?;
/// match registry.lookup(&7) {
///     Ok(worker) => println!("found {:?}", worker.id()),
///     Err(Error::NotFound) => println!("nobody is registered under 7"),
///     Err(other) => return Err(other),
/// }
/// let first = registry.start(7, ()).await?;
/// match registry.start(7, ()).await {
///     Err(Error::AlreadyStarted(existing)) => assert_eq!(existing, first),
///     other => panic!("unexpected {other:?}"),
/// }
/// # registry.shutdown().await;
/// # Ok::<(), Error<Echo>>(())
/// # }).unwrap();
/// ```
#[non_exhaustive]
pub enum Error<W: Worker> {
    /// No running worker is registered under the id.
    NotFound,
    /// `start` found a running worker under the id; here is its handle.
    AlreadyStarted(WorkerRef<W>),
    /// The worker's `init` returned an error (your [`Worker::Error`]);
    /// nothing was registered. This error's message ends with its message.
    /// Its [`source`](std::error::Error::source) is that error's own source
    /// where it can be seen — when `Worker::Error` is a
    /// `Box<dyn std::error::Error + Send + Sync>` — and none otherwise, since
    /// `Worker::Error` need not implement `std::error::Error`: match
    /// `Error::Init(e)` to reach your error itself.
    Init(W::Error),
    /// The worker's `init` panicked; nothing was registered.
    InitPanicked(String),
    /// `init` did not finish within the registry's start timeout; it was
    /// cancelled and nothing was registered.
    StartTimeout(Duration),
    /// No reply came within the call's timeout. The request may still be
    /// handled later; its reply is then dropped.
    CallTimeout(Duration),
    /// The worker panicked while handling this request. It has ended (or, under
    /// a restart policy, is restarting); other queued requests are not lost.
    HandlerPanicked(String),
    /// The worker had ended, or ended before it replied. From a call by id
    /// ([`GenRegistry::call`](crate::GenRegistry::call)), it means the
    /// worker took the request and ended before replying (it was killed, or
    /// its `terminate` ran out of time): the request may have been handled,
    /// so do not send it again blindly. A request that reached no worker is
    /// [`Error::NotDelivered`] instead.
    WorkerEnded,
    /// A call or cast by id ([`GenRegistry::call`](crate::GenRegistry::call),
    /// [`GenRegistry::cast`](crate::GenRegistry::cast)) reached no worker:
    /// each worker it found or started for the id ended with the request
    /// still unread (it stopped, idled out or was evicted), on the first try
    /// and on the one retry the registry makes. No handler saw it: it is
    /// safe to send again.
    NotDelivered,
    /// The handler [deferred](crate::Context::defer) its reply to this
    /// request, and the [reply handle](crate::Deferred) was dropped without
    /// an answer: by the code that held it, or with the worker's state when
    /// the worker ended or restarted. The request was handled, or begun.
    ReplyDropped,
    /// The registry has been shut down (explicitly, or by its Bastion
    /// supervisor); no operation can run on it any more.
    RegistryStopped,
    /// A registry of this worker type is already published under this name
    /// (by a Bastion spec, or by `GenRegistry::new` with a name); give the new
    /// one another [name](crate::Options::name).
    NameTaken(String),
    /// The worker's executor dropped it before its `init` finished: its
    /// tokio runtime has shut down (see
    /// [`Executor::Tokio`](crate::Executor)). Nothing was registered.
    ExecutorShutDown,
    /// A worker called its own handle from its own callback, which can never
    /// be answered: it handles one message at a time. Cast to itself, or do
    /// the work in place.
    CalledSelf,
    /// The worker's mailbox holds its capacity
    /// ([`Options::mailbox_capacity`](crate::Options::mailbox_capacity));
    /// the message was not queued. Nothing waits for room: shed the load,
    /// or retry later.
    MailboxFull,
    /// [`GenRegistry::whereis`](crate::GenRegistry::whereis) or
    /// [`whereis_named`](crate::GenRegistry::whereis_named) found no registry
    /// of this worker type published under the name.
    NotPublished(String),
    /// The registry holds its
    /// [`max_workers`](crate::Options::max_workers) (the number here) and
    /// the start was refused: the registry refuses starts at capacity
    /// ([`AtCapacity::Refuse`](crate::AtCapacity::Refuse)), or every worker
    /// was busy and none could be evicted. Nothing was registered.
    AtCapacity(usize),
    /// The registry's options were refused; the text says which and why.
    InvalidOptions(String),
}

impl<W: Worker> fmt::Display for Error<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str(
                "no running worker is registered under this id; start one with `start` or `lookup_or_start`",
            ),
            Error::AlreadyStarted(h) => write!(
                f,
                "a worker is already running under id {}; use the handle this error carries, or call `lookup_or_start`",
                ShownId(h.id())
            ),
            Error::Init(e) => write!(f, "the worker's init failed, nothing was registered: {e}"),
            Error::InitPanicked(m) => write!(
                f,
                "the worker's init panicked, nothing was registered: {m}"
            ),
            Error::StartTimeout(d) => write!(
                f,
                "the worker's init did not finish within the start timeout of {d:?} and was cancelled; nothing was registered (raise `Options::start_timeout` if init is legitimately slow)"
            ),
            Error::CallTimeout(d) => write!(
                f,
                "no reply within {d:?}; the request may still be handled later (for a slow handler, raise `Options::call_timeout` or use `call_timeout`)"
            ),
            Error::HandlerPanicked(m) => {
                write!(f, "the worker panicked while handling this request: {m}")
            }
            Error::WorkerEnded => f.write_str(
                "the worker has ended; use `lookup_or_start` to get a live worker for this id",
            ),
            Error::NotDelivered => f.write_str(
                "the request reached no worker: every worker of the id ended before taking it; no handler saw it, so it is safe to send again",
            ),
            Error::ReplyDropped => f.write_str(
                "the worker deferred its reply to this request and dropped the reply handle without answering (did the task holding it end, or the worker restart or stop?)",
            ),
            Error::RegistryStopped => f.write_str(
                "the registry has been shut down; no operation can run on it any more",
            ),
            Error::NameTaken(n) => write!(
                f,
                "a registry of this worker type is already published under the name {n:?}; give this one another name with `Options::name`"
            ),
            Error::ExecutorShutDown => f.write_str(
                "the executor dropped the worker before its init finished (has its tokio runtime shut down?); nothing was registered",
            ),
            Error::CalledSelf => f.write_str(
                "a worker called itself: the call could never be answered, since a worker handles one message at a time; cast to itself instead",
            ),
            Error::MailboxFull => f.write_str(
                "the worker's mailbox is full (Options::mailbox_capacity); the message was not queued: retry later or shed load",
            ),
            Error::NotPublished(n) => write!(
                f,
                "no registry of this worker type is published under the name {n:?}; a Bastion spec (`GenRegistry::child_spec`) or `GenRegistry::new` with `Options::name` publishes one, and it is withdrawn when the registry shuts down"
            ),
            Error::AtCapacity(n) => write!(
                f,
                "the registry holds its max_workers ({n}) and could not evict a worker (it refuses starts at capacity, or every worker is busy); nothing was registered"
            ),
            Error::InvalidOptions(m) => write!(f, "invalid registry options: {m}"),
        }
    }
}

impl<W: Worker> std::error::Error for Error<W> {
    /// For [`Error::Init`], the source of a boxed init error (its message is
    /// already part of this one); otherwise none.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let Error::Init(e) = self else {
            return None;
        };
        // `W::Error` need not be an error type; a boxed one is seen through
        // `Any`, the one way to learn that without a bound.
        let any: &dyn Any = e;
        let boxed = any.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>()?;
        boxed.source()
    }
}

impl<W: Worker> fmt::Debug for Error<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("NotFound"),
            Error::AlreadyStarted(h) => f.debug_tuple("AlreadyStarted").field(h).finish(),
            Error::Init(e) => f.debug_tuple("Init").field(e).finish(),
            Error::InitPanicked(m) => f.debug_tuple("InitPanicked").field(m).finish(),
            Error::StartTimeout(d) => f.debug_tuple("StartTimeout").field(d).finish(),
            Error::CallTimeout(d) => f.debug_tuple("CallTimeout").field(d).finish(),
            Error::HandlerPanicked(m) => f.debug_tuple("HandlerPanicked").field(m).finish(),
            Error::WorkerEnded => f.write_str("WorkerEnded"),
            Error::NotDelivered => f.write_str("NotDelivered"),
            Error::ReplyDropped => f.write_str("ReplyDropped"),
            Error::RegistryStopped => f.write_str("RegistryStopped"),
            Error::NameTaken(n) => f.debug_tuple("NameTaken").field(n).finish(),
            Error::NotPublished(n) => f.debug_tuple("NotPublished").field(n).finish(),
            Error::InvalidOptions(m) => f.debug_tuple("InvalidOptions").field(m).finish(),
            Error::ExecutorShutDown => f.write_str("ExecutorShutDown"),
            Error::CalledSelf => f.write_str("CalledSelf"),
            Error::MailboxFull => f.write_str("MailboxFull"),
            Error::AtCapacity(n) => f.debug_tuple("AtCapacity").field(n).finish(),
        }
    }
}

/// Blocking work that did not run: the executor's blocking pool dropped it
/// before it finished, because its tokio runtime has shut down. Returned by
/// [`Context::try_blocking`](crate::Context::try_blocking); it converts into
/// a [`std::io::Error`] (of kind `Other`) for workers whose errors are I/O
/// errors.
///
/// ```
/// use gen_registry::BlockingError;
///
/// fn explain(e: &BlockingError) -> String {
///     format!("not saved: {e}")
/// }
/// let _ = explain;
/// let io: fn(BlockingError) -> std::io::Error = std::io::Error::from;
/// let _ = io;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingError(pub(crate) ());

impl fmt::Display for BlockingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the blocking work was dropped before it finished: its executor's blocking pool is shutting down (its tokio runtime has shut down)",
        )
    }
}

impl std::error::Error for BlockingError {}

impl From<BlockingError> for std::io::Error {
    fn from(e: BlockingError) -> Self {
        std::io::Error::other(e)
    }
}
