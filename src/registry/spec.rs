//! Embedding a registry in a Bastion supervision tree: the modern child spec
//! ([`GenRegistry::child_spec`]), the legacy helper ([`Spec::child_spec`]) and
//! finding a registry by worker type and name ([`GenRegistry::whereis`]).
//!
//! The registry runs as one Bastion children group. Its exec holds the
//! registry: when Bastion stops the group, the registry shuts down and every
//! worker runs its `terminate`; when Bastion restarts it, a new, empty
//! registry takes the name and the old one is shut down (its handles return
//! [`Error::RegistryStopped`]). The workers themselves are supervised by the
//! registry, not by Bastion (see the crate's design notes): a Bastion
//! supervisor keeps every stopped group forever.
//!
//! Bastion 0.4.5 does not wait for a group's cleanup: it drops the exec's
//! future (sometimes only after `Bastion::block_until_stopped` has
//! returned), so the exec cannot await the shutdown, and its drop can only
//! start it. Every such shutdown is counted, and [`Spec::stop_bastion`]
//! stops Bastion, shuts down every spec's registry itself and waits until
//! none is left running. A spec dropped without ever being given to a
//! supervisor withdraws its name and shuts its registry down.

use crate::registry::GenRegistry;
use crate::registry::directory;
use crate::worker::Worker;
use crate::worker::error::Error;
use crate::worker::options::Options;
use bastion::Bastion;
use bastion::children::Children;
use bastion::context::BastionContext;
use bastion::supervisor::Supervisor;
use lightproc::recoverable_handle::RecoverableHandle;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// What a spec's children group shares between its (re)starts.
struct Published<W: Worker> {
    options: Options<W>,
    /// The published registry: the one made when the spec was built, until a
    /// restart of the group replaces it.
    current: Mutex<GenRegistry<W>>,
    /// Whether the group has started once; later starts are restarts and
    /// make a new registry.
    started: AtomicBool,
}

impl<W: Worker> Drop for Published<W> {
    /// The spec is gone: dropped without ever being given to a supervisor, or
    /// let go of by Bastion when it stopped. Its name and registry go too.
    fn drop(&mut self) {
        drop(let_go(self.current.get_mut().clone()));
    }
}

/// A spec's registry, whatever its worker type, for [`Spec::stop_bastion`].
trait Running: Send + Sync {
    fn shut_down(&self);
}

impl<W: Worker> Running for Published<W> {
    fn shut_down(&self) {
        let registry = self.current.lock().clone();
        drop(shut_down_in_background(registry));
    }
}

/// Every spec still alive, weakly: a spec is Bastion's to drop.
static SPECS: Mutex<Vec<Weak<dyn Running>>> = Mutex::new(Vec::new());

fn enlist<W: Worker>(published: &Arc<Published<W>>) {
    let published: Weak<dyn Running> = Arc::downgrade(published) as Weak<Published<W>>;
    let mut specs = SPECS.lock();
    specs.retain(|spec| spec.strong_count() > 0);
    specs.push(published);
}

/// How many registry shutdowns run in the background (started when Bastion
/// stops or restarts a group, or drops a spec); [`Spec::stop_bastion`] waits
/// until there are none.
static SHUTTING_DOWN: Mutex<usize> = Mutex::new(0);
static ALL_SHUT_DOWN: Condvar = Condvar::new();

/// One background shutdown, counted from before it is spawned until its
/// future is dropped (done, or dropped unfinished by a dying executor).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        *SHUTTING_DOWN.lock() += 1;
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut shutting_down = SHUTTING_DOWN.lock();
        *shutting_down -= 1;
        if *shutting_down == 0 {
            ALL_SHUT_DOWN.notify_all();
        }
    }
}

/// Withdraws `registry` from its name (if it still holds it) and shuts it
/// down in the background.
fn let_go<W: Worker>(registry: GenRegistry<W>) -> RecoverableHandle<()> {
    directory::withdraw(registry.options().get_name(), registry.owner());
    shut_down_in_background(registry)
}

/// Shuts `registry` down on Bastion's executor, counted in `SHUTTING_DOWN`.
fn shut_down_in_background<W: Worker>(registry: GenRegistry<W>) -> RecoverableHandle<()> {
    let in_flight = InFlight::enter();
    bastion::executor::spawn(async move {
        registry.shutdown().await;
        drop(in_flight);
    })
}

/// One start of the group: the registry it runs. Dropped when Bastion stops
/// or restarts the group — Bastion drops the exec's future, so the shutdown
/// can only be started here, not awaited.
struct Incarnation<W: Worker> {
    registry: GenRegistry<W>,
}

impl<W: Worker> Drop for Incarnation<W> {
    fn drop(&mut self) {
        drop(let_go(self.registry.clone()));
    }
}

impl<W: Worker> GenRegistry<W> {
    /// A children group running a registry of `W`, for
    /// `Supervisor::children` (the counterpart of `{GenRegistry,
    /// worker_module: W}` in a child list). The registry is created and
    /// published under its [name](Options::name) at once, so
    /// [`whereis`](Self::whereis) finds it as soon as this returns; the group
    /// holds it from its first start.
    ///
    /// Fails with [`Error::NameTaken`] if a registry of `W` is already
    /// published under that name, or [`Error::InvalidOptions`].
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use bastion::prelude::*;
    /// use gen_registry::{GenRegistry, Options};
    ///
    /// Bastion::init();
    /// let spec = GenRegistry::<Pinger>::child_spec(Options::default().name("doc-pings")).unwrap();
    /// Bastion::supervisor(|sp| sp.children(spec)).unwrap();
    /// Bastion::start();
    ///
    /// let registry = GenRegistry::<Pinger>::whereis_named("doc-pings").unwrap();
    /// # gen_registry::doc_support::run(async {
    /// let pinger = registry.lookup_or_start(1, 10).await.unwrap();
    /// assert_eq!(pinger.call(1).await.unwrap(), 11);
    /// # });
    /// ```
    ///
    /// Without a worker type there is no spec: the type must be named.
    ///
    /// ```compile_fail
    /// use gen_registry::{GenRegistry, Options};
    /// let spec = GenRegistry::child_spec(Options::default());
    /// ```
    pub fn child_spec(
        options: Options<W>,
    ) -> Result<impl FnOnce(Children) -> Children + Send + 'static, Error<W>> {
        let registry = GenRegistry::new(options.clone())?;
        directory::publish_spec(options.get_name(), registry.owner())?;
        let published = Arc::new(Published {
            options,
            current: Mutex::new(registry),
            started: AtomicBool::new(false),
        });
        enlist(&published);
        Ok(move |children: Children| {
            children
                .with_redundancy(1)
                .with_exec(move |ctx| serve(published.clone(), ctx))
        })
    }

    /// The registry of `W` published under the worker type's name (the
    /// default name of a spec), or [`Error::NotPublished`].
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Error, GenRegistry, Options};
    /// assert!(matches!(GenRegistry::<Pinger>::whereis(), Err(Error::NotPublished(_))));
    /// let _spec = GenRegistry::<Pinger>::child_spec(Options::default()).unwrap();
    /// assert!(GenRegistry::<Pinger>::whereis().is_ok());
    /// ```
    pub fn whereis() -> Result<GenRegistry<W>, Error<W>> {
        Self::whereis_named(std::any::type_name::<W>())
    }

    /// The registry of `W` published under `name` (by a spec, or by
    /// [`GenRegistry::new`] with [`Options::name`]), or
    /// [`Error::NotPublished`]. Registries of one worker type under different
    /// names are independent. A registry is withdrawn once its shutdown
    /// begins, or its spec is dropped.
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{GenRegistry, Options};
    /// let _a = GenRegistry::<Pinger>::child_spec(Options::default().name("doc-a")).unwrap();
    /// let _b = GenRegistry::<Pinger>::child_spec(Options::default().name("doc-b")).unwrap();
    /// let (a, b) = (
    ///     GenRegistry::<Pinger>::whereis_named("doc-a").unwrap(),
    ///     GenRegistry::<Pinger>::whereis_named("doc-b").unwrap(),
    /// );
    /// assert_ne!(a, b);
    /// ```
    pub fn whereis_named(name: &str) -> Result<GenRegistry<W>, Error<W>> {
        directory::find(name)
            .map(GenRegistry::from_owner)
            .ok_or_else(|| Error::NotPublished(name.to_owned()))
    }
}

/// The exec of a registry's children group: hold the registry until Bastion
/// stops or restarts the group.
async fn serve<W: Worker>(published: Arc<Published<W>>, ctx: BastionContext) -> Result<(), ()> {
    let registry = if published.started.swap(true, Ordering::AcqRel) {
        restart(&published).await?
    } else {
        published.current.lock().clone()
    };
    let _incarnation = Incarnation { registry };
    // Messages sent to the group are not for the registry: drop them.
    while ctx.recv().await.is_ok() {}
    Ok(())
}

/// A restart of the group: a new, empty registry takes the name, and the one
/// it replaces is shut down. Bastion restarts a group's child without
/// stopping the running one when a sibling's failure restarts it (one-for-all,
/// rest-for-one), so the old incarnation cannot be relied on to end itself.
async fn restart<W: Worker>(published: &Published<W>) -> Result<GenRegistry<W>, ()> {
    let name = published.options.get_name();
    let old = published.current.lock().clone();
    // The name is freed first: `new` publishes a named registry itself.
    let old_stopped = let_go(old);
    let registry = GenRegistry::new(published.options.clone())
        .and_then(|registry| directory::publish_spec(name, registry.owner()).map(|()| registry));
    let registry = match registry {
        Ok(registry) => registry,
        Err(e) => {
            // Somebody took the name while the group was down: this group
            // ends and says why.
            tracing::error!(
                target: "gen_registry",
                worker = std::any::type_name::<W>(),
                "a restarted registry could not take back its name {name:?}: {e}"
            );
            return Err(());
        }
    };
    *published.current.lock() = registry.clone();
    old_stopped.await;
    Ok(registry)
}

/// The legacy helper: [`Spec::child_spec`] gives a whole supervisor holding
/// one registry (the counterpart of Elixir's `GenRegistry.Spec.child_spec(W)`
/// from before child specs were maps).
///
/// ```
/// # use gen_registry::doc_support::Pinger;
/// use bastion::prelude::*;
/// use gen_registry::{GenRegistry, Options, Spec};
///
/// Bastion::init();
/// Bastion::supervisor(Spec::child_spec::<Pinger>(Options::default().name("doc-legacy")).unwrap())
///     .unwrap();
/// Bastion::start();
/// assert!(GenRegistry::<Pinger>::whereis_named("doc-legacy").is_ok());
/// ```
///
#[doc = include_str!("../doc_support/pinger.md")]
#[derive(Debug, Clone, Copy)]
pub struct Spec;

impl Spec {
    /// A supervisor holding one registry of `W`, for `Bastion::supervisor`
    /// (or `Supervisor::supervisor`). Errors as in
    /// [`GenRegistry::child_spec`].
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Error, Options, Spec};
    /// let _first = Spec::child_spec::<Pinger>(Options::default().name("doc-twice")).unwrap();
    /// let second = Spec::child_spec::<Pinger>(Options::default().name("doc-twice"));
    /// assert!(matches!(second, Err(Error::NameTaken(name)) if name == "doc-twice"));
    /// ```
    pub fn child_spec<W: Worker>(
        options: Options<W>,
    ) -> Result<impl FnOnce(Supervisor) -> Supervisor + Send + 'static, Error<W>> {
        let children = GenRegistry::<W>::child_spec(options)?;
        Ok(move |supervisor: Supervisor| supervisor.children(children))
    }

    /// Stops Bastion and returns once every registry it ran has shut down:
    /// every worker has run its `terminate` (or was aborted after its
    /// registry's shutdown timeout). Call it instead of `Bastion::stop()` and
    /// `Bastion::block_until_stopped()`, which return before the workers'
    /// `terminate`s have run: Bastion drops a stopped group's exec without
    /// waiting for anything the exec leaves running.
    ///
    /// It also waits for registries whose group was stopped or restarted
    /// earlier (a supervisor's `stop`) and whose shutdown is still running,
    /// and shuts down the registries of specs that were never given to a
    /// supervisor. Standalone registries (`GenRegistry::new`) are yours to
    /// [`shutdown`](GenRegistry::shutdown).
    ///
    /// Like `Bastion::block_until_stopped`, it blocks the calling thread:
    /// call it from `main` (or another thread of yours), never from a
    /// worker, an exec or anything else on Bastion's executor. Stopping
    /// Bastion is final for the process; calling this again returns at once.
    ///
    /// ```
    /// use bastion::prelude::*;
    /// use gen_registry::{Context, ExitReason, GenRegistry, Options, Spec, Worker};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// static SAVED: AtomicUsize = AtomicUsize::new(0);
    ///
    /// /// A shopping cart that saves itself when it stops.
    /// struct Cart;
    ///
    /// impl Worker for Cart {
    ///     type Id = u64;
    ///     type Args = ();
    ///     type Request = ();
    ///     type Reply = ();
    ///     type Message = ();
    ///     type Error = std::convert::Infallible;
    ///
    ///     async fn init(_: &u64, _: (), _: &Context<Self>) -> Result<Self, Self::Error> {
    ///         Ok(Cart)
    ///     }
    ///     async fn handle_call(&mut self, _: (), _: &mut Context<Self>) {}
    ///     async fn terminate(&mut self, _: &ExitReason, _: &mut Context<Self>) {
    ///         SAVED.fetch_add(1, Ordering::SeqCst);
    ///     }
    /// }
    ///
    /// Bastion::init();
    /// let spec = GenRegistry::<Cart>::child_spec(Options::default()).unwrap();
    /// Bastion::supervisor(|sp| sp.children(spec)).unwrap();
    /// Bastion::start();
    ///
    /// let carts = GenRegistry::<Cart>::whereis().unwrap();
    /// futures::executor::block_on(async {
    ///     for id in 0..100 {
    ///         carts.start(id, ()).await.unwrap();
    ///     }
    /// });
    ///
    /// Spec::stop_bastion();
    /// assert_eq!(SAVED.load(Ordering::SeqCst), 100);
    /// ```
    pub fn stop_bastion() {
        // Bastion's system handles a stop only once started (a stop sent
        // before would leave `block_until_stopped` waiting forever); a start
        // after the first one re-sends only a start message.
        Bastion::start();
        Bastion::stop();
        Bastion::block_until_stopped();
        // Bastion can drop a group's exec, and so start its registry's
        // shutdown, after it says it has stopped: shut down every spec's
        // registry here rather than rely on when those drops happen.
        let specs: Vec<Arc<dyn Running>> = SPECS.lock().iter().filter_map(Weak::upgrade).collect();
        for spec in &specs {
            spec.shut_down();
        }
        drop(specs);
        let mut shutting_down = SHUTTING_DOWN.lock();
        while *shutting_down > 0 {
            ALL_SHUT_DOWN.wait(&mut shutting_down);
        }
    }
}
