//! The scale tier (`--scale`): the figures at millions of ids.
//!
//! Each system runs once per size N (100,000, 1,000,000 and 10,000,000;
//! 20,000 and 200,000 with `--quick`) in a child process of its own, which
//! runs, in order:
//!
//! | id | what | unit |
//! |---|---|---|
//! | `W1` | N fresh starts (2 drivers × join_all of 16, as in the standard tier) | starts/s |
//! | `W2` | (RSS after W1 − RSS before) ÷ N | B/worker |
//! | `threads` | threads of the process after W1 (Bastion's pool grows under load) | threads |
//! | `W3` | lookup hit on 1 thread over (up to 1,000,000 of) the shuffled ids | ns/op |
//! | `W7` | lookup, then call, a different id each time (100,000 ids) | µs/op |
//! | `Wcall` | call by id (`registry.call(id, args, msg)`), 100,000 other ids | µs/op |
//! | `W10count`, `W10reduce`, `W10list` | count; reduce and to_list over N | ns; ms; ms |
//! | `W8` | stop every id, each awaited | stops/s |
//! | `Wshutdown` | N workers started again, then the whole registry shut down | s |
//! | `peakMiB` | the process's peak RSS (VmHWM) | MiB |
//!
//! The floors are measured at each N in the same run: `floor_probe_msg` (on
//! Bastion's executor) and `floor_probe_msg_tokio` (tokio tasks) keep N bare
//! procs, each with an mpsc mailbox, in a papaya map with the registry's key
//! type (u64), hasher (fxhash) and reclamation batch. Their `W3` is the
//! table probe alone, their `W7` a probe plus a message to a cold proc and
//! its reply, their `W1` a bare spawn plus the insert.
//!
//! Caps: a child stops its bulk phases at a deadline (reported as "timed out
//! after k of N") and its starts when its RSS passes [`MEMORY_BUDGET`]
//! (reported as such, and the rest of its figures are taken on the workers it
//! has); the parent kills a child that outlives its limit.

use crate::bastion_rt::Procs;
use crate::common::*;
use crate::drivers::Tasks;
use crate::sys_gen_registry::Pinger;
use crate::tokio_rt::{self, Peer};
use crate::{Kind, Metric, Results, fmt_value, m};
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use gen_registry::{Executor, GenRegistry, Options};
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The sizes of a full scale run.
pub const SIZES: &[usize] = &[100_000, 1_000_000, 10_000_000];
const QUICK_SIZES: &[usize] = &[20_000, 200_000];

/// The systems of the scale tier, in column order, each with the largest N
/// it runs at: ractor and kameo take about 7 KB per actor and the BEAM about
/// 3.4 KB per process, so 10,000,000 of them would not fit the memory
/// budget.
pub const SYSTEMS: &[(&str, usize)] = &[
    ("gen_registry", 10_000_000),
    ("gen_registry_tokio", 10_000_000),
    ("floor_probe_msg", 10_000_000),
    ("floor_probe_msg_tokio", 10_000_000),
    ("ractor", 1_000_000),
    ("kameo", 1_000_000),
    ("elixir_registry", 1_000_000),
];

/// Round trips of W7 and of Wcall (each on its own ids).
const M: usize = 100_000;
/// The most ids W3 cycles through (a pass over 10,000,000 would take
/// seconds; a million shuffled ids are as cold).
const W3_IDS: usize = 1_000_000;
/// A child stops starting workers past this RSS: 7.5 GiB, under the 8 GiB
/// the machine's other users leave to one run.
pub const MEMORY_BUDGET: u64 = 15 << 29;

pub const METRICS: &[Metric] = &[
    m("N", "N", "ids", Kind::Info),
    m("W1", "W1 start ↑", "starts/s", Kind::Higher),
    m("W2", "W2 memory per idle worker ↓", "B/worker", Kind::Lower),
    m("threads", "threads after W1", "threads", Kind::Info),
    m("W3", "W3 lookup hit ↓ (floor: probe)", "ns/op", Kind::Lower),
    m(
        "W7",
        "W7 lookup + call ↓ (floor: probe + message)",
        "µs/op",
        Kind::Lower,
    ),
    m("Wcall", "call by id ↓", "µs/op", Kind::Lower),
    m("W10count", "W10 count ↓", "ns", Kind::Lower),
    m("W10reduce", "W10 reduce over N ↓", "ms", Kind::Lower),
    m("W10list", "W10 to_list over N ↓", "ms", Kind::Lower),
    m("W8", "W8 stop all ↑", "stops/s", Kind::Higher),
    m(
        "W8left",
        "W8 entries left (must be 0)",
        "entries",
        Kind::Check,
    ),
    m("Wshutdown", "shutdown of N workers ↓", "s", Kind::Lower),
    m("peakMiB", "peak RSS (VmHWM)", "MiB", Kind::Info),
];

/// How long a child may run at `n` ids before the parent kills it.
pub fn limit_for(n: usize) -> Duration {
    Duration::from_secs(match n {
        0..=200_000 => 240,
        200_001..=2_000_000 => 600,
        _ => 1_500,
    })
}

/// How long one bulk phase (W1, W8, the refill, the shutdown) may take.
pub fn phase_cap(n: usize) -> Duration {
    Duration::from_secs(match n {
        0..=200_000 => 60,
        200_001..=2_000_000 => 150,
        _ => 400,
    })
}

pub fn sizes(quick: bool) -> &'static [usize] {
    if quick { QUICK_SIZES } else { SIZES }
}

/// The systems that run at `n`.
pub fn systems_at(n: usize, only: &[String]) -> Vec<&'static str> {
    SYSTEMS
        .iter()
        .filter(|(s, max)| n <= *max && (only.is_empty() || only.iter().any(|o| o == s)))
        .map(|(s, _)| *s)
        .collect()
}

/// Entry of a scale child: `system` at `n` ids.
pub fn run_child(system: &'static str, n: usize) {
    let out = Out::new(system);
    watch_memory();
    match system {
        "gen_registry" => {
            let reg = GenRegistry::new(observed(sized(n))).expect("registry");
            run_gen_registry(n, &out, &Procs, reg);
        }
        "gen_registry_tokio" => {
            let rt = tokio_rt::runtime();
            let options = sized(n).executor(Executor::Tokio(rt.handle().clone()));
            let reg = GenRegistry::new(observed(options)).expect("registry");
            run_gen_registry(n, &out, &rt, reg);
        }
        "floor_probe_msg" => run_floor(n, &out, &Procs, Spawner::Bastion),
        "floor_probe_msg_tokio" => {
            let rt = tokio_rt::runtime();
            let spawner = Spawner::Tokio(rt.handle().clone());
            run_floor(n, &out, &rt, spawner);
        }
        "ractor" => run_peer(n, &out, crate::sys_ractor::Ractor::new(n, 0)),
        "kameo" => run_peer(n, &out, crate::sys_kameo::Kameo::new(n, 0)),
        other => panic!("{other} has no scale tier"),
    }
}

/// The options of the scale tier's registries: the table sized for the N
/// workers they will hold, as a registry that knows its scale is
/// configured (the floors' maps are sized the same way).
fn sized(n: usize) -> Options<Pinger> {
    Options::default().expected_workers(n)
}

/// Set in the environment, the scale child counts how its workers ended
/// (an observer on every event: off by default, so the figures are those of
/// a registry without one).
const EXITS_ENV: &str = "GEN_REGISTRY_SCALE_EXITS";

/// Workers that ended by shutdown, and by a kill, while [`EXITS_ENV`] is set.
static ENDED_BY_SHUTDOWN: AtomicU64 = AtomicU64::new(0);
static ENDED_BY_KILL: AtomicU64 = AtomicU64::new(0);

/// `options`, with the exit counter when [`EXITS_ENV`] is set.
fn observed(options: Options<Pinger>) -> Options<Pinger> {
    if std::env::var_os(EXITS_ENV).is_none() {
        return options;
    }
    options.observe(|event| {
        if let gen_registry::Event::Stopped { reason, .. } = event {
            match reason {
                gen_registry::ExitReason::Shutdown => &ENDED_BY_SHUTDOWN,
                gen_registry::ExitReason::Killed => &ENDED_BY_KILL,
                _ => return,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Set once the process's RSS passed [`MEMORY_BUDGET`]: starts stop.
static OVER_BUDGET: AtomicBool = AtomicBool::new(false);

/// A thread that polls the RSS every 20 ms and raises [`OVER_BUDGET`].
fn watch_memory() {
    std::thread::spawn(|| {
        loop {
            if rss_bytes() > MEMORY_BUDGET {
                OVER_BUDGET.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// A line of /proc/self/status as a number (its first field after the name).
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn threads() -> u64 {
    status_field("Threads:").unwrap_or(0)
}

fn emit_peak(out: &Out) {
    let kb = status_field("VmHWM:").unwrap_or(0);
    out.emit("peakMiB", kb as f64 / 1024.0, "MiB");
}

/// What one bulk phase did.
struct Bulk {
    elapsed: Duration,
    done: usize,
    failed: u64,
    /// Why it stopped before the end, if it did.
    cut: Option<&'static str>,
}

impl Bulk {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }

    /// Notes a phase that did not get through every id.
    fn note_cut(&self, out: &Out, what: &str, n: usize) {
        if let Some(why) = self.cut {
            out.note(&format!(
                "{what} at N = {n}: {why} after {} of {n} ({} in {:.1} s)",
                self.done,
                what,
                self.elapsed.as_secs_f64()
            ));
        }
    }
}

/// Applies `op` to every id like [`crate::drivers::drive`] (2 drivers, each
/// over its own slice, join_all of 16), until `cap` has passed or (when
/// `starts`) the memory budget is spent. Prints the rate of each tenth of
/// the ids and the thread count as it goes, and notes them.
fn drive_until<F, Fut>(
    out: &Out,
    what: &'static str,
    tasks: &impl Tasks,
    ids: &[u64],
    cap: Duration,
    starts: bool,
    op: F,
) -> Bulk
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    out.progress(what);
    let n = ids.len();
    let ids: Arc<[u64]> = ids.into();
    let per = n.div_ceil(DRIVERS).max(1);
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(Mutex::new(None::<&'static str>));
    let tenths = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let deadline = start + cap;
    let tenth_mark = Arc::new(Mutex::new((0usize, start)));
    let system = out.system;
    let failed: u64 = tasks
        .run_all(DRIVERS, cap + Duration::from_secs(60), |i| {
            let (ids, op, done, stop, cut, tenths, tenth_mark) = (
                ids.clone(),
                op.clone(),
                done.clone(),
                stop.clone(),
                cut.clone(),
                tenths.clone(),
                tenth_mark.clone(),
            );
            async move {
                let part = &ids[(i * per).min(ids.len())..((i + 1) * per).min(ids.len())];
                let mut failed = 0u64;
                for chunk in part.chunks(CHUNK) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let why = if Instant::now() >= deadline {
                        Some("timed out")
                    } else if starts && OVER_BUDGET.load(Ordering::Relaxed) {
                        Some("stopped by the memory budget")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        cut.lock().get_or_insert(why);
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    let results = futures::future::join_all(chunk.iter().map(|&id| op(id))).await;
                    failed += results.iter().filter(|ok| !**ok).count() as u64;
                    let before = done.fetch_add(chunk.len(), Ordering::Relaxed);
                    let tenth = n.div_ceil(10).max(1);
                    if (before + chunk.len()) / tenth > before / tenth {
                        let now = Instant::now();
                        let mut mark = tenth_mark.lock();
                        let rate = (before + chunk.len() - mark.0) as f64
                            / now.duration_since(mark.1).as_secs_f64();
                        *mark = (before + chunk.len(), now);
                        drop(mark);
                        let line = format!("{}k/s", fmt_value(rate / 1e3));
                        eprintln!(
                            "  [{:>6.1}s] {system:<24} {what}: {:>3} % at {line}, {} threads, RSS {} MiB",
                            start.elapsed().as_secs_f64(),
                            (before + chunk.len()) * 100 / n,
                            threads(),
                            rss_bytes() >> 20
                        );
                        tenths.lock().push(line);
                    }
                }
                failed
            }
        })
        .expect("a bulk phase outlived its cap by a minute")
        .into_iter()
        .map(|r| r.expect("driver panicked"))
        .sum();
    let bulk = Bulk {
        elapsed: start.elapsed(),
        done: done.load(Ordering::Relaxed),
        failed,
        cut: *cut.lock(),
    };
    let tenths = tenths.lock().join(", ");
    out.note(&format!(
        "{what} at N = {n}, rate by tenth of the ids: {tenths}"
    ));
    bulk
}

/// The ids, their shuffled order, W3's slice and the two slices of M ids
/// W7 and Wcall use.
struct Ids {
    all: Vec<u64>,
    order: Vec<u64>,
}

impl Ids {
    fn new(n: usize) -> Ids {
        Ids {
            all: (0..n as u64).collect(),
            order: shuffled(n, ORDER_SEED),
        }
    }

    fn w3(&self) -> &[u64] {
        &self.order[..self.order.len().min(W3_IDS)]
    }

    fn w7(&self) -> Vec<u64> {
        self.order.iter().copied().take(M).collect()
    }

    fn wcall(&self) -> Vec<u64> {
        self.order.iter().rev().copied().take(M).collect()
    }
}

/// µs per operation of `op` over `ids`, awaited one after the other inside
/// the runtime.
fn per_op_us<F, Fut>(tasks: &impl Tasks, ids: Vec<u64>, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    tasks.inside(async move {
        let start = Instant::now();
        for &id in &ids {
            assert!(op(id).await, "call to {id} failed");
        }
        start.elapsed().as_secs_f64() * 1e6 / ids.len() as f64
    })
}

fn run_gen_registry(n: usize, out: &Out, tasks: &impl Tasks, reg: GenRegistry<Pinger>) {
    let ids = Ids::new(n);
    let cap = phase_cap(n);
    out.emit("N", n as f64, "ids");
    tasks.inside(async {});

    let rss0 = rss_bytes();
    let r = reg.clone();
    let w1 = drive_until(out, "W1 start", tasks, &ids.all, cap, true, move |id| {
        let r = r.clone();
        async move { r.lookup_or_start(id, state_of(id)).await.is_ok() }
    });
    let rss1 = rss_bytes();
    w1.note_cut(out, "W1", n);
    out.emit("W1", w1.rate(), "starts/s");
    out.emit(
        "W2",
        (rss1 as f64 - rss0 as f64) / w1.done.max(1) as f64,
        "B/worker",
    );
    out.emit("threads", threads() as f64, "threads");
    if w1.cut.is_some() || w1.failed > 0 {
        out.note(&format!("W1: {} starts failed", w1.failed));
        emit_peak(out);
        return;
    }

    out.progress("W3 lookup");
    let w3 = lookup_ns_1t(ids.w3(), Duration::from_secs(1), |id| reg.lookup(&id).ok());
    out.emit("W3", w3, "ns/op");

    out.progress("W7 lookup + call");
    let r = reg.clone();
    let w7 = per_op_us(tasks, ids.w7(), move |id| {
        let h = r.lookup(&id);
        async move {
            match h {
                Ok(h) => h.call(1).await.ok() == Some(1 + state_of(id)),
                Err(_) => false,
            }
        }
    });
    out.emit("W7", w7, "µs/op");

    out.progress("Wcall call by id");
    let r = reg.clone();
    let wcall = per_op_us(tasks, ids.wcall(), move |id| {
        let r = r.clone();
        async move { r.call(id, state_of(id), 1).await.ok() == Some(1 + state_of(id)) }
    });
    out.emit("Wcall", wcall, "µs/op");

    crate::sys_gen_registry::w10(out, &reg, 1);

    let r = reg.clone();
    let w8 = drive_until(out, "W8 stop all", tasks, &ids.all, cap, false, move |id| {
        let r = r.clone();
        async move { r.stop(&id).await.is_ok() }
    });
    w8.note_cut(out, "W8", n);
    out.emit("W8", w8.rate(), "stops/s");
    out.emit("W8left", reg.count() as f64, "entries");
    if w8.cut.is_some() {
        emit_peak(out);
        return;
    }

    let r = reg.clone();
    let refill = drive_until(out, "refill", tasks, &ids.all, cap, true, move |id| {
        let r = r.clone();
        async move { r.lookup_or_start(id, state_of(id)).await.is_ok() }
    });
    refill.note_cut(out, "the refill", n);
    out.note(&format!(
        "Wshutdown at N = {n}: the refill after W8 started {} workers at {}/s, RSS {} MiB",
        refill.done,
        fmt_value(refill.rate()),
        rss_bytes() >> 20
    ));

    out.progress("Wshutdown");
    let (r, started) = (reg.clone(), Instant::now());
    let finished = Arc::new(AtomicBool::new(false));
    let seen = {
        // The workers left, every 2 s: how the stop rate moves during a
        // shutdown.
        let (r, finished) = (reg.clone(), finished.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let t = started.elapsed();
                if t.as_millis() / 100 % 20 == 0 {
                    seen.push(format!("{:.0} s: {}", t.as_secs_f64(), r.count()));
                }
            }
            seen
        })
    };
    let left = tasks.inside(async move {
        r.shutdown().await;
        r.count()
    });
    let t = started.elapsed();
    finished.store(true, Ordering::Relaxed);
    let seen = seen.join().unwrap_or_default();
    out.emit("Wshutdown", t.as_secs_f64(), "s");
    if std::env::var_os(EXITS_ENV).is_some() {
        out.note(&format!(
            "Wshutdown at N = {}: {} workers ran terminate (ExitReason::Shutdown), {} were killed",
            refill.done,
            ENDED_BY_SHUTDOWN.load(Ordering::Relaxed),
            ENDED_BY_KILL.load(Ordering::Relaxed)
        ));
    }
    out.note(&format!(
        "Wshutdown at N = {}: {left} left after; workers left every 2 s: {}",
        refill.done,
        seen.join(", ")
    ));
    emit_peak(out);
}

/// How the floor spawns its procs.
#[derive(Clone)]
enum Spawner {
    Bastion,
    Tokio(tokio::runtime::Handle),
}

/// A floor proc's join handle.
enum Join {
    Proc(lightproc::recoverable_handle::RecoverableHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl Join {
    async fn ended(self) -> bool {
        match self {
            Join::Proc(h) => h.await.is_some(),
            Join::Task(h) => h.await.is_ok(),
        }
    }
}

type Mailbox = mpsc::UnboundedSender<(u64, oneshot::Sender<u64>)>;
type FloorMap = papaya::HashMap<u64, Mailbox, fxhash::FxBuildHasher>;

static FLOOR_STARTED: AtomicU64 = AtomicU64::new(0);

impl Spawner {
    fn spawn(&self, state: u64) -> (Mailbox, Join) {
        let (tx, mut rx) = mpsc::unbounded::<(u64, oneshot::Sender<u64>)>();
        let body = async move {
            FLOOR_STARTED.fetch_add(1, Ordering::Relaxed);
            while let Some((x, reply)) = rx.next().await {
                let _ = reply.send(x + state);
            }
        };
        let join = match self {
            Spawner::Bastion => Join::Proc(bastion::executor::spawn(body)),
            Spawner::Tokio(h) => Join::Task(h.spawn(body)),
        };
        (tx, join)
    }
}

fn run_floor(n: usize, out: &Out, tasks: &impl Tasks, spawner: Spawner) {
    let ids = Ids::new(n);
    let cap = phase_cap(n);
    out.emit("N", n as f64, "ids");
    tasks.inside(async {});
    let map: Arc<FloorMap> = Arc::new(
        papaya::HashMap::builder()
            .capacity(n)
            .hasher(fxhash::FxBuildHasher::default())
            .collector(seize::Collector::new().batch_size(128))
            .build(),
    );
    let joins: Arc<Vec<Mutex<Option<Join>>>> = Arc::new((0..n).map(|_| Mutex::new(None)).collect());

    let rss0 = rss_bytes();
    let (m, j) = (map.clone(), joins.clone());
    let started = Instant::now();
    let w1 = drive_until(out, "W1 start", tasks, &ids.all, cap, true, move |id| {
        let (tx, join) = spawner.spawn(state_of(id));
        m.pin().insert(id, tx);
        *j[id as usize].lock() = Some(join);
        async { true }
    });
    let all_ran = wait_until(cap, || {
        FLOOR_STARTED.load(Ordering::Relaxed) >= w1.done as u64
    });
    let t = started.elapsed();
    let rss1 = rss_bytes();
    w1.note_cut(out, "W1", n);
    assert!(all_ran, "floor procs did not all run");
    out.emit("W1", w1.done as f64 / t.as_secs_f64(), "starts/s");
    out.emit(
        "W2",
        (rss1 as f64 - rss0 as f64) / w1.done.max(1) as f64,
        "B/worker",
    );
    out.emit("threads", threads() as f64, "threads");
    if w1.cut.is_some() {
        emit_peak(out);
        return;
    }

    out.progress("W3 probe");
    let w3 = lookup_ns_1t(ids.w3(), Duration::from_secs(1), |id| {
        map.pin().get(&id).map(|tx| tx as *const Mailbox as usize)
    });
    out.emit("W3", w3, "ns/op");

    out.progress("W7 probe + message");
    let m = map.clone();
    let w7 = per_op_us(tasks, ids.w7(), move |id| {
        let (reply, answer) = oneshot::channel();
        let sent = m
            .pin()
            .get(&id)
            .is_some_and(|tx| tx.unbounded_send((1, reply)).is_ok());
        async move { sent && answer.await.ok() == Some(1 + state_of(id)) }
    });
    out.emit("W7", w7, "µs/op");

    let (m, j) = (map.clone(), joins.clone());
    let w8 = drive_until(out, "W8 stop all", tasks, &ids.all, cap, false, move |id| {
        {
            let map = m.pin();
            if let Some(tx) = map.get(&id) {
                tx.close_channel();
            }
            map.remove(&id);
        }
        let join = j[id as usize].lock().take();
        async move {
            match join {
                Some(join) => join.ended().await,
                None => false,
            }
        }
    });
    w8.note_cut(out, "W8", n);
    out.emit("W8", w8.rate(), "stops/s");
    out.emit("W8left", map.len() as f64, "entries");
    emit_peak(out);
}

fn run_peer<P: Peer>(n: usize, out: &Out, peer: P) {
    let rt = tokio_rt::runtime();
    let ids = Ids::new(n);
    let cap = phase_cap(n);
    let peer = Arc::new(peer);
    out.emit("N", n as f64, "ids");

    let rss0 = rss_bytes();
    let p = peer.clone();
    let w1 = drive_until(out, "W1 start", &rt, &ids.all, cap, true, move |id| {
        let p = p.clone();
        async move { p.start(id).await.is_some() }
    });
    let rss1 = rss_bytes();
    w1.note_cut(out, "W1", n);
    out.emit("W1", w1.rate(), "starts/s");
    out.emit(
        "W2",
        (rss1 as f64 - rss0 as f64) / w1.done.max(1) as f64,
        "B/worker",
    );
    out.emit("threads", threads() as f64, "threads");
    // With the budget spent, the lookups and calls run on the ids started.
    let started = w1.done;

    out.progress("W3 lookup");
    let w3_ids: Vec<u64> = ids
        .w3()
        .iter()
        .copied()
        .filter(|&i| (i as usize) < started)
        .collect();
    let w3 = lookup_ns_1t(&w3_ids, Duration::from_secs(1), |id| peer.lookup(id));
    out.emit("W3", w3, "ns/op");

    out.progress("W7 lookup + call");
    let p = peer.clone();
    let w7_ids = ids
        .w7()
        .into_iter()
        .filter(|&i| (i as usize) < started)
        .collect();
    let w7 = per_op_us(&rt, w7_ids, move |id| {
        let h = p.lookup(id);
        async move {
            match h {
                Some(h) => P::call(&h, 1).await == Some(1 + state_of(id)),
                None => false,
            }
        }
    });
    out.emit("W7", w7, "µs/op");
    out.absent("Wcall", "µs/op");

    tokio_rt::w10(out, &*peer, 1);

    let p = peer.clone();
    let w8 = drive_until(
        out,
        "W8 stop all",
        &rt,
        &ids.all[..started],
        cap,
        false,
        move |id| {
            let p = p.clone();
            async move { p.stop(id).await }
        },
    );
    w8.note_cut(out, "W8", started);
    out.emit("W8", w8.rate(), "stops/s");
    if w8.cut.is_none() {
        out.emit("W8left", peer.count() as f64, "entries");
    }
    out.absent("Wshutdown", "s");
    emit_peak(out);
}

/// The scale targets checked on a scale run: one row each (target,
/// figure, verdict) for the figures the run has.
pub fn check_targets(by_n: &[(usize, Results)]) -> Vec<[String; 3]> {
    let mut rows = Vec::new();
    let get = |r: &Results, s: &str, metric: &str| r.median(s, metric);
    let first = by_n.first();
    for (n, r) in by_n {
        let n_txt = fmt_value(*n as f64);
        for (ours, floor) in [
            ("gen_registry", "floor_probe_msg"),
            ("gen_registry_tokio", "floor_probe_msg_tokio"),
        ] {
            for (metric, floor_metric, bound) in
                [("W3", "W3", 1.5), ("W7", "W7", 1.3), ("Wcall", "W7", 1.3)]
            {
                let (Some(a), Some(b)) = (get(r, ours, metric), get(r, floor, floor_metric)) else {
                    continue;
                };
                rows.push([
                    format!(
                        "{metric} of {ours} at N = {n_txt} ≤ {bound}× {floor}'s {floor_metric}"
                    ),
                    format!("{} against {} ({:.2}×)", fmt_value(a), fmt_value(b), a / b),
                    verdict(a <= bound * b),
                ]);
            }
            if let Some(w2) = get(r, ours, "W2") {
                rows.push([
                    format!("W2 of {ours} at N = {n_txt} ≤ 400 B"),
                    format!("{} B", fmt_value(w2)),
                    verdict(w2 <= 400.0),
                ]);
            }
            if *n >= 10_000_000 {
                if let (Some(here), Some(base)) = (
                    get(r, ours, "W1"),
                    first.and_then(|(_, r0)| get(r0, ours, "W1")),
                ) {
                    rows.push([
                        format!(
                            "W1 of {ours} at N = {n_txt} ≥ ½ its rate at N = {}",
                            fmt_value(first.map_or(0, |f| f.0) as f64)
                        ),
                        format!(
                            "{} against {} ({:.2}×)",
                            fmt_value(here),
                            fmt_value(base),
                            here / base
                        ),
                        verdict(here >= 0.5 * base),
                    ]);
                }
                if let Some(t) = get(r, ours, "Wshutdown") {
                    rows.push([
                        format!("shutdown of {ours} at N = {n_txt} < 10 s"),
                        format!("{t:.1} s"),
                        verdict(t < 10.0),
                    ]);
                }
            }
            for (metric, factor) in [("W1", 10.0), ("W8", 10.0)] {
                if let (Some(a), Some(b)) =
                    (get(r, ours, metric), get(r, "elixir_registry", metric))
                {
                    rows.push([
                        format!("{metric} of {ours} at N = {n_txt} ≥ {factor}× elixir_registry's"),
                        format!("{} against {} ({:.1}×)", fmt_value(a), fmt_value(b), a / b),
                        verdict(a >= factor * b),
                    ]);
                }
            }
            if let (Some(a), Some(b)) = (get(r, ours, "W2"), get(r, "elixir_registry", "W2")) {
                rows.push([
                    format!("W2 of {ours} at N = {n_txt} ≤ ⅓ elixir_registry's"),
                    format!("{} against {} ({:.2}×)", fmt_value(a), fmt_value(b), a / b),
                    verdict(3.0 * a <= b),
                ]);
            }
        }
    }
    rows
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "**missed**" }.to_owned()
}
