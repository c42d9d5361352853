//! W15, durable reminders: 1,000,000 reminders scheduled in a store (the
//! in-memory one, and a SQLite file), then fired by the reminders service
//! as calls by id to 10,000 workers. Prints, per store, the medians of
//! `GEN_REGISTRY_BENCH_RUNS` runs (3 by default):
//!
//! - **scheduled/s**: reminders written through `Backend::remind`, 10,000 a
//!   transaction (a bulk load), and through `Reminders::set` from 64 tasks
//!   at once (a sample of 2,000 on SQLite), whose sets share transactions,
//!   beside the same with each set committed alone (`with_max_batch(1)`);
//! - **burst**: every reminder due at once, fired per second (scan period
//!   10 ms), until the store holds none;
//! - **paced**: 100,000 of them due at 20,000 a second (from after they
//!   were written) while the rest are set for the next day; the lateness of each delivery (handled minus
//!   due, on the wall clock, whose due times are whole milliseconds), p50
//!   and p99, scan period 10 ms.
//!
//! `cargo bench --bench reminders --features sqlite`; the count with
//! `GEN_REGISTRY_BENCH_REMINDERS` (1,000,000).

use futures::executor::block_on as block;
use futures::future::join_all;
use gen_registry::state::{
    Backend, Memory, Reminded, Reminder, ReminderWrite, Reminders, Sqlite, Store, When,
};
use gen_registry::{Context, Executor, GenRegistry, Options, Worker};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WORKERS: u64 = 10_000;
const BATCH: usize = 10_000;
const SCAN: Duration = Duration::from_millis(10);
const PACED: u64 = 100_000;
const PACED_RATE: u64 = 20_000;

/// A worker that notes how late each reminder it handles is.
struct Sink {
    lateness: Arc<Mutex<Vec<f64>>>,
}

impl Worker for Sink {
    type Id = u64;
    type Args = Arc<Mutex<Vec<f64>>>;
    type Request = Reminded<()>;
    type Reply = ();
    type Message = ();
    type Error = std::convert::Infallible;

    async fn init(_: &u64, lateness: Self::Args, _: &Context<Self>) -> Result<Self, Self::Error> {
        Ok(Sink { lateness })
    }

    async fn handle_call(&mut self, reminded: Reminded<()>, _: &mut Context<Self>) {
        let late = SystemTime::now()
            .duration_since(reminded.due)
            .unwrap_or_default();
        self.lateness.lock().unwrap().push(late.as_secs_f64() * 1e3);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Reminder `i`: for worker `i % WORKERS`, named `i`, due at `due_ms`.
fn reminder(i: u64, due_ms: u64) -> Reminder {
    Reminder {
        key: gen_registry::state::Key {
            kind: "sink",
            id: postcard::to_allocvec(&(i % WORKERS)).unwrap(),
        },
        name: i.to_string(),
        partition: 0,
        due_ms,
        period_ms: None,
        message: postcard::to_allocvec(&()).unwrap(),
        epoch: 0,
    }
}

/// Writes `count` reminders, `due(i)` each, 10,000 a transaction; the
/// reminders written per second.
fn schedule(backend: &dyn Backend, count: u64, due: impl Fn(u64) -> u64) -> f64 {
    let began = Instant::now();
    let mut i = 0;
    while i < count {
        let end = (i + BATCH as u64).min(count);
        let writes = (i..end)
            .map(|i| ReminderWrite::Set(reminder(i, due(i))))
            .collect();
        let outcomes = block(backend.remind(writes)).expect("a batch of reminders");
        assert!(outcomes.iter().all(|o| *o == Ok(true)));
        i = end;
    }
    count as f64 / began.elapsed().as_secs_f64()
}

/// Reminders set through `Reminders::set` per second: `count` of them, from
/// 64 tasks at once (sets arriving together share transactions).
fn set_by_64(store: &Store, count: u64) -> f64 {
    let reminders = Reminders::<Sink, ()>::new(store, "sink_set");
    let began = Instant::now();
    block(join_all((0..64).map(|task| {
        let reminders = reminders.clone();
        async move {
            for i in (task..count).step_by(64) {
                let later = When::After(Duration::from_secs(86_400));
                reminders.set(&i, "r", later, &()).await.unwrap();
            }
        }
    })));
    count as f64 / began.elapsed().as_secs_f64()
}

/// Serves the store's reminders until `expected` were handled; the time
/// from `from` to the last delivery, and each delivery's lateness in ms.
fn fire(store: &Store, expected: usize, from: Instant) -> (Duration, Vec<f64>) {
    let lateness = Arc::new(Mutex::new(Vec::with_capacity(expected)));
    let sinks = GenRegistry::<Sink>::new(Options::default().executor(Executor::Bastion)).unwrap();
    let reminders = Reminders::<Sink, ()>::new(store, "sink");
    let args = lateness.clone();
    let service = reminders.serve(&sinks, move |_| args.clone(), SCAN);
    let deadline = Instant::now() + Duration::from_secs(600);
    while lateness.lock().unwrap().len() < expected {
        assert!(Instant::now() < deadline, "not fired within 600 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = from.elapsed();
    let counts = block(service.stop());
    assert_eq!(counts.retried, 0);
    block(sinks.shutdown());
    let lateness = lateness.lock().unwrap().clone();
    (took, lateness)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// One store's figures: a fresh store per run from `open`.
fn bench(name: &str, count: u64, runs: usize, open: &dyn Fn() -> (Arc<dyn Backend>, Store)) {
    let (mut bulk, mut by_64, mut alone, mut burst, mut p50, mut p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        // Burst: every reminder due already.
        let (backend, store) = open();
        let past = now_ms() - 1;
        bulk.push(schedule(&*backend, count, |_| past));
        let sample = if name == "sqlite" { 2_000 } else { 100_000 };
        by_64.push(set_by_64(&store, sample));
        // The same with each set committed alone: the baseline.
        alone.push(set_by_64(&open().1.with_max_batch(1), sample));
        let (took, _) = fire(&store, count as usize, Instant::now());
        burst.push(count as f64 / took.as_secs_f64());

        // Paced: PACED due over the next seconds, the rest tomorrow.
        // The first is due once they are all written: 1 s after twice the
        // time writing them took in the bulk load.
        let (backend, store) = open();
        let tomorrow = now_ms() + 86_400_000;
        let rate = schedule(&*backend, count, |i| {
            if i < PACED { tomorrow + 1 } else { tomorrow }
        });
        let start = now_ms() + 1_000 + (2e3 * PACED as f64 / rate) as u64;
        schedule(&*backend, PACED, |i| start + i * 1_000 / PACED_RATE);
        let (_, mut lateness) = fire(&store, PACED as usize, Instant::now());
        lateness.sort_by(f64::total_cmp);
        p50.push(percentile(&lateness, 0.50));
        p99.push(percentile(&lateness, 0.99));
    }
    println!(
        "{name:>6}: scheduled {:>9.0}/s in batches, set by 64 callers {:>7.0}/s ({:>7.0}/s committed alone) | burst {:>7.0} fired/s | paced {PACED_RATE}/s: lateness p50 {:.1} ms, p99 {:.1} ms",
        median(bulk),
        median(by_64),
        median(alone),
        median(burst),
        median(p50),
        median(p99)
    );
}

fn size(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let count = size("GEN_REGISTRY_BENCH_REMINDERS", 1_000_000).max(PACED);
    let runs = size("GEN_REGISTRY_BENCH_RUNS", 3).max(1) as usize;
    println!(
        "W15: {count} reminders for {WORKERS} workers, scan every {SCAN:?}, median of {runs} runs"
    );
    bench("memory", count, runs, &|| {
        let memory = Memory::new();
        let store = Store::new(memory.clone(), Executor::Bastion);
        (Arc::new(memory), store)
    });
    let dir = std::env::temp_dir().join(format!("gen_registry_w15_{}", std::process::id()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    bench("sqlite", count, runs, &|| {
        // The previous run's file goes (its space is freed once closed).
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sqlite = Sqlite::open(dir.join(format!("w15_{n}.db")), Executor::Bastion).unwrap();
        let store = Store::new(sqlite.clone(), Executor::Bastion);
        (Arc::new(sqlite), store)
    });
    let _ = std::fs::remove_dir_all(&dir);
}
