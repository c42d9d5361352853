//! The id → worker table. The only module that knows how the map is built.
//!
//! A `papaya` hash map with the fxhash hasher: a read pins an epoch (a
//! thread-local store, no shared write, no lock), so lookups never message
//! anyone and scale across threads; writes are lock-free too. Values are the
//! workers' shared cells, each beside a copy of its RUNNING flag; removal
//! compares cells by address, so an entry is only ever removed by (or on
//! behalf of) the worker it belongs to, never a newer worker of the same id.

use fxhash::FxBuildHasher;
use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Removed entries are freed in batches of this many per thread. Each batch
/// costs one `membarrier` system call (an interrupt to every core running the
/// process); papaya's default of 32 made that about a tenth of a stop's time.
/// The price: up to this many removed entries (and their cells) wait per
/// thread before they are freed — about 30 KiB.
const RECLAIM_BATCH: usize = 128;

/// What the table holds: something with an id that keeps the table's copy
/// of its RUNNING flag up to date (a worker's cell).
pub(crate) trait Entry: Send + Sync + 'static {
    /// The key the entry is stored under.
    type Id: Clone + Eq + Hash + Send + Sync + 'static;

    fn id(&self) -> &Self::Id;

    /// Hands the entry the table's copy of its RUNNING flag, to write in the
    /// same step as its own state until it is removed.
    ///
    /// # Safety
    ///
    /// The caller keeps `flag` valid until the entry has promised to stop
    /// writing it, and removes the entry only after that.
    unsafe fn attach(&self, flag: &AtomicBool);
}

pub(crate) struct Table<E: Entry> {
    map: papaya::HashMap<E::Id, Slot<E>, FxBuildHasher>,
}

/// A table value: the worker's cell, and a copy of whether it is RUNNING.
/// The copy lets [`Table::for_each_running`] skip stopped and starting
/// workers without reading each cell — one scattered memory access per
/// worker fewer. The cell writes it, under its lock, in the same step as its
/// state (see [`Entry::attach`]).
pub(crate) struct Slot<E> {
    running: AtomicBool,
    cell: Arc<E>,
}

impl<E: Entry> Table<E> {
    pub(crate) fn new() -> Self {
        Table {
            map: papaya::HashMap::builder()
                .hasher(FxBuildHasher::default())
                .collector(seize::Collector::new().batch_size(RECLAIM_BATCH))
                .build(),
        }
    }

    /// The cell under `id`, whatever its state.
    pub(crate) fn get<Q>(&self, id: &Q) -> Option<Arc<E>>
    where
        E::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().get(id).map(|slot| slot.cell.clone())
    }

    /// The cell under `id` if its worker is running: the lookup hot path, which
    /// only takes a reference when it hands one out.
    pub(crate) fn get_running<Q>(&self, id: &Q) -> Option<Arc<E>>
    where
        E::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.pin();
        let slot = map.get(id)?;
        slot.running
            .load(Ordering::Acquire)
            .then(|| slot.cell.clone())
    }

    /// Inserts `cell` under its id unless the id is taken; returns the cell
    /// that holds it then.
    pub(crate) fn try_insert(&self, cell: &Arc<E>) -> Result<(), Arc<E>> {
        let slot = Slot {
            running: AtomicBool::new(false),
            cell: cell.clone(),
        };
        match self.map.pin().try_insert(cell.id().clone(), slot) {
            Ok(slot) => {
                // SAFETY: papaya keeps an entry at one address (a resize
                // moves pointers to it, not the entry) until it is removed,
                // and frees it only after removal. The only removal is
                // `remove`, which the registry calls only once the entry
                // has stopped writing the flag (`Cell::close`).
                unsafe { cell.attach(&slot.running) };
                Ok(())
            }
            Err(e) => Err(e.current.cell.clone()),
        }
    }

    /// Removes the entry of `cell`, if it is still there.
    pub(crate) fn remove(&self, cell: &Arc<E>) {
        let _ = self
            .map
            .pin()
            .remove_if(cell.id(), |_, slot| Arc::ptr_eq(&slot.cell, cell));
    }

    /// Calls `f` on every running worker, in no order. Only an epoch is held:
    /// `f` may use the registry.
    pub(crate) fn for_each_running(&self, mut f: impl FnMut(&E::Id, &Arc<E>) -> bool) {
        for (id, slot) in self.map.pin().iter() {
            if slot.running.load(Ordering::Acquire) && !f(id, &slot.cell) {
                break;
            }
        }
    }

    /// Every cell, whatever its state.
    pub(crate) fn cells(&self) -> Vec<Arc<E>> {
        self.map
            .pin()
            .values()
            .map(|slot| slot.cell.clone())
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.pin().is_empty()
    }
}
