//! W14, the persisted call: a worker handles a call, changes its `Stored`
//! state, awaits the write (durable when it returns) and replies. Run side
//! by side on SQLite (a file in a temporary directory) and on PostgreSQL (a
//! server this bench starts), with 1, 64 and 1,024 workers called
//! concurrently, against
//! - (a) a commit per call: the same registry with the group commit capped
//!   at one write per transaction;
//! - (b) the floor: a hand-written batched writer on the same database, no
//!   registry (a channel, and a loop that puts whatever is queued into one
//!   transaction).
//!
//! Then "load on start": 100,000 passivated ids (records already written)
//! called once each, on both stores.
//!
//! ```sh
//! cargo bench -p gen_registry_postgres --bench persisted
//! ```
//!
//! Each figure is the median of `GEN_REGISTRY_BENCH_RUNS` runs (default 3)
//! of `GEN_REGISTRY_BENCH_SECS` seconds each (default 2, after a 0.5 s
//! warm-up); `GEN_REGISTRY_BENCH_IDS` sets the ids of "load on start".

use futures::channel::{mpsc, oneshot};
use futures::future::{BoxFuture, join_all};
use futures::{FutureExt, StreamExt};
use gen_registry::state::{Sqlite, StateError, Store, Stored};
use gen_registry::{Context, Executor, GenRegistry, Options, Worker};
use gen_registry_postgres::testing::Server;
use gen_registry_postgres::{Postgres, Settings};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A counter whose every bump is durable before the reply.
struct Counter {
    n: Stored<u64>,
}

enum Req {
    Bump,
    Get,
}

impl Worker for Counter {
    type Id = u64;
    type Args = Store;
    type Request = Req;
    type Reply = Result<u64, StateError>;
    type Message = ();
    type Error = StateError;

    async fn init(id: &u64, store: Store, _: &Context<Self>) -> Result<Self, StateError> {
        Ok(Counter {
            n: Stored::load(&store, "counter", id).await?,
        })
    }

    async fn handle_call(&mut self, req: Req, _: &mut Context<Self>) -> Self::Reply {
        if let Req::Bump = req {
            *self.n += 1;
            self.n.write().await?;
        }
        Ok(*self.n)
    }
}

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The registry's options: calls may wait long behind a commit per call
/// at 1,024 workers.
fn options() -> Options<Counter> {
    Options::default()
        .executor(Executor::Bastion)
        .call_timeout(Duration::from_secs(120))
        .start_timeout(Duration::from_secs(120))
}

/// One call of a caller (its index): what the callers of a run repeat.
type Op = Arc<dyn Fn(usize) -> BoxFuture<'static, ()> + Send + Sync>;

/// One run's figures.
#[derive(Clone, Copy)]
struct Sample {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The machine's 1-, 5- and 15-minute load averages (it may be shared).
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn medians(samples: &[Sample]) -> Sample {
    Sample {
        per_sec: median(samples.iter().map(|s| s.per_sec).collect()),
        p50_ms: median(samples.iter().map(|s| s.p50_ms).collect()),
        p99_ms: median(samples.iter().map(|s| s.p99_ms).collect()),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

/// `callers` tasks on Bastion's executor, each running `op(caller)` in a
/// loop: after a 0.5 s warm-up, the calls of the next `secs` seconds are
/// counted and timed.
fn measure(callers: usize, secs: f64, op: Op) -> Sample {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (op, measuring, stop) =
                (Arc::clone(&op), Arc::clone(&measuring), Arc::clone(&stop));
            bastion::executor::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    op(caller).await;
                    if measuring.load(Ordering::Relaxed) {
                        latencies.push(began.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    measuring.store(true, Ordering::Relaxed);
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = futures::executor::block_on(join_all(tasks))
        .into_iter()
        .flat_map(|l| l.expect("a caller"))
        .collect();
    all.sort_unstable();
    Sample {
        per_sec: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    }
}

/// The calls of one run: counters of fresh ids from `first_id`, each bumped
/// by a caller of its own, through the `stores` in turn.
fn registry_calls(stores: &[Store], first_id: u64) -> (GenRegistry<Counter>, Op) {
    let registry = GenRegistry::<Counter>::new(options()).expect("a registry");
    let (r, stores) = (registry.clone(), stores.to_vec());
    let op = Arc::new(move |caller: usize| {
        let (r, store) = (r.clone(), stores[caller % stores.len()].clone());
        async move {
            r.call(first_id + caller as u64, store, Req::Bump)
                .await
                .expect("the call")
                .expect("the write");
        }
        .boxed()
    });
    (registry, op)
}

/// A write the floor's writer commits: a key and its new value, answered
/// once the transaction holding it committed.
type FloorWrite = (Vec<u8>, i64, oneshot::Sender<()>);

/// Takes whatever is queued (up to 1,024 writes) after the first.
fn drain(first: FloorWrite, queue: &mut mpsc::UnboundedReceiver<FloorWrite>) -> Vec<FloorWrite> {
    let mut batch = vec![first];
    while batch.len() < 1024 {
        match queue.try_recv() {
            Ok(write) => batch.push(write),
            _ => break,
        }
    }
    batch
}

/// The floor on PostgreSQL: one connection, on a tokio runtime.
fn pg_floor(url: String, runtime: &tokio::runtime::Runtime) -> mpsc::UnboundedSender<FloorWrite> {
    let (sender, mut queue) = mpsc::unbounded::<FloorWrite>();
    runtime.spawn(async move {
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("a connection");
        tokio::spawn(connection);
        let upsert = client
            .prepare(
                "INSERT INTO gen_registry_state (kind, id, version, epoch, state)
                 SELECT 'floor', id, v, 0, NULL FROM unnest($1::bytea[], $2::int8[]) AS k(id, v)
                 ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version",
            )
            .await
            .expect("the statement");
        while let Some(first) = queue.next().await {
            let batch = drain(first, &mut queue);
            let ids: Vec<&[u8]> = batch.iter().map(|w| w.0.as_slice()).collect();
            let values: Vec<i64> = batch.iter().map(|w| w.1).collect();
            let transaction = client.transaction().await.expect("BEGIN");
            transaction
                .execute(&upsert, &[&ids, &values])
                .await
                .expect("the upsert");
            transaction.commit().await.expect("COMMIT");
            for (_, _, answer) in batch {
                let _ = answer.send(());
            }
        }
    });
    sender
}

/// The floor on SQLite: one connection (WAL, synchronous=FULL, as the
/// store's), on a thread of its own.
fn sqlite_floor(path: std::path::PathBuf) -> mpsc::UnboundedSender<FloorWrite> {
    let (sender, mut queue) = mpsc::unbounded::<FloorWrite>();
    std::thread::spawn(move || {
        let mut connection = rusqlite::Connection::open(path).expect("the file");
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .unwrap();
        connection
            .pragma_update(None, "synchronous", "FULL")
            .unwrap();
        connection.busy_timeout(Duration::from_secs(5)).unwrap();
        while let Some(first) = futures::executor::block_on(queue.next()) {
            let batch = drain(first, &mut queue);
            let transaction = connection.transaction().expect("BEGIN");
            {
                let mut upsert = transaction
                    .prepare_cached(
                        "INSERT INTO gen_registry_state (kind, id, version, epoch, state)
                         VALUES ('floor', ?1, ?2, 0, NULL)
                         ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version",
                    )
                    .unwrap();
                for (id, value, _) in &batch {
                    upsert
                        .execute(rusqlite::params![id, value])
                        .expect("the upsert");
                }
            }
            transaction.commit().expect("COMMIT");
            for (_, _, answer) in batch {
                let _ = answer.send(());
            }
        }
    });
    sender
}

fn floor_calls(floor: mpsc::UnboundedSender<FloorWrite>) -> Op {
    let counts = Arc::new(parking_lot::Mutex::new(std::collections::HashMap::<
        usize,
        i64,
    >::new()));
    Arc::new(move |caller: usize| {
        let value = {
            let mut counts = counts.lock();
            let n = counts.entry(caller).or_default();
            *n += 1;
            *n
        };
        let (answer, answered) = oneshot::channel();
        floor
            .unbounded_send(((caller as u64).to_be_bytes().to_vec(), value, answer))
            .expect("the writer");
        async move { answered.await.expect("the commit") }.boxed()
    })
}

struct Database {
    name: &'static str,
    /// The group commit as it is.
    store: Store,
    /// Another store on the same database, one write per transaction.
    single: Store,
    /// Two more stores over the same backend.
    pair: [Store; 2],
    floor: mpsc::UnboundedSender<FloorWrite>,
}

fn main() {
    let secs = env("GEN_REGISTRY_BENCH_SECS", 2.0);
    let runs = env("GEN_REGISTRY_BENCH_RUNS", 3.0) as usize;
    let ids = env("GEN_REGISTRY_BENCH_IDS", 100_000.0) as u64;
    let server = Server::start().expect("a PostgreSQL server");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sqlite_path = dir.path().join("state.db");
    let sqlite = Sqlite::open(&sqlite_path, Executor::Bastion).expect("the SQLite file");
    let postgres = Postgres::with_settings(&server.url(), Settings::default()).expect("the store");
    futures::executor::block_on(postgres.connect()).expect("the server");
    let databases = [
        Database {
            name: "SQLite",
            store: Store::new(sqlite.clone(), Executor::Bastion),
            single: Store::new(sqlite.clone(), Executor::Bastion).with_max_batch(1),
            pair: [(); 2].map(|()| Store::new(sqlite.clone(), Executor::Bastion)),
            floor: sqlite_floor(sqlite_path.clone()),
        },
        Database {
            name: "PostgreSQL",
            store: Store::new(postgres.clone(), Executor::Bastion),
            single: Store::new(postgres.clone(), Executor::Bastion).with_max_batch(1),
            pair: [(); 2].map(|()| Store::new(postgres.clone(), Executor::Bastion)),
            floor: pg_floor(server.url(), &runtime),
        },
    ];
    println!("load average at the start: {}", load_average());
    println!(
        "W14, the persisted call: {runs} runs of {secs} s each, medians; calls/s, p50 and p99 in ms\n"
    );
    println!(
        "| store | workers | group commit | (a) commit per call | (b) batched writer | vs (a) | vs (b) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut next_id = 1_000_000u64;
    for db in &databases {
        for workers in [1usize, 64, 1024] {
            let (mut group, mut single, mut floor) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                for (store, out) in [(&db.store, &mut group), (&db.single, &mut single)] {
                    let (registry, op) = registry_calls(std::slice::from_ref(store), next_id);
                    next_id += workers as u64;
                    out.push(measure(workers, secs, op));
                    futures::executor::block_on(registry.shutdown());
                }
                floor.push(measure(workers, secs, floor_calls(db.floor.clone())));
            }
            let (g, a, b) = (medians(&group), medians(&single), medians(&floor));
            let cell =
                |s: Sample| format!("{:.0} /s, {:.2} / {:.2}", s.per_sec, s.p50_ms, s.p99_ms);
            println!(
                "| {} | {workers} | {} | {} | {} | {:.1}x | {:.2}x |",
                db.name,
                cell(g),
                cell(a),
                cell(b),
                g.per_sec / a.per_sec,
                g.per_sec / b.per_sec
            );
        }
    }
    // Two stores over one PostgreSQL backend (two connections): two
    // batches can commit at once, where one store commits one at a time.
    println!(
        "\nTwo stores sharing one PostgreSQL backend (2 connections), calls split between them\n"
    );
    println!("| workers | one store | two stores | ratio |");
    println!("|---:|---:|---:|---:|");
    let postgres = &databases[1];
    for workers in [64usize, 1024] {
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            for (stores, out) in [
                (vec![postgres.store.clone()], &mut one),
                (postgres.pair.to_vec(), &mut two),
            ] {
                let (registry, op) = registry_calls(&stores, next_id);
                next_id += workers as u64;
                out.push(measure(workers, secs, op));
                futures::executor::block_on(registry.shutdown());
            }
        }
        let (one, two) = (medians(&one), medians(&two));
        println!(
            "| {workers} | {:.0} /s | {:.0} /s | {:.2}x |",
            one.per_sec,
            two.per_sec,
            two.per_sec / one.per_sec
        );
    }
    println!(
        "\nLoad on start: {ids} passivated ids (records written), each called once by 1,024 callers; medians of {runs} runs\n"
    );
    println!("| store | ids/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for db in &databases {
        // The records, written through the store (group commit).
        let writers: Vec<_> = (0..1024u64)
            .map(|w| {
                let store = db.store.clone();
                bastion::executor::spawn(async move {
                    let mut id = w;
                    while id < ids {
                        let mut n = Stored::<u64>::load(&store, "counter", &(id + 10_000_000_000))
                            .await
                            .unwrap();
                        *n = id;
                        n.write().await.unwrap();
                        id += 1024;
                    }
                })
            })
            .collect();
        futures::executor::block_on(join_all(writers));
        let mut samples = Vec::new();
        for _ in 0..runs {
            let registry = GenRegistry::<Counter>::new(options()).expect("a registry");
            let began = Instant::now();
            let callers: Vec<_> = (0..1024u64)
                .map(|c| {
                    let (registry, store) = (registry.clone(), db.store.clone());
                    bastion::executor::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut id = c;
                        while id < ids {
                            let t = Instant::now();
                            let n = registry
                                .call(id + 10_000_000_000, store.clone(), Req::Get)
                                .await
                                .unwrap()
                                .unwrap();
                            assert_eq!(n, id, "the record written before");
                            latencies.push(t.elapsed());
                            id += 1024;
                        }
                        latencies
                    })
                })
                .collect();
            let mut all: Vec<Duration> = futures::executor::block_on(join_all(callers))
                .into_iter()
                .flat_map(|l| l.expect("a caller"))
                .collect();
            let elapsed = began.elapsed().as_secs_f64();
            all.sort_unstable();
            samples.push(Sample {
                per_sec: all.len() as f64 / elapsed,
                p50_ms: percentile(&all, 0.5),
                p99_ms: percentile(&all, 0.99),
            });
            futures::executor::block_on(registry.shutdown());
        }
        let m = medians(&samples);
        println!(
            "| {} | {:.0} | {:.2} | {:.2} |",
            db.name, m.per_sec, m.p50_ms, m.p99_ms
        );
    }
    println!("\nload average at the end: {}", load_average());
}
