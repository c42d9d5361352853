//! W12 and W13, the workloads of bounded memory over many ids:
//!
//! - **W12, passivation**: RSS before, after touching `N` ids once (a call
//!   by id each), and after the idle timeout (1 s) has ended them all.
//! - **W13, capacity**: a Zipf-skewed trace of calls by id (s = 0.8, 1.0,
//!   1.2; 10x more ids than capacity) against a registry with
//!   `max_workers`: its hit ratio (calls that found their worker running),
//!   its throughput, and, on the same trace, the hit ratio of exact LRU and
//!   of an oracle that keeps the most popular ids.
//!
//! `cargo bench -p gen_registry_peers --bench lifecycle -- [--quick]`:
//! release mode, one process, figures printed as a markdown table.

use crate::common::rss_bytes;
use crate::eviction_study::Policy;
use crate::eviction_study::lru::Lru;
use crate::eviction_study::zipf::Zipf;
use gen_registry::{Context, GenRegistry, Options, Worker};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A worker of a few bytes of state, counting its starts.
pub(crate) struct Cached {
    hits: u64,
}

impl Worker for Cached {
    type Id = u32;
    type Args = Arc<AtomicU64>;
    type Request = ();
    type Reply = u64;
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u32, starts: Arc<AtomicU64>, _: &Context<Self>) -> Result<Self, Self::Error> {
        starts.fetch_add(1, Ordering::Relaxed);
        Ok(Cached { hits: 0 })
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u64 {
        self.hits += 1;
        self.hits
    }
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Calls each id of `ids` once by id, from `lanes` concurrent tasks on
/// Bastion's executor.
pub(crate) fn call_all(
    r: &GenRegistry<Cached>,
    starts: &Arc<AtomicU64>,
    ids: Vec<u32>,
    lanes: usize,
) {
    let ids = Arc::new(ids);
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let (r, starts, ids) = (r.clone(), starts.clone(), ids.clone());
            bastion::executor::spawn(async move {
                for id in ids.iter().skip(lane).step_by(lanes) {
                    if let Err(e) = r.call(*id, starts.clone(), ()).await {
                        panic!("a call by id to {id} failed: {e}");
                    }
                }
            })
        })
        .collect();
    futures::executor::block_on(async {
        for task in tasks {
            task.await.expect("a lane panicked");
        }
    });
}

fn w12(ids: u32) {
    let idle = Duration::from_secs(1);
    let starts = Arc::new(AtomicU64::new(0));
    let r = GenRegistry::<Cached>::new(Options::default().idle_timeout(idle)).unwrap();
    // Warm the executor and the timer, then let the warm-up idle out.
    call_all(&r, &starts, (0..1_000).collect(), 64);
    wait_empty(&r, idle);
    let before = rss_bytes();
    let began = Instant::now();
    call_all(&r, &starts, (1_000..1_000 + ids).collect(), 64);
    let touched = began.elapsed();
    let full = rss_bytes();
    let began = Instant::now();
    wait_empty(&r, idle);
    let emptied = began.elapsed();
    let after = rss_bytes();
    println!(
        "| W12 | {ids} ids touched once | RSS {:.1} MiB before, {:.1} MiB with all resident ({:.0} B an id), {:.1} MiB after the {idle:?} idle timeout ({:.0} B an id kept) | touched in {touched:.2?}, all ended {emptied:.2?} later |",
        mib(before),
        mib(full),
        full.saturating_sub(before) as f64 / f64::from(ids),
        mib(after),
        after.saturating_sub(before) as f64 / f64::from(ids),
    );
    futures::executor::block_on(r.shutdown());
}

pub(crate) fn wait_empty(r: &GenRegistry<Cached>, idle: Duration) {
    let deadline = Instant::now() + idle * 4 + Duration::from_secs(120);
    while r.count() > 0 {
        assert!(
            Instant::now() < deadline,
            "W12: workers outlived their idle timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn w13(ids: usize, capacity: usize, calls: usize) {
    for s in [0.8, 1.0, 1.2] {
        let zipf = Zipf::new(ids, s, 13);
        let trace: Vec<u32> = zipf.trace(calls, 1_300);
        let mut lru = Lru::new(capacity, ids);
        let lru_hits = trace.iter().filter(|&&id| lru.access(id)).count();
        let starts = Arc::new(AtomicU64::new(0));
        let r = GenRegistry::<Cached>::new(Options::default().max_workers(capacity)).unwrap();
        let began = Instant::now();
        call_all(&r, &starts, trace, 2);
        let took = began.elapsed();
        let started = starts.load(Ordering::Relaxed) as usize;
        println!(
            "| W13 | s = {s} | {:.2} % hits (LRU {:.2} %, oracle {:.2} %) | {:.0} calls by id/s, {started} starts for {calls} calls |",
            100.0 * (calls - started.min(calls)) as f64 / calls as f64,
            100.0 * lru_hits as f64 / calls as f64,
            100.0 * zipf.best_hit_ratio(capacity),
            calls as f64 / took.as_secs_f64(),
        );
        futures::executor::block_on(r.shutdown());
    }
}

/// The bench's entry point.
pub fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (ids, capacity, calls) = if quick {
        (100_000, 1_000, 200_000)
    } else {
        (1_000_000, 10_000, 2_000_000)
    };
    println!("| workload | setting | result | time |");
    println!("|---|---|---|---|");
    w12(ids as u32);
    w13(ids / 10, capacity, calls);
}
