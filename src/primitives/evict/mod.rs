//! The eviction policy of a registry with a capacity limit: S3-FIFO, as a
//! concurrent structure whose access path writes nothing shared.
//!
//! Chosen by the study in `BENCHMARKS.md` ("Eviction policy"): on
//! Zipf-skewed traces (s = 0.8–1.2, ten times more ids than capacity) its
//! hit ratio is within a point of W-TinyLFU's and 4–9 points above LRU's
//! and CLOCK's at s ≤ 1, while an access costs one load of the resident's
//! own word (and a compare-and-swap only while its use count is below 3),
//! where LRU and W-TinyLFU need a lock or a shared sketch write on every
//! access.
//!
//! # The interface the registry calls
//!
//! An [`Evictor<K>`] tracks up to `capacity` residents. `K` is whatever the
//! registry needs to find a worker again (its id, typically); its [`Hash`]
//! feeds the ghost queue, so it must hash like the id.
//!
//! | when | call | cost |
//! |---|---|---|
//! | a worker starts | [`Evictor::insert`]`(key, accept)` → [`Inserted`] { [`Slot`], evicted key } | one lock; O(1) amortized |
//! | every later call or lookup of the worker (not the one that started it) | [`Evictor::touch`]`(slot)` | no lock; a relaxed load of the slot's word, and a compare-and-swap only while its count is below 3 |
//! | the worker ends for any other cause (stop, crash, idle timeout) | [`Evictor::remove`]`(slot)` | one lock; O(1) |
//!
//! The start counts as no use: a worker is promoted out of the small queue
//! by two uses *after* the one that started it, so the registry must not
//! touch for the request that caused the start.
//!
//! The registry keeps the [`Slot`] in the worker's entry (8 bytes; as a
//! `u64` through [`Slot::to_bits`] / [`Slot::from_bits`] if it must be
//! stored after the entry is shared). A slot outlives its resident safely:
//! every slot carries a generation, so `touch` and `remove` through the slot
//! of a worker that was already evicted or removed do nothing.
//!
//! When the evictor is full, `insert` chooses a victim, removes it and
//! returns its key, in the same critical section as the insertion, so two
//! concurrent starts never pick the same victim or overshoot the capacity.
//! The registry then stops the victim (its `terminate` runs, an event
//! reports it). `accept` is asked about each candidate before it is evicted;
//! returning `false` skips it (a worker in the middle of a call must never
//! be evicted under it). A skipped candidate counts as just used. If every
//! resident is rejected, `insert` returns [`Full`] with the key, and the
//! registry refuses the start with a clear error. `accept` runs under the
//! evictor's lock: it must be quick and must not call back into the same
//! evictor (that would deadlock).
//!
//! A registry without a capacity limit holds no `Evictor` at all; its only
//! cost there is whatever "no slot" field the entry keeps.
//!
//! # The policy
//!
//! S3-FIFO (Yang et al., "FIFO queues are all you need for cache
//! eviction", SOSP 2023) keeps three FIFO queues:
//!
//! - *small* (10 % of the capacity): every new resident enters here, unless
//!   its key is in the ghost queue. When small is at its share, eviction
//!   takes its oldest entry: if that entry was used at least twice since
//!   it arrived, it moves to main; otherwise it is evicted and its key's
//!   hash enters the ghost queue. So an id used once or twice (a scan, a
//!   one-off caller) leaves fast and never displaces the ids that matter.
//!   (Two uses, not one: the study measured two as slightly better at every
//!   exponent.)
//! - *main* (the rest): eviction takes the oldest entry; if its use count
//!   (0–3, saturating) is non-zero, the count is decremented and the entry
//!   goes back to the head (a second chance per use, up to three);
//!   otherwise it is evicted.
//! - *ghost*: hashes of keys recently evicted from small, as many as main
//!   holds. A key that comes back while its hash is there enters main
//!   directly: it has proved it is not a one-off. The ghost is a hint, kept
//!   approximately in a table of cache-line buckets (one cache line per
//!   operation), allocated at the first eviction.
//!
//! The use count is the only state an access touches; it lives in a word of
//! its own per slot (30 bits of generation above 2 bits of count), in
//! chunks of the slot array allocated as they are first used, so memory
//! follows the number of residents ever held at once, not the capacity.
//! Everything else (the queues, the keys, the ghost) sits behind one
//! `parking_lot::Mutex`, taken only by `insert` and `remove`.
//!
//! Eviction is O(1) amortized: each step either evicts, moves an entry from
//! small to main (once per entry), or spends one of an entry's at most three
//! uses. Because touches keep adding uses while the lock is held, a search
//! that has taken more than four steps per resident stops looking at counts
//! and evicts the oldest accepted entry, so it is bounded even under an
//! adversarial access pattern.
//!
//! # Example
//!
//! As a user sees it: a registry with room for two workers, where the one
//! looked up twice since its start keeps its place and the other gives it
//! to a third. (The peers crate compiles this file as
//! `gen_registry_peers::eviction`, public there; its page shows each call of
//! this module's interface in an example, run as that crate's doctests.)
//!
//! ```
//! # use gen_registry::doc_support::*;
//! use gen_registry::{ExitReason, GenRegistry, Options};
//! # run(async {
//! let registry = GenRegistry::<Pinger>::new(Options::default().max_workers(2)).unwrap();
//! registry.lookup_or_start(1, 0).await.unwrap();
//! let two = registry.lookup_or_start(2, 0).await.unwrap();
//! registry.lookup(&1).unwrap();
//! registry.lookup(&1).unwrap(); // 1 was used twice since it started: kept over 2
//! registry.lookup_or_start(3, 0).await.unwrap();
//! assert_eq!(two.monitor().await, ExitReason::Evicted);
//! assert!(registry.lookup(&1).is_ok());
//! assert_eq!(registry.count(), 2);
//! # });
//! ```

mod ghost;

use ghost::Ghost;
use parking_lot::Mutex;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The largest capacity an [`Evictor`] accepts: slot indices are `u32`.
pub const MAX_CAPACITY: usize = 1 << 31;

/// Slots per lazily allocated chunk of use-count words (16 KiB).
const CHUNK_SHIFT: u32 = 12;
const CHUNK: usize = 1 << CHUNK_SHIFT;

/// A resident's use count saturates here: three second chances in main.
const MAX_USES: u32 = 3;
const USES_MASK: u32 = 0b11;
/// A word is the low 30 bits of the slot's generation above 2 bits of uses.
const USES_BITS: u32 = 2;

/// Share of the capacity kept for the small queue, in percent.
const SMALL_PERCENT: usize = 10;

/// Uses after its start that move a small-queue entry to main.
const PROMOTE_AT: u32 = 2;

/// An eviction search that has taken this many steps per resident stops
/// reading use counts (see the module doc).
const STEPS_PER_RESIDENT: usize = 4;

/// No node: the end of a queue.
const NIL: u32 = u32::MAX;

/// Where a resident is: the index of its slot and the generation of the
/// resident that got it.
///
/// Returned by [`Evictor::insert`]; kept in the worker's entry and passed to
/// [`Evictor::touch`] and [`Evictor::remove`]. Using a slot whose resident
/// is gone does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    index: u32,
    generation: u32,
}

impl Slot {
    /// The slot as one `u64`, to keep in an `AtomicU64` of the worker's
    /// entry when the entry is shared before the slot is known.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The slot [`Slot::to_bits`] made. Any `u64` is accepted: a value that
    /// was never a slot names no resident, and using it does nothing.
    pub fn from_bits(bits: u64) -> Slot {
        Slot {
            index: bits as u32,
            generation: (bits >> 32) as u32,
        }
    }
}

/// What [`Evictor::insert`] did: where the new resident is, and which
/// resident it displaced, if the evictor was full.
#[derive(Debug, PartialEq, Eq)]
pub struct Inserted<K> {
    /// The new resident's slot, to keep in its entry.
    pub slot: Slot,
    /// The resident evicted to make room; the caller stops it.
    pub evicted: Option<K>,
}

/// [`Evictor::insert`] found the evictor full and every resident rejected
/// by `accept` (all busy): nothing was inserted. Holds the key back.
#[derive(Debug, PartialEq, Eq)]
pub struct Full<K>(pub K);

impl<K> fmt::Display for Full<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the capacity is reached and every resident is busy: none could be evicted")
    }
}

impl<K: fmt::Debug> std::error::Error for Full<K> {}

/// [`Evictor::new`] was given a capacity it cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError(pub usize);

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "capacity {} is out of range: it must be between 1 and {MAX_CAPACITY}",
            self.0
        )
    }
}

impl std::error::Error for CapacityError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    Free,
    Small,
    Main,
}

/// The locked part of a slot.
struct Node<K> {
    key: Option<K>,
    hash: u64,
    generation: u32,
    queue: Queue,
    /// Toward the head (newer).
    prev: u32,
    /// Toward the tail (older).
    next: u32,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

struct Inner<K> {
    nodes: Vec<Node<K>>,
    free: Vec<u32>,
    small: List,
    main: List,
    ghost: Ghost,
}

/// Tracks up to a fixed number of residents and picks which one to evict
/// when a new one needs room, by the S3-FIFO policy (see the module doc).
///
/// `Evictor<K>` is `Sync` when `K` is `Send`: every method takes `&self`.
pub struct Evictor<K> {
    /// Per slot: the generation's low 30 bits << 2 | use count. Chunks are
    /// allocated (under the lock) the first time a slot in them is handed
    /// out. The word's generation only keeps a stale slot's touch from
    /// counting for the next resident: a touch that comes exactly 2^30
    /// reuses of the slot late miscounts one use, which is harmless; removal
    /// checks the node's full generation.
    words: Box<[OnceLock<Box<[AtomicU32]>>]>,
    inner: Mutex<Inner<K>>,
    capacity: usize,
    small_target: usize,
    /// Uses a small-queue entry needs to move to main rather than leave.
    promote_at: u32,
}

/// Shows the capacity and the residents held, not the keys (that would
/// mean taking the lock for as long as it takes to print them all).
impl<K> fmt::Debug for Evictor<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evictor")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K> Evictor<K> {
    /// An empty evictor for at most `capacity` residents (1 to
    /// [`MAX_CAPACITY`]). Memory grows with the residents actually held.
    pub fn new(capacity: usize) -> Result<Evictor<K>, CapacityError> {
        Evictor::tuned(capacity, SMALL_PERCENT, PROMOTE_AT)
    }

    /// [`Evictor::new`] with the small queue's share and the promotion
    /// threshold of the study's variants.
    pub(crate) fn tuned(
        capacity: usize,
        small_percent: usize,
        promote_at: u32,
    ) -> Result<Evictor<K>, CapacityError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(CapacityError(capacity));
        }
        let small_target =
            (capacity / 100 * small_percent + capacity % 100 * small_percent / 100).max(1);
        let chunks = capacity.div_ceil(CHUNK);
        Ok(Evictor {
            words: (0..chunks).map(|_| OnceLock::new()).collect(),
            inner: Mutex::new(Inner {
                nodes: Vec::new(),
                free: Vec::new(),
                small: List::EMPTY,
                main: List::EMPTY,
                ghost: Ghost::new(capacity - small_target.min(capacity - 1)),
            }),
            capacity,
            small_target,
            promote_at,
        })
    }

    /// The most residents this evictor holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The residents held now.
    pub fn len(&self) -> usize {
        let inner = self.inner.lock();
        inner.small.len + inner.main.len
    }

    /// Whether nothing is resident.
    #[allow(dead_code)] // for the tests and the peer study, which share this file
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a use of the resident in `slot`: the registry calls it on
    /// every call or lookup of the worker.
    ///
    /// Takes no lock and writes nothing shared: a relaxed load of the slot's
    /// own word, and a compare-and-swap only while the resident's use count
    /// is below 3 (so a busy worker's word is read, not written). Does
    /// nothing if the slot's resident is gone.
    #[inline]
    pub fn touch(&self, slot: Slot) {
        let Some(word) = self.word(slot.index) else {
            return;
        };
        let w = word.load(Ordering::Relaxed);
        if w >> USES_BITS == slot.generation << USES_BITS >> USES_BITS && w & USES_MASK < MAX_USES {
            // A lost race (another touch, or the evictor spending a use) is
            // fine: counts are a hint, never a guarantee.
            let _ = word.compare_exchange(w, w + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn word(&self, index: u32) -> Option<&AtomicU32> {
        let chunk = self.words.get((index >> CHUNK_SHIFT) as usize)?.get()?;
        chunk.get(index as usize & (CHUNK - 1))
    }

    /// The word of a slot already handed out (its chunk exists).
    fn word_of(&self, index: u32) -> &AtomicU32 {
        self.word(index)
            .expect("a slot's chunk is allocated before the slot is handed out")
    }

    /// Removes the resident in `slot` (it stopped, crashed or timed out)
    /// and returns its key; `None` if it is already gone. O(1).
    pub fn remove(&self, slot: Slot) -> Option<K> {
        let mut inner = self.inner.lock();
        let node = inner.nodes.get(slot.index as usize)?;
        if node.generation != slot.generation || node.queue == Queue::Free {
            return None;
        }
        Some(self.release(&mut inner, slot.index))
    }
}

impl<K: Hash> Evictor<K> {
    /// Makes `key` resident. If the evictor is full, first evicts one
    /// resident that `accept` approves, and returns its key in
    /// [`Inserted::evicted`]; both happen under one lock, so concurrent
    /// inserts never pick the same victim nor exceed the capacity.
    ///
    /// `accept` is asked about candidates in policy order; a candidate it
    /// rejects (busy) counts as just used and the search goes on. If it
    /// rejects every resident, nothing is inserted or evicted and [`Full`]
    /// returns `key`.
    /// `accept` runs under the evictor's lock: keep it short and never call
    /// this evictor from it.
    ///
    /// The evictor never looks keys up: each worker is inserted once, when
    /// it starts (inserting a resident key again makes a second resident).
    pub fn insert(
        &self,
        key: K,
        mut accept: impl FnMut(&K) -> bool,
    ) -> Result<Inserted<K>, Full<K>> {
        let hash = hash_of(&key);
        let mut inner = self.inner.lock();
        let evicted = if inner.small.len + inner.main.len >= self.capacity {
            match self.evict(&mut inner, &mut accept) {
                Some(victim) => Some(victim),
                None => return Err(Full(key)),
            }
        } else {
            None
        };
        let index = match inner.free.pop() {
            Some(index) => index,
            None => {
                let index = inner.nodes.len() as u32;
                inner.nodes.push(Node {
                    key: None,
                    hash: 0,
                    generation: 0,
                    queue: Queue::Free,
                    prev: NIL,
                    next: NIL,
                });
                self.words[(index >> CHUNK_SHIFT) as usize]
                    .get_or_init(|| (0..CHUNK).map(|_| AtomicU32::new(0)).collect());
                index
            }
        };
        let queue = if inner.ghost.contains(hash) {
            Queue::Main
        } else {
            Queue::Small
        };
        let node = &mut inner.nodes[index as usize];
        // No generation whose word bits are 0 is handed out, so the zeroed
        // word of a free slot matches no `Slot`.
        node.generation = node.generation.wrapping_add(1);
        if node.generation << USES_BITS == 0 {
            node.generation = node.generation.wrapping_add(1);
        }
        node.key = Some(key);
        node.hash = hash;
        let generation = node.generation;
        self.word_of(index)
            .store(generation << USES_BITS, Ordering::Relaxed);
        inner.push_head(queue, index);
        Ok(Inserted {
            slot: Slot { index, generation },
            evicted,
        })
    }

    /// Chooses, unlinks and frees a victim; `None` if `accept` rejected
    /// every resident.
    fn evict(&self, inner: &mut Inner<K>, accept: &mut impl FnMut(&K) -> bool) -> Option<K> {
        let mut budget = STEPS_PER_RESIDENT * (inner.small.len + inner.main.len) + 1;
        let mut rejected_in_a_row = 0;
        loop {
            let residents = inner.small.len + inner.main.len;
            if residents == 0 || rejected_in_a_row >= residents {
                return None;
            }
            let from_small = inner.small.len > 0
                && (inner.small.len >= self.small_target || inner.main.len == 0);
            let index = if from_small {
                inner.small.tail
            } else {
                inner.main.tail
            };
            let node = &inner.nodes[index as usize];
            let key = node.key.as_ref().expect("a queued node has its key");
            if !accept(key) {
                rejected_in_a_row += 1;
                inner.unlink(index);
                inner.push_head(Queue::Main, index);
                continue;
            }
            rejected_in_a_row = 0;
            let uses = if budget == 0 {
                0
            } else {
                budget -= 1;
                self.word_of(index).load(Ordering::Relaxed) & USES_MASK
            };
            let leaves = if from_small {
                uses < self.promote_at
            } else {
                uses == 0
            };
            if leaves {
                if from_small {
                    let hash = inner.nodes[index as usize].hash;
                    inner.ghost.insert(hash);
                }
                return Some(self.release(inner, index));
            }
            inner.unlink(index);
            if !from_small {
                // Only this locked path lowers a count, so it is still ≥ 1
                // here. A touch racing with it may lose its use (its
                // compare-and-swap fails): counts are hints.
                self.word_of(index).fetch_sub(1, Ordering::Relaxed);
            }
            inner.push_head(Queue::Main, index);
        }
    }
}

impl<K> Evictor<K> {
    /// Unlinks and frees a resident node; returns its key.
    fn release(&self, inner: &mut Inner<K>, index: u32) -> K {
        inner.unlink(index);
        self.word_of(index).store(0, Ordering::Relaxed);
        inner.free.push(index);
        let node = &mut inner.nodes[index as usize];
        node.queue = Queue::Free;
        node.key.take().expect("a queued node has its key")
    }
}

impl<K> Inner<K> {
    fn list(&mut self, queue: Queue) -> &mut List {
        match queue {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
            Queue::Free => unreachable!("free nodes are in no queue"),
        }
    }

    fn push_head(&mut self, queue: Queue, index: u32) {
        let list = self.list(queue);
        let old_head = list.head;
        list.head = index;
        if old_head == NIL {
            list.tail = index;
        }
        list.len += 1;
        if old_head != NIL {
            self.nodes[old_head as usize].prev = index;
        }
        let node = &mut self.nodes[index as usize];
        node.queue = queue;
        node.prev = NIL;
        node.next = old_head;
    }

    fn unlink(&mut self, index: u32) {
        let (queue, prev, next) = {
            let node = &self.nodes[index as usize];
            (node.queue, node.prev, node.next)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        let list = self.list(queue);
        if list.head == index {
            list.head = next;
        }
        if list.tail == index {
            list.tail = prev;
        }
        list.len -= 1;
    }
}

/// The hash the ghost queue keeps: fxhash, fixed, so runs are reproducible.
fn hash_of<K: Hash>(key: &K) -> u64 {
    let mut hasher = fxhash::FxHasher64::default();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
