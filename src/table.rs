//! The id → worker table. The only module that knows how the map is built.
//!
//! A `papaya` hash map with the fxhash hasher: a read pins an epoch (a
//! thread-local store, no shared write, no lock), so lookups never message
//! anyone and scale across threads; writes are lock-free too. Values are the
//! workers' shared cells, each beside a copy of its RUNNING flag; removal
//! compares cells by address, so an entry is only ever removed by (or on
//! behalf of) the worker it belongs to, never a newer worker of the same id.

use crate::cell::Cell;
use crate::worker::Worker;
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

pub(crate) struct Table<W: Worker> {
    map: papaya::HashMap<W::Id, Slot<W>, FxBuildHasher>,
}

/// A table value: the worker's cell, and a copy of whether it is RUNNING.
/// The copy lets [`Table::for_each_running`] skip stopped and starting
/// workers without reading each cell — one scattered memory access per
/// worker fewer. The cell writes it, under its lock, in the same step as its
/// state (see [`Cell::attach`]).
pub(crate) struct Slot<W: Worker> {
    running: AtomicBool,
    cell: Arc<Cell<W>>,
}

impl<W: Worker> Table<W> {
    pub(crate) fn new() -> Self {
        Table {
            map: papaya::HashMap::builder()
                .hasher(FxBuildHasher::default())
                .collector(seize::Collector::new().batch_size(RECLAIM_BATCH))
                .build(),
        }
    }

    /// The cell under `id`, whatever its state.
    pub(crate) fn get<Q>(&self, id: &Q) -> Option<Arc<Cell<W>>>
    where
        W::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().get(id).map(|slot| slot.cell.clone())
    }

    /// The cell under `id` if its worker is running: the lookup hot path, which
    /// only takes a reference when it hands one out.
    pub(crate) fn get_running<Q>(&self, id: &Q) -> Option<Arc<Cell<W>>>
    where
        W::Id: Borrow<Q>,
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
    pub(crate) fn try_insert(&self, cell: &Arc<Cell<W>>) -> Result<(), Arc<Cell<W>>> {
        let slot = Slot {
            running: AtomicBool::new(false),
            cell: cell.clone(),
        };
        match self.map.pin().try_insert(cell.id().clone(), slot) {
            Ok(slot) => {
                // SAFETY: papaya keeps an entry at one address (a resize
                // moves pointers to it, not the entry) until it is removed,
                // and frees it only after removal. The only removal is
                // `remove`, which `Shared::retire` calls after `Cell::close`,
                // and the cell stops writing the flag at `close`.
                unsafe { cell.attach(&slot.running) };
                Ok(())
            }
            Err(e) => Err(e.current.cell.clone()),
        }
    }

    /// Removes the entry of `cell`, if it is still there.
    pub(crate) fn remove(&self, cell: &Arc<Cell<W>>) {
        let _ = self
            .map
            .pin()
            .remove_if(cell.id(), |_, slot| Arc::ptr_eq(&slot.cell, cell));
    }

    /// Calls `f` on every running worker, in no order. Only an epoch is held:
    /// `f` may use the registry.
    pub(crate) fn for_each_running(&self, mut f: impl FnMut(&W::Id, &Arc<Cell<W>>) -> bool) {
        for (id, slot) in self.map.pin().iter() {
            if slot.running.load(Ordering::Acquire) && !f(id, &slot.cell) {
                break;
            }
        }
    }

    /// Every cell, whatever its state.
    pub(crate) fn cells(&self) -> Vec<Arc<Cell<W>>> {
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
