//! The process-wide directory of registries started from Bastion specs, keyed
//! by worker type and name (Elixir's registered names).
//!
//! The map is type-erased inside this module only: each entry is stored under
//! its worker's `TypeId` and handed back as the `GenRegistry<W>` it was stored
//! as. Users never see a downcast.

use crate::registry::GenRegistry;
use crate::worker::Worker;
use fxhash::FxHashMap;
use parking_lot::Mutex;
use std::any::{Any, TypeId};
use std::sync::LazyLock;

type Names = FxHashMap<String, Box<dyn Any + Send + Sync>>;

static DIRECTORY: LazyLock<Mutex<FxHashMap<TypeId, Names>>> = LazyLock::new(Default::default);

/// Publishes `new` under `name` (for `W`) in place of `old`, or of nobody
/// when `old` is `None`; fails if another registry holds the name.
pub(crate) fn replace<W: Worker>(
    name: &str,
    old: Option<&GenRegistry<W>>,
    new: &GenRegistry<W>,
) -> Result<(), ()> {
    let replaced = {
        let mut directory = DIRECTORY.lock();
        let names = directory.entry(TypeId::of::<W>()).or_default();
        let current = names
            .get(name)
            .and_then(|entry| entry.downcast_ref::<GenRegistry<W>>());
        if current.is_some() && current != old {
            return Err(());
        }
        names.insert(name.to_owned(), Box::new(new.clone()))
    };
    drop(replaced);
    Ok(())
}

/// The registry published under `name` for `W`.
pub(crate) fn find<W: Worker>(name: &str) -> Option<GenRegistry<W>> {
    let directory = DIRECTORY.lock();
    let entry = directory.get(&TypeId::of::<W>())?.get(name)?;
    entry.downcast_ref::<GenRegistry<W>>().cloned()
}

/// Withdraws `registry` from `name`, if it is still the one published there.
pub(crate) fn withdraw<W: Worker>(name: &str, registry: &GenRegistry<W>) {
    let removed = {
        let mut directory = DIRECTORY.lock();
        let Some(names) = directory.get_mut(&TypeId::of::<W>()) else {
            return;
        };
        let current = names
            .get(name)
            .and_then(|entry| entry.downcast_ref::<GenRegistry<W>>());
        if current != Some(registry) {
            return;
        }
        names.remove(name)
    };
    // The registry clone is dropped outside the lock: its drop may shut the
    // registry down, which must never run under the directory's lock.
    drop(removed);
}
