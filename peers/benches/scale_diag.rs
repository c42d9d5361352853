//! `cargo bench -p gen_registry_peers --bench scale_diag -- [N]`: the parts
//! of a start and of a stop at millions of ids, each timed by tenth of the
//! ids, to tell which of them slows down as the table grows (BENCHMARKS.md,
//! "Why the start rate falls as N grows"). N defaults to 10,000,000. One thread, no executor:
//!
//! - `insert, growing`: papaya with gen_registry's key type, hasher and
//!   reclamation batch, from empty (it resizes as it grows), a value the size
//!   of the table's slot (a flag and a pointer);
//! - `insert, growing, blocking`: the same with papaya's blocking resize (one
//!   copy of the whole table when it doubles, instead of a chunk of the copy
//!   in every write while it lasts);
//! - `insert, pre-sized`: the same into a map built with capacity N: the
//!   difference is the cost of the resizes;
//! - `insert + 176 B cell`: growing, each value pointing to a fresh
//!   allocation the size of a worker's cell (the allocator's share);
//! - `collect every value`: what `shutdown` does first (a clone of each
//!   cell's `Arc`, one read of each cell, then dropped);
//! - `remove`: every id removed in insertion order (papaya's reclamation,
//!   one `membarrier` per batch of 128 removals).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

type Map<V> = papaya::HashMap<u64, V, fxhash::FxBuildHasher>;

fn map<V>(capacity: usize) -> Map<V> {
    map_with(capacity, papaya::ResizeMode::default())
}

fn map_with<V>(capacity: usize, resize: papaya::ResizeMode) -> Map<V> {
    papaya::HashMap::builder()
        .hasher(fxhash::FxBuildHasher::default())
        .collector(seize::Collector::new().batch_size(128))
        .capacity(capacity)
        .resize_mode(resize)
        .build()
}

/// A worker's cell, as far as the allocator can tell.
struct CellSized([u64; 22]);

/// The table's slot: a flag and a pointer.
struct Slot<T> {
    _running: AtomicBool,
    cell: T,
}

/// Runs `op(i)` for `i` in `0..n`, printing the rate of each tenth and the
/// total.
fn by_tenth(what: &str, n: usize, mut op: impl FnMut(u64)) {
    let tenth = n.div_ceil(10);
    let start = Instant::now();
    let mut mark = start;
    let mut rates = Vec::new();
    for i in 0..n {
        op(i as u64);
        if (i + 1) % tenth == 0 || i + 1 == n {
            let now = Instant::now();
            rates.push(format!(
                "{:.2}",
                tenth as f64 / now.duration_since(mark).as_secs_f64() / 1e6
            ));
            mark = now;
        }
    }
    let total = start.elapsed().as_secs_f64();
    println!(
        "{what:<24} {:>8.3} s  {:>6.2} M/s   by tenth (M/s): {}",
        total,
        n as f64 / total / 1e6,
        rates.join(" ")
    );
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    println!("N = {n}");

    for (what, table) in [
        ("insert, growing", map(0)),
        (
            "insert, growing, blocking",
            map_with(0, papaya::ResizeMode::Blocking),
        ),
        ("insert, pre-sized", map(n)),
    ] {
        let table: Map<Slot<usize>> = table;
        by_tenth(what, n, |i| {
            let _ = table.pin().insert(
                i,
                Slot {
                    _running: AtomicBool::new(false),
                    cell: i as usize,
                },
            );
        });
    }

    let cells: Map<Slot<Arc<CellSized>>> = map(0);
    by_tenth("insert + 176 B cell", n, |i| {
        let _ = cells.pin().insert(
            i,
            Slot {
                _running: AtomicBool::new(false),
                cell: Arc::new(CellSized([i; 22])),
            },
        );
    });

    let start = Instant::now();
    let all: Vec<Arc<CellSized>> = cells.pin().values().map(|s| s.cell.clone()).collect();
    // Read each cell once, as the shutdown's stop request does.
    black_box(all.iter().map(|c| c.0[0]).sum::<u64>());
    drop(all);
    println!(
        "{:<24} {:>8.3} s",
        "collect every value",
        start.elapsed().as_secs_f64()
    );

    by_tenth("remove", n, |i| {
        let _ = cells.pin().remove(&i);
    });
}
