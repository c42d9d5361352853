//! Registry options.

use crate::executor::Executor;
use crate::worker::Worker;
use crate::worker::event::{Event, Observer};
use crate::worker::restart::{self, BackOff, RestartPolicy};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// How a registry of `W` workers starts, restarts and stops them, who hears
/// about it, and under which name a Bastion spec publishes it.
///
/// Built with chained setters from [`Options::default`]; checked when the
/// registry is created, so a bad value is refused up front with
/// [`Error::InvalidOptions`](crate::Error::InvalidOptions) rather than
/// misbehaving later. The worker type is usually inferred from where the
/// options go.
///
#[doc = include_str!("../doc_support/pinger.md")]
///
/// A registry of pingers with every timeout and its restarts set:
///
/// ```
/// # use gen_registry::doc_support::Pinger;
/// use gen_registry::{BackOff, GenRegistry, Options, RestartPolicy};
/// use std::time::Duration;
///
/// let registry = GenRegistry::<Pinger>::new(
///     Options::default()
///         .start_timeout(Duration::from_secs(1))
///         .shutdown_timeout(Duration::from_millis(500))
///         .call_timeout(Duration::from_secs(2))
///         .restart(RestartPolicy::Always)
///         .back_off(BackOff::Exponential {
///             initial: Duration::from_millis(50),
///             max: Duration::from_secs(5),
///         }),
/// )
/// .unwrap();
/// assert_eq!(registry.options().get_start_timeout(), Duration::from_secs(1));
/// ```
pub struct Options<W: Worker> {
    start_timeout: Duration,
    shutdown_timeout: Duration,
    call_timeout: Duration,
    restart: RestartPolicy,
    /// How the args are copied for a restart; set with a policy that
    /// restarts, which is only offered where the args are `Clone`.
    clone_args: Option<CloneArgs<W>>,
    back_off: BackOff,
    observer: Option<Observer<W>>,
    name: Option<Cow<'static, str>>,
    executor: Executor,
    idle_timeout: Option<Duration>,
    mailbox_capacity: Option<usize>,
    max_workers: Option<usize>,
    at_capacity: AtCapacity,
    expected_workers: usize,
    epoch: Option<u64>,
    epoch_check: Option<EpochCheck>,
    node: Option<Cow<'static, str>>,
    _worker: PhantomData<fn() -> W>,
}

/// Whether the registry's owner still holds its epoch.
type EpochCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// What a start does when the registry holds its
/// [`max_workers`](Options::max_workers).
///
/// ```
/// # use gen_registry::doc_support::Pinger;
/// use gen_registry::{AtCapacity, Options};
/// let options = Options::<Pinger>::default().max_workers(10_000).at_capacity(AtCapacity::Refuse);
/// assert_eq!(options.get_at_capacity(), AtCapacity::Refuse);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AtCapacity {
    /// Evict the worker the policy picks (the default): it runs
    /// `terminate` with [`ExitReason::Evicted`](crate::ExitReason::Evicted),
    /// and its next use starts it again. The policy is S3-FIFO: an id used
    /// once leaves first, ids used again stay (see BENCHMARKS.md, "Eviction
    /// policy", for the measurements behind the choice). A worker in the
    /// middle of a call, or with mail queued, is never evicted; if every
    /// worker is, the start fails with
    /// [`Error::AtCapacity`](crate::Error::AtCapacity).
    #[default]
    Evict,
    /// Refuse the start with [`Error::AtCapacity`](crate::Error::AtCapacity).
    Refuse,
}

impl<W: Worker> Clone for Options<W> {
    fn clone(&self) -> Self {
        Options {
            start_timeout: self.start_timeout,
            shutdown_timeout: self.shutdown_timeout,
            call_timeout: self.call_timeout,
            restart: self.restart,
            clone_args: self.clone_args,
            back_off: self.back_off,
            observer: self.observer.clone(),
            name: self.name.clone(),
            executor: self.executor.clone(),
            idle_timeout: self.idle_timeout,
            mailbox_capacity: self.mailbox_capacity,
            max_workers: self.max_workers,
            at_capacity: self.at_capacity,
            expected_workers: self.expected_workers,
            epoch: self.epoch,
            epoch_check: self.epoch_check.clone(),
            node: self.node.clone(),
            _worker: PhantomData,
        }
    }
}

impl<W: Worker> fmt::Debug for Options<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("start_timeout", &self.start_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("restart", &self.restart)
            .field("back_off", &self.back_off)
            .field("observer", &self.observer.is_some())
            .field("name", &self.get_name())
            .field("executor", &self.executor)
            .field("idle_timeout", &self.idle_timeout)
            .field("mailbox_capacity", &self.mailbox_capacity)
            .field("max_workers", &self.max_workers)
            .field("at_capacity", &self.at_capacity)
            .field("expected_workers", &self.expected_workers)
            .field("epoch", &self.epoch)
            .field("epoch_check", &self.epoch_check.is_some())
            .field("node", &self.node)
            .finish()
    }
}

/// Copies a worker's args for a restart.
pub(crate) type CloneArgs<W> = fn(&<W as Worker>::Args) -> <W as Worker>::Args;

/// The most workers [`Options::expected_workers`] sizes the table for: a
/// table of 2^31 slots of 9 bytes each.
const MAX_EXPECTED_WORKERS: usize = 1 << 30;

/// GenServer's default call timeout, which GenRegistry also uses for starts.
const FIVE_SECONDS: Duration = Duration::from_secs(5);

impl<W: Worker> Default for Options<W> {
    /// A start timeout of 5 s (GenRegistry's default), a shutdown timeout of
    /// 5 s (OTP's default for a worker), a call timeout of 5 s (GenServer's
    /// default), no restarts (GenRegistry's behaviour) and, for a restart
    /// policy, [`BackOff::DEFAULT`], no observer, the worker type's name,
    /// Bastion's executor, no idle timeout, unbounded mailboxes, no
    /// capacity limit, an id table that starts small, and no epoch nor
    /// node name.
    fn default() -> Self {
        Options {
            start_timeout: FIVE_SECONDS,
            shutdown_timeout: FIVE_SECONDS,
            call_timeout: FIVE_SECONDS,
            restart: RestartPolicy::Never,
            clone_args: None,
            back_off: BackOff::DEFAULT,
            observer: None,
            name: None,
            executor: Executor::Bastion,
            idle_timeout: None,
            mailbox_capacity: None,
            max_workers: None,
            at_capacity: AtCapacity::Evict,
            expected_workers: 0,
            epoch: None,
            epoch_check: None,
            node: None,
            _worker: PhantomData,
        }
    }
}

impl<W: Worker> Options<W> {
    /// How long a worker's `init` may take before it is cancelled and the start
    /// fails with [`Error::StartTimeout`](crate::Error::StartTimeout).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// # use gen_registry::Options; use std::time::Duration;
    /// let options = Options::<Pinger>::default().start_timeout(Duration::from_millis(200));
    /// assert_eq!(options.get_start_timeout(), Duration::from_millis(200));
    /// ```
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long `stop` waits for a worker's `terminate` before it aborts the
    /// worker. For `shutdown` it is one deadline for the whole shutdown,
    /// however many workers there are: they stop in parallel (a thousand or
    /// two at a time), and those still running when it passes, asked to
    /// stop or not yet, are aborted; the
    /// [`ShutdownReport`](crate::ShutdownReport) says how many. Size an
    /// orchestrator's grace period from it, with a margin for killing what
    /// is left.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// # use gen_registry::Options; use std::time::Duration;
    /// let options = Options::<Pinger>::default().shutdown_timeout(Duration::from_secs(1));
    /// assert_eq!(options.get_shutdown_timeout(), Duration::from_secs(1));
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long [`WorkerRef::call`](crate::WorkerRef::call) waits for a
    /// reply before it fails with
    /// [`Error::CallTimeout`](crate::Error::CallTimeout); default 5 s, as
    /// GenServer's `call`.
    /// [`call_timeout`](crate::WorkerRef::call_timeout) sets one call's own.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// # use gen_registry::Options; use std::time::Duration;
    /// let options = Options::<Pinger>::default().call_timeout(Duration::from_millis(500));
    /// assert_eq!(options.get_call_timeout(), Duration::from_millis(500));
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The call timeout (see [`call_timeout`](Self::call_timeout)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// # use gen_registry::Options; use std::time::Duration;
    /// assert_eq!(Options::<Pinger>::default().get_call_timeout(), Duration::from_secs(5));
    /// ```
    pub fn get_call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The start timeout.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// # use gen_registry::Options; use std::time::Duration;
    /// assert_eq!(Options::<Pinger>::default().get_start_timeout(), Duration::from_secs(5));
    /// ```
    pub fn get_start_timeout(&self) -> Duration {
        self.start_timeout
    }

    /// The shutdown timeout.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// # use gen_registry::Options; use std::time::Duration;
    /// assert_eq!(Options::<Pinger>::default().get_shutdown_timeout(), Duration::from_secs(5));
    /// ```
    pub fn get_shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Whether and how often a crashed worker is restarted. Default:
    /// [`RestartPolicy::Never`].
    ///
    /// Only for workers whose [`Args`](Worker::Args) are `Clone`: a restart
    /// runs `init` again, with a clone of the args the worker started with.
    /// Under a policy other than `Never`, each start clones the args once
    /// (kept for the restarts) and each restart once more.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Options, RestartPolicy};
    /// let options = Options::<Pinger>::default().restart(RestartPolicy::Always);
    /// assert_eq!(options.get_restart(), RestartPolicy::Always);
    /// ```
    ///
    /// Args that cannot be cloned cannot be restarted with:
    ///
    /// ```compile_fail
    /// # use gen_registry::{Context, Options, RestartPolicy, Worker};
    /// struct Once;
    /// impl Worker for Once {
    ///     type Args = futures::channel::oneshot::Sender<()>; // not Clone
    ///     # type Id = u8; type Request = (); type Reply = (); type Message = ();
    ///     # type Error = std::convert::Infallible;
    ///     # async fn init(_: &u8, _: Self::Args, _: &Context<Self>) -> Result<Self, Self::Error> { Ok(Once) }
    ///     # async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
    ///     // ...
    /// }
    /// let options = Options::<Once>::default().restart(RestartPolicy::Always);
    /// ```
    pub fn restart(mut self, policy: RestartPolicy) -> Self
    where
        W::Args: Clone,
    {
        self.restart = policy;
        self.clone_args = Some(<W::Args as Clone>::clone);
        self
    }

    /// How long a crashed worker waits before it restarts. Default:
    /// [`BackOff::DEFAULT`] (10 ms doubling up to 1 s), so that a worker whose
    /// `init` keeps failing does not spin; [`BackOff::Immediate`] restarts at
    /// once.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{BackOff, Options};
    /// use std::time::Duration;
    /// let back_off = BackOff::Linear { step: Duration::from_millis(100), max: Duration::from_secs(2) };
    /// assert_eq!(Options::<Pinger>::default().back_off(back_off).get_back_off(), back_off);
    /// ```
    pub fn back_off(mut self, back_off: BackOff) -> Self {
        self.back_off = back_off;
        self
    }

    /// Calls `observer` on every [`Event`] of the registry and its workers
    /// (replacing an earlier observer). It runs in the worker's process, so
    /// it must be quick and must not block; it must not wait on the registry.
    /// Without an observer, reporting costs one branch. [`trace`](crate::trace)
    /// is a ready-made observer.
    ///
    /// When, relative to the callers: `Started` is reported before the start
    /// that ran `init` returns, `Stopped` before `stop` or `shutdown`
    /// returns, `RegistryStopped` before `shutdown` returns. A caller is
    /// answered first: a call whose handler panicked or stopped the worker
    /// gets its reply before `terminate` runs — no caller waits on a
    /// `terminate`, which may take up to the shutdown timeout — so before
    /// `Exited`, `Restarting`, `GaveUp` and `Stopped` are reported: wait for
    /// the event, not the reply, to see it. `kill` returns before the killed
    /// worker's events.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// use gen_registry::{Event, GenRegistry, Options};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let stopped = Arc::new(AtomicUsize::new(0));
    /// let seen = stopped.clone();
    /// let registry = GenRegistry::<Pinger>::new(Options::default().observe(move |event| {
    ///     if let Event::Stopped { .. } = event {
    ///         seen.fetch_add(1, Ordering::SeqCst);
    ///     }
    /// }))
    /// .unwrap();
    /// # run(async {
    /// registry.start(1, 0).await.unwrap();
    /// registry.stop(&1).await.unwrap();
    /// assert_eq!(stopped.load(Ordering::SeqCst), 1);
    /// # });
    /// ```
    pub fn observe(mut self, observer: impl Fn(&Event<'_, W>) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The name a Bastion spec publishes the registry under, for
    /// [`GenRegistry::whereis_named`](crate::GenRegistry::whereis_named).
    /// Default: the worker type's name, which
    /// [`GenRegistry::whereis`](crate::GenRegistry::whereis) finds.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert_eq!(Options::<Pinger>::default().name("pings").get_name(), "pings");
    /// assert!(Options::<Pinger>::default().get_name().ends_with("Pinger"));
    /// ```
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Which executor runs the workers. Default: [`Executor::Bastion`]. See
    /// [`Executor`] for what each costs and allows.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Executor, Options};
    /// let options = Options::<Pinger>::default().executor(Executor::Bastion);
    /// assert!(matches!(options.get_executor(), Executor::Bastion));
    /// ```
    pub fn executor(mut self, executor: Executor) -> Self {
        self.executor = executor;
        self
    }

    /// The executor (see [`executor`](Self::executor)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Executor, Options};
    /// assert!(matches!(Options::<Pinger>::default().get_executor(), Executor::Bastion));
    /// ```
    pub fn get_executor(&self) -> &Executor {
        &self.executor
    }

    /// Ends a worker that received no mail for `timeout` (idle
    /// passivation): it runs `terminate` — the place to save its state —
    /// with [`ExitReason::Idle`](crate::ExitReason::Idle), an event reports
    /// it, no lookup returns it afterwards, and the next `lookup_or_start`
    /// (or call by id) starts a fresh one. Mail means calls and casts; a
    /// worker's own timers do not keep it alive. A worker may set its own
    /// ([`Context::set_idle_timeout`](crate::Context::set_idle_timeout)).
    ///
    /// One sweep per registry checks its workers every quarter of the
    /// shortest idle timeout in use (at most every second), so a worker
    /// ends between `timeout` and `timeout` plus that period; a worker in
    /// the middle of a call, or with mail queued, is never ended for idling.
    /// A registry without an idle timeout runs no sweep.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// use std::time::Duration;
    /// let options = Options::<Pinger>::default().idle_timeout(Duration::from_secs(120));
    /// assert_eq!(options.get_idle_timeout(), Some(Duration::from_secs(120)));
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The idle timeout, if any (see [`idle_timeout`](Self::idle_timeout)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert_eq!(Options::<Pinger>::default().get_idle_timeout(), None);
    /// ```
    pub fn get_idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// Bounds every worker's mailbox to `capacity` queued messages (the
    /// default is unbounded). A cast to a full mailbox fails at once with
    /// [`Error::MailboxFull`](crate::Error::MailboxFull); so does a call:
    /// nobody waits for room, so a caller never queues up behind a worker
    /// that is already behind, and the error is the back-pressure signal
    /// (shed the request, or retry later). The message being handled does
    /// not count; a worker's own timers are never refused.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// let options = Options::<Pinger>::default().mailbox_capacity(1_000);
    /// assert_eq!(options.get_mailbox_capacity(), Some(1_000));
    /// ```
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = Some(capacity);
        self
    }

    /// The mailbox bound, if any (see [`mailbox_capacity`](Self::mailbox_capacity)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert_eq!(Options::<Pinger>::default().get_mailbox_capacity(), None);
    /// ```
    pub fn get_mailbox_capacity(&self) -> Option<usize> {
        self.mailbox_capacity
    }

    /// Holds at most `n` workers: a start at the limit evicts one, or is
    /// refused, as [`at_capacity`](Self::at_capacity) says (evicting by
    /// default). Workers being started count; an evicted worker still
    /// running its `terminate` does not. Lookups and calls by id count as
    /// uses for the eviction policy (a call through a handle kept from an
    /// earlier lookup does not). A registry without a limit pays nothing for
    /// the option.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// use gen_registry::{ExitReason, GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default().max_workers(2)).unwrap();
    /// let first = registry.lookup_or_start(1, 0).await.unwrap();
    /// registry.lookup_or_start(2, 0).await.unwrap();
    /// registry.lookup_or_start(3, 0).await.unwrap(); // at the limit: one is evicted
    /// assert_eq!(first.monitor().await, ExitReason::Evicted);
    /// # });
    /// ```
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// The capacity limit, if any (see [`max_workers`](Self::max_workers)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert_eq!(Options::<Pinger>::default().get_max_workers(), None);
    /// ```
    pub fn get_max_workers(&self) -> Option<usize> {
        self.max_workers
    }

    /// What a start at the capacity limit does. Default: [`AtCapacity::Evict`].
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{AtCapacity, Options};
    /// let options = Options::<Pinger>::default().max_workers(100).at_capacity(AtCapacity::Refuse);
    /// assert_eq!(options.get_at_capacity(), AtCapacity::Refuse);
    /// ```
    pub fn at_capacity(mut self, policy: AtCapacity) -> Self {
        self.at_capacity = policy;
        self
    }

    /// The policy at the capacity limit (see [`at_capacity`](Self::at_capacity)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{AtCapacity, Options};
    /// assert_eq!(Options::<Pinger>::default().get_at_capacity(), AtCapacity::Evict);
    /// ```
    pub fn get_at_capacity(&self) -> AtCapacity {
        self.at_capacity
    }

    /// Sizes the id table for `n` workers when the registry is created, so
    /// that it does not grow (by doubling and copying every entry) while the
    /// first `n` workers start. For a registry that will hold millions of
    /// workers: starting 10,000,000 of them ran 1.6× as fast with the table
    /// sized for them (BENCHMARKS.md, "Scale tier"). It is not a limit (see
    /// [`max_workers`](Self::max_workers)): the table still grows past `n`.
    /// The price is paid up front, about 9 to 18 bytes per expected worker
    /// whether or not they ever start, and the table never shrinks below it.
    /// Default: 0, a table that starts small and grows as needed.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// let options = Options::<Pinger>::default().expected_workers(1_000_000);
    /// assert_eq!(options.get_expected_workers(), 1_000_000);
    /// ```
    pub fn expected_workers(mut self, n: usize) -> Self {
        self.expected_workers = n;
        self
    }

    /// The workers the id table is sized for at creation (see
    /// [`expected_workers`](Self::expected_workers)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert_eq!(Options::<Pinger>::default().get_expected_workers(), 0);
    /// ```
    pub fn get_expected_workers(&self) -> usize {
        self.expected_workers
    }

    /// The epoch of this registry's ownership of its ids: a number that a
    /// later owner of the same ids (another registry, on another node)
    /// always has larger. Every worker reads it from its context
    /// ([`Context::epoch`](crate::Context::epoch)), and persisted state
    /// loaded with [`Stored::load_for`](crate::state::Stored::load_for)
    /// carries it on every write, so a store refuses the writes of an
    /// owner that has been replaced. Cluster mode sets it for each shard's
    /// registry (to the shard's epoch); a registry on its own needs none.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// let options = Options::<Pinger>::default().epoch(42);
    /// assert_eq!(options.get_epoch(), Some(42));
    /// ```
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// The epoch, if one was set (see [`epoch`](Self::epoch)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert_eq!(Options::<Pinger>::default().get_epoch(), None);
    /// ```
    pub fn get_epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// How a worker learns whether its registry still holds its
    /// [epoch](Self::epoch): `check` answers, for
    /// [`Context::holds_epoch`](crate::Context::holds_epoch), the check to
    /// make right before a side effect that no store fences (a message to
    /// another system). Once it answers `false` it should keep doing so.
    /// Cluster mode sets it to "this node still serves the shard at that
    /// epoch, with its lease safely unexpired". Without one, the epoch is
    /// always held. `check` must be quick and must not block: it runs on
    /// the worker's executor thread.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// let owned = Arc::new(AtomicBool::new(true));
    /// let still = owned.clone();
    /// let options = Options::<Pinger>::default()
    ///     .epoch(7)
    ///     .epoch_check(move || still.load(Ordering::Acquire));
    /// assert!(options.holds_epoch());
    /// owned.store(false, Ordering::Release);
    /// assert!(!options.holds_epoch());
    /// ```
    pub fn epoch_check(mut self, check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.epoch_check = Some(Arc::new(check));
        self
    }

    /// What the [epoch check](Self::epoch_check) answers now; `true`
    /// without one.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert!(Options::<Pinger>::default().holds_epoch());
    /// assert!(!Options::<Pinger>::default().epoch_check(|| false).holds_epoch());
    /// ```
    pub fn holds_epoch(&self) -> bool {
        self.epoch_check.as_ref().is_none_or(|check| check())
    }

    /// The name of the node the registry runs on, for its workers to read
    /// ([`Context::node`](crate::Context::node)): to log where they ran, or
    /// to say so in their state. Cluster mode sets it to the node's name.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// let options = Options::<Pinger>::default().node("node-a");
    /// assert_eq!(options.get_node(), Some("node-a"));
    /// ```
    pub fn node(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// The node name, if one was set (see [`node`](Self::node)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert_eq!(Options::<Pinger>::default().get_node(), None);
    /// ```
    pub fn get_node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The restart policy.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Options, RestartPolicy};
    /// assert_eq!(Options::<Pinger>::default().get_restart(), RestartPolicy::Never);
    /// ```
    pub fn get_restart(&self) -> RestartPolicy {
        self.restart
    }

    /// The back-off.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{BackOff, Options};
    /// assert_eq!(Options::<Pinger>::default().get_back_off(), BackOff::DEFAULT);
    /// ```
    pub fn get_back_off(&self) -> BackOff {
        self.back_off
    }

    /// The name (see [`name`](Self::name)).
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::Options;
    /// assert_eq!(Options::<Pinger>::default().name("a").get_name(), "a");
    /// ```
    pub fn get_name(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or_else(|| std::any::type_name::<W>())
    }

    /// How to copy the args for restarts, if the policy restarts.
    pub(crate) fn clone_args_for_restarts(&self) -> Option<CloneArgs<W>> {
        self.clone_args
            .filter(|_| self.restart != RestartPolicy::Never)
    }

    pub(crate) fn observer(&self) -> Option<&Observer<W>> {
        self.observer.as_ref()
    }

    /// The options a registry runs with: checked, and the executor resolved.
    pub(crate) fn checked(mut self) -> Result<Self, String> {
        self.validate()?;
        self.executor = self.executor.resolve()?;
        Ok(self)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.start_timeout.is_zero() {
            return Err("start_timeout is zero: no init could ever finish in time".into());
        }
        if self.call_timeout.is_zero() {
            return Err("call_timeout is zero: no call could ever be answered in time".into());
        }
        if self.shutdown_timeout.is_zero() {
            return Err(
                "shutdown_timeout is zero: no worker could run its terminate; give it at least a few milliseconds"
                    .into(),
            );
        }
        if self
            .idle_timeout
            .is_some_and(|d| d.is_zero() || d.as_millis() >= u128::from(u32::MAX - 1))
        {
            return Err(
                "idle_timeout must be between 1 ms and about 49 days (it is kept in milliseconds); leave it out for none"
                    .into(),
            );
        }
        if let Some(n) = self.max_workers {
            if n == 0 || n > crate::primitives::evict::MAX_CAPACITY {
                return Err(format!(
                    "max_workers {n} is out of range: 1 to {}; leave it out for no limit",
                    crate::primitives::evict::MAX_CAPACITY
                ));
            }
        }
        match self.mailbox_capacity {
            Some(0) => {
                return Err(
                    "mailbox_capacity is zero: no message could ever be queued; leave it out for unbounded mailboxes"
                        .into(),
                );
            }
            Some(n) if n > u32::MAX as usize => {
                return Err(format!(
                    "mailbox_capacity {n} is above the limit of {}",
                    u32::MAX
                ));
            }
            _ => {}
        }
        if self.expected_workers > MAX_EXPECTED_WORKERS {
            return Err(format!(
                "expected_workers {} is above the limit of {MAX_EXPECTED_WORKERS}: the table for it would need more than 16 GiB up front",
                self.expected_workers
            ));
        }
        if self.name.as_deref() == Some("") {
            return Err("the name is empty: leave it out to use the worker type's name".into());
        }
        restart::validate(self.restart, self.back_off)
    }
}
