//! Footprint: what an idle worker costs on the heap, and what a lookup hit
//! allocates, measured with a counting global allocator (this file is its own
//! test binary; its measuring tests take turns).
//!
//! Run with `--nocapture` to see the figures:
//! `cargo test --release --test footprint -- --nocapture` (add
//! `--features tokio` for the lifecycle options' costs on tokio too).

mod common;
mod counting;

use counting::{Counting, settled_heap};
use gen_registry::{Context, Executor, GenRegistry, Options, Worker};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

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

/// Idle workers per measurement: `GEN_REGISTRY_FOOTPRINT_WORKERS`, 5,000 by
/// default so that a first `cargo test` stays short; CI (`.ci/run`) and the
/// figures in BENCHMARKS.md use 20,000.
fn workers() -> usize {
    common::size_from_env("GEN_REGISTRY_FOOTPRINT_WORKERS", 5_000)
}

/// Heap bytes each of [`workers()`] idle workers costs, its id (made by `id`)
/// included, with `options`.
fn bytes_per_worker<I>(options: Options<Idle<I>>, id: fn(usize) -> I) -> f64
where
    I: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    footprint(options, id).per_worker
}

/// What a registry costs on the heap.
struct Footprint {
    /// Bytes the empty registry holds.
    fixed: isize,
    /// Bytes each idle worker adds.
    per_worker: f64,
}

/// The [`Footprint`] of a registry with `options` and [`workers()`] idle
/// workers, their ids made by `id`.
fn footprint<I>(options: Options<Idle<I>>, id: fn(usize) -> I) -> Footprint
where
    I: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    let empty = settled_heap();
    let registry = GenRegistry::<Idle<I>>::new(options).unwrap();
    let fixed = settled_heap() - empty;
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
    let workers = workers();
    start(1_000..1_000 + workers);
    let after = settled_heap();
    assert_eq!(registry.count(), 1_000 + workers);
    common::run_caught(60, async move { registry.shutdown().await }).unwrap();
    Footprint {
        fixed,
        per_worker: (after - before) as f64 / workers as f64,
    }
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

/// The budget for the lifecycle options, per idle worker: none for a
/// registry without them (checked against BENCHMARKS.md's figure), at most
/// 32 B more with an idle timeout. Asserted loosely here (the allocator's
/// size classes and the build profile move these figures by tens of bytes);
/// BENCHMARKS.md ("Lifecycle: what the options cost an idle worker") records
/// the release figures against the budget.
#[test]
fn the_lifecycle_options_cost_an_idle_worker_a_few_bytes_at_most() {
    let _measuring = MEASURING.lock();
    for (executor, _runtime) in common::every_executor() {
        let on = match executor {
            Executor::Bastion => "Bastion",
            _ => "tokio",
        };
        let options = || Options::<Idle<u64>>::default().executor(executor.clone());
        let id = |n| n as u64;
        let plain = footprint(options(), id);
        // Long enough that none idles out while it is measured.
        let idle = footprint(options().idle_timeout(Duration::from_secs(3600)), id);
        // Room for every worker: none is evicted while it is measured.
        let capped = footprint(options().max_workers(1 << 16), id);
        let bounded = footprint(options().mailbox_capacity(64), id);
        let all = footprint(
            options()
                .idle_timeout(Duration::from_secs(3600))
                .max_workers(1 << 16)
                .mailbox_capacity(64),
            id,
        );
        let rows = [
            ("default options", &plain),
            ("idle_timeout(1 h)", &idle),
            ("max_workers(65,536), evicting", &capped),
            ("mailbox_capacity(64)", &bounded),
            ("all three", &all),
        ];
        for (name, f) in rows {
            eprintln!(
                "footprint, {on}: {name}: {:.1} heap bytes per idle worker ({:+.1}), \
                 {} B for the empty registry",
                f.per_worker,
                f.per_worker - plain.per_worker,
                f.fixed
            );
        }
        assert!(plain.per_worker < 1024.0, "{:.0} B", plain.per_worker);
        for (name, f) in &rows[1..] {
            let extra = f.per_worker - plain.per_worker;
            let budget = if *name == "idle_timeout(1 h)" {
                48.0
            } else {
                128.0
            };
            assert!(
                extra <= budget,
                "{name} costs an idle worker {extra:.1} B more on {on}"
            );
        }
    }
}
