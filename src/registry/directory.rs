//! The process-wide directory of named registries, keyed by worker type and
//! name (Elixir's registered names): those of Bastion specs and those made by
//! [`GenRegistry::new`] with an [`Options::name`](crate::Options::name).
//!
//! The map is type-erased inside this module only: each entry is stored under
//! its worker's `TypeId` and handed back as the `GenRegistry<W>` it was stored
//! as. Users never see a downcast.
//!
//! A registry leaves the directory when its shutdown begins (and a spec's
//! when Bastion stops its group or the spec is dropped unused). A registry
//! from `new` is held weakly: once its users drop it, the name is free at
//! once, before its background shutdown has even run.

use crate::worker::Worker;
use crate::worker::error::Error;
use crate::worker::options::Options;
use crate::worker::shared::Owner;
use fxhash::FxHashMap;
use parking_lot::Mutex;
use std::any::{Any, TypeId};
use std::sync::{Arc, LazyLock, Weak};

type Names = FxHashMap<String, Box<dyn Any + Send + Sync>>;

static DIRECTORY: LazyLock<Mutex<FxHashMap<TypeId, Names>>> = LazyLock::new(Default::default);

/// What a name is published for.
enum Entry<W: Worker> {
    /// A registry from `GenRegistry::new`: weak, so the directory never keeps
    /// alive a registry its users dropped.
    Named(Weak<Owner<W>>),
    /// A spec's registry under the worker type's name (which `new` does not
    /// publish). Its spec holds it anyway, and withdraws it when it lets go.
    Spec(Arc<Owner<W>>),
}

impl<W: Worker> Entry<W> {
    /// The registry (what its users' handles hold), if it is still alive.
    fn registry(&self) -> Option<Arc<Owner<W>>> {
        match self {
            Entry::Named(owner) => owner.upgrade(),
            Entry::Spec(owner) => Some(owner.clone()),
        }
    }
}

/// The entry under `name` for `W`.
fn entry_of<'a, W: Worker>(names: &'a Names, name: &str) -> Option<&'a Entry<W>> {
    names.get(name)?.downcast_ref::<Entry<W>>()
}

/// Publishes a registry made by `GenRegistry::new` under its options' name,
/// if they give one other than the worker type's name (the default, which
/// every unnamed registry shares). Fails with [`Error::NameTaken`] if a live
/// registry of `W` holds the name.
pub(crate) fn publish_new<W: Worker>(
    options: &Options<W>,
    owner: Weak<Owner<W>>,
) -> Result<(), Error<W>> {
    let name = options.get_name();
    if name == std::any::type_name::<W>() {
        return Ok(());
    }
    publish(name, |_| false, Entry::Named(owner))
}

/// Publishes a spec's registry (`owner`) under `name`: done already if
/// `new` published it, otherwise the name must be free
/// ([`Error::NameTaken`]).
pub(crate) fn publish_spec<W: Worker>(name: &str, owner: &Arc<Owner<W>>) -> Result<(), Error<W>> {
    publish(
        name,
        |current| Arc::ptr_eq(current, owner),
        Entry::Spec(owner.clone()),
    )
}

/// Puts `entry` under `name` unless a live registry holds the name; `ours`
/// says whether that registry is the one being published.
fn publish<W: Worker>(
    name: &str,
    ours: impl FnOnce(&Arc<Owner<W>>) -> bool,
    entry: Entry<W>,
) -> Result<(), Error<W>> {
    let mut entry = Some(entry);
    let (current, dead) = {
        let mut directory = DIRECTORY.lock();
        let names = directory.entry(TypeId::of::<W>()).or_default();
        let current = entry_of::<W>(names, name).and_then(Entry::registry);
        let dead = match current {
            Some(_) => None,
            None => entry
                .take()
                .and_then(|entry| names.insert(name.to_owned(), Box::new(entry))),
        };
        (current, dead)
    };
    // Registry handles are dropped outside the lock: dropping the last one
    // starts the registry's shutdown, which withdraws it from the directory.
    drop((dead, entry));
    match current {
        Some(current) if !ours(&current) => Err(Error::NameTaken(name.to_owned())),
        _ => Ok(()),
    }
}

/// The registry published under `name` for `W`.
pub(crate) fn find<W: Worker>(name: &str) -> Option<Arc<Owner<W>>> {
    let directory = DIRECTORY.lock();
    entry_of::<W>(directory.get(&TypeId::of::<W>())?, name)?.registry()
}

/// Withdraws the registry of `owner` from `name`, if it is still the one
/// published there.
pub(crate) fn withdraw<W: Worker>(name: &str, owner: &Arc<Owner<W>>) {
    remove(name, |current| {
        current.is_some_and(|c| Arc::ptr_eq(c, owner))
    });
}

/// Removes the entry under `name` if `ours` says it holds that registry
/// (`None`: a registry its users dropped).
fn remove<W: Worker>(name: &str, ours: impl FnOnce(Option<&Arc<Owner<W>>>) -> bool) {
    let (current, removed) = {
        let mut directory = DIRECTORY.lock();
        let Some(names) = directory.get_mut(&TypeId::of::<W>()) else {
            return;
        };
        let Some(entry) = entry_of::<W>(names, name) else {
            return;
        };
        let current = entry.registry();
        let removed = if ours(current.as_ref()) {
            names.remove(name)
        } else {
            None
        };
        (current, removed)
    };
    // Dropped outside the lock (see `publish`).
    drop((current, removed));
}
