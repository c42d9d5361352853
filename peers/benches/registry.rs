//! Criterion micro-benchmarks of the registry's hot paths.
//!
//! `cargo bench -p gen_registry_peers --bench registry` (release). The
//! side-by-side comparison with other systems is
//! `cargo bench -p gen_registry_peers --bench peers`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gen_registry::doc_support::Pinger;
use gen_registry::{GenRegistry, Options};
use std::hint::black_box;
use std::time::{Duration, Instant};

const N: u64 = 100_000;

fn populated() -> GenRegistry<Pinger> {
    let registry = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    futures::executor::block_on(async {
        for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
            let starts = chunk.iter().map(|&id| registry.lookup_or_start(id, id));
            for r in futures::future::join_all(starts).await {
                r.unwrap();
            }
        }
    });
    registry
}

/// SplitMix64: the tests' seeded generator, from the same source file.
#[path = "../../tests/common/splitmix.rs"]
mod splitmix;

/// A fixed shuffle of the ids, so lookups miss the cache as they would in a
/// real service.
fn shuffled() -> Vec<u64> {
    let mut ids: Vec<u64> = (0..N).collect();
    splitmix::Rng::new(0x9E37_79B9_7F4A_7C15).shuffle(&mut ids);
    ids
}

type Floor = papaya::HashMap<u64, std::sync::Arc<[u64; 16]>, fxhash::FxBuildHasher>;

/// The lookup floor's table, and the allocations that spread its values
/// (one of a worker's proc size after each value).
fn floor_table() -> (Floor, Vec<Vec<u8>>) {
    let table = Floor::default();
    let mut spread = Vec::with_capacity(N as usize);
    for id in 0..N {
        table.pin().insert(id, std::sync::Arc::new([id; 16]));
        spread.push(vec![0u8; 280]);
    }
    (table, spread)
}

/// Benchmarks `op` on the ids in shuffled order, one id per iteration.
fn over_shuffled<T>(c: &mut Criterion, name: &str, ids: &[u64], mut op: impl FnMut(u64) -> T) {
    let mut i = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(op(ids[i]))
        })
    });
}

fn benches(c: &mut Criterion) {
    let registry = populated();
    let ids = shuffled();

    over_shuffled(c, "lookup hit (100k, shuffled)", &ids, |id| {
        registry.lookup(&id).unwrap()
    });
    // The floor of this design for the line above: the same table (papaya,
    // fxhash) mapping ids to a reference-counted value the size of a worker's
    // cell, cloned and dropped per lookup, with the values spread through the
    // heap the way workers' procs spread the cells. Nothing left to trim in
    // the registry gets below this.
    let (floor, _spread) = floor_table();
    over_shuffled(
        c,
        "floor: papaya get + Arc clone of a 128-byte value (100k, shuffled)",
        &ids,
        |id| floor.pin().get(&id).cloned(),
    );
    // Without the reference count: what a lookup would cost if the handle it
    // returned did not point into the worker's cell. The difference from the
    // line above is the atomic increment on a cold line, which also keeps
    // consecutive lookups from overlapping their cache misses.
    over_shuffled(
        c,
        "floor: papaya get only, no reference taken (100k, shuffled)",
        &ids,
        |id| floor.pin().get(&id).is_some(),
    );
    c.bench_function("lookup miss", |b| {
        b.iter(|| black_box(registry.lookup(&(N + 7)).is_err()))
    });
    over_shuffled(c, "lookup_or_start hit (100k, shuffled)", &ids, |id| {
        futures::executor::block_on(registry.lookup_or_start(id, id)).unwrap()
    });
    c.bench_function("count", |b| b.iter(|| black_box(registry.count())));
    c.bench_function("reduce over 100k", |b| {
        b.iter(|| black_box(registry.reduce(0u64, |acc, id, _| acc + id)))
    });

    let worker = registry.lookup(&1).unwrap();
    c.bench_function("call round trip, caller outside the executor", |b| {
        b.iter(|| futures::executor::block_on(worker.call(black_box(1))).unwrap())
    });
    c.bench_function("call round trip, caller inside the executor", |b| {
        b.iter_custom(|iters| {
            let worker = worker.clone();
            let proc = bastion::executor::spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(worker.call(black_box(1)).await.unwrap());
                }
                start.elapsed()
            });
            bastion::executor::run(proc).unwrap()
        })
    });

    c.bench_function("start + stop of a fresh id", |b| {
        let mut next = N;
        b.iter_batched(
            || {
                next += 1;
                next
            },
            |id| {
                futures::executor::block_on(async {
                    registry.start(id, 0).await.unwrap();
                    registry.stop(&id).await.unwrap();
                })
            },
            BatchSize::SmallInput,
        )
    });

    futures::executor::block_on(registry.shutdown());
}

criterion_group! {
    name = registry;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(registry);
