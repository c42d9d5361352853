//! Footprint: what an idle worker costs on the heap, and what a lookup hit
//! allocates, measured with a counting global allocator (this file is its own
//! test binary; its measuring tests take turns).
//!
//! Run with `--nocapture` to see the figures:
//! `cargo test --release --test footprint -- --nocapture`.

mod common;
mod counting;

use counting::{Counting, settled_heap};
use gen_registry::{Context, GenRegistry, Options, Worker};
use std::fmt::Debug;
use std::hash::Hash;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests that measure the live heap must not see each other's allocations.
static MEASURING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

// ---- the worker ----

/// An idle worker with a one-word state, of any id type.
struct Idle<I>(u64, std::marker::PhantomData<fn() -> I>);

impl<I: Clone + Eq + Hash + Debug + Send + Sync + 'static> Worker for Idle<I> {
    type Id = I;
    type Args = u64;
    type Request = ();
    type Reply = u64;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &I, state: u64, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Idle(state, std::marker::PhantomData))
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u64 {
        self.0
    }
}

/// Idle workers per measurement.
const WORKERS: usize = 20_000;

/// Heap bytes each of [`WORKERS`] idle workers costs, its id (made by `id`)
/// included, with `options`.
fn bytes_per_worker<I>(options: Options<Idle<I>>, id: fn(usize) -> I) -> f64
where
    I: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    let registry = GenRegistry::<Idle<I>>::new(options).unwrap();
    let start = |ids: std::ops::Range<usize>| {
        let registry = registry.clone();
        common::run_caught(120, async move {
            for n in ids {
                registry.start(id(n), 0).await.unwrap();
            }
        })
        .unwrap();
    };
    // Warm up: the executor's threads and the table's first arrays.
    start(0..1_000);
    let before = settled_heap();
    start(1_000..1_000 + WORKERS);
    let after = settled_heap();
    assert_eq!(registry.count(), 1_000 + WORKERS);
    common::run_caught(60, async move { registry.shutdown().await }).unwrap();
    (after - before) as f64 / WORKERS as f64
}

/// A 1 KiB id, distinct for each `n`, in an allocation of exactly 1 KiB.
fn kib_id(n: usize) -> String {
    let mut id = format!("{n:01024}");
    id.shrink_to_fit();
    id
}

#[test]
fn an_idle_worker_costs_a_bounded_number_of_heap_bytes() {
    let _measuring = MEASURING.lock();
    let bytes = bytes_per_worker::<u64>(Options::default(), |n| n as u64);
    eprintln!("footprint: {bytes:.0} heap bytes per idle worker (u64 ids, default options)");
    assert!(bytes < 1024.0, "{bytes:.0} bytes per idle worker");
}

#[test]
fn a_workers_id_is_stored_once() {
    let _measuring = MEASURING.lock();
    let small = bytes_per_worker::<String>(Options::default(), |n| n.to_string());
    let large = bytes_per_worker::<String>(Options::default(), kib_id);
    eprintln!(
        "footprint: {large:.0} heap bytes per idle worker with 1 KiB String ids, \
         {small:.0} with short String ids: {:.0} bytes per 1 KiB of id",
        large - small
    );
    assert!(
        large - small < 1024.0 + 256.0,
        "a 1 KiB id costs {:.0} bytes per worker",
        large - small
    );
}

#[test]
fn a_hit_of_lookup_or_start_with_allocates_nothing() {
    let _measuring = MEASURING.lock();
    let registry = GenRegistry::<Idle<String>>::new(Options::default()).unwrap();
    let hits = |by_value: bool| {
        let registry = registry.clone();
        // On this thread: the counts are this thread's.
        futures::executor::block_on(async move {
            let before = counting::thread_allocations();
            for _ in 0..1_000 {
                let worker = if by_value {
                    registry.lookup_or_start("alice".to_string(), 0).await
                } else {
                    registry.lookup_or_start_with("alice", || 0).await
                };
                assert_eq!(worker.unwrap().id(), "alice");
            }
            counting::thread_allocations() - before
        })
    };
    // The first start, and this thread's first use of the table and the
    // executor, allocate.
    hits(false);
    let (borrowed, by_value) = (hits(false), hits(true));
    eprintln!(
        "footprint: 1,000 lookup_or_start hits of a String id allocate {by_value} times by \
         value, {borrowed} times with lookup_or_start_with"
    );
    assert_eq!(borrowed, 0);
}
