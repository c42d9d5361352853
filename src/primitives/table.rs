//! The id → worker table. The only module that knows how the map is built.
//!
//! A `papaya` hash map with the fxhash hasher (its result folded, see
//! [`Spread`]): a read pins an epoch (a
//! thread-local store, no shared write, no lock), so lookups never message
//! anyone and scale across threads; writes are lock-free too. The keys are
//! the workers' shared cells, hashed and compared by the id each cell holds
//! (an id that owns memory is stored once, in its cell; see [`Keyed`]), and
//! each value is a copy of its cell's Running flag; removal compares cells
//! by address, so an entry is only ever removed by (or on behalf of) the
//! worker it belongs to, never a newer worker of the same id.

use fxhash::FxHasher;
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Removed entries are freed in batches of this many per thread. Each batch
/// costs one `membarrier` system call (an interrupt to every core running the
/// process); papaya's default of 32 made that about a tenth of a stop's time.
/// The price: up to this many removed entries (and their cells) wait per
/// thread before they are freed — about 30 KiB.
const RECLAIM_BATCH: usize = 128;

/// What the table holds: something with an id that keeps the table's copy
/// of its Running flag up to date (a worker's cell).
pub(crate) trait Entry: Send + Sync + 'static {
    /// The key the entry is stored under.
    type Id: Clone + Eq + Hash + Send + Sync + 'static;

    fn id(&self) -> &Self::Id;

    /// Hands the entry the table's copy of its Running flag, to write in the
    /// same step as its own state until it is removed.
    ///
    /// # Safety
    ///
    /// The caller keeps `flag` valid until the entry has promised to stop
    /// writing it, and removes the entry only after that.
    unsafe fn attach(&self, flag: &AtomicBool);
}

pub(crate) struct Table<E: Entry> {
    map: papaya::HashMap<Keyed<E>, Running, Spread>,
}

/// A table key: a cell, standing for the id it holds.
///
/// An id that owns memory (a `String`) is read through the cell: it is
/// kept once, so a 1 KiB id costs 1 KiB, not 2. An id that owns none (no
/// drop glue: integers, arrays and tuples of them) is also copied beside the
/// cell's pointer, as the map would have held it: lookups and walks that
/// read it (`reduce` summing ids) then touch no cell, and the copy costs no
/// more than the map's own key would.
struct Keyed<E: Entry> {
    cell: Arc<E>,
    /// The id, initialised exactly when [`Keyed::INLINE`].
    copy: MaybeUninit<E::Id>,
}

impl<E: Entry> Keyed<E> {
    /// Whether ids of this type are copied into the key.
    const INLINE: bool = !std::mem::needs_drop::<E::Id>();

    fn new(cell: Arc<E>) -> Self {
        let copy = if Self::INLINE {
            MaybeUninit::new(cell.id().clone())
        } else {
            MaybeUninit::uninit()
        };
        Keyed { cell, copy }
    }

    fn id(&self) -> &E::Id {
        if Self::INLINE {
            // SAFETY: `new` initialises the copy whenever INLINE holds. (It
            // is never dropped: a type that needs no drop may be forgotten.)
            unsafe { self.copy.assume_init_ref() }
        } else {
            self.cell.id()
        }
    }
}

impl<E: Entry> Hash for Keyed<E> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl<E: Entry> PartialEq for Keyed<E> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl<E: Entry> Eq for Keyed<E> {}

/// An id looked up in the table, in any form the id can be borrowed as:
/// hashed as that form (which `Borrow` promises hashes as the id does), and
/// equal to the key whose cell holds an equal id.
struct Query<'a, Q: ?Sized>(&'a Q);

impl<Q: Hash + ?Sized> Hash for Query<'_, Q> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<E: Entry, Q> papaya::Equivalent<Keyed<E>> for Query<'_, Q>
where
    E::Id: Borrow<Q>,
    Q: Eq + ?Sized,
{
    fn equivalent(&self, key: &Keyed<E>) -> bool {
        *self.0 == *key.id().borrow()
    }
}

/// fxhash, with its result folded by one 64×64→128-bit multiply.
///
/// papaya picks a slot by the hash's low bits, and fxhash's low bits barely
/// move for strings that differ only in their last bytes — zero-padded
/// numbers, `user-00012345`, phone numbers: 20,000 ids of 16 digits fell
/// into 32 of 65,536 slots, so every operation walked a probe chain hundreds
/// long and stopping 20,000 workers of 1 KiB ids did not finish within a
/// minute. The fold (foldhash's) brings the high bits down for one multiply.
#[derive(Clone, Copy, Default)]
pub(crate) struct Spread;

impl BuildHasher for Spread {
    type Hasher = SpreadHasher;

    fn build_hasher(&self) -> SpreadHasher {
        SpreadHasher(FxHasher::default())
    }
}

/// The hasher of [`Spread`]; the integer writes go to fxhash's own.
pub(crate) struct SpreadHasher(FxHasher);

impl Hasher for SpreadHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
    fn write_u8(&mut self, n: u8) {
        self.0.write_u8(n);
    }
    fn write_u16(&mut self, n: u16) {
        self.0.write_u16(n);
    }
    fn write_u32(&mut self, n: u32) {
        self.0.write_u32(n);
    }
    fn write_u64(&mut self, n: u64) {
        self.0.write_u64(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.0.write_usize(n);
    }
    fn finish(&self) -> u64 {
        const K: u128 = 0x9E37_79B9_7F4A_7C15;
        let folded = u128::from(self.0.finish()) * K;
        (folded as u64) ^ ((folded >> 64) as u64)
    }
}

/// A table value: a copy of whether the key's worker is Running. It lets
/// [`Table::for_each_running`] skip stopped and starting workers without
/// reading each cell — one scattered memory access per worker fewer. The
/// cell writes it, under its lock, in the same step as its state (see
/// [`Entry::attach`]).
type Running = AtomicBool;

impl<E: Entry> Table<E> {
    /// A table with room for `capacity` entries before it first grows.
    pub(crate) fn new(capacity: usize) -> Self {
        Table {
            map: papaya::HashMap::builder()
                .capacity(capacity)
                .hasher(Spread)
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
        let map = self.map.pin();
        let (key, _) = map.get_key_value(&Query(id))?;
        Some(key.cell.clone())
    }

    /// The cell under `id` if its worker is running: the lookup hot path, which
    /// only takes a reference when it hands one out.
    pub(crate) fn get_running<Q>(&self, id: &Q) -> Option<Arc<E>>
    where
        E::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.pin();
        let (key, running) = map.get_key_value(&Query(id))?;
        running.load(Ordering::Acquire).then(|| key.cell.clone())
    }

    /// Inserts `cell` under its id unless the id is taken; returns the cell
    /// that holds it then.
    pub(crate) fn try_insert(&self, cell: &Arc<E>) -> Result<(), Arc<E>> {
        let map = self.map.pin();
        loop {
            if let Ok(running) = map.try_insert(Keyed::new(cell.clone()), AtomicBool::new(false)) {
                // SAFETY: papaya keeps an entry at one address (a resize
                // moves pointers to it, not the entry) until it is removed,
                // and frees it only after removal. The only removal is
                // `remove`, which the registry calls only once the entry
                // has stopped writing the flag (`Cell::close`).
                unsafe { cell.attach(running) };
                return Ok(());
            }
            // papaya hands back the value it found, not its key: look the
            // key up. If it was removed meanwhile, the id is free again.
            if let Some((key, _)) = map.get_key_value(&Query(cell.id())) {
                return Err(key.cell.clone());
            }
        }
    }

    /// Removes the entry of `cell`, if it is still there.
    pub(crate) fn remove(&self, cell: &Arc<E>) {
        let _ = self
            .map
            .pin()
            .remove_if(&Query(cell.id()), |key, _| Arc::ptr_eq(&key.cell, cell));
    }

    /// Calls `f` on every running worker, in no order. Only an epoch is held:
    /// `f` may use the registry.
    pub(crate) fn for_each_running(&self, mut f: impl FnMut(&E::Id, &Arc<E>) -> bool) {
        for (key, running) in self.map.pin().iter() {
            if running.load(Ordering::Acquire) && !f(key.id(), &key.cell) {
                break;
            }
        }
    }

    /// Calls `f` on every cell, whatever its state, in no order. Only an
    /// epoch is held.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<E>)) {
        for key in self.map.pin().keys() {
            f(&key.cell);
        }
    }

    /// Every cell, whatever its state.
    pub(crate) fn cells(&self) -> Vec<Arc<E>> {
        let map = self.map.pin();
        let mut cells = Vec::with_capacity(map.len());
        cells.extend(map.keys().map(|key| key.cell.clone()));
        cells
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.pin().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// How many of 65,536 slots 20,000 ids made by `id` fall into.
    fn slots_taken<I: Hash>(id: impl Fn(u64) -> I) -> usize {
        (0..20_000)
            .map(|n| Spread.hash_one(id(n)) & 0xFFFF)
            .collect::<HashSet<_>>()
            .len()
    }

    /// An entry with nothing but an id.
    struct Bare<I>(I);

    impl<I: Clone + Eq + Hash + Send + Sync + 'static> Entry for Bare<I> {
        type Id = I;
        fn id(&self) -> &I {
            &self.0
        }
        unsafe fn attach(&self, _: &AtomicBool) {}
    }

    #[test]
    fn an_id_that_owns_memory_is_read_through_its_cell_and_a_plain_one_copied() {
        let inline = [
            Keyed::<Bare<String>>::INLINE,
            Keyed::<Bare<u64>>::INLINE,
            Keyed::<Bare<(u32, [u8; 4])>>::INLINE,
        ];
        assert_eq!(inline, [false, true, true]);
        let table = Table::new(0);
        let cell = Arc::new(Bare("alice".to_string()));
        assert!(table.try_insert(&cell).is_ok());
        assert!(Arc::ptr_eq(&table.get("alice").unwrap(), &cell));
        // Another cell of the same id is refused with the one in place.
        let other = Arc::new(Bare("alice".to_string()));
        assert!(
            table
                .try_insert(&other)
                .is_err_and(|held| Arc::ptr_eq(&held, &cell))
        );
        // Only the cell in place removes the entry.
        table.remove(&other);
        assert!(table.get("alice").is_some());
        table.remove(&cell);
        assert!(table.is_empty());
    }

    #[test]
    fn ids_that_differ_only_in_their_last_bytes_spread_over_the_slots() {
        // Random placement takes about 17,260 slots.
        let taken = [
            slots_taken(|n| format!("{n:016}")),
            slots_taken(|n| format!("user-{n:08}")),
            slots_taken(|n| n.to_string()),
            slots_taken(|n| n),
        ];
        assert!(taken.iter().all(|&t| t > 16_000), "{taken:?}");
    }
}
