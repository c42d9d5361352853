//! Embedding a registry in a Bastion supervision tree: the modern child spec
//! ([`GenRegistry::child_spec`]), the legacy helper ([`Spec::child_spec`]) and
//! finding a registry by worker type and name ([`GenRegistry::whereis`]).
//!
//! The registry runs as one Bastion children group. Its exec holds the
//! registry: when Bastion stops the group, every worker stops and runs its
//! `terminate`; when Bastion restarts it, a new, empty registry takes the name
//! and the old one is shut down (its handles return
//! [`Error::RegistryStopped`]). The workers themselves are supervised by the
//! registry, not by Bastion (see the crate's design notes): a Bastion
//! supervisor keeps every stopped group forever.

use crate::directory;
use crate::error::Error;
use crate::options::Options;
use crate::registry::GenRegistry;
use crate::worker::Worker;
use bastion::children::Children;
use bastion::context::BastionContext;
use bastion::supervisor::Supervisor;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// One start of the group: the registry it runs. Dropped when Bastion stops
/// or restarts the group.
struct Incarnation<W: Worker> {
    registry: GenRegistry<W>,
}

impl<W: Worker> Drop for Incarnation<W> {
    fn drop(&mut self) {
        directory::withdraw(self.registry.options().get_name(), &self.registry);
        let registry = self.registry.clone();
        drop(bastion::executor::spawn(async move {
            registry.shutdown().await
        }));
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
        let name = options.get_name();
        if directory::replace(name, None, &registry).is_err() {
            return Err(Error::NameTaken(name.to_owned()));
        }
        let published = Arc::new(Published {
            options,
            current: Mutex::new(registry),
            started: AtomicBool::new(false),
        });
        Ok(move |children: Children| {
            children
                .with_redundancy(1)
                .with_exec(move |ctx| serve(published.clone(), ctx))
        })
    }

    /// The registry of `W` published under the worker type's name (the
    /// default name of a spec), or [`Error::NotFound`].
    ///
    /// ```
    /// # use gen_registry::doc_support::Pinger;
    /// use gen_registry::{Error, GenRegistry, Options};
    /// assert!(matches!(GenRegistry::<Pinger>::whereis(), Err(Error::NotFound)));
    /// let _spec = GenRegistry::<Pinger>::child_spec(Options::default()).unwrap();
    /// assert!(GenRegistry::<Pinger>::whereis().is_ok());
    /// ```
    pub fn whereis() -> Result<GenRegistry<W>, Error<W>> {
        Self::whereis_named(std::any::type_name::<W>())
    }

    /// The registry of `W` published under `name`, or [`Error::NotFound`].
    /// Registries of one worker type under different names are independent.
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
        directory::find(name).ok_or(Error::NotFound)
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
    let registry = GenRegistry::new(published.options.clone()).map_err(|_| ())?;
    let name = published.options.get_name();
    let old = published.current.lock().clone();
    if directory::replace(name, Some(&old), &registry).is_err() {
        // Somebody took the name while the group was down: this group ends
        // (it is not restarted) and says why.
        tracing::error!(
            target: "gen_registry",
            worker = std::any::type_name::<W>(),
            "a restarted registry could not take back its name {name:?}: it is taken"
        );
        registry.shutdown().await;
        return Err(());
    }
    *published.current.lock() = registry.clone();
    old.shutdown().await;
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
}
