//! Measures the group commit of persisted state on SQLite: writers, each
//! appending to its own record and awaiting each write, against the same
//! store committing each write alone (`Store::with_max_batch(1)`).
//!
//! ```sh
//! cargo run --release --features sqlite --example state_group_commit -- [DIR]
//! ```
//!
//! DIR (default: `target/`) holds the SQLite files; put it on the disk you
//! mean to measure: on a tmpfs a commit's fsync costs nothing.

use gen_registry::Executor;
use gen_registry::state::{Store, Stored};
use std::time::{Duration, Instant};

/// Runs `writers` writers for `span`, each writing its own record in a
/// loop; returns acknowledged writes per second and transactions.
fn measure(store: &Store, writers: u64, span: Duration) -> (f64, u64, u64) {
    let start = Instant::now();
    let tasks = (0..writers).map(|id| {
        let store = store.clone();
        bastion::executor::spawn(async move {
            let mut count = Stored::<u64>::load(&store, "bench", &id).await.unwrap();
            let mut done = 0u64;
            while start.elapsed() < span {
                *count += 1;
                count.write().await.unwrap();
                done += 1;
            }
            done
        })
    });
    let done: u64 = futures::executor::block_on(futures::future::join_all(tasks))
        .into_iter()
        .map(|d| d.unwrap())
        .sum();
    let secs = start.elapsed().as_secs_f64();
    (done as f64 / secs, done, store.transactions())
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target".to_owned());
    let span = Duration::from_secs(3);
    println!("writers  policy           writes/s  writes/transaction");
    for writers in [1u64, 64, 1024] {
        for (policy, max_batch) in [("commit per write", 1), ("group commit", 1024)] {
            let path = std::path::Path::new(&dir).join(format!("bench_{writers}_{max_batch}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            let store = Store::sqlite(&path, Executor::Bastion)
                .unwrap()
                .with_max_batch(max_batch);
            let (rate, done, transactions) = measure(&store, writers, span);
            println!(
                "{writers:>7}  {policy:<16} {rate:>9.0}  {:>8.1}",
                done as f64 / transactions.max(1) as f64
            );
        }
    }
}
