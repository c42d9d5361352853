//! What every system's runner shares: the sizes, the fixed-seed shuffle, RSS,
//! timing helpers and the JSON-lines emitter a child process reports through.

use std::hint::black_box;
use std::io::Write;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// SplitMix64: the tests' seeded generator, from the same source file.
#[path = "../../tests/common/splitmix.rs"]
mod splitmix;
pub use splitmix::Rng;

/// The sizes of one run (peers.md's standard workload, or the quick variant).
#[derive(Clone, Debug)]
pub struct Config {
    /// `--quick`: smaller sizes, one repetition.
    pub quick: bool,
    /// Number of ids started in W1 (and looked up, called, stopped after).
    pub n: usize,
    /// Number of round trips in W6 and lookup + call pairs in W7.
    pub m: usize,
    /// Churn cycles of W9 (a system may run fewer and say so).
    pub churn: usize,
    /// Ids W9 draws from.
    pub pool: usize,
    /// How long W3 and W4 each run their lookups.
    pub lookup_time: Duration,
}

impl Config {
    pub fn new(quick: bool) -> Config {
        if quick {
            Config {
                quick,
                n: 20_000,
                m: 20_000,
                churn: 200_000,
                pool: 10_000,
                lookup_time: Duration::from_millis(300),
            }
        } else {
            Config {
                quick,
                n: 100_000,
                m: 100_000,
                churn: 1_000_000,
                pool: 10_000,
                lookup_time: Duration::from_secs(1),
            }
        }
    }
}

/// Concurrency of the bulk phases (W1 starts, W8 stops), the same for every
/// system: `DRIVERS` tasks (tokio tasks, Bastion procs or threads, one per
/// core), each taking a contiguous slice of the ids and starting them
/// `CHUNK` at a time with `join_all`, so up to `DRIVERS × CHUNK` starts are
/// in flight. 16: of 1, 16 and 256, the best for ractor and kameo (W8 on
/// ractor halves at 256) and as good as any for gen_registry.
pub const DRIVERS: usize = 2;
pub const CHUNK: usize = 16;

/// W9's driver count: each driver runs its cycles one after the other on its
/// own half of the id pool, so two cycles never race for one id.
pub const CHURN_DRIVERS: usize = 2;

/// Base of the W9 pool's ids, far from the W1 ids `0..N`.
pub const POOL_BASE: u64 = 10_000_000;
/// The fresh id W11 races on.
pub const RACE_ID: u64 = 20_000_000;
/// Concurrent starters in W11.
pub const RACERS: usize = 64;
/// The `x` of `Ping(x)` and the state of worker `id` (`id + STATE_OFFSET`),
/// so a reply proves it came from the right worker: `x + id + STATE_OFFSET`.
pub const STATE_OFFSET: u64 = 7;

/// The state worker `id` is started with.
pub fn state_of(id: u64) -> u64 {
    id + STATE_OFFSET
}

/// The ids `0..n` in a fixed shuffled order (Fisher–Yates, fixed seed).
pub fn shuffled(n: usize, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n as u64).collect();
    Rng::new(seed).shuffle(&mut v);
    v
}

/// The fixed seed of the lookup order.
pub const ORDER_SEED: u64 = 0x5EED_0F1D;

/// The name of id `i` for the peers that register by name.
pub fn name_of(id: u64) -> String {
    format!("w{id}")
}

/// Resident set size of this process in bytes: /proc/self/statm's resident
/// pages × the page size.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * if page > 0 { page as u64 } else { 4096 }
}

/// Nearest-rank percentile of sorted nanosecond samples, in µs.
pub fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_ns.len()) - 1;
    sorted_ns[idx] as f64 / 1_000.0
}

/// Median of a few values (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// W3: lookups on this thread, cycling through `order`, each result kept
/// alive until the next (so a returned clone is really made and dropped),
/// for at least `budget` → ns per lookup. One warm-up pass first, which
/// also checks that every id hits (a miss would make the figure a lie).
pub fn lookup_ns_1t<T>(order: &[u64], budget: Duration, hit: impl Fn(u64) -> Option<T>) -> f64 {
    for &id in order {
        assert!(
            black_box(hit(black_box(id))).is_some(),
            "lookup of {id} missed"
        );
    }
    let start = Instant::now();
    let mut ops = 0usize;
    while start.elapsed() < budget {
        for &id in order {
            black_box(hit(black_box(id)));
        }
        ops += order.len();
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

/// W4: the same on 2 threads at once (the second starts half-way through the
/// order) for `budget` → aggregate lookups per second.
pub fn lookup_ops_2t<T>(
    order: &[u64],
    budget: Duration,
    hit: impl Fn(u64) -> Option<T> + Sync,
) -> f64 {
    let threads = 2;
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let (hit, barrier, stop) = (&hit, &barrier, &stop);
    let (ops, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut i = t * order.len() / threads;
                    let mut ops = 0usize;
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..256 {
                            black_box(hit(black_box(order[i])));
                            i += 1;
                            if i == order.len() {
                                i = 0;
                            }
                        }
                        ops += 256;
                    }
                    ops
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(budget);
        stop.store(true, Ordering::Relaxed);
        let ops: usize = handles
            .into_iter()
            .map(|h| h.join().expect("lookup thread panicked"))
            .sum();
        (ops, start.elapsed())
    });
    ops as f64 / elapsed.as_secs_f64()
}

/// W6 samples: `m` timed round trips of `call` (after 1,000 warm-up ones)
/// → sorted nanoseconds. Run it inside the runtime.
pub async fn rtt_samples<F, Fut>(m: usize, call: F) -> Vec<u64>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = bool>,
{
    for x in 0..1_000 {
        assert!(call(x).await, "warm-up call failed");
    }
    let mut samples = Vec::with_capacity(m);
    for x in 0..m as u64 {
        let t = Instant::now();
        let ok = call(x).await;
        samples.push(t.elapsed().as_nanos() as u64);
        assert!(ok, "call failed");
    }
    samples.sort_unstable();
    samples
}

/// Emits the median and p99 of W6-style samples as `{prefix}p50` and
/// `{prefix}p99` (µs).
pub fn emit_rtt(out: &Out, prefix: &str, sorted_ns: &[u64]) {
    out.emit(
        &format!("{prefix}p50"),
        percentile_us(sorted_ns, 50.0),
        "µs",
    );
    out.emit(
        &format!("{prefix}p99"),
        percentile_us(sorted_ns, 99.0),
        "µs",
    );
}

/// Mean ns of a cheap operation, repeated until `budget` has passed (at least
/// `min_iters` times): W10's count.
pub fn ns_per_call<T>(min_iters: usize, budget: Duration, mut f: impl FnMut() -> T) -> f64 {
    let start = Instant::now();
    let mut iters = 0usize;
    loop {
        for _ in 0..min_iters.max(1) {
            black_box(f());
        }
        iters += min_iters.max(1);
        if start.elapsed() >= budget {
            break;
        }
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// Median ms of `reps` runs of a bulk operation (W10's reduce / to_list).
pub fn ms_median<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64() * 1_000.0
        })
        .collect();
    median(&mut v)
}

/// Waits (on a plain thread, never inside an executor) until `done()` or the
/// deadline; returns whether `done()` became true.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// How a child reports: one JSON object per line on stdout
/// (`{"system","metric","value","unit"}`, `value` null = absent;
/// `{"system","note"}` for a remark), progress on stderr.
pub struct Out {
    pub system: &'static str,
    started: Instant,
}

impl Out {
    pub fn new(system: &'static str) -> Out {
        Out {
            system,
            started: Instant::now(),
        }
    }

    fn line(&self, v: serde_json::Value) {
        let mut stdout = std::io::stdout().lock();
        // A parent that went away is no reason to panic mid-measurement.
        let _ = writeln!(stdout, "{v}");
        let _ = stdout.flush();
    }

    /// One measured value.
    pub fn emit(&self, metric: &str, value: f64, unit: &str) {
        eprintln!(
            "  [{:>6.1}s] {:<24} {:<8} = {} {}",
            self.started.elapsed().as_secs_f64(),
            self.system,
            metric,
            crate::fmt_value(value),
            unit
        );
        self.line(serde_json::json!({
            "system": self.system, "metric": metric, "value": value, "unit": unit,
        }));
    }

    /// The system has no such operation (printed as "—").
    pub fn absent(&self, metric: &str, unit: &str) {
        self.line(serde_json::json!({
            "system": self.system, "metric": metric, "value": null, "unit": unit,
        }));
    }

    /// A remark printed under the table (reduced sizes, errors seen).
    pub fn note(&self, note: &str) {
        eprintln!("  [{}] note: {note}", self.system);
        self.line(serde_json::json!({ "system": self.system, "note": note }));
    }

    /// Progress on stderr only.
    pub fn progress(&self, what: &str) {
        eprintln!(
            "  [{:>6.1}s] {:<24} {what}",
            self.started.elapsed().as_secs_f64(),
            self.system
        );
    }
}

/// The W9 pool split into `CHURN_DRIVERS` disjoint halves, and how many
/// cycles each driver runs in each of the two phases (before the RSS mark at
/// 10 % of the cycles, and after it).
pub fn churn_plan(cycles: usize, pool: usize) -> (Vec<Vec<u64>>, usize, usize) {
    let ids: Vec<u64> = (0..pool as u64).map(|i| POOL_BASE + i).collect();
    let per = pool.div_ceil(CHURN_DRIVERS);
    let halves = ids.chunks(per).map(<[u64]>::to_vec).collect();
    let per_driver = cycles / CHURN_DRIVERS;
    let phase1 = per_driver / 10;
    (halves, phase1, per_driver - phase1)
}

/// What one churn phase of one driver did.
#[derive(Default, Debug, Clone, Copy)]
pub struct ChurnStats {
    pub cycles: u64,
    pub errors: u64,
}

impl ChurnStats {
    pub fn add(self, o: ChurnStats) -> ChurnStats {
        ChurnStats {
            cycles: self.cycles + o.cycles,
            errors: self.errors + o.errors,
        }
    }
}

/// Emits W9, W9rss and W9leak from the two phases' measurements.
pub fn emit_churn(
    out: &Out,
    total_cycles: u64,
    elapsed: Duration,
    rss_mark: u64,
    rss_end: u64,
    cycles_after_mark: u64,
) {
    out.emit(
        "W9",
        total_cycles as f64 / elapsed.as_secs_f64(),
        "cycles/s",
    );
    let growth = rss_end as f64 - rss_mark as f64;
    out.emit("W9rss", growth / 1024.0, "KiB");
    out.emit(
        "W9leak",
        growth / cycles_after_mark.max(1) as f64,
        "B/cycle",
    );
}
