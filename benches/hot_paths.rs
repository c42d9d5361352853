//! The registry's hot paths, timed with the standard library only (so that
//! building the core crate's benches builds nothing more): a lookup hit, a
//! `lookup_or_start` hit, a call, a call by id, and a start with its stop,
//! over 100,000 ids visited in a shuffled order. Prints the median of 5 runs
//! of each, in ns per operation, with the executor each ran on.
//!
//! `cargo bench --bench hot_paths --all-features`. The statistics-heavy
//! criterion versions and the side-by-side peer benchmark are in the
//! `peers` member (`cargo bench -p gen_registry_peers --bench registry`,
//! `--bench peers`).

use futures::executor::block_on as block;
use gen_registry::doc_support::Pinger;
use gen_registry::{Executor, GenRegistry, Options};
use std::time::Instant;

const IDS: u64 = 100_000;
const RUNS: usize = 5;

/// The ids 0..IDS in a fixed pseudo-random order.
fn shuffled() -> Vec<u64> {
    let mut ids: Vec<u64> = (0..IDS).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..ids.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ids.swap(i, (state % (i as u64 + 1)) as usize);
    }
    ids
}

/// The median over [`RUNS`] of `f`'s time per id, in ns.
fn median(ids: &[u64], mut f: impl FnMut(&[u64])) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let began = Instant::now();
            f(ids);
            began.elapsed().as_nanos() as f64 / ids.len() as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn bench(name: &str, executor: Executor) {
    let ids = shuffled();
    let r = GenRegistry::<Pinger>::new(Options::default().executor(executor)).unwrap();
    block(async {
        for &id in &ids {
            r.lookup_or_start(id, 0).await.unwrap();
        }
    });
    let lookup = median(&ids, |ids| {
        for id in ids {
            std::hint::black_box(r.lookup(id).unwrap());
        }
    });
    let hit = median(&ids, |ids| {
        block(async {
            for &id in ids {
                std::hint::black_box(r.lookup_or_start(id, 0).await.unwrap());
            }
        })
    });
    let handles: Vec<_> = ids.iter().map(|id| r.lookup(id).unwrap()).collect();
    let call = median(&ids, |ids| {
        block(async {
            for (i, _) in ids.iter().enumerate() {
                std::hint::black_box(handles[i].call(1).await.unwrap());
            }
        })
    });
    let by_id = median(&ids, |ids| {
        block(async {
            for &id in ids {
                std::hint::black_box(r.call(id, 0, 1).await.unwrap());
            }
        })
    });
    drop(handles);
    block(r.shutdown());
    let fresh = GenRegistry::<Pinger>::new(Options::default()).unwrap();
    let start_stop = median(&ids[..10_000], |ids| {
        block(async {
            for &id in ids {
                fresh.start(id, 0).await.unwrap();
                fresh.stop(&id).await.unwrap();
            }
        })
    });
    println!("| {name} | {lookup:.0} | {hit:.0} | {call:.0} | {by_id:.0} | {start_stop:.0} |");
}

fn main() {
    println!(
        "ns per operation, median of {RUNS} runs over {IDS} ids in a shuffled order (calls from a thread outside the executor)"
    );
    println!();
    println!("| executor | lookup hit | lookup_or_start hit | call | call by id | start + stop |");
    println!("|---|---:|---:|---:|---:|---:|");
    bench("Bastion", Executor::Bastion);
    #[cfg(feature = "tokio")]
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        bench("tokio", Executor::Tokio(rt.handle().clone()));
    }
}
