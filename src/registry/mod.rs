//! The facade: [`GenRegistry`], the registry and the dynamic supervision of
//! its workers (this file), the process-wide directory of named registries,
//! and the registry's embedding in a Bastion tree ([`Spec`](spec::Spec) and
//! the child specs).

pub(crate) mod directory;
pub(crate) mod spec;

use crate::primitives::current;
use crate::worker::Worker;
use crate::worker::cell::{Cell, StartFailure, State, StopRequest};
use crate::worker::context::Context;
use crate::worker::error::Error;
use crate::worker::handle::{Attempt, WorkerRef};
use crate::worker::options::Options;
use crate::worker::shared::{Owner, Shared};
use crate::worker::supervise::{self, Guard};
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

/// A registry of workers of type `W`, one per id, started on first use.
///
/// It is cheap to clone (one `Arc`); every clone is the same registry. Reads
/// ([`lookup`](Self::lookup), [`count`](Self::count), [`reduce`](Self::reduce),
/// [`to_list`](Self::to_list), [`sample`](Self::sample)) read the table
/// directly — no message, no lock. Starts and stops of different ids run in
/// parallel; each worker runs as a lightweight process on Bastion's executor,
/// supervised by the registry itself.
///
/// When the last clone is dropped without [`shutdown`](Self::shutdown), the
/// registry shuts down in the background: a program that ends right after
/// may end before the workers' `terminate` ran. Await `shutdown` to be sure.
///
/// ```
/// use gen_registry::{Context, GenRegistry, Options, Worker};
///
/// struct Greeter { name: String }
///
/// impl Worker for Greeter {
///     type Id = u64;
///     type Args = String;
///     type Request = ();
///     type Reply = String;
///     type Message = ();
///     type Error = std::convert::Infallible;
///
///     async fn init(_id: &u64, name: String, _ctx: &Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Greeter { name })
///     }
///     async fn handle_call(&mut self, _: (), _ctx: &mut Context<Self>) -> String {
///         format!("hello, {}", self.name)
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let registry = GenRegistry::<Greeter>::new(Options::default()).unwrap();
/// let greeter = registry.lookup_or_start(1, "ada".to_string()).await.unwrap();
/// assert_eq!(greeter.call(()).await.unwrap(), "hello, ada");
/// // Found again by its id; the args of a later call are not used.
/// let again = registry.lookup_or_start(1, "bob".to_string()).await.unwrap();
/// assert_eq!(again, greeter);
/// assert_eq!(registry.count(), 1);
/// registry.shutdown().await;
/// # });
/// ```
///
#[doc = include_str!("../doc_support/pinger.md")]
pub struct GenRegistry<W: Worker> {
    owner: Arc<Owner<W>>,
}

impl<W: Worker> Clone for GenRegistry<W> {
    fn clone(&self) -> Self {
        GenRegistry {
            owner: self.owner.clone(),
        }
    }
}

impl<W: Worker> PartialEq for GenRegistry<W> {
    /// Clones of one registry are equal; two registries never are, even of
    /// one worker type (e.g. a registry and the one its Bastion supervisor
    /// restarted).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// let a = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let b = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// assert_eq!(a, a.clone());
    /// assert_ne!(a, b);
    /// ```
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.owner, &other.owner)
    }
}

impl<W: Worker> Eq for GenRegistry<W> {}

impl<W: Worker> fmt::Debug for GenRegistry<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenRegistry")
            .field("worker", &std::any::type_name::<W>())
            .field("count", &self.count())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl<W: Worker> GenRegistry<W> {
    /// Starts a standalone registry (GenRegistry's `start_link`), outside any
    /// Bastion supervisor. It needs no `Bastion::init`: its workers run on
    /// Bastion's executor, which starts on first use.
    ///
    /// Given a [name](Options::name) (other than the worker type's, a
    /// spec's default), it is published under it for
    /// [`whereis_named`](Self::whereis_named) until its shutdown begins or
    /// its last handle is dropped.
    ///
    /// Fails with [`Error::InvalidOptions`] if an option is out of range, or
    /// [`Error::NameTaken`] if a live registry of `W` holds the name.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Error, GenRegistry, Options};
    /// use std::time::Duration;
    ///
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// assert_eq!(registry.count(), 0);
    ///
    /// let refused = GenRegistry::<Pinger>::new(Options::default().start_timeout(Duration::ZERO));
    /// assert!(matches!(refused, Err(Error::InvalidOptions(_))));
    ///
    /// let pings = GenRegistry::<Pinger>::new(Options::default().name("pings")).unwrap();
    /// assert_eq!(GenRegistry::<Pinger>::whereis_named("pings").unwrap(), pings);
    /// let taken = GenRegistry::<Pinger>::new(Options::default().name("pings"));
    /// assert!(matches!(taken, Err(Error::NameTaken(_))));
    /// ```
    pub fn new(options: Options<W>) -> Result<Self, Error<W>> {
        let options = options.checked().map_err(Error::InvalidOptions)?;
        let registry = GenRegistry {
            owner: Owner::new(options),
        };
        directory::publish_new(registry.options(), Arc::downgrade(&registry.owner))?;
        Ok(registry)
    }

    /// The registry whose handles share `owner` (what the directory holds).
    pub(crate) fn from_owner(owner: Arc<Owner<W>>) -> Self {
        GenRegistry { owner }
    }

    /// What this registry's handles share (for the directory).
    pub(crate) fn owner(&self) -> &Arc<Owner<W>> {
        &self.owner
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<W>> {
        &self.owner.shared
    }

    /// The handle of the running worker registered under `id`.
    ///
    /// A table read: no message, no lock. Never returns a worker that has
    /// ended or is stopping (one that stopped itself leaves the table's view
    /// before its last reply is delivered). Fails with [`Error::NotFound`], or
    /// [`Error::RegistryStopped`] after shutdown. A worker still in `init` is
    /// not found yet.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// use gen_registry::Error;
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// assert!(matches!(registry.lookup(&1), Err(Error::NotFound)));
    /// let started = registry.start(1, 0).await.unwrap();
    /// assert_eq!(registry.lookup(&1).unwrap(), started);
    /// # });
    /// ```
    pub fn lookup<Q>(&self, id: &Q) -> Result<WorkerRef<W>, Error<W>>
    where
        W::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.shared().table.get_running(id) {
            Some(cell) => {
                self.shared().touch(&cell);
                Ok(WorkerRef::new(cell))
            }
            None => Err(self.not_found()),
        }
    }

    fn not_found(&self) -> Error<W> {
        if self.is_stopped() {
            Error::RegistryStopped
        } else {
            Error::NotFound
        }
    }

    /// The running worker under `id`, or a new one started with `args`.
    ///
    /// A hit is a table read. On a miss, the worker's `init` runs in its own
    /// process; concurrent callers for the same id share that one start
    /// (exactly one `init` runs), and starts of different ids proceed in
    /// parallel — a slow `init` delays only the callers of its own id. If the
    /// id's worker is stopping, this waits until it has ended and starts a new
    /// one: two workers of one id are never alive together.
    ///
    /// It takes the id and the args by value, even on a hit; where making
    /// them costs (a `String` id, args that allocate), use
    /// [`lookup_or_start_with`](Self::lookup_or_start_with), which borrows
    /// the id and makes the args only to start.
    ///
    /// Errors: [`Error::Init`] / [`Error::InitPanicked`] /
    /// [`Error::StartTimeout`] when this caller's start failed (nothing stays
    /// registered; a caller that was waiting on someone else's failed start
    /// tries its own), [`Error::WorkerEnded`] when this caller's worker
    /// started but ended (stopped by someone else, stopped itself or
    /// panicked) before this caller could be handed it, [`Error::RegistryStopped`].
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let a = registry.lookup_or_start(9, 1).await.unwrap();
    /// let b = registry.lookup_or_start(9, 2).await.unwrap(); // found: args unused
    /// assert_eq!(a, b);
    /// assert_eq!(b.call(0).await.unwrap(), 1);
    /// # });
    /// ```
    pub async fn lookup_or_start(
        &self,
        id: W::Id,
        args: W::Args,
    ) -> Result<WorkerRef<W>, Error<W>> {
        self.start_or_find(&id, W::Id::clone, || args, IfRunning::Return, For::Caller)
            .await
    }

    /// [`lookup_or_start`](Self::lookup_or_start) with a borrowed id, and
    /// args made only to start: a hit allocates nothing and never calls
    /// `args` — with `String` ids, look up by `&str`. On a miss, the id is
    /// made with `to_owned` and `args` is called once, by the one caller
    /// whose start runs `init` (callers that find a start under way wait
    /// for it and call nothing). Errors as in `lookup_or_start`.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let a = registry.lookup_or_start_with(&9, || 1).await.unwrap();
    /// let b = registry.lookup_or_start_with(&9, || unreachable!()).await.unwrap(); // found
    /// assert_eq!(a, b);
    /// # });
    /// ```
    pub async fn lookup_or_start_with<Q>(
        &self,
        id: &Q,
        args: impl FnOnce() -> W::Args,
    ) -> Result<WorkerRef<W>, Error<W>>
    where
        W::Id: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = W::Id> + ?Sized,
    {
        self.start_or_find(id, Q::to_owned, args, IfRunning::Return, For::Caller)
            .await
    }

    /// Starts a worker under `id` with `args`, or fails with
    /// [`Error::AlreadyStarted`] carrying the running worker's handle. Racing
    /// `start`s of one id run one `init`: one caller gets `Ok`, the others
    /// `AlreadyStarted`. Other errors as in
    /// [`lookup_or_start`](Self::lookup_or_start).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// use gen_registry::Error;
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let first = registry.start(5, 0).await.unwrap();
    /// match registry.start(5, 0).await {
    ///     Err(Error::AlreadyStarted(existing)) => assert_eq!(existing, first),
    ///     other => panic!("{other:?}"),
    /// }
    /// # });
    /// ```
    pub async fn start(&self, id: W::Id, args: W::Args) -> Result<WorkerRef<W>, Error<W>> {
        self.start_or_find(&id, W::Id::clone, || args, IfRunning::Refuse, For::Caller)
            .await
    }

    /// The worker under `id`, found or started: `owned` makes the id and
    /// `args` the args for this caller's start, if it runs one.
    async fn start_or_find<Q>(
        &self,
        id: &Q,
        owned: impl Fn(&Q) -> W::Id,
        args: impl FnOnce() -> W::Args,
        if_running: IfRunning,
        starter: For,
    ) -> Result<WorkerRef<W>, Error<W>>
    where
        W::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shared = self.shared();
        let found = |cell| {
            let found = WorkerRef::new(cell);
            if if_running == IfRunning::Refuse {
                Err(Error::AlreadyStarted(found))
            } else {
                Ok(found)
            }
        };
        // The hit path: one table read, one reference taken.
        if let Some(cell) = shared.table.get_running(id) {
            shared.touch(&cell);
            return found(cell);
        }
        let mut args = Some(args);
        loop {
            if shared.stopped.load(Ordering::Acquire) {
                return Err(Error::RegistryStopped);
            }
            let cell = match shared.table.get(id) {
                Some(cell) => cell,
                None => {
                    let cell = Arc::new(Cell::new(owned(id), &shared.view));
                    match shared.table.try_insert(&cell) {
                        Ok(()) => {
                            // Made only now, by the caller that starts the
                            // worker; if making them panics, the entry goes.
                            let claim = Claim {
                                shared,
                                cell: &cell,
                            };
                            let args = args.take().expect("args are used by one start only")();
                            std::mem::forget(claim);
                            return self.spawn(cell, args, starter).await;
                        }
                        Err(existing) => existing,
                    }
                }
            };
            match cell.state() {
                State::Running => return found(cell),
                // Its entry is gone already: try again.
                State::Ended => {}
                state => {
                    cell.changed(state).await;
                }
            }
        }
    }

    /// Runs a worker for `cell`, which this caller has just inserted, and waits
    /// for the outcome of its `init` (bounded by the worker's start timeout).
    async fn spawn(
        &self,
        cell: Arc<Cell<W>>,
        args: W::Args,
        starter: For,
    ) -> Result<WorkerRef<W>, Error<W>> {
        let shared = self.shared();
        if let Err(capacity) = shared.admit(&cell) {
            shared.retire(&cell);
            shared.view.metrics.capacity_refusals.increment(1);
            return Err(Error::AtCapacity(capacity));
        }
        // Pairs with the fence in `shutdown`: either shutdown sees this entry,
        // or this start sees the registry stopped.
        fence(Ordering::SeqCst);
        if shared.stopped.load(Ordering::SeqCst) {
            shared.retire(&cell);
            return Err(Error::RegistryStopped);
        }
        let guard = Guard::new(Context {
            handle: WorkerRef::new(cell.clone()),
            shared: shared.clone(),
            stop: false,
            started: false,
            restarts: 0,
            reply: None,
        });
        cell.set_task(supervise::spawn(guard, args));
        let state = cell.changed(State::Starting).await;
        match cell.take_start_failure() {
            Some(StartFailure::Init(e)) => Err(Error::Init(e)),
            Some(StartFailure::Panicked(m)) => Err(Error::InitPanicked(m)),
            Some(StartFailure::Timeout(d)) => Err(Error::StartTimeout(d)),
            Some(StartFailure::ExecutorShutDown) => Err(Error::ExecutorShutDown),
            None if shared.stopped.load(Ordering::Acquire) => Err(Error::RegistryStopped),
            None if state == State::Running => {
                if starter == For::Caller && shared.options.get_max_workers().is_some() {
                    cell.mark_handed();
                }
                Ok(WorkerRef::new(cell))
            }
            None => Err(Error::WorkerEnded),
        }
    }

    /// Calls the worker of `id`, starting it with `args` if none runs: the
    /// virtual-actor address, where a caller names an id and never holds a
    /// handle. `args` are used only if a start is needed.
    ///
    /// A worker can end between the lookup and the call (it idled out, was
    /// evicted, stopped itself). If the request was not delivered — no
    /// handler saw it — the call is retried once, transparently, on a
    /// fresh worker; one request is never delivered twice. (The retry
    /// starts the worker only if the first attempt did not use `args`;
    /// otherwise it takes a worker someone else started.) It waits up to
    /// the registry's [call timeout](crate::Options::call_timeout) for the
    /// reply.
    ///
    /// Its errors tell a request that reached no worker from one that may
    /// have been handled: [`Error::NotDelivered`] when the retry reached no
    /// worker either (no handler saw the request: send it again if you
    /// will), [`Error::RegistryStopped`] when the registry shut down before
    /// a worker took it (nor did any handler see it), and
    /// [`Error::WorkerEnded`] only when a worker took it and ended before
    /// replying. Otherwise those of
    /// [`lookup_or_start`](Self::lookup_or_start) and of
    /// [`WorkerRef::call`].
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// use gen_registry::Error;
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// // Retried on `NotDelivered`, since no handler saw the request.
    /// let reply = loop {
    ///     match registry.call(7, 100, 1).await {
    ///         Err(Error::NotDelivered) => continue,
    ///         other => break other,
    ///     }
    /// };
    /// assert_eq!(reply.unwrap(), 101);
    /// # });
    /// ```
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// // A pinger answers `x` with `x + state`.
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// assert_eq!(registry.call(7, 100, 1).await.unwrap(), 101); // started with 100
    /// assert_eq!(registry.call(7, 999, 1).await.unwrap(), 101); // found: 999 unused
    /// # });
    /// ```
    pub async fn call(
        &self,
        id: W::Id,
        args: W::Args,
        request: W::Request,
    ) -> Result<W::Reply, Error<W>> {
        let mut args = Some(args);
        let mut request = request;
        for _ in 0..2 {
            let Some(worker) = self.find_or_start(&id, &mut args).await? else {
                continue;
            };
            match worker.deliver(request, None).await {
                Ok(reply) => return Ok(reply),
                Err(Attempt::Undelivered(back)) => request = back,
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        Err(Error::NotDelivered)
    }

    /// Casts to the worker of `id`, starting it with `args` if none runs;
    /// retried once, as [`call`](Self::call) is, if the worker ended before
    /// the message was queued, and [`Error::NotDelivered`] if the retry
    /// could not queue it either. Returns once it is queued (or the start
    /// failed).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// // A pinger adds a cast to its state.
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// registry.cast(3, 10, 5).await.unwrap();
    /// assert_eq!(registry.call(3, 0, 0).await.unwrap(), 15);
    /// # });
    /// ```
    pub async fn cast(
        &self,
        id: W::Id,
        args: W::Args,
        message: W::Message,
    ) -> Result<(), Error<W>> {
        let mut args = Some(args);
        let mut message = message;
        for _ in 0..2 {
            let Some(worker) = self.find_or_start(&id, &mut args).await? else {
                continue;
            };
            match worker.offer(message) {
                Ok(()) => return Ok(()),
                Err(Attempt::Undelivered(back)) => message = back,
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        Err(Error::NotDelivered)
    }

    /// The running worker of `id`, or one started with `args` if they are
    /// still there to use; `None` when it ended before it could be handed
    /// out (try again). [`Error::NotDelivered`] when none runs and the args
    /// are spent: a worker they started ended before taking the request.
    async fn find_or_start(
        &self,
        id: &W::Id,
        args: &mut Option<W::Args>,
    ) -> Result<Option<WorkerRef<W>>, Error<W>> {
        match self.lookup(id) {
            Ok(worker) => Ok(Some(worker)),
            Err(Error::NotFound) => {
                let Some(args) = args.take() else {
                    return Err(Error::NotDelivered);
                };
                match self
                    .start_or_find(id, W::Id::clone, || args, IfRunning::Return, For::CallById)
                    .await
                {
                    Ok(worker) => Ok(Some(worker)),
                    Err(Error::WorkerEnded) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Stops the worker under `id` and returns once its `terminate` has run
    /// and its entry is gone — the id is then free, and no second worker of
    /// the id can have started before. The stop goes ahead of the mail: the
    /// request being handled finishes, and every call still queued gets
    /// [`Error::WorkerEnded`] (to drain the queue first, send a last request
    /// whose handler calls [`Context::stop`](crate::Context::stop)). A worker
    /// still in `init` is stopped right after it; a worker waiting out a
    /// restart back-off, at once. A `terminate` that outlives the shutdown
    /// timeout is aborted.
    ///
    /// Fails with [`Error::NotFound`] if no worker runs under `id` (a worker
    /// already ending — it stopped itself, or another `stop` came first — is
    /// waited for, then `NotFound`), or [`Error::RegistryStopped`].
    ///
    /// Called by a worker on its own id (from a handler), it cannot wait for
    /// its own end: it asks for the stop and returns `Ok` at once, and the
    /// worker ends after the current callback, running `terminate`, as with
    /// [`Context::stop`](crate::Context::stop).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// use gen_registry::Error;
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// registry.start(1, 0).await.unwrap();
    /// registry.stop(&1).await.unwrap();
    /// assert_eq!(registry.count(), 0);
    /// assert!(matches!(registry.stop(&1).await, Err(Error::NotFound)));
    /// # });
    /// ```
    pub async fn stop<Q>(&self, id: &Q) -> Result<(), Error<W>>
    where
        W::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shared = self.shared();
        loop {
            let Some(cell) = shared.table.get(id) else {
                return Err(self.not_found());
            };
            match cell.state() {
                State::Starting => {
                    cell.changed(State::Starting).await;
                    continue;
                }
                State::Running => {}
                // Ending already (it stopped itself, or another stop came
                // first): not this call's to stop, but once it returns the
                // worker is gone all the same.
                _ => {
                    if !current::is(cell.address()) {
                        shared.await_end(std::slice::from_ref(&cell), None).await;
                    }
                    return Err(self.not_found());
                }
            }
            shared.request_stop(&cell, StopRequest::Stop);
            if !current::is(cell.address()) {
                shared.await_end(std::slice::from_ref(&cell), None).await;
            }
            return Ok(());
        }
    }

    /// The registry's health now: workers by state, the mail waiting and
    /// how long the oldest of it has waited, the capacity's occupancy (see
    /// [`Stats`](crate::Stats)). It visits every worker once, locking each
    /// for a moment: about the cost of a [`reduce`](Self::reduce), fine
    /// for a health endpoint scraped every few seconds.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// registry.start(1, 0).await.unwrap();
    /// let stats = registry.stats();
    /// assert_eq!((stats.starting, stats.running, stats.stopping), (0, 1, 0));
    /// # });
    /// ```
    pub fn stats(&self) -> crate::Stats {
        self.shared().stats()
    }

    /// How many workers are running. O(1): one atomic load.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// for id in 0..3 {
    ///     registry.start(id, 0).await.unwrap();
    /// }
    /// assert_eq!(registry.count(), 3);
    /// # });
    /// ```
    pub fn count(&self) -> usize {
        self.shared().view.running.load(Ordering::Acquire)
    }

    /// Folds `f` over every running worker, in no particular order (Elixir's
    /// `reduce`). It holds no lock: `f` may use the registry. Workers started
    /// or ended during the fold may or may not be seen.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// for id in 1..=4 {
    ///     registry.start(id, 0).await.unwrap();
    /// }
    /// let sum = registry.reduce(0, |acc, id, _worker| acc + id);
    /// assert_eq!(sum, 10);
    /// # });
    /// ```
    pub fn reduce<A>(&self, acc: A, mut f: impl FnMut(A, &W::Id, &WorkerRef<W>) -> A) -> A {
        let mut acc = Some(acc);
        self.shared().table.for_each_running(|id, cell| {
            let a = acc.take().expect("the accumulator is always put back");
            acc = Some(f(a, id, WorkerRef::from_cell(cell)));
            true
        });
        acc.expect("the accumulator is always put back")
    }

    /// Every running worker with its id, in no particular order.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// registry.start(1, 0).await.unwrap();
    /// registry.start(2, 0).await.unwrap();
    /// let mut ids: Vec<u64> = registry.to_list().into_iter().map(|(id, _)| id).collect();
    /// ids.sort();
    /// assert_eq!(ids, [1, 2]);
    /// # });
    /// ```
    pub fn to_list(&self) -> Vec<(W::Id, WorkerRef<W>)> {
        let mut list = Vec::with_capacity(self.count());
        self.shared().table.for_each_running(|id, cell| {
            list.push((id.clone(), WorkerRef::new(cell.clone())));
            true
        });
        list
    }

    /// One running worker chosen uniformly at random, or `None` if there are
    /// none. O(n): it walks the table up to the chosen entry (GenRegistry's
    /// `sample` always returns the first entry).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// assert!(registry.sample().is_none());
    /// registry.start(7, 0).await.unwrap();
    /// let (id, worker) = registry.sample().unwrap();
    /// assert_eq!((id, *worker.id()), (7, 7));
    /// # });
    /// ```
    pub fn sample(&self) -> Option<(W::Id, WorkerRef<W>)> {
        let table = &self.shared().table;
        // The count can run ahead of what the walk sees while workers end;
        // after a few misses the first running worker stands in.
        for attempt in 0..4 {
            let count = self.count();
            if count == 0 {
                return None;
            }
            let target = if attempt < 3 {
                (RandomState::new().hash_one(attempt) % count as u64) as usize
            } else {
                0
            };
            let (mut seen, mut chosen) = (0, None);
            table.for_each_running(|id, cell| {
                if seen == target {
                    chosen = Some((id.clone(), WorkerRef::new(cell.clone())));
                    return false;
                }
                seen += 1;
                true
            });
            if chosen.is_some() {
                return chosen;
            }
        }
        None
    }

    /// Stops every worker and the registry. Each worker is asked to stop and
    /// runs its `terminate`; the
    /// [shutdown timeout](crate::Options::shutdown_timeout) is one deadline
    /// for the whole shutdown, and the workers still running when it passes
    /// are aborted (killed: the rest of their `terminate` does not run).
    /// Returns once no worker is left and the table is empty — or, called
    /// by a worker of this registry, once every other worker has ended:
    /// the caller itself ends after its current callback. From then on
    /// every operation fails with [`Error::RegistryStopped`] (the read-only
    /// views see an empty registry). Calling it again waits for the same
    /// end.
    ///
    /// The [`ShutdownReport`](crate::ShutdownReport) it returns counts the
    /// workers this call stopped: how many ended in time, how many were
    /// aborted at the deadline (so whether state was lost). It may be
    /// ignored.
    ///
    /// Workers are stopped about a thousand at a time, the next thousand
    /// asked before the last ones have ended, so up to two thousand
    /// `terminate`s that wait on I/O overlap, and a million workers are
    /// never all queued on the executor at once. All of them share the one
    /// deadline: an orchestrator's grace period can be sized from the
    /// option (the timeout, plus the time to kill what is left).
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// use gen_registry::Error;
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.start(1, 0).await.unwrap();
    /// let report = registry.shutdown().await;
    /// assert_eq!((report.terminated, report.aborted), (1, 0));
    /// assert!(!worker.is_alive());
    /// assert_eq!(registry.count(), 0);
    /// assert!(matches!(registry.start(2, 0).await, Err(Error::RegistryStopped)));
    /// # });
    /// ```
    pub async fn shutdown(&self) -> crate::ShutdownReport {
        // A named registry gives its name back as its shutdown begins.
        directory::withdraw(self.options().get_name(), &self.owner);
        self.shared().shutdown().await
    }

    /// Shuts the registry down because its ids now belong to another owner
    /// (in cluster mode, its shard moved to another node): as
    /// [`shutdown`](Self::shutdown) does, but its workers end with
    /// [`ExitReason::Moved`](crate::ExitReason::Moved), a graceful end whose
    /// `terminate` hands their state over (writes it to the store the next
    /// owner loads from). Workers already asked to stop by a shutdown keep
    /// that reason.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// use gen_registry::ExitReason;
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// let worker = registry.start(1, 0).await.unwrap();
    /// let report = registry.hand_over().await;
    /// assert_eq!(report.terminated, 1);
    /// assert_eq!(worker.monitor().await, ExitReason::Moved);
    /// assert!(registry.is_stopped());
    /// # });
    /// ```
    pub async fn hand_over(&self) -> crate::ShutdownReport {
        directory::withdraw(self.options().get_name(), &self.owner);
        self.shared().hand_over().await
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # run(async {
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// assert!(!registry.is_stopped());
    /// registry.shutdown().await;
    /// assert!(registry.is_stopped());
    /// # });
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared().stopped.load(Ordering::Acquire)
    }

    /// The options the registry was started with.
    ///
    /// ```
    /// # use gen_registry::doc_support::*;
    /// # use gen_registry::{GenRegistry, Options};
    /// # use std::time::Duration;
    /// let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    /// assert_eq!(registry.options().get_start_timeout(), Duration::from_secs(5));
    /// ```
    pub fn options(&self) -> &Options<W> {
        &self.shared().options
    }
}

/// What a start does when the id's worker already runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IfRunning {
    /// Return it (`lookup_or_start`, a call by id).
    Return,
    /// Fail with [`Error::AlreadyStarted`] (`start`).
    Refuse,
}

/// Whom a start is for, which decides when the new worker may be evicted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum For {
    /// A caller that gets the worker as a handle: from then on it may be
    /// evicted.
    Caller,
    /// A call by id, which sends the worker its request first: it becomes
    /// evictable once the request is in its mailbox.
    CallById,
}

/// A cell its caller has just inserted and has yet to spawn a worker for:
/// dropped (the caller unwinding from its `args`), it retires the cell, so
/// callers waiting on the start try their own.
struct Claim<'a, W: Worker> {
    shared: &'a Shared<W>,
    cell: &'a Arc<Cell<W>>,
}

impl<W: Worker> Drop for Claim<'_, W> {
    fn drop(&mut self) {
        self.shared.retire(self.cell);
    }
}

impl<W: Worker> Context<W> {
    /// The registry this worker belongs to, to start or look up other ids;
    /// `None` once every handle to the registry has been dropped. Use it and
    /// let it go: a worker that keeps it in its state keeps the registry
    /// alive, so dropping the users' last clone no longer shuts it down. Never wait,
    /// from `init`, on the start of the worker's own id: it cannot finish
    /// before `init` does.
    ///
    /// ```
    /// # use gen_registry::{Context, Worker};
    /// /// Each node starts its parent on first use.
    /// struct Node;
    /// impl Worker for Node {
    ///     type Id = u32; type Args = (); type Request = (); type Reply = usize;
    ///     type Message = (); type Error = std::convert::Infallible;
    ///     async fn init(id: &u32, _: (), ctx: &Context<Self>) -> Result<Self, Self::Error> {
    ///         if *id > 0 {
    ///             if let Some(registry) = ctx.registry() {
    ///                 let _ = registry.lookup_or_start(id / 2, ()).await;
    ///             }
    ///         }
    ///         Ok(Node)
    ///     }
    ///     async fn handle_call(&mut self, _: (), ctx: &mut Context<Self>) -> usize {
    ///         ctx.registry().map_or(0, |r| r.count())
    ///     }
    /// }
    /// ```
    pub fn registry(&self) -> Option<GenRegistry<W>> {
        self.shared.owner.upgrade().map(GenRegistry::from_owner)
    }
}

#[cfg(test)]
mod sweep_tests {
    use crate::doc_support::{Pinger, run};
    use crate::{GenRegistry, Options};
    use std::time::{Duration, Instant};

    #[test]
    fn an_idle_timeout_of_days_is_reached_by_the_sweep() {
        // The sweep runs at most every second, so a timeout of 3 days takes
        // 259,200 sweeps: more than a 16-bit count holds.
        const SWEEP_MS: u32 = 1_000;
        const THREE_DAYS_MS: u32 = 3 * 24 * 3_600 * 1_000;
        let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
        run(async { registry.start(1, 0).await.unwrap() });
        let cell = registry.shared().table.get(&1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cell.is_parked() {
            assert!(Instant::now() < deadline, "the worker never parked");
            std::thread::yield_now();
        }
        // The first sweep only starts the count (the worker just started).
        assert!(!cell.sweep_idle(SWEEP_MS, THREE_DAYS_MS));
        let sweeps = THREE_DAYS_MS / SWEEP_MS;
        for n in 1..sweeps {
            assert!(
                !cell.sweep_idle(SWEEP_MS, THREE_DAYS_MS),
                "idled out after {n} sweeps"
            );
        }
        assert!(
            cell.sweep_idle(SWEEP_MS, THREE_DAYS_MS),
            "still running after {sweeps} sweeps of {SWEEP_MS} ms"
        );
        run(registry.shutdown());
    }
}
