//! Soak: memory stays flat under churn, and comes back after shutdown.
//!
//! A counting global allocator (this file is its own test binary, and its two
//! tests take turns) measures the live heap bytes while worker lifetimes
//! (start → call → stop) run concurrently on Bastion's executor. It proves:
//!
//! - the heap with the registry alive after all the lifetimes is within 1%
//!   of the heap after 100,000, plus the id table's deferred reclamation
//!   slack ([`STRANDED_PER_THREAD`] for each executor thread seen): nothing is
//!   retained per lifetime;
//! - after shutdown (and dropping the registry) the heap is back to the
//!   baseline measured after a warm-up, within [`SETTLED_TOLERANCE`];
//! - a mailbox flooded with 100,000 casts holds them, and gives the memory
//!   back once they are handled, while the worker lives on;
//! - ids touched once under an idle timeout of 1 s all end, run `terminate`,
//!   and give back everything but the id table's slots
//!   (`GEN_REGISTRY_SOAK_IDLE_IDS` ids: 50,000 by default, 1,000,000 in CI).
//!
//! The workers here are not the probe of `tests/common`: the probe's log keeps
//! an entry per id and per `terminate` by design, which would be the growth
//! this test looks for.
//!
//! Size: `GEN_REGISTRY_SOAK_LIFETIMES` lifetimes, checked at 100,000 (or
//! half way, for fewer than 200,000) and at the end: 100,000 by default, so
//! that `cargo test` stays quick in a debug build; CI (`.ci/run`) runs
//! 1,000,000.

mod common;
mod counting;

use counting::{Counting, settled_heap, settled_heap_within};
use futures::channel::oneshot;
use gen_registry::{Context, GenRegistry, Options, Worker};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The measurements of the two tests must not see each other's allocations.
static MEASURING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Lifetimes run between two samples of [`heap_under`].
const SAMPLE_LIFETIMES: u64 = 2_000;
/// Samples taken by [`heap_under`].
const SAMPLES: usize = 5;

/// The live heap of a process whose registry `r` has no workers: the least of
/// [`SAMPLES`] settled samples, each after [`SAMPLE_LIFETIMES`] more
/// lifetimes. The id table frees removed entries in batches (128 per thread),
/// so a single sample can be up to a few tens of KiB high; the least of a few
/// is close to what the process really holds.
fn heap_under(r: &GenRegistry<Churner>, counters: &Arc<Counters>) -> isize {
    (0..SAMPLES)
        .map(|_| {
            churn(r, counters, SAMPLE_LIFETIMES);
            settled_heap()
        })
        .min()
        .unwrap()
}

/// How long memory that ended workers give back may take to come back
/// (their ends and the id table's deferred reclamation run on other
/// threads): the heap is measured again until it is within bounds or this
/// has passed.
const GIVE_BACK: Duration = Duration::from_secs(30);

/// How far the heap after shutdown may be from the baseline. The timer keeps
/// one slab of deadlines per shard (16 shards, a shard per thread, a slot of
/// 32 bytes per deadline in flight) and never shrinks it; with at most one
/// deadline in flight per loop, a shard that a new thread starts using can
/// grow by up to 64 slots: 16 x 64 x 32 bytes = 32 KiB, independent of the
/// number of lifetimes.
const SETTLED_TOLERANCE: isize = 32 * 1024;

/// The id table (papaya) frees removed entries in batches of 128 per thread
/// (`RECLAIM_BATCH` in `src/table.rs`).
/// Bastion's executor starts short-lived threads under sustained load (up to
/// ~90 at once were seen on 2 cores); a thread that exits strands its partial
/// batch until a later thread reuses its slot: at most 127 entries of 208
/// bytes (a table entry and a worker's cell) and the batch's own 4 KiB, per
/// thread. It is all freed with the registry.
const STRANDED_PER_THREAD: isize = 127 * 208 + 4096;

/// The most threads the process had at once while `f` ran (sampled from
/// `/proc/self/task`; a fixed 128 where that is not available).
fn peak_threads_during(f: impl FnOnce()) -> isize {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = || std::fs::read_dir("/proc/self/task").map(|d| d.count() as isize);
    if count().is_err() {
        f();
        return 128;
    }
    let sampler = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut peak = 0;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(count().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        }
    });
    f();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap()
}

// ---- the worker ----

#[derive(Default)]
struct Counters {
    inits: AtomicUsize,
    terminates: AtomicUsize,
    drops: AtomicUsize,
}

struct Churner {
    id: u64,
    total: u64,
    counters: Arc<Counters>,
}

enum Msg {
    Hold(oneshot::Receiver<()>),
    Add(u64),
}

impl Drop for Churner {
    fn drop(&mut self) {
        self.counters.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl Worker for Churner {
    type Id = u64;
    type Args = Arc<Counters>;
    type Request = ();
    type Reply = u64;
    type Message = Msg;
    type Error = std::convert::Infallible;

    async fn init(
        id: &u64,
        counters: Arc<Counters>,
        _: &Context<Self>,
    ) -> Result<Self, Self::Error> {
        counters.inits.fetch_add(1, Ordering::SeqCst);
        Ok(Churner {
            id: *id,
            total: 0,
            counters,
        })
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u64 {
        self.id + self.total
    }

    async fn handle_cast(&mut self, message: Msg, _: &mut Context<Self>) {
        match message {
            Msg::Hold(gate) => {
                let _ = gate.await;
            }
            Msg::Add(n) => self.total += n,
        }
    }

    async fn terminate(&mut self, _: &gen_registry::ExitReason, _: &mut Context<Self>) {
        self.counters.terminates.fetch_add(1, Ordering::SeqCst);
    }
}

/// Concurrent loops of lifetimes; each loop reuses one id.
const LOOPS: u64 = 64;
/// Lifetimes of the warm-up: long enough for Bastion's executor to have
/// started and retired its extra threads once.
const WARM_UP: u64 = 200_000;

/// Runs `lifetimes` lifetimes (start → call → stop), spread over [`LOOPS`]
/// concurrent tasks on Bastion's executor.
fn churn(r: &GenRegistry<Churner>, counters: &Arc<Counters>, lifetimes: u64) {
    let tasks: Vec<_> = (0..LOOPS)
        .map(|id| {
            let n = lifetimes / LOOPS + u64::from(id < lifetimes % LOOPS);
            let (r, counters) = (r.clone(), counters.clone());
            bastion::executor::spawn(async move {
                for _ in 0..n {
                    let w = r.start(id, counters.clone()).await.unwrap();
                    assert_eq!(w.call(()).await.unwrap(), id);
                    r.stop(&id).await.unwrap();
                }
            })
        })
        .collect();
    common::run(3600, async move {
        for task in tasks {
            task.await.expect("a churn task panicked");
        }
    });
}

/// Shuts `r` down (within a minute) and drops it, so none of its memory
/// stays in use.
fn shut_down(r: GenRegistry<Churner>) {
    common::run(60, async move { r.shutdown().await });
}

fn kib(bytes: isize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

#[test]
fn worker_lifetimes_leave_the_heap_flat_and_shutdown_gives_it_back() {
    let _measuring = MEASURING.lock();
    let lifetimes = common::size_from_env("GEN_REGISTRY_SOAK_LIFETIMES", 100_000) as u64;
    let checkpoint = 100_000.min(lifetimes / 2);
    let counters = Arc::new(Counters::default());

    // Warm-up: the executor's threads, the timer thread and their buffers
    // come into being once per process.
    let warm = GenRegistry::<Churner>::new(Options::default()).unwrap();
    churn(&warm, &counters, WARM_UP);
    shut_down(warm);
    let baseline = settled_heap();

    let r = GenRegistry::<Churner>::new(Options::default()).unwrap();
    let began = Instant::now();
    let mut checkpoint_time = Duration::ZERO;
    let (mut at_checkpoint, mut at_end) = (0, 0);
    let threads = peak_threads_during(|| {
        churn(&r, &counters, checkpoint);
        checkpoint_time = began.elapsed();
        at_checkpoint = heap_under(&r, &counters);
        churn(&r, &counters, lifetimes - checkpoint);
        at_end = heap_under(&r, &counters);
    });
    let total_time = began.elapsed();
    assert_eq!(r.count(), 0);
    shut_down(r);
    let after_shutdown = settled_heap_within(
        baseline - SETTLED_TOLERANCE..=baseline + SETTLED_TOLERANCE,
        GIVE_BACK,
    );

    let drift = at_end - at_checkpoint;
    let allowed = at_checkpoint / 100 + threads * STRANDED_PER_THREAD;
    eprintln!(
        "soak: {lifetimes} lifetimes (start, call, stop) in {total_time:.1?} ({checkpoint} in \
         {checkpoint_time:.1?}), {LOOPS} concurrent loops, up to {threads} threads; live heap: \
         baseline after a {WARM_UP}-lifetime warm-up {}, after {checkpoint} {}, after {lifetimes} \
         {} (drift {drift} bytes, {:.2} bytes a lifetime; allowed {}), after shutdown {} ({} bytes \
         from the baseline)",
        kib(baseline),
        kib(at_checkpoint),
        kib(at_end),
        drift as f64 / (lifetimes - checkpoint).max(1) as f64,
        kib(allowed),
        kib(after_shutdown),
        after_shutdown - baseline,
    );
    let n = |a: &AtomicUsize| a.load(Ordering::SeqCst);
    assert_eq!(
        n(&counters.inits) as u64,
        WARM_UP + lifetimes + 2 * SAMPLES as u64 * SAMPLE_LIFETIMES
    );
    assert_eq!(n(&counters.terminates), n(&counters.inits));
    assert_eq!(n(&counters.drops), n(&counters.inits));
    assert!(
        drift.abs() <= allowed,
        "the heap moved by {drift} bytes between {checkpoint} and {lifetimes} lifetimes"
    );
    assert!(
        (after_shutdown - baseline).abs() <= SETTLED_TOLERANCE,
        "after shutdown the heap is {} bytes from the baseline",
        after_shutdown - baseline
    );
}

#[test]
fn a_flooded_mailbox_gives_its_memory_back_once_drained() {
    let _measuring = MEASURING.lock();
    let n: u64 = 100_000;
    let counters = Arc::new(Counters::default());
    let r = GenRegistry::<Churner>::new(Options::default()).unwrap();
    // Warm up the paths used below once, with a small flood.
    let flood = |r: &GenRegistry<Churner>, n: u64| {
        let (r, counters) = (r.clone(), counters.clone());
        common::run(60, async move {
            let w = r.start(1, counters).await.unwrap();
            let (open, gate) = oneshot::channel();
            w.cast(Msg::Hold(gate)).unwrap();
            for _ in 0..n {
                w.cast(Msg::Add(1)).unwrap();
            }
            (w, open)
        })
    };
    let (w, open) = flood(&r, 100);
    drop(open);
    let stop = |r: &GenRegistry<Churner>| {
        let r = r.clone();
        common::run(60, async move { r.stop(&1).await.unwrap() })
    };
    assert_eq!(
        common::run(60, async move { w.call(()).await.unwrap() }),
        101
    );
    stop(&r);

    let before = settled_heap();
    let (w, open) = flood(&r, n);
    let flooded = settled_heap();
    open.send(()).unwrap();
    let total = common::run(60, {
        let w = w.clone();
        async move { w.call(()).await.unwrap() }
    });
    assert_eq!(total, 1 + n, "every cast handled");
    let drained = settled_heap();
    stop(&r);
    drop(w);
    let stopped = settled_heap_within(
        before - SETTLED_TOLERANCE..=before + SETTLED_TOLERANCE,
        GIVE_BACK,
    );
    eprintln!(
        "soak: a mailbox flooded with {n} casts holds {} ({:.0} bytes a message); \
         once they are handled, with the worker alive: {}; after stop: {}",
        kib(flooded - before),
        (flooded - before) as f64 / n as f64,
        kib(drained - before),
        kib(stopped - before),
    );
    assert!(
        flooded - before >= n as isize * 8,
        "the flood was not queued"
    );
    assert!(
        (stopped - before).abs() <= SETTLED_TOLERANCE,
        "the flood left {} bytes behind after stop",
        stopped - before
    );
}

/// The bytes the id table may keep per id it once held: papaya never
/// shrinks its slot array, which grows to about twice the peak number of
/// entries (a pointer and a tag byte per slot, rounded up). Everything else
/// a worker held (its cell, its proc, its table entry) must come back.
const TABLE_SLOT_BYTES_PER_ID: isize = 40;

#[test]
fn idle_workers_end_and_give_their_memory_back() {
    let _measuring = MEASURING.lock();
    let ids = common::size_from_env("GEN_REGISTRY_SOAK_IDLE_IDS", 50_000) as u64;
    let idle = Duration::from_secs(1);
    let counters = Arc::new(Counters::default());
    let touch = |r: &GenRegistry<Churner>, ids: std::ops::Range<u64>| {
        let tasks: Vec<_> = (0..LOOPS)
            .map(|lane| {
                let (r, counters, ids) = (r.clone(), counters.clone(), ids.clone());
                bastion::executor::spawn(async move {
                    for id in ids.skip(lane as usize).step_by(LOOPS as usize) {
                        let w = r.lookup_or_start(id, counters.clone()).await.unwrap();
                        assert_eq!(w.call(()).await.unwrap(), id);
                    }
                })
            })
            .collect();
        common::run(3600, async move {
            for task in tasks {
                task.await.expect("a touching task panicked");
            }
        });
    };
    let idled_out = |r: &GenRegistry<Churner>| {
        let deadline = Instant::now() + idle * 4 + Duration::from_secs(60);
        while r.count() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} workers outlived their idle timeout",
                r.count()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // The baseline: a registry whose warm-up workers all idled out.
    let r = GenRegistry::<Churner>::new(Options::default().idle_timeout(idle)).unwrap();
    touch(&r, 0..10_000);
    idled_out(&r);
    let baseline = settled_heap();

    let began = Instant::now();
    touch(&r, 10_000..10_000 + ids);
    let touched = began.elapsed();
    let full = settled_heap();
    idled_out(&r);
    let waited = began.elapsed() - touched;
    let allowed = (ids as isize + 10_000) * TABLE_SLOT_BYTES_PER_ID + SETTLED_TOLERANCE;
    let after = settled_heap_within(..=baseline + allowed, GIVE_BACK);
    let kept = after - baseline;
    // Shut down before any check, so that a failed one leaves nothing
    // running into the next test's measurements.
    shut_down(r);
    eprintln!(
        "idle soak: {ids} ids touched once in {touched:.1?}; live heap: baseline {}, with them \
         all resident {} ({:.0} bytes an id), after the {idle:?} idle timeout (all ended after \
         {waited:.1?}) {} ({kept} bytes above the baseline, {:.1} an id; allowed {}: the id \
         table's slots)",
        kib(baseline),
        kib(full),
        (full - baseline) as f64 / ids as f64,
        kib(after),
        kept as f64 / ids as f64,
        kib(allowed),
    );
    let n = |a: &AtomicUsize| a.load(Ordering::SeqCst);
    assert_eq!(n(&counters.inits) as u64, 10_000 + ids);
    assert_eq!(
        n(&counters.terminates),
        n(&counters.inits),
        "an idle worker skipped terminate"
    );
    assert!(
        kept <= allowed,
        "the heap kept {kept} bytes after every worker idled out"
    );
}
