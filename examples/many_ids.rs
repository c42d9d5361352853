//! A worker per phone number over far more numbers than fit in memory: a
//! registry with an idle timeout and a capacity limit, driven by a skewed
//! stream of calls by id (a few numbers are called often, most seldom),
//! whose popular numbers change halfway through. Workers load their count
//! from a store in `init` and save it in `terminate`, so a number's count
//! survives its worker being evicted or idling out.
//!
//! At the end it prints the calls made, the workers started, evicted and
//! idled out, the hit ratio (the share of calls that found their worker
//! running), and checks that every worker ran its `terminate` and that no
//! call was lost.
//!
//! The stream of numbers is the same on every run; the figures vary a little
//! with how the threads interleave.
//!
//! Run it with `cargo run --example many_ids`. The guide's chapter "Many
//! ids: timers, idle workers, capacity" explains each option.
//!
//! It runs on mimalloc, as a service that passivates should: mimalloc gives
//! the memory of ended workers back to the system by itself, where glibc's
//! allocator keeps it until `malloc_trim` (the chapter's "Which allocator
//! gives the memory back" has the figures).

use gen_registry::{Context, Event, ExitReason, GenRegistry, Options, Worker};

/// Memory freed by workers that ended goes back to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Phone numbers that may be called.
const NUMBERS: u64 = 100_000;
/// Workers the registry may hold at once: 1 % of the numbers.
const CAPACITY: usize = 1_000;
/// A worker without a call for this long ends.
const IDLE: Duration = Duration::from_millis(200);
/// Calls placed, in all.
const CALLS: u64 = 120_000;
/// Threads placing calls at once.
const CALLERS: u64 = 4;
/// The skew of the stream: rank r is called with probability ∝ 1/(r+1)^S.
const S: f64 = 1.0;

/// Where each number's count is kept while it has no worker: a database, in
/// a real service.
type Store = Arc<Mutex<HashMap<u64, u64>>>;

/// What the workers and the observer count.
#[derive(Default)]
struct Stats {
    started: AtomicU64,
    evicted: AtomicU64,
    idled_out: AtomicU64,
    other_ends: AtomicU64,
    terminated: AtomicU64,
}

/// What `init` receives: the store and the statistics.
#[derive(Clone)]
struct Shared {
    store: Store,
    stats: Arc<Stats>,
}

/// The worker of one phone number: counts the calls placed to it.
struct Line {
    number: u64,
    calls: u64,
    shared: Shared,
}

impl Worker for Line {
    type Id = u64; // the phone number
    type Args = Shared;
    type Request = (); // "a call to this number"
    type Reply = u64; // the calls placed to it so far
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(number: &u64, shared: Shared, _: &Context<Self>) -> Result<Self, Self::Error> {
        let calls = shared
            .store
            .lock()
            .unwrap()
            .get(number)
            .copied()
            .unwrap_or(0);
        Ok(Line {
            number: *number,
            calls,
            shared,
        })
    }

    async fn handle_call(&mut self, _: (), _: &mut Context<Self>) -> u64 {
        self.calls += 1;
        self.calls
    }

    /// Runs however the worker ends (evicted, idle, shutdown): the count is
    /// saved for the number's next worker.
    async fn terminate(&mut self, _: &ExitReason, _: &mut Context<Self>) {
        let mut store = self.shared.store.lock().unwrap();
        store.insert(self.number, self.calls);
        self.shared.stats.terminated.fetch_add(1, Ordering::Relaxed);
    }
}

/// A small seeded random number generator (splitmix64): the same stream on
/// every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws ranks with a Zipf-like skew: rank 0 most often, then 1, and so on.
struct Zipf {
    /// The cumulative probability of each rank.
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(ranks: u64, s: f64) -> Zipf {
        let weights: Vec<f64> = (0..ranks).map(|r| 1.0 / ((r + 1) as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                sum += w / total;
                sum
            })
            .collect();
        Zipf { cdf }
    }

    /// The probability of the `n` most popular ranks together.
    fn share_of_top(&self, n: usize) -> f64 {
        self.cdf[n.clamp(1, self.cdf.len()) - 1]
    }

    fn draw(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let rank = self.cdf.partition_point(|&p| p < u);
        rank.min(self.cdf.len() - 1) as u64
    }
}

/// The phone number of a rank. The popular numbers are spread over the
/// whole range, and change at `shift` (the evening's are not the morning's).
fn number_of(rank: u64, shift: u64) -> u64 {
    // 7919 is prime and does not divide NUMBERS: every rank has its own number.
    let index = (rank * 7_919 + shift) % NUMBERS;
    15_550_000_000 + index
}

fn main() {
    let stats = Arc::new(Stats::default());
    let counted = stats.clone();
    let options = Options::default()
        .idle_timeout(IDLE)
        .max_workers(CAPACITY)
        .observe(move |event: &Event<'_, Line>| match event {
            Event::Started { .. } => {
                counted.started.fetch_add(1, Ordering::Relaxed);
            }
            Event::Stopped { reason, .. } => {
                let counter = match reason {
                    ExitReason::Evicted => &counted.evicted,
                    ExitReason::Idle => &counted.idled_out,
                    _ => &counted.other_ends,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        });
    let lines = GenRegistry::<Line>::new(options).expect("valid options");
    let shared = Shared {
        store: Store::default(),
        stats: stats.clone(),
    };
    let zipf = Arc::new(Zipf::new(NUMBERS, S));
    let placed = Arc::new(AtomicU64::new(0));
    // Failed calls, by error: a service would shed or retry them.
    let failed = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));

    println!(
        "{NUMBERS} numbers, at most {CAPACITY} workers, idle timeout {IDLE:?}; \
         {CALLS} calls from {CALLERS} threads, Zipf s = {S}; the popular numbers change halfway"
    );
    let began = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (lines, shared, zipf) = (lines.clone(), shared.clone(), zipf.clone());
            let (placed, failed) = (placed.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(caller + 1);
                futures::executor::block_on(async {
                    for i in 0..CALLS / CALLERS {
                        let shift = if i < CALLS / CALLERS / 2 {
                            0
                        } else {
                            NUMBERS / 2
                        };
                        let number = number_of(zipf.draw(&mut rng), shift);
                        // The call by id: starts the number's worker if none runs.
                        if let Err(e) = lines.call(number, shared.clone(), ()).await {
                            *failed.lock().unwrap().entry(e.to_string()).or_default() += 1;
                        }
                        placed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            })
        })
        .collect();

    let report = |label: &str| {
        println!(
            "{label:>9} {:>7} calls, {:>5} workers running; started {:>6}, evicted {:>6}, idled out {:>6}",
            placed.load(Ordering::Relaxed),
            lines.count(),
            stats.started.load(Ordering::Relaxed),
            stats.evicted.load(Ordering::Relaxed),
            stats.idled_out.load(Ordering::Relaxed),
        );
    };
    while callers.iter().any(|caller| !caller.is_finished()) {
        std::thread::sleep(Duration::from_millis(250));
        report(&format!("{:.2?}", began.elapsed()));
    }
    for caller in callers {
        caller.join().expect("a caller panicked");
    }
    let calling = began.elapsed();
    let started_while_calling = stats.started.load(Ordering::Relaxed);

    // Nobody calls any more: every worker idles out, saving its count.
    println!("the calls are over; waiting for the workers to idle out");
    let deadline = Instant::now() + IDLE * 10 + Duration::from_secs(10);
    while lines.count() > 0 {
        assert!(
            Instant::now() < deadline,
            "workers outlived their idle timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    report(&format!("{:.2?}", began.elapsed()));
    futures::executor::block_on(lines.shutdown());

    let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let failed = failed.lock().unwrap();
    let calls = n(&placed) - failed.values().sum::<u64>();
    // Every start was a call that found no worker running: a miss.
    let hits = n(&placed) - started_while_calling;
    let (saved, busiest) = {
        let store = shared.store.lock().unwrap();
        let busiest = store
            .iter()
            .max_by_key(|&(_, calls)| calls)
            .map(|(&n, &c)| (n, c));
        (store.values().sum::<u64>(), busiest)
    };
    println!();
    println!(
        "calls:             {calls} answered in {calling:.2?}, {} failed",
        n(&placed) - calls
    );
    println!("workers started:   {started_while_calling}");
    println!("evicted:           {}", n(&stats.evicted));
    println!("idled out:         {}", n(&stats.idled_out));
    println!("other ends:        {}", n(&stats.other_ends));
    println!(
        "hit ratio:         {:.1} % of the calls found their worker running",
        100.0 * hits as f64 / n(&placed) as f64
    );
    // The bound no policy can pass: the most popular numbers always resident.
    println!(
        "                   (at most {:.1} %: the share of calls to the {CAPACITY} most popular numbers)",
        100.0 * zipf.share_of_top(CAPACITY)
    );
    println!(
        "terminate ran:     {} times for {} workers",
        n(&stats.terminated),
        n(&stats.started)
    );
    println!("calls stored:      {saved}");
    for (error, count) in failed.iter() {
        println!("failed {count} time(s): {error}");
    }
    if let Some((number, calls)) = busiest {
        println!("busiest number:    +{number}, {calls} calls, counted across its workers");
    }
    assert_eq!(
        n(&stats.terminated),
        n(&stats.started),
        "a terminate did not run"
    );
    assert_eq!(saved, calls, "a call was lost: a count was not saved");
}
