//! The study's driver: hit ratios on one thread, then the per-access and
//! per-start costs on two threads; markdown on stdout, progress on stderr.

use super::clock::Clock;
use super::clock_tinylfu::ClockTinyLfu;
use super::lru::Lru;
use super::sampled::SampledLru;
use super::sketch::SharedSketch;
use super::wtinylfu::WTinyLfu;
use super::zipf::Zipf;
use super::{Locked, Policy, Replay, Shared};
use crate::common::median;
use crate::eviction::Evictor;
use parking_lot::Mutex;
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const CAPACITY: usize = 10_000;
const UNIVERSE: usize = 100_000;
const EXPONENTS: [f64; 5] = [0.8, 0.9, 1.0, 1.1, 1.2];
/// The exponent of the two-thread runs.
const COST_EXPONENT: f64 = 1.0;
const SHUFFLE_SEED: u64 = 0x2F1F;
const TRACE_SEED: u64 = 0x7ACE;
const SAMPLES: usize = 5;
/// Share of eviction candidates the two-thread runs call busy, in 1/1000.
const BUSY_PER_MILLE: u64 = 10;

struct Sizes {
    /// Accesses of each hit-ratio trace; the first tenth only warms up.
    trace: usize,
    /// Accesses per thread in the two-thread runs.
    per_thread: usize,
    runs: usize,
}

/// The policies of the study, by name: a fresh single-threaded instance.
/// A policy's name and how to make a fresh instance.
type MakePolicy = (&'static str, Box<dyn Fn() -> Box<dyn Policy>>);
/// A shared policy's name and how to make one for (capacity, universe).
type MakeShared = (&'static str, Box<dyn Fn(usize, usize) -> Box<dyn Shared>>);

fn policies() -> Vec<MakePolicy> {
    vec![
        ("LRU", Box::new(|| Box::new(Lru::new(CAPACITY, UNIVERSE)))),
        (
            "W-TinyLFU",
            Box::new(|| Box::new(WTinyLfu::new(CAPACITY, UNIVERSE, false))),
        ),
        (
            "W-TinyLFU + doorkeeper",
            Box::new(|| Box::new(WTinyLfu::new(CAPACITY, UNIVERSE, true))),
        ),
        (
            "CLOCK",
            Box::new(|| Box::new(Replay::new(Clock::new(CAPACITY), UNIVERSE))),
        ),
        (
            "CLOCK + TinyLFU admission (sketch of every access)",
            Box::new(|| Box::new(ClockTinyLfu::new(CAPACITY, UNIVERSE, true))),
        ),
        (
            "CLOCK + TinyLFU admission (sketch of starts only)",
            Box::new(|| Box::new(ClockTinyLfu::new(CAPACITY, UNIVERSE, false))),
        ),
        (
            "sampled LRU (K = 5)",
            Box::new(|| Box::new(Replay::new(SampledLru::new(CAPACITY, SAMPLES), UNIVERSE))),
        ),
        (
            "S3-FIFO, promoted at 1 use",
            Box::new(|| {
                Box::new(Replay::new(
                    Evictor::<u32>::tuned(CAPACITY, 10, 1).unwrap(),
                    UNIVERSE,
                ))
            }),
        ),
        (
            "S3-FIFO, promoted at 2 uses (`eviction::Evictor`)",
            Box::new(|| {
                Box::new(Replay::new(
                    Evictor::<u32>::new(CAPACITY).unwrap(),
                    UNIVERSE,
                ))
            }),
        ),
    ]
}

/// The shared policies of the two-thread runs, by name.
fn shared_policies() -> Vec<MakeShared> {
    vec![
        (
            "LRU, one lock",
            Box::new(|c, u| Box::new(Locked(Mutex::new(Lru::new(c, u))))),
        ),
        (
            "W-TinyLFU, one lock",
            Box::new(|c, u| Box::new(Locked(Mutex::new(WTinyLfu::new(c, u, false))))),
        ),
        ("CLOCK", Box::new(|c, _| Box::new(Clock::new(c)))),
        (
            "sampled LRU (K = 5)",
            Box::new(|c, _| Box::new(SampledLru::new(c, SAMPLES))),
        ),
        (
            "S3-FIFO (`eviction::Evictor`)",
            Box::new(|c, _| Box::new(Evictor::<u32>::new(c).unwrap())),
        ),
    ]
}

pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let sizes = if quick {
        Sizes {
            trace: 1_000_000,
            per_thread: 1_000_000,
            runs: runs.unwrap_or(1),
        }
    } else {
        Sizes {
            trace: 5_000_000,
            per_thread: 4_000_000,
            runs: runs.unwrap_or(5),
        }
    };
    // `--part hit|access|start` runs one table only.
    let part = args
        .iter()
        .position(|a| a == "--part")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    if part.is_none_or(|p| p == "hit") {
        hit_ratios(&sizes);
    }
    if part.is_none_or(|p| p == "access") {
        access_costs(&sizes);
    }
    if part.is_none_or(|p| p == "start") {
        start_costs(&sizes);
    }
}

fn hit_ratios(sizes: &Sizes) {
    let warm = sizes.trace / 10;
    println!(
        "Hit ratio (%), capacity {CAPACITY}, {UNIVERSE} ids, {} accesses per trace (the first {warm} warm up), one thread:\n",
        sizes.trace
    );
    print!("| policy |");
    EXPONENTS.iter().for_each(|s| print!(" s = {s} |"));
    println!();
    println!("|---|{}", "---|".repeat(EXPONENTS.len()));
    let traces: Vec<(Zipf, Vec<u32>)> = EXPONENTS
        .iter()
        .map(|&s| {
            let zipf = Zipf::new(UNIVERSE, s, SHUFFLE_SEED);
            let trace = zipf.trace(sizes.trace, TRACE_SEED);
            (zipf, trace)
        })
        .collect();
    print!("| best possible (the {CAPACITY} most popular ids resident) |");
    for (zipf, _) in &traces {
        print!(" {:.2} |", 100.0 * zipf.best_hit_ratio(CAPACITY));
    }
    println!();
    for (name, make) in policies() {
        eprintln!("hit ratio: {name}");
        print!("| {name} |");
        for (_, trace) in &traces {
            let mut policy = make();
            trace[..warm].iter().for_each(|&k| {
                policy.access(k);
            });
            let hits = trace[warm..].iter().filter(|&&k| policy.access(k)).count();
            print!(
                " {:.2} |",
                100.0 * hits as f64 / (trace.len() - warm) as f64
            );
        }
        println!();
    }
    println!();
}

/// A relaxed atomic sketch increment per access, and nothing else: the
/// floor of any policy that feeds a shared sketch on the access path.
struct SketchOnly(SharedSketch);

impl Shared for SketchOnly {
    fn touch(&self, slot: u64) {
        self.0.increment(slot as u32);
    }

    fn insert(&self, key: u32, _: &mut dyn FnMut(u32) -> bool) -> (u64, Option<u32>) {
        (u64::from(key), None)
    }
}

/// The loop alone: reading the trace and the slot map.
struct Nothing;

impl Shared for Nothing {
    fn touch(&self, slot: u64) {
        black_box(slot);
    }

    fn insert(&self, key: u32, _: &mut dyn FnMut(u32) -> bool) -> (u64, Option<u32>) {
        (u64::from(key), None)
    }
}

/// This thread's CPU time in ns: unlike wall time, it leaves out the time
/// other processes of a busy machine had the core (and time parked on a lock).
fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// One thread's run: its result, wall ns and CPU ns.
struct Timed<R> {
    result: R,
    wall_ns: f64,
    cpu_ns: f64,
}

/// Runs `work(thread)` on `threads` threads released together.
fn on_threads<R: Send>(threads: usize, work: impl Fn(usize) -> R + Sync) -> Vec<Timed<R>> {
    let barrier = Barrier::new(threads);
    let (work, barrier) = (&work, &barrier);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    barrier.wait();
                    let (start, cpu) = (Instant::now(), thread_cpu_ns());
                    let result = work(t);
                    Timed {
                        result,
                        wall_ns: start.elapsed().as_nanos() as f64,
                        cpu_ns: thread_cpu_ns() - cpu,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// ns per access, hits only: every id of the trace is resident.
fn access_costs(sizes: &Sizes) {
    println!(
        "Cost per access (ns), hits only: {CAPACITY} residents, Zipf s = {COST_EXPONENT} over them, {} accesses per thread, median of {} runs:\n",
        sizes.per_thread, sizes.runs
    );
    println!("| policy | 1 thread (CPU) | 2 threads, each (CPU) | 2 threads, each (wall) |");
    println!("|---|---|---|---|");
    let zipf = Zipf::new(CAPACITY, COST_EXPONENT, SHUFFLE_SEED);
    let traces: Vec<Vec<u32>> = (0..2)
        .map(|t| zipf.trace(sizes.per_thread, TRACE_SEED + t))
        .collect();
    let mut all: Vec<MakeShared> = vec![
        ("none (the loop alone)", Box::new(|_, _| Box::new(Nothing))),
        (
            "shared sketch increment only",
            Box::new(|c, _| Box::new(SketchOnly(SharedSketch::new(c)))),
        ),
    ];
    all.extend(shared_policies());
    for (name, make) in all {
        eprintln!("access cost: {name}");
        let mut cells = Vec::new();
        for threads in [1, 2] {
            let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..sizes.runs)
                .map(|_| {
                    let policy = make(CAPACITY, CAPACITY);
                    let slot_of: Vec<u64> = (0..CAPACITY as u32)
                        .map(|k| policy.insert(k, &mut |_| true).0)
                        .collect();
                    let results = on_threads(threads, |t| {
                        for &key in &traces[t] {
                            policy.touch(slot_of[key as usize]);
                        }
                    });
                    let per = (threads * sizes.per_thread) as f64;
                    (
                        results.iter().map(|r| r.wall_ns).sum::<f64>() / per,
                        results.iter().map(|r| r.cpu_ns).sum::<f64>() / per,
                    )
                })
                .unzip();
            cells.push((median(&mut cpu), median(&mut wall)));
        }
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            cells[0].0, cells[1].0, cells[1].1
        );
    }
    println!();
}

/// A start timed longer than this was preempted (the machine is shared):
/// left out of the mean.
const PREEMPTED_NS: f64 = 20_000.0;

const EMPTY: u64 = u64::MAX;
const PENDING: u64 = u64::MAX - 1;

/// ns per start (an insert into a full policy, which evicts), on two
/// threads replaying the full trace with misses inserting.
fn start_costs(sizes: &Sizes) {
    println!(
        "Cost per start (ns; an insert that evicts, timed alone; a start timed over 20 µs was preempted and is left out) on 1 and 2 threads replaying Zipf s = {COST_EXPONENT}, capacity {CAPACITY}, {UNIVERSE} ids, {} accesses per thread, {}‰ of candidates busy, median of {} runs:\n",
        sizes.per_thread, BUSY_PER_MILLE, sizes.runs
    );
    println!(
        "| policy | ns per start, 1 thread | ns per start, 2 threads | ns per access, all in, 2 threads (wall / thread CPU) | hit ratio (%), 2 threads |"
    );
    println!("|---|---|---|---|---|");
    let zipf = Zipf::new(UNIVERSE, COST_EXPONENT, SHUFFLE_SEED);
    let traces: Vec<Vec<u32>> = (0..2)
        .map(|t| zipf.trace(sizes.per_thread, TRACE_SEED + 10 + t))
        .collect();
    for (name, make) in shared_policies() {
        eprintln!("start cost: {name}");
        let mut per_start_1t = Vec::new();
        let mut per_start = Vec::new();
        let mut per_access = Vec::new();
        let mut per_access_cpu = Vec::new();
        let mut hit_ratio = Vec::new();
        for _ in 0..sizes.runs {
            for threads in [1, 2] {
                let policy = make(CAPACITY, UNIVERSE);
                let slot_of: Vec<AtomicU64> =
                    (0..UNIVERSE).map(|_| AtomicU64::new(EMPTY)).collect();
                let results = on_threads(threads, |t| {
                    replay(&*policy, &slot_of, &traces[t], t as u64)
                });
                let (mut starts, mut start_ns, mut hits) = (0u64, 0f64, 0u64);
                for r in &results {
                    starts += r.result.0;
                    start_ns += r.result.1;
                    hits += r.result.2;
                }
                if threads == 1 {
                    per_start_1t.push(start_ns / starts as f64);
                    continue;
                }
                let accesses = (2 * sizes.per_thread) as f64;
                per_start.push(start_ns / starts as f64);
                per_access.push(results.iter().map(|r| r.wall_ns).sum::<f64>() / accesses);
                per_access_cpu.push(results.iter().map(|r| r.cpu_ns).sum::<f64>() / accesses);
                hit_ratio.push(100.0 * hits as f64 / accesses);
            }
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.1} / {:.1} | {:.2} |",
            median(&mut per_start_1t),
            median(&mut per_start),
            median(&mut per_access),
            median(&mut per_access_cpu),
            median(&mut hit_ratio)
        );
    }
    println!();
}

/// One thread's replay: a hit touches, a miss inserts (timed) and clears
/// the victim's map entry. Returns (starts that evicted and were not
/// preempted, their ns, hits).
fn replay(
    policy: &dyn Shared,
    slot_of: &[AtomicU64],
    trace: &[u32],
    thread: u64,
) -> (u64, f64, u64) {
    let (mut starts, mut start_ns, mut hits) = (0u64, 0f64, 0u64);
    let mut asked = thread << 40;
    let mut busy = |key: u32| {
        asked += 1;
        let h = (u64::from(key) ^ asked).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        h % 1000 >= BUSY_PER_MILLE
    };
    for &key in trace {
        let entry = &slot_of[key as usize];
        match entry.load(Ordering::Acquire) {
            EMPTY => {
                if entry
                    .compare_exchange(EMPTY, PENDING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                let start = Instant::now();
                let (slot, victim) = policy.insert(key, &mut busy);
                let ns = start.elapsed().as_nanos() as f64;
                if let Some(victim) = victim {
                    slot_of[victim as usize].store(EMPTY, Ordering::Release);
                    if ns < PREEMPTED_NS {
                        starts += 1;
                        start_ns += ns;
                    }
                }
                // The victim's thread may have cleared this entry meanwhile.
                let _ = entry.compare_exchange(PENDING, slot, Ordering::AcqRel, Ordering::Acquire);
            }
            PENDING => hits += 1,
            slot => {
                policy.touch(slot);
                hits += 1;
            }
        }
    }
    (starts, start_ns, hits)
}
