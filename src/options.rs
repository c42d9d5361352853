//! Registry options.

use crate::event::{Event, Observer};
use crate::executor::Executor;
use crate::restart::{self, BackOff, RestartPolicy};
use crate::worker::Worker;
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
#[doc = include_str!("doc_support/pinger.md")]
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
    _worker: PhantomData<fn() -> W>,
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
            .finish()
    }
}

/// Copies a worker's args for a restart.
pub(crate) type CloneArgs<W> = fn(&<W as Worker>::Args) -> <W as Worker>::Args;

/// GenServer's default call timeout, which GenRegistry also uses for starts.
const FIVE_SECONDS: Duration = Duration::from_secs(5);

impl<W: Worker> Default for Options<W> {
    /// A start timeout of 5 s (GenRegistry's default), a shutdown timeout of
    /// 5 s (OTP's default for a worker), a call timeout of 5 s (GenServer's
    /// default), no restarts (GenRegistry's
    /// behaviour) and, for a restart policy, [`BackOff::DEFAULT`], no
    /// observer, the worker type's name, and Bastion's executor.
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
    /// worker. `shutdown` gives all workers this one budget together: they
    /// stop in parallel, and those still running after it are aborted.
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
        if self.name.as_deref() == Some("") {
            return Err("the name is empty: leave it out to use the worker type's name".into());
        }
        restart::validate(self.restart, self.back_off)
    }
}
