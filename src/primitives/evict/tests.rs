use super::*;
use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};

fn all(_: &u32) -> bool {
    true
}

/// The keys of a queue, head (newest) first, with their use counts; also
/// checks the links both ways and the length.
fn queue_of(evictor: &Evictor<u32>, queue: Queue) -> Vec<(u32, u32)> {
    let inner = evictor.inner.lock();
    let list = match queue {
        Queue::Small => inner.small,
        Queue::Main => inner.main,
        Queue::Free => unreachable!(),
    };
    let mut out = Vec::new();
    let mut prev = NIL;
    let mut at = list.head;
    while at != NIL {
        let node = &inner.nodes[at as usize];
        assert_eq!(node.prev, prev, "back link of node {at}");
        assert_eq!(node.queue, queue);
        let uses = evictor.word_of(at).load(Ordering::Relaxed) & USES_MASK;
        out.push((*node.key.as_ref().unwrap(), uses));
        prev = at;
        at = node.next;
    }
    assert_eq!(list.tail, prev, "tail");
    assert_eq!(list.len, out.len(), "length");
    out
}

/// Inserts `keys` (accepting every victim) and returns their slots.
fn fill(evictor: &Evictor<u32>, keys: std::ops::Range<u32>) -> Vec<Slot> {
    keys.map(|key| evictor.insert(key, all).unwrap().slot)
        .collect()
}

/// Every resident key, sorted.
fn resident_keys(evictor: &Evictor<u32>) -> Vec<u32> {
    let mut keys: Vec<u32> = queue_of(evictor, Queue::Small)
        .into_iter()
        .chain(queue_of(evictor, Queue::Main))
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    keys
}

#[test]
fn insert_below_capacity_evicts_nothing() {
    let evictor = Evictor::new(3).unwrap();
    for key in 0..3u32 {
        assert_eq!(evictor.insert(key, all).unwrap().evicted, None);
    }
    assert_eq!(evictor.len(), 3);
}

#[test]
fn full_evictor_evicts_exactly_one_resident_per_insert() {
    let evictor = Evictor::new(10).unwrap();
    for key in 0..100u32 {
        let inserted = evictor.insert(key, all).unwrap();
        assert_eq!(inserted.evicted.is_some(), key >= 10);
        assert_eq!(evictor.len(), (key as usize + 1).min(10));
    }
}

#[test]
fn a_used_resident_outlives_unused_newcomers() {
    let evictor = Evictor::new(10).unwrap();
    let hot = evictor.insert(0u32, all).unwrap().slot;
    for key in 1..1_000u32 {
        evictor.touch(hot);
        let evicted = evictor.insert(key, all).unwrap().evicted;
        assert_ne!(
            evicted,
            Some(0),
            "the used resident was evicted at key {key}"
        );
    }
}

#[test]
fn one_off_ids_do_not_displace_ids_used_again() {
    // Ten ids used over and over, then a scan of a thousand ids used once:
    // the scan passes through the small queue and the ten stay.
    let evictor = Evictor::new(20).unwrap();
    let hot = fill(&evictor, 0..10);
    for _ in 0..3 {
        hot.iter().for_each(|&slot| evictor.touch(slot));
    }
    for key in 100..1_100u32 {
        let evicted = evictor.insert(key, all).unwrap().evicted;
        assert!(
            evicted.is_none_or(|k| k >= 100),
            "scan key {key} displaced hot id {evicted:?}"
        );
    }
}

#[test]
fn a_rejected_candidate_is_skipped_and_kept() {
    let evictor = Evictor::new(2).unwrap();
    evictor.insert(1u32, all).unwrap();
    evictor.insert(2u32, all).unwrap();
    let inserted = evictor.insert(3u32, |k| *k != 1).unwrap();
    assert_eq!(inserted.evicted, Some(2));
    assert_eq!(resident_keys(&evictor), [1, 3]);
}

#[test]
fn insert_when_every_resident_is_rejected_is_refused_and_evicts_nothing() {
    let evictor = Evictor::new(3).unwrap();
    let slots = fill(&evictor, 0..3);
    evictor.touch(slots[0]);
    let mut asked = 0;
    let refused = evictor.insert(9, |_| {
        asked += 1;
        false
    });
    assert_eq!(refused.unwrap_err(), Full(9));
    assert_eq!(asked, 3, "each resident is asked once");
    assert_eq!(resident_keys(&evictor), [0, 1, 2]);
}

#[test]
fn remove_frees_room_so_the_next_insert_evicts_nothing() {
    let evictor = Evictor::new(2).unwrap();
    let a = evictor.insert(1u32, all).unwrap().slot;
    evictor.insert(2u32, all).unwrap();
    assert_eq!(evictor.remove(a), Some(1));
    assert_eq!(evictor.insert(3u32, all).unwrap().evicted, None);
}

#[test]
fn the_slot_of_an_evicted_resident_touches_and_removes_nothing() {
    let evictor = Evictor::new(1).unwrap();
    let old = evictor.insert(1u32, all).unwrap().slot;
    let new = evictor.insert(2u32, all).unwrap().slot;
    assert_eq!(old.index, new.index, "the slot was reused");
    evictor.touch(old);
    assert_eq!(queue_of(&evictor, Queue::Small), [(2, 0)]);
    assert_eq!(evictor.remove(old), None);
    assert_eq!(evictor.len(), 1);
}

#[test]
fn an_eviction_search_ends_even_if_every_resident_is_used_again_while_it_runs() {
    // Touches from other threads do not take the lock, so they can refill
    // the use counts the search spends; here every candidate looked at
    // refills all of them.
    let evictor = Evictor::new(8).unwrap();
    let slots = fill(&evictor, 0..8);
    let inserted = evictor.insert(100, |_| {
        for &slot in &slots {
            for _ in 0..3 {
                evictor.touch(slot);
            }
        }
        true
    });
    assert!(inserted.unwrap().evicted.is_some());
}

#[test]
fn a_reused_slot_skips_the_generation_whose_word_matches_a_free_slot() {
    let evictor = Evictor::new(1).unwrap();
    let first = evictor.insert(1u32, all).unwrap().slot;
    evictor.remove(first);
    // As if the slot had been reused 2^30 − 1 times: the next generation's
    // low 30 bits would be 0, the word of a free slot.
    evictor.inner.lock().nodes[0].generation = (1 << 30) - 1;
    let slot = evictor.insert(2u32, all).unwrap().slot;
    assert_eq!(slot.generation, (1 << 30) + 1);
    assert_ne!(evictor.word_of(0).load(Ordering::Relaxed), 0);
}

#[test]
fn touch_saturates_at_three_uses() {
    let evictor = Evictor::new(4).unwrap();
    let slot = evictor.insert(1u32, all).unwrap().slot;
    for _ in 0..10 {
        evictor.touch(slot);
    }
    assert_eq!(queue_of(&evictor, Queue::Small), [(1, 3)]);
}

#[test]
fn a_key_evicted_from_small_and_inserted_again_enters_main() {
    let evictor = Evictor::new(10).unwrap();
    for key in 0..11u32 {
        evictor.insert(key, all).unwrap();
    }
    // Key 0 was the oldest, unused: evicted from small into the ghost.
    assert!(
        !queue_of(&evictor, Queue::Small)
            .iter()
            .any(|&(k, _)| k == 0)
    );
    evictor.insert(0, all).unwrap();
    assert!(queue_of(&evictor, Queue::Main).iter().any(|&(k, _)| k == 0));
}

#[test]
fn slot_ids_that_were_never_handed_out_are_ignored() {
    let evictor: Evictor<u32> = Evictor::new(5_000).unwrap();
    for bits in [0, 1, u64::MAX, 4_999, 1 << 32, (7 << 32) | 4_500] {
        evictor.touch(Slot::from_bits(bits));
        assert_eq!(evictor.remove(Slot::from_bits(bits)), None);
    }
}

#[test]
fn memory_follows_the_residents_held_not_the_capacity() {
    let evictor = Evictor::new(MAX_CAPACITY).unwrap();
    evictor.insert(1u32, all).unwrap();
    let allocated = evictor.words.iter().filter(|c| c.get().is_some()).count();
    assert_eq!(allocated, 1);
}

#[test]
fn capacities_out_of_range_are_errors() {
    assert_eq!(Evictor::<u32>::new(0).err(), Some(CapacityError(0)));
    assert_eq!(
        Evictor::<u32>::new(MAX_CAPACITY + 1).err(),
        Some(CapacityError(MAX_CAPACITY + 1))
    );
    assert!(Evictor::<u32>::new(1).is_ok());
}

#[test]
fn concurrent_inserts_never_exceed_the_capacity_nor_evict_a_resident_twice() {
    const CAPACITY: usize = 64;
    let evictor = Evictor::new(CAPACITY).unwrap();
    let per_thread = 20_000u32;
    let evicted: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u32)
            .map(|t| {
                let evictor = &evictor;
                s.spawn(move || {
                    let mut evicted = Vec::new();
                    let mut slots = VecDeque::new();
                    for i in 0..per_thread {
                        let inserted = evictor.insert(t * per_thread + i, |_| true).unwrap();
                        slots.push_back(inserted.slot);
                        if slots.len() > 8 {
                            slots.pop_front();
                        }
                        slots.iter().for_each(|&slot| evictor.touch(slot));
                        evicted.extend(inserted.evicted);
                        assert!(evictor.len() <= CAPACITY);
                    }
                    evicted
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all_evicted: Vec<u32> = evicted.into_iter().flatten().collect();
    let distinct: HashSet<u32> = all_evicted.iter().copied().collect();
    assert_eq!(distinct.len(), all_evicted.len(), "a key was evicted twice");
    assert_eq!(all_evicted.len() + CAPACITY, 2 * per_thread as usize);
    assert_eq!(evictor.len(), CAPACITY);
}

#[test]
fn concurrent_inserts_and_removes_account_for_every_key_exactly_once() {
    // Each key ends either evicted (returned by an insert), removed (remove
    // returned it) or still resident: never two of these, never none.
    const CAPACITY: usize = 50;
    let evictor = Evictor::new(CAPACITY).unwrap();
    let per_thread = 20_000u32;
    let outcomes: Vec<(Vec<u32>, Vec<u32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u32)
            .map(|t| {
                let evictor = &evictor;
                s.spawn(move || {
                    let (mut evicted, mut removed) = (Vec::new(), Vec::new());
                    let mut mine: VecDeque<Slot> = VecDeque::new();
                    for i in 0..per_thread {
                        let key = t * per_thread + i;
                        // Every fifth candidate looked at is busy.
                        let mut asked = 0;
                        let accept = |_: &u32| {
                            asked += 1;
                            asked % 5 != 0
                        };
                        let inserted = evictor.insert(key, accept).unwrap();
                        evicted.extend(inserted.evicted);
                        mine.push_back(inserted.slot);
                        evictor.touch(inserted.slot);
                        if i % 3 == 0 {
                            // Often already evicted by the other thread:
                            // then the stale slot must remove nothing.
                            let slot = mine.pop_front().unwrap();
                            removed.extend(evictor.remove(slot));
                        }
                    }
                    (evicted, removed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen: Vec<u32> = resident_keys(&evictor);
    for (evicted, removed) in outcomes {
        seen.extend(evicted);
        seen.extend(removed);
    }
    seen.sort();
    let expected: Vec<u32> = (0..2 * per_thread).collect();
    assert_eq!(seen, expected);
}

/// A plain S3-FIFO on `VecDeque`s (front = newest), O(n) everywhere: the
/// reference the evictor's linked queues and slots must agree with. It
/// keeps a ghost of its own, fed the same hashes in the same order: the
/// ghost's approximation is tested in its own module.
struct Model {
    small: VecDeque<(u32, u32)>,
    main: VecDeque<(u32, u32)>,
    ghost: Ghost,
    capacity: usize,
    small_target: usize,
    promote_at: u32,
}

impl Model {
    fn new(evictor: &Evictor<u32>) -> Model {
        Model {
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: Ghost::new(evictor.inner.lock().ghost.capacity()),
            capacity: evictor.capacity,
            small_target: evictor.small_target,
            promote_at: evictor.promote_at,
        }
    }

    fn len(&self) -> usize {
        self.small.len() + self.main.len()
    }

    fn resident(&self, key: u32) -> bool {
        self.small.iter().chain(&self.main).any(|&(k, _)| k == key)
    }

    fn entry(&mut self, key: u32) -> Option<&mut (u32, u32)> {
        self.small
            .iter_mut()
            .chain(self.main.iter_mut())
            .find(|(k, _)| *k == key)
    }

    fn touch(&mut self, key: u32) {
        if let Some((_, uses)) = self.entry(key) {
            *uses = (*uses + 1).min(3);
        }
    }

    fn remove(&mut self, key: u32) -> bool {
        let before = self.len();
        self.small.retain(|&(k, _)| k != key);
        self.main.retain(|&(k, _)| k != key);
        before != self.len()
    }

    fn insert(&mut self, key: u32, busy: &HashSet<u32>) -> Result<Option<u32>, ()> {
        let mut evicted = None;
        if self.len() >= self.capacity {
            evicted = Some(self.evict(busy)?);
        }
        let hash = hash_of(&key);
        if self.ghost.contains(hash) {
            self.main.push_front((key, 0));
        } else {
            self.small.push_front((key, 0));
        }
        Ok(evicted)
    }

    fn evict(&mut self, busy: &HashSet<u32>) -> Result<u32, ()> {
        let mut rejected = 0;
        loop {
            if rejected >= self.len() {
                return Err(());
            }
            let from_small = !self.small.is_empty()
                && (self.small.len() >= self.small_target || self.main.is_empty());
            let (key, uses) = if from_small {
                self.small.pop_back().unwrap()
            } else {
                self.main.pop_back().unwrap()
            };
            if busy.contains(&key) {
                rejected += 1;
                self.main.push_front((key, uses));
                continue;
            }
            rejected = 0;
            match (from_small, uses) {
                (true, uses) if uses < self.promote_at => {
                    self.ghost.insert(hash_of(&key));
                    return Ok(key);
                }
                (false, 0) => return Ok(key),
                (true, uses) => self.main.push_front((key, uses)),
                (false, uses) => self.main.push_front((key, uses - 1)),
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Insert a fresh key; residents whose key % 8 is in the mask are busy.
    Insert {
        busy_mask: u8,
    },
    /// Insert again a key inserted before (it may be in the ghost).
    Reinsert {
        pick: usize,
        busy_mask: u8,
    },
    Touch {
        pick: usize,
    },
    Remove {
        pick: usize,
    },
    /// Touch or remove through the slot of a resident already gone.
    Stale {
        pick: usize,
        remove: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(|m| Op::Insert { busy_mask: m & m.rotate_left(3) }),
        2 => (any::<usize>(), any::<u8>())
            .prop_map(|(pick, m)| Op::Reinsert { pick, busy_mask: m & m.rotate_left(3) }),
        6 => any::<usize>().prop_map(|pick| Op::Touch { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, remove)| Op::Stale { pick, remove }),
    ]
}

fn busy_set(model: &Model, mask: u8) -> HashSet<u32> {
    model
        .small
        .iter()
        .chain(&model.main)
        .map(|&(k, _)| k)
        .filter(|k| mask & (1 << (k % 8)) != 0)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evictor_agrees_with_a_plain_s3_fifo_model(
        capacity in 1usize..24,
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let evictor = Evictor::new(capacity).unwrap();
        let mut model = Model::new(&evictor);
        let mut slots: Vec<(u32, Slot)> = Vec::new();
        let mut gone: Vec<Slot> = Vec::new();
        let mut next_key = 0u32;
        for op in ops {
            match op {
                Op::Insert { busy_mask } | Op::Reinsert { busy_mask, .. } => {
                    let key = match op {
                        Op::Reinsert { pick, .. } if next_key > 0 => {
                            let key = pick as u32 % next_key;
                            if model.resident(key) { continue; }
                            key
                        }
                        _ => { next_key += 1; next_key - 1 }
                    };
                    let busy = busy_set(&model, busy_mask);
                    let expected = model.insert(key, &busy);
                    let got = evictor.insert(key, |k| !busy.contains(k));
                    match (expected, got) {
                        (Ok(expected), Ok(inserted)) => {
                            prop_assert_eq!(expected, inserted.evicted);
                            if let Some(victim) = inserted.evicted {
                                let at = slots.iter().position(|&(k, _)| k == victim).unwrap();
                                gone.push(slots.swap_remove(at).1);
                            }
                            slots.push((key, inserted.slot));
                        }
                        (Err(()), Err(Full(back))) => prop_assert_eq!(back, key),
                        (expected, got) => prop_assert!(false, "model {:?}, evictor {:?}", expected, got),
                    }
                }
                Op::Touch { pick } if !slots.is_empty() => {
                    let (key, slot) = slots[pick % slots.len()];
                    model.touch(key);
                    evictor.touch(slot);
                }
                Op::Remove { pick } if !slots.is_empty() => {
                    let (key, slot) = slots.swap_remove(pick % slots.len());
                    prop_assert!(model.remove(key));
                    prop_assert_eq!(evictor.remove(slot), Some(key));
                    gone.push(slot);
                }
                Op::Stale { pick, remove } if !gone.is_empty() => {
                    let slot = gone[pick % gone.len()];
                    if remove {
                        prop_assert_eq!(evictor.remove(slot), None);
                    } else {
                        evictor.touch(slot);
                    }
                }
                _ => {}
            }
            prop_assert_eq!(queue_of(&evictor, Queue::Small), Vec::from(model.small.clone()));
            prop_assert_eq!(queue_of(&evictor, Queue::Main), Vec::from(model.main.clone()));
            prop_assert!(evictor.len() <= capacity);
        }
    }
}
